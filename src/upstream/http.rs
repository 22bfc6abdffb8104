//! The OpenAI-compatible HTTP upstream, on one pooled client shared by all upstreams.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use futures_util::{FutureExt, StreamExt, TryStreamExt};

use super::{Endpoint, Upstream, UpstreamError, UpstreamRequest, UpstreamResponse};
use crate::config::UpstreamConfig;
use crate::keys::Secret;

/// How long a fetched `/models` list is reused.
const MODEL_LIST_TTL: Duration = Duration::from_secs(60);

/// One pooled client for every upstream: TCP_NODELAY, keep-alive, rustls, no redirects
/// (a redirect could carry the upstream key elsewhere), no proxies from the environment. reqwest has one connect timeout
/// per client, so it is the largest any upstream asks for; first-byte and idle timeouts
/// are per upstream.
pub fn shared_client(configs: &[UpstreamConfig]) -> Result<reqwest::Client, UpstreamError> {
    let connect = configs
        .iter()
        .map(|c| c.connect_timeout_secs)
        .max()
        .unwrap_or(5);
    reqwest::Client::builder()
        .tcp_nodelay(true)
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(256)
        .connect_timeout(Duration::from_secs(connect.max(1)))
        .redirect(reqwest::redirect::Policy::none())
        // No implicit HTTP(S)_PROXY from the environment: upstream keys go only where
        // the config says, and the per-request proxy lookup is skipped.
        .no_proxy()
        .build()
        .map_err(|e| UpstreamError::Config("client".into(), e.to_string()))
}

pub struct HttpUpstream {
    name: Arc<str>,
    base_url: String,
    /// Parsed once: the per-request cost is a clone, not a URL parse.
    endpoint_urls: [reqwest::Url; 3],
    api_key: Option<Secret>,
    client: reqwest::Client,
    first_byte_timeout: Duration,
    idle_timeout: Duration,
    model_cache: Mutex<Option<(Instant, Vec<String>)>>,
}

impl HttpUpstream {
    pub fn new(config: &UpstreamConfig, client: reqwest::Client) -> Result<Self, UpstreamError> {
        let name: Arc<str> = config.name.as_str().into();
        let api_key = read_api_key(config).map_err(|m| UpstreamError::Config(name.clone(), m))?;
        let base_url = config.base_url.trim_end_matches('/').to_string();
        let parse = |endpoint: Endpoint| {
            reqwest::Url::parse(&format!("{base_url}/{}", endpoint.path()))
                .map_err(|_| UpstreamError::Config(name.clone(), "base_url is not a valid URL".into()))
        };
        let endpoint_urls = [
            parse(Endpoint::ChatCompletions)?,
            parse(Endpoint::Completions)?,
            parse(Endpoint::Embeddings)?,
        ];
        Ok(HttpUpstream {
            endpoint_urls,
            base_url,
            api_key,
            client,
            first_byte_timeout: Duration::from_secs(config.first_byte_timeout_secs.max(1)),
            idle_timeout: Duration::from_secs(config.idle_timeout_secs.max(1)),
            model_cache: Mutex::new(None),
            name,
        })
    }

    fn classify(&self, err: reqwest::Error) -> UpstreamError {
        if err.is_timeout() {
            UpstreamError::Timeout(self.name.clone())
        } else if err.is_connect() {
            UpstreamError::Connect(self.name.clone())
        } else {
            // reqwest errors can include the URL; keep only the kind.
            UpstreamError::Broken(self.name.clone(), describe(&err))
        }
    }

    fn authorized(&self, builder: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.api_key {
            Some(key) => builder.bearer_auth(key.expose()),
            None => builder,
        }
    }
}

fn describe(err: &reqwest::Error) -> String {
    if err.is_body() || err.is_decode() {
        "the response body was cut short or malformed".into()
    } else if err.is_request() {
        "the request could not be sent".into()
    } else {
        "protocol error".into()
    }
}

fn read_api_key(config: &UpstreamConfig) -> Result<Option<Secret>, String> {
    if let Some(var) = &config.api_key_env {
        return match std::env::var(var) {
            Ok(key) if !key.is_empty() => Ok(Some(Secret::new(key))),
            _ => Err(format!("api_key_env names {var}, which is not set")),
        };
    }
    if let Some(path) = &config.api_key_file {
        let content = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read api_key_file {}: {e}", path.display()))?;
        let key = content.strip_suffix('\n').unwrap_or(&content);
        return Ok(Some(Secret::new(key.to_string())));
    }
    Ok(None)
}

impl Upstream for HttpUpstream {
    fn name(&self) -> &str {
        &self.name
    }

    fn send(
        &self,
        request: UpstreamRequest,
    ) -> BoxFuture<'_, Result<UpstreamResponse, UpstreamError>> {
        async move {
            let url = self.endpoint_urls[request.endpoint as usize].clone();
            let pending = self
                .authorized(self.client.post(url))
                .header(::http::header::CONTENT_TYPE, "application/json")
                .body(request.body)
                .send();
            let response = tokio::time::timeout(self.first_byte_timeout, pending)
                .await
                .map_err(|_| UpstreamError::Timeout(self.name.clone()))?
                .map_err(|e| self.classify(e))?;
            let status = response.status();
            let content_type = response
                .headers()
                .get(::http::header::CONTENT_TYPE)
                .cloned();
            let name = self.name.clone();
            let body = response
                .bytes_stream()
                .map_err(move |e| UpstreamError::Broken(name.clone(), describe(&e)))
                .boxed();
            Ok(UpstreamResponse {
                status,
                content_type,
                body,
                idle_timeout: self.idle_timeout,
            })
        }
        .boxed()
    }

    fn list_models(&self) -> BoxFuture<'_, Result<Vec<String>, UpstreamError>> {
        async move {
            if let Ok(cache) = self.model_cache.lock() {
                if let Some((at, models)) = cache.as_ref() {
                    if at.elapsed() < MODEL_LIST_TTL {
                        return Ok(models.clone());
                    }
                }
            }
            #[derive(serde::Deserialize)]
            struct Listed {
                id: String,
            }
            #[derive(serde::Deserialize)]
            struct List {
                data: Vec<Listed>,
            }
            let models_url = format!("{}/models", self.base_url);
            let fetch = self.authorized(self.client.get(models_url)).send();
            let response = tokio::time::timeout(self.first_byte_timeout, fetch)
                .await
                .map_err(|_| UpstreamError::Timeout(self.name.clone()))?
                .map_err(|e| self.classify(e))?;
            if !response.status().is_success() {
                return Err(UpstreamError::Broken(
                    self.name.clone(),
                    format!("model list answered {}", response.status()),
                ));
            }
            let list: List = response.json().await.map_err(|e| self.classify(e))?;
            let models: Vec<String> = list.data.into_iter().map(|m| m.id).collect();
            if let Ok(mut cache) = self.model_cache.lock() {
                *cache = Some((Instant::now(), models.clone()));
            }
            Ok(models)
        }
        .boxed()
    }
}
