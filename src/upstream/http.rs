//! The HTTP upstream (OpenAI-compatible, or Anthropic's Messages API), on one pooled
//! hyper client shared by all upstreams (one per worker thread, see `pools`).

use std::error::Error as StdError;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ::http::header::{AUTHORIZATION, CONTENT_TYPE};
use ::http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, Uri};
use base64::Engine as _;
use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::{FutureExt, StreamExt, TryStreamExt};
use http_body_util::{BodyDataStream, Full};
use hyper::body::Incoming;

use super::headers::response::ResponseHeaders;
use super::headers::{sensitive, RequestHeaders};
use super::pools::Pools;
use super::{Endpoint, ModelObject, StoredResponseCall, Upstream, UpstreamError};
use super::{TraceHeaders, UpstreamRequest, UpstreamResponse};
use crate::config::file_read::{read_text, FileKind};
use crate::config::{ResponsesMode, StreamEnd, UpstreamApi, UpstreamConfig};

mod models;
mod native;
mod probe;
use crate::config::keys::Secret;

/// Safe retries after an HTTP/2 upstream refused a stream it never processed.
const MAX_NACK_RETRIES: u32 = 2;
const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");
const SEND_FAILED: &str = "the request could not be sent";
const BODY_FAILED: &str = "the response body was cut short or malformed";

/// One pooled client for every upstream: TCP_NODELAY and keep-alive probes, rustls with
/// the webpki roots and the OS store, HTTP/2 by ALPN, no redirects (a redirect could
/// carry the upstream key elsewhere) and no proxies from the environment (keys go only
/// where the config says). There is one connect timeout per client, so it is the largest
/// any upstream asks for; first-byte and idle timeouts are per upstream. An upstream with
/// its own `ca_file` or client certificate gets a client of its own ([`client_with`]).
pub fn shared_client(configs: &[UpstreamConfig]) -> Result<Arc<Pools>, UpstreamError> {
    let connect = configs
        .iter()
        .map(|c| c.connect_timeout_secs)
        .max()
        .unwrap_or(5);
    let tls = super::tls::default_config()
        .map_err(|e| UpstreamError::Config("client".into(), e.to_string()))?;
    Ok(Pools::new(connect, tls))
}

pub struct HttpUpstream {
    name: Arc<str>,
    api: UpstreamApi,
    /// Built once, indexed by `Endpoint as usize`: the per-request cost is a clone, not
    /// a URL parse.
    endpoint_uris: Vec<Uri>,
    models_uri: Uri,
    /// What a health probe asks for: `{base_url}/{probe_path}` (`models` by default).
    probe_uri: Uri,
    /// `…/responses` with the configured query, credentials removed: the base of a
    /// native upstream's stored-response URLs.
    responses_url: url::Url,
    /// `{base}/models`, where one model is asked for as `{base}/models/{id}`.
    model_url: url::Url,
    native: bool,
    max_output_tokens: Option<u64>,
    /// Basic credentials from the base URL (sensitive), built once.
    basic_auth: Option<HeaderValue>,
    /// Forwarded client headers, static headers and the key's header, decided once.
    request_headers: RequestHeaders,
    /// `host:port`, for logs an operator can act on (never the URL or key).
    authority: Arc<str>,
    /// What of the upstream's answer headers a client sees: nothing naming its host,
    /// its key or its other secrets.
    response_headers: ResponseHeaders,
    client: Arc<Pools>,
    first_byte_timeout: Duration,
    idle_timeout: Duration,
    models_timeout: Duration,
    require_done: bool,
    /// The last good `/models` list; served stale when the upstream fails, never
    /// replaced by a failure.
    model_cache: Mutex<Option<models::Cached>>,
}

impl HttpUpstream {
    pub fn new(config: &UpstreamConfig, client: Arc<Pools>) -> Result<Self, UpstreamError> {
        let name: Arc<str> = config.name.as_str().into();
        let config_error = |m: &str| UpstreamError::Config(name.clone(), m.to_string());
        let api_key = read_api_key(config).map_err(|m| UpstreamError::Config(name.clone(), m))?;
        let base_url = config.base_url.trim_end_matches('/');
        let mut basic_auth = None;
        let mut basic_password = None;
        let mut uri = |path: &str| -> Result<url::Url, UpstreamError> {
            let mut url = url::Url::parse(&format!("{base_url}/{path}"))
                .map_err(|_| config_error("base_url is not a valid URL"))?;
            if let Some((basic, password)) = take_credentials(&mut url).map_err(config_error)? {
                basic_auth = Some(basic);
                basic_password = Some(Secret::new(password));
            }
            if !config.query.is_empty() {
                url.query_pairs_mut().extend_pairs(&config.query);
            }
            Ok(url)
        };
        let valid = |url: url::Url| {
            Uri::try_from(url.as_str()).map_err(|_| config_error("base_url is not a valid URL"))
        };
        let responses_url = uri(Endpoint::Responses.path())?;
        let endpoint_uris = Endpoint::ALL
            .into_iter()
            .map(|endpoint| valid(uri(endpoint.path())?))
            .collect::<Result<Vec<Uri>, _>>()?;
        let mut models_url = uri("models")?;
        let model_url = models_url.clone();
        if config.api == UpstreamApi::Anthropic {
            // Anthropic pages its list, 20 by default; one page of the most it allows.
            models_url.query_pairs_mut().append_pair("limit", "1000");
        }
        let models_uri = valid(models_url)?;
        let probe_path = config.probe_path.as_deref().unwrap_or("models");
        let probe_uri = valid(uri(probe_path.trim_start_matches('/'))?)?;
        let request_headers = RequestHeaders::new(config, api_key.as_ref().map(Secret::expose))
            .map_err(|m| UpstreamError::Config(name.clone(), m))?;
        let host = models_uri.host().unwrap_or_default().to_ascii_lowercase();
        // The Basic credentials as sent (base64) and the password as written.
        let basic_secrets = basic_auth
            .iter()
            .map(|basic| basic.as_bytes().strip_prefix(b"Basic ").unwrap_or_default())
            .chain(basic_password.iter().map(|p| p.expose().as_bytes()));
        let response_headers =
            ResponseHeaders::new(&host, request_headers.secrets().chain(basic_secrets));
        let port = models_uri
            .port_u16()
            .unwrap_or(match models_uri.scheme_str() {
                Some("https") => 443,
                _ => 80,
            });
        Ok(HttpUpstream {
            api: config.api,
            endpoint_uris,
            models_uri,
            probe_uri,
            responses_url,
            model_url,
            native: config.responses == ResponsesMode::Native,
            max_output_tokens: config.max_output_tokens,
            basic_auth,
            request_headers,
            authority: format!("{host}:{port}").into(),
            response_headers,
            client,
            first_byte_timeout: Duration::from_secs(config.first_byte_timeout_secs.max(1)),
            idle_timeout: Duration::from_secs(config.idle_timeout_secs.max(1)),
            models_timeout: Duration::from_secs(config.models_timeout_secs.max(1)),
            // An Anthropic stream has no `data: [DONE]`; the Messages adapter finds its end.
            require_done: config.api == UpstreamApi::Openai && config.stream_end == StreamEnd::Done,
            model_cache: Mutex::new(None),
            name,
        })
    }

    /// Sends one request and waits for the response headers, within the first-byte
    /// timeout. A stream an HTTP/2 upstream refused unprocessed is sent again.
    async fn call(
        &self,
        method: Method,
        uri: &Uri,
        body: Bytes,
        client_headers: &HeaderMap,
        trace: &TraceHeaders,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let exchange = async {
            let mut retries = 0;
            loop {
                let mut request = Request::new(Full::new(body.clone()));
                *request.method_mut() = method.clone();
                *request.uri_mut() = uri.clone();
                let headers = request.headers_mut();
                if method == Method::POST {
                    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
                }
                if let Some(basic) = &self.basic_auth {
                    headers.insert(AUTHORIZATION, basic.clone());
                }
                self.request_headers.apply(client_headers, headers);
                if let Some(traceparent) = &trace.traceparent {
                    headers.insert(TRACEPARENT, traceparent.clone());
                    if let Some(tracestate) = &trace.tracestate {
                        headers.insert(TRACESTATE, tracestate.clone());
                    }
                }
                match self.client.with(|client| client.request(request)).await {
                    Ok(response) => return Ok(response),
                    Err(err) if retries < MAX_NACK_RETRIES && is_protocol_nack(&err) => {
                        retries += 1;
                    }
                    Err(err) => return Err(self.classify(&err, SEND_FAILED)),
                }
            }
        };
        tokio::time::timeout(self.first_byte_timeout, exchange)
            .await
            .map_err(|_| UpstreamError::Timeout(self.name.clone()))?
    }

    /// Errors carry only their kind: the underlying text can include the URL.
    fn classify(&self, err: &(dyn StdError + 'static), what: &str) -> UpstreamError {
        if timed_out(err) {
            UpstreamError::Timeout(self.name.clone())
        } else if err
            .downcast_ref::<hyper_util::client::legacy::Error>()
            .is_some_and(|e| e.is_connect())
        {
            let os_error = sources(err)
                .filter_map(|e| e.downcast_ref::<std::io::Error>())
                .last()
                .map_or_else(|| "connection failed".to_string(), ToString::to_string);
            UpstreamError::Connect(
                self.name.clone(),
                format!("{} ({os_error})", self.authority),
            )
        } else {
            UpstreamError::Broken(self.name.clone(), what.into())
        }
    }
}

/// Moves `user:password@` out of the URL into a Basic `Authorization` value; also
/// returns the password (empty when none), which no response header may echo.
fn take_credentials(url: &mut url::Url) -> Result<Option<(HeaderValue, String)>, &'static str> {
    if url.username().is_empty() && url.password().is_none() {
        return Ok(None);
    }
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8()
            .map(|s| s.into_owned())
    };
    let bad = "base_url credentials are not valid UTF-8";
    let username = decode(url.username()).map_err(|_| bad)?;
    let password = url.password().map(decode).transpose().map_err(|_| bad)?;
    let cleared = url.set_username("").and_then(|()| url.set_password(None));
    cleared.map_err(|()| "base_url credentials cannot be removed")?;
    let password = password.unwrap_or_default();
    let pair = format!("{username}:{password}");
    let encoded = base64::engine::general_purpose::STANDARD.encode(pair);
    sensitive(format!("Basic {encoded}"))
        .map(|basic| Some((basic, password)))
        .ok_or("base_url credentials are not a valid header value")
}

/// The error and its chain of causes.
fn sources<'a>(
    err: &'a (dyn StdError + 'static),
) -> impl Iterator<Item = &'a (dyn StdError + 'static)> {
    std::iter::successors(Some(err), |&e| e.source())
}

fn timed_out(err: &(dyn StdError + 'static)) -> bool {
    sources(err).any(|e| {
        e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
            || e.downcast_ref::<hyper::Error>()
                .is_some_and(|h| h.is_timeout())
    })
}

/// An HTTP/2 graceful GOAWAY or REFUSED_STREAM from the upstream: it did not process
/// the request, so sending it again is safe.
fn is_protocol_nack(err: &(dyn StdError + 'static)) -> bool {
    sources(err).any(|e| {
        e.downcast_ref::<h2::Error>().is_some_and(|h2| {
            h2.is_remote()
                && ((h2.is_go_away() && h2.reason() == Some(h2::Reason::NO_ERROR))
                    || (h2.is_reset() && h2.reason() == Some(h2::Reason::REFUSED_STREAM)))
        })
    })
}

fn read_api_key(config: &UpstreamConfig) -> Result<Option<Secret>, String> {
    if let Some(var) = &config.api_key_env {
        return match std::env::var(var) {
            Ok(key) if !key.is_empty() => Ok(Some(Secret::new(key))),
            _ => Err(format!("api_key_env names {var}, which is not set")),
        };
    }
    if let Some(path) = &config.api_key_file {
        let content = read_text(path, FileKind::Secret)
            .map_err(|e| format!("cannot read api_key_file {e}"))?;
        let key = content.strip_suffix('\n').unwrap_or(&content);
        return Ok(Some(Secret::new(key.to_string())));
    }
    Ok(None)
}

impl Upstream for HttpUpstream {
    fn name(&self) -> &str {
        &self.name
    }

    fn api(&self) -> UpstreamApi {
        self.api
    }

    fn native_responses(&self) -> bool {
        self.native
    }

    fn max_output_tokens(&self) -> Option<u64> {
        self.max_output_tokens
    }

    fn stored_response(
        &self,
        call: StoredResponseCall,
    ) -> BoxFuture<'_, Result<UpstreamResponse, UpstreamError>> {
        self.stored(call).boxed()
    }

    fn send(
        &self,
        request: UpstreamRequest,
    ) -> BoxFuture<'_, Result<UpstreamResponse, UpstreamError>> {
        async move {
            let endpoint = request.endpoint;
            let serves = endpoint.is_anthropic() == (self.api == UpstreamApi::Anthropic);
            let uri = self.endpoint_uris.get(endpoint as usize).filter(|_| serves);
            let Some(uri) = uri else {
                return Err(UpstreamError::Config(
                    self.name.clone(),
                    format!(
                        "api = \"{}\" does not serve /{}",
                        self.api.as_str(),
                        endpoint.path()
                    ),
                ));
            };
            let response = self
                .call(
                    Method::POST,
                    uri,
                    request.body,
                    &request.client_headers,
                    &request.trace,
                )
                .await?;
            Ok(self.streaming(response))
        }
        .boxed()
    }

    fn list_models(&self) -> BoxFuture<'_, Result<Arc<Vec<ModelObject>>, UpstreamError>> {
        self.cached_models().boxed()
    }

    fn retrieve_model<'a>(
        &'a self,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Option<ModelObject>, UpstreamError>> {
        self.model_by_id(id).boxed()
    }

    fn probe(&self) -> BoxFuture<'_, Result<(), UpstreamError>> {
        self.probe_once().boxed()
    }
}

impl HttpUpstream {
    /// The answer with its body still streaming, headers filtered for the client.
    fn streaming(&self, response: Response<Incoming>) -> UpstreamResponse {
        let (parts, body) = response.into_parts();
        let name = self.name.clone();
        let body = BodyDataStream::new(body)
            .map_err(move |_| UpstreamError::Broken(name.clone(), BODY_FAILED.into()))
            .boxed();
        UpstreamResponse {
            status: parts.status,
            headers: self.response_headers.pass_through(&parts.headers),
            body,
            idle_timeout: self.idle_timeout,
            require_done: self.require_done,
        }
    }
}
