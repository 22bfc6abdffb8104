//! HTTP resources. Each module is a table of paths → thin handlers; the router merges them.

pub mod chat;
pub mod conversations;
pub mod health;
pub mod metrics;
pub mod models;
pub mod responses;
pub mod sessions;
pub mod unsupported;

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderMap};

use crate::error::ApiError;

/// POST bodies must be JSON. This also stops text/plain "simple request" CSRF.
pub fn require_json(headers: &HeaderMap) -> Result<(), ApiError> {
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|mime| {
            let mime = mime.trim();
            mime.eq_ignore_ascii_case("application/json")
        });
    if is_json {
        Ok(())
    } else {
        Err(ApiError::UnsupportedMediaType)
    }
}

/// A request body that must be JSON. A Content-Type header must say JSON (else 415).
/// Without one, a keyed gateway reads the body and accepts it if it parses as JSON, as
/// OpenAI does; keyless mode insists on the header, because there it is the CSRF defence.
pub async fn read_json_body(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
    keyless: bool,
) -> Result<Bytes, ApiError> {
    if headers.contains_key(header::CONTENT_TYPE) || keyless {
        require_json(headers)?;
        return read_body(body, limit).await;
    }
    let body = read_body(body, limit).await?;
    match serde_json::from_slice::<serde::de::IgnoredAny>(&body) {
        Ok(_) => Ok(body),
        Err(_) => Err(ApiError::UnsupportedMediaType),
    }
}

/// Reads the whole body, refusing more than `limit` bytes, chunked or not.
pub async fn read_body(body: Body, limit: usize) -> Result<Bytes, ApiError> {
    axum::body::to_bytes(body, limit).await.map_err(|err| {
        let too_large = std::error::Error::source(&err)
            .is_some_and(|s| s.is::<http_body_util::LengthLimitError>())
            || err.to_string().contains("length limit");
        if too_large {
            ApiError::PayloadTooLarge(format!("Request body exceeds the limit of {limit} bytes."))
        } else if crate::body_deadline::is_timeout(&err) {
            ApiError::RequestTimeout
        } else {
            ApiError::bad_request("The request body could not be read.", None)
        }
    })
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
        parts
            .extensions
            .get::<crate::auth::Caller>()
            .map(|caller| Owner(caller.name.clone()))
            .ok_or(ApiError::Unauthorized {
                token_presented: false,
            })
    }
}

/// The `limit` of a list request: 20 when absent, otherwise 1 to 100.
pub fn page_limit(limit: Option<usize>) -> Result<usize, ApiError> {
    let limit = limit.unwrap_or(20);
    if (1..=100).contains(&limit) {
        Ok(limit)
    } else {
        Err(ApiError::bad_request(
            "'limit' must be between 1 and 100.",
            Some("limit"),
        ))
    }
}
