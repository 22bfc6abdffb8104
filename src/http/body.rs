//! Request bodies: JSON only (415 otherwise), at most `max_body_bytes` (413), in time (408).

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderMap};

use crate::wire::error::ApiError;

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
        } else if super::body_deadline::is_timeout(&err) {
            ApiError::RequestTimeout
        } else {
            ApiError::bad_request("The request body could not be read.", None)
        }
    })
}
