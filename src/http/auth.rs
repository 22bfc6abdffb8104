//! The auth boundary: a tower layer that lets a request reach a handler only with a valid key.
//!
//! Deny by default: the layer wraps the whole router, fallbacks included. The only
//! exemptions are the route patterns in [`PUBLIC_ROUTES`].

use std::net::{IpAddr, Ipv6Addr};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use axum::body::Body;
use axum::extract::MatchedPath;
use axum::http::{HeaderMap, Method, Request};
use axum::response::{IntoResponse, Response};
use futures_util::future::BoxFuture;
use subtle::{ConditionallySelectable, ConstantTimeEq};
use tower::{Layer, Service};

use super::client_addr::ClientAddr;
use super::hold::HoldBody;
use crate::config::keys::{digest, is_token68, ClientKey, KeyDigest, KeyRefusal, KeySet};
pub use crate::limits::Caller;
use crate::limits::Limiter;
use crate::telemetry::auth_log;
use crate::wire::error::ApiError;

/// Routes anyone may call without a key, matched on the router's route pattern (never
/// on a path prefix, so `/health/../v1/models` tricks cannot widen it).
pub const PUBLIC_ROUTES: &[(Method, &str)] =
    &[(Method::GET, "/health"), (Method::GET, "/health/ready")];

/// Put on the response to a request that passed the auth boundary as a caller (public
/// routes do not count): the server then gives its connection the normal keep-alive
/// idle timeout instead of `unauthenticated_idle_secs`.
#[derive(Clone, Copy, Debug)]
pub struct Authenticated;

/// Why the presented credentials could not even be judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialError {
    /// Two Authorization (or x-api-key) headers: which one counts would be a guess.
    Duplicate,
    /// Authorization and x-api-key carry different tokens.
    Conflicting,
    /// A header is present but is not `Bearer <token68>`.
    Malformed,
}

/// Finds the presented token: `Authorization: Bearer <token>` (scheme in any case, one or
/// more spaces) or `x-api-key: <token>`. Query strings are never consulted.
pub fn extract_token(headers: &HeaderMap) -> Result<Option<&[u8]>, CredentialError> {
    let mut authorization = headers.get_all(axum::http::header::AUTHORIZATION).iter();
    let mut api_key = headers.get_all("x-api-key").iter();
    let (auth_first, auth_second) = (authorization.next(), authorization.next());
    let (key_first, key_second) = (api_key.next(), api_key.next());
    if auth_second.is_some() || key_second.is_some() {
        return Err(CredentialError::Duplicate);
    }
    let bearer = auth_first
        .map(|v| parse_bearer(v.as_bytes()).ok_or(CredentialError::Malformed))
        .transpose()?;
    let x_api_key = key_first
        .map(|v| v.as_bytes())
        .map(|t| {
            valid_token(t)
                .then_some(t)
                .ok_or(CredentialError::Malformed)
        })
        .transpose()?;
    match (bearer, x_api_key) {
        (Some(a), Some(b)) if a != b => Err(CredentialError::Conflicting),
        (Some(a), _) => Ok(Some(a)),
        (None, b) => Ok(b),
    }
}

/// `Bearer` (any case), one or more spaces, then an RFC 6750 token. Never panics.
pub fn parse_bearer(value: &[u8]) -> Option<&[u8]> {
    if value.len() < 7 || !value[..6].eq_ignore_ascii_case(b"bearer") || value[6] != b' ' {
        return None;
    }
    // Spaces only (RFC 7235 `1*SP`): a tab or other whitespace makes the header malformed.
    let start = value[6..]
        .iter()
        .position(|b| *b != b' ')
        .map_or(value.len(), |i| i + 6);
    let token = &value[start..];
    valid_token(token).then_some(token)
}

fn valid_token(token: &[u8]) -> bool {
    std::str::from_utf8(token).is_ok_and(is_token68)
}

/// Compares the token's SHA-256 with every key's digest in constant time, visiting all
/// keys whatever matches, so timing reveals neither which key nor how much matched.
pub fn verify(keys: &KeySet, token: &[u8]) -> Option<Arc<ClientKey>> {
    verify_digest(keys, &digest(token))
}

/// [`verify`] for a token already hashed (the auth layer hashes before it awaits the
/// failed-auth throttle, so the token itself never waits in a future).
pub fn verify_digest(keys: &KeySet, presented: &KeyDigest) -> Option<Arc<ClientKey>> {
    let mut matched = subtle::Choice::from(0);
    let mut index = 0u32;
    for (i, key) in keys.keys.iter().enumerate() {
        let equal = presented.ct_eq(&key.digest);
        index.conditional_assign(&(i as u32), equal);
        matched |= equal;
    }
    bool::from(matched).then(|| keys.keys[index as usize].clone())
}

/// Applies [`RequireApiKey`] to every route.
#[derive(Clone)]
pub struct RequireApiKeyLayer {
    keys: Arc<ArcSwap<KeySet>>,
    limiter: Arc<Limiter>,
}

impl RequireApiKeyLayer {
    /// `limiter` throttles failed attempts per client address.
    pub fn new(keys: Arc<ArcSwap<KeySet>>, limiter: Arc<Limiter>) -> Self {
        RequireApiKeyLayer { keys, limiter }
    }
}

impl<S> Layer<S> for RequireApiKeyLayer {
    type Service = RequireApiKey<S>;
    fn layer(&self, inner: S) -> Self::Service {
        RequireApiKey {
            inner,
            keys: self.keys.clone(),
            limiter: self.limiter.clone(),
        }
    }
}

#[derive(Clone)]
pub struct RequireApiKey<S> {
    inner: S,
    keys: Arc<ArcSwap<KeySet>>,
    limiter: Arc<Limiter>,
}

/// The address failed attempts are counted against: the client address (behind a
/// trusted proxy, the forwarded one). Without one (only in-process callers that skip the
/// layer stack) all such requests share the unspecified address.
fn peer_ip(request: &Request<Body>) -> IpAddr {
    match request.extensions().get::<ClientAddr>() {
        Some(ClientAddr(ip)) => *ip,
        None => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    }
}

fn is_public(request: &Request<Body>) -> bool {
    let Some(pattern) = request.extensions().get::<MatchedPath>() else {
        return false;
    };
    PUBLIC_ROUTES
        .iter()
        .any(|(method, path)| method == request.method() && *path == pattern.as_str())
}

/// What the synchronous part of the check decided; the throttle and the key comparison
/// (which may wait on a shared limiter) come after.
enum First {
    Public,
    Caller(Caller),
    /// A token to compare, hashed, from this address.
    Compare(IpAddr, KeyDigest),
}

impl<S> RequireApiKey<S> {
    fn first(&self, request: &Request<Body>) -> Result<First, ApiError> {
        if is_public(request) {
            return Ok(First::Public);
        }
        let keys = self.keys.load();
        let token = extract_token(request.headers()).map_err(|e| match e {
            CredentialError::Duplicate => ApiError::bad_request(
                "Send exactly one Authorization header (or one x-api-key header).",
                None,
            ),
            CredentialError::Conflicting => ApiError::bad_request(
                "The Authorization and x-api-key headers carry different keys; send one.",
                None,
            ),
            CredentialError::Malformed => ApiError::Unauthorized {
                token_presented: true,
            },
        })?;
        if keys.is_empty() {
            // Keyless mode exists only on loopback (the startup guard saw to that).
            return Ok(First::Caller(Caller {
                name: Arc::from("local"),
                key: None,
            }));
        }
        let token = token.ok_or(ApiError::Unauthorized {
            token_presented: false,
        })?;
        Ok(First::Compare(peer_ip(request), digest(token)))
    }
}

/// Throttle guessing: an address over its failure quota is refused before any key
/// comparison runs, and only failures spend quota. Operators see the failures summarised
/// per address, and each throttle's start and end (`telemetry::auth_log`).
async fn compare(
    keys: &ArcSwap<KeySet>,
    limiter: &Limiter,
    peer: IpAddr,
    presented: &KeyDigest,
) -> Result<Caller, ApiError> {
    let counted_as = crate::limits::bucket(peer);
    if let Some(retry_after_secs) = limiter.auth_blocked(peer).await? {
        auth_log::refused(counted_as);
        return Err(throttled(peer, retry_after_secs));
    }
    let verified = verify_digest(&keys.load(), presented);
    match verified {
        // A key that matched but may not be used now: refused, and not a failed
        // authentication (the caller holds a real key; the throttle is for guessing).
        Some(key) => match key.policy.refusal(unix_now()) {
            Some(refusal) => Err(refused(refusal)),
            None => Ok(Caller {
                name: Arc::from(key.name.as_str()),
                key: Some(key),
            }),
        },
        None => {
            let throttled_for = limiter.auth_failed(peer).await?;
            auth_log::failed(counted_as, throttled_for);
            Err(match throttled_for {
                Some(retry_after_secs) => throttled(peer, retry_after_secs),
                None => ApiError::Unauthorized {
                    token_presented: true,
                },
            })
        }
    }
}

/// The 401 of a known key its policy stops: it says why, and nothing of the key.
fn refused(refusal: KeyRefusal) -> ApiError {
    ApiError::KeyRefused(match refusal {
        KeyRefusal::Disabled => {
            "This API key is disabled. Ask the gateway's operator to enable it."
        }
        KeyRefusal::Expired => {
            "This API key has expired. Ask the gateway's operator for a new one."
        }
    })
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// The 429 of the failed-auth throttle: it names the cause and when it ends.
fn throttled(peer: IpAddr, retry_after_secs: u64) -> ApiError {
    let ends = SystemTime::now() + Duration::from_secs(retry_after_secs);
    ApiError::AuthThrottled {
        retry_after_secs,
        client: peer.to_canonical(),
        until: crate::wire::time::rfc3339(
            ends.duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs() as i64,
        ),
    }
}

impl<S> Service<Request<Body>> for RequireApiKey<S>
where
    S: Service<Request<Body>, Response = Response> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<Body>) -> Self::Future {
        crate::telemetry::record_route(request.extensions().get::<MatchedPath>());
        let first = self.first(&request);
        // The clone that was driven to readiness goes into the future (tower's rule).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let (keys, limiter) = (self.keys.clone(), self.limiter.clone());
        Box::pin(async move {
            let caller = match first {
                Ok(First::Public) => Ok(None),
                Ok(First::Caller(caller)) => Ok(Some(caller)),
                Ok(First::Compare(peer, presented)) => {
                    compare(&keys, &limiter, peer, &presented).await.map(Some)
                }
                Err(error) => Err(error),
            };
            if let Ok(Some(caller)) = &caller {
                crate::telemetry::record_caller(&caller.name);
            }
            match caller {
                // Public routes carry no caller and are not metered.
                Ok(None) => inner.call(request).await,
                // Right after the boundary: the caller's rate and concurrency limits.
                Ok(Some(caller)) => match limiter.admit(&caller).await {
                    Err(refused) => {
                        crate::telemetry::count_refusal(&refused);
                        Ok(refused.into_response())
                    }
                    Ok(slot) => {
                        request.extensions_mut().insert(caller);
                        let mut response = inner.call(request).await?;
                        response.extensions_mut().insert(Authenticated);
                        Ok(match slot {
                            Some(slot) => response.map(|body| HoldBody::wrap(body, slot)),
                            None => response,
                        })
                    }
                },
                Err(error) => {
                    crate::telemetry::count_refusal(&error);
                    Ok(error.into_response())
                }
            }
        })
    }
}

/// The client headers that may travel upstream, credentials removed: the one list every
/// protocol's turn forwards.
pub fn client_headers(headers: &HeaderMap) -> std::sync::Arc<HeaderMap> {
    let token = || extract_token(headers).ok().flatten();
    std::sync::Arc::new(crate::upstream::headers::forwardable_with(headers, token))
}

/// The caller the auth layer recorded. Missing means the request never passed the auth
/// layer: fail closed.
fn caller_of(parts: &axum::http::request::Parts) -> Result<&Caller, ApiError> {
    parts
        .extensions
        .get::<Caller>()
        .ok_or(ApiError::Unauthorized {
            token_presented: false,
        })
}

/// The caller's key as the auth layer matched it (`None` in keyless mode): its policy
/// travels with the turn.
pub struct Tenant(pub Option<Arc<ClientKey>>);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Tenant {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, ApiError> {
        caller_of(parts).map(|caller| Tenant(caller.key.clone()))
    }
}

/// The caller's name, as the auth layer recorded it. Missing means the request never
/// passed the auth layer: fail closed.
pub struct Owner(pub std::sync::Arc<str>);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Owner {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, ApiError> {
        caller_of(parts).map(|caller| Owner(caller.name.clone()))
    }
}
