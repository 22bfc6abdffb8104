//! The one error type a client ever sees, rendered in the OpenAI error shape.

use axum::extract::rejection::JsonRejection;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// Every failure that reaches HTTP. Messages are safe to show: they never contain
/// key material, upstream URLs or upstream keys. Internal causes are logged where
/// they happen, not carried here.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{message}")]
    BadRequest {
        message: String,
        param: Option<&'static str>,
        code: Option<&'static str>,
    },
    /// A 400 whose parameter is only known at run time (e.g. `input[3].type`).
    #[error("{message}")]
    InvalidParam { message: String, param: String },
    #[error("Invalid or missing API key. Send it as 'Authorization: Bearer <key>'.")]
    Unauthorized { token_presented: bool },
    /// A known key that may not be used now: disabled, or past its `expires_at`.
    #[error("{0}")]
    KeyRefused(&'static str),
    #[error("{0}")]
    Forbidden(String),
    #[error("{message}")]
    NotFound {
        message: String,
        code: Option<&'static str>,
    },
    /// The thing to create exists already (a key name in the admin API).
    #[error("{0}")]
    Conflict(String),
    #[error("Method not allowed for this route.")]
    MethodNotAllowed,
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("Content-Type must be application/json.")]
    UnsupportedMediaType,
    #[error("The request has too many header fields.")]
    HeadersTooLarge,
    #[error("The request body did not arrive in time; send it at once, not a trickle.")]
    RequestTimeout,
    #[error("Rate limit exceeded; retry after {retry_after_secs} s.")]
    RateLimited { retry_after_secs: u64 },
    /// The failed-auth throttle: this client address sent too many wrong keys, so every
    /// request from it is refused for a while, whatever key it carries.
    #[error(
        "Too many failed authentications from this address ({client}): every request from it is refused, whatever key it sends, until {until} (retry after {retry_after_secs} s)."
    )]
    AuthThrottled {
        retry_after_secs: u64,
        /// The client address the failures were counted against (the caller's own).
        client: std::net::IpAddr,
        /// When the refusal ends, RFC 3339 UTC.
        until: String,
    },
    #[error("The upstream model provider failed to answer. Try again later.")]
    BadGateway,
    #[error("The upstream model provider did not answer in time.")]
    GatewayTimeout,
    #[error("The upstream ended its stream before the reply was complete.")]
    UpstreamTruncated,
    #[error("The gateway is shutting down.")]
    Unavailable,
    /// Every upstream serving the model is open (failing) or at its `max_in_flight`.
    #[error(
        "No upstream serving this model is available right now; retry after {retry_after_secs} s."
    )]
    UpstreamUnavailable { retry_after_secs: u64 },
    #[error("Session storage is unavailable, so nothing was stored. Retry shortly.")]
    StorageUnavailable,
    #[error("Another request is still continuing this session. Retry when it has finished.")]
    SessionBusy,
    #[error("This key has reached its limit of {0} sessions. Delete sessions it no longer needs.")]
    SessionLimitReached(usize),
    /// `[responses] max_bytes_per_key`: the key's stored responses would pass their quota.
    #[error(
        "This key's stored responses would exceed their quota of {0} bytes. Delete stored responses it no longer needs, or send \"store\": false."
    )]
    StorageQuotaExceeded(u64),
    /// The caller's key may not use this model (`models` in its policy).
    #[error("This key may not use the model '{model}'.")]
    ModelNotAllowed { model: String },
    /// A token budget of the caller's key would be passed by this request's reservation.
    #[error(
        "This key's {window} token budget of {limit} is spent (the request reserves {reserve} tokens); it resets at {resets_at}."
    )]
    BudgetExceeded {
        /// `daily`, `monthly` or `total`.
        window: &'static str,
        limit: u64,
        reserve: u64,
        /// RFC 3339 UTC, or "never" for the total budget.
        resets_at: String,
        /// Seconds until the window resets; `None` for the total budget.
        retry_after_secs: Option<u64>,
    },
    #[error("Internal error.")]
    Internal,
    /// `[limits] redis_failure = "closed"` while Redis cannot be reached.
    #[error(
        "Rate limits cannot be checked right now, so the request was not admitted. Retry shortly."
    )]
    LimitsUnavailable,
}

impl ApiError {
    pub fn bad_request(message: impl Into<String>, param: Option<&'static str>) -> Self {
        ApiError::BadRequest {
            message: message.into(),
            param,
            code: None,
        }
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        ApiError::NotFound {
            message: message.into(),
            code: None,
        }
    }

    pub fn status_code(&self) -> StatusCode {
        match self {
            ApiError::BadRequest { .. } | ApiError::InvalidParam { .. } => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized { .. } | ApiError::KeyRefused(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) | ApiError::ModelNotAllowed { .. } => StatusCode::FORBIDDEN,
            ApiError::NotFound { .. } => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ApiError::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            ApiError::RateLimited { .. } | ApiError::AuthThrottled { .. } => {
                StatusCode::TOO_MANY_REQUESTS
            }
            ApiError::BadGateway | ApiError::UpstreamTruncated => StatusCode::BAD_GATEWAY,
            ApiError::GatewayTimeout => StatusCode::GATEWAY_TIMEOUT,
            ApiError::Unavailable
            | ApiError::StorageUnavailable
            | ApiError::LimitsUnavailable
            | ApiError::UpstreamUnavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::SessionBusy | ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::SessionLimitReached(_)
            | ApiError::StorageQuotaExceeded(_)
            | ApiError::BudgetExceeded { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_type(&self) -> &'static str {
        match self {
            ApiError::Unauthorized { .. } | ApiError::Forbidden(_) => "invalid_request_error",
            ApiError::RateLimited { .. }
            | ApiError::AuthThrottled { .. }
            | ApiError::SessionLimitReached(_)
            | ApiError::StorageQuotaExceeded(_)
            | ApiError::BudgetExceeded { .. } => "rate_limit_error",
            ApiError::BadGateway
            | ApiError::GatewayTimeout
            | ApiError::Unavailable
            | ApiError::UpstreamTruncated
            | ApiError::UpstreamUnavailable { .. } => "upstream_error",
            ApiError::Internal | ApiError::StorageUnavailable | ApiError::LimitsUnavailable => {
                "server_error"
            }
            _ => "invalid_request_error",
        }
    }

    fn code(&self) -> Option<&'static str> {
        match self {
            ApiError::BadRequest { code, .. } | ApiError::NotFound { code, .. } => *code,
            ApiError::Unauthorized { .. } => Some("invalid_api_key"),
            ApiError::KeyRefused(_) => Some("key_not_usable"),
            ApiError::Forbidden(_) => Some("forbidden"),
            ApiError::ModelNotAllowed { .. } => Some("model_not_allowed"),
            ApiError::BudgetExceeded { .. } => Some("budget_exceeded"),
            ApiError::RateLimited { .. } => Some("rate_limit_exceeded"),
            ApiError::AuthThrottled { .. } => Some("failed_auth_throttled"),
            ApiError::PayloadTooLarge(_) => Some("payload_too_large"),
            ApiError::UnsupportedMediaType => Some("unsupported_media_type"),
            ApiError::HeadersTooLarge => Some("request_headers_too_large"),
            ApiError::RequestTimeout => Some("request_timeout"),
            ApiError::GatewayTimeout => Some("upstream_timeout"),
            ApiError::BadGateway => Some("upstream_error"),
            ApiError::UpstreamTruncated => Some("upstream_truncated"),
            ApiError::UpstreamUnavailable { .. } => Some("upstream_unavailable"),
            ApiError::StorageUnavailable => Some("storage_unavailable"),
            ApiError::LimitsUnavailable => Some("limits_unavailable"),
            ApiError::SessionBusy => Some("session_busy"),
            ApiError::Conflict(_) => Some("already_exists"),
            ApiError::SessionLimitReached(_) => Some("session_limit_reached"),
            ApiError::StorageQuotaExceeded(_) => Some("storage_quota_exceeded"),
            _ => None,
        }
    }

    fn param(&self) -> Option<&str> {
        match self {
            ApiError::BadRequest { param, .. } => *param,
            ApiError::InvalidParam { param, .. } => Some(param),
            _ => None,
        }
    }

    /// The OpenAI error object, also used for the final event of a failed stream.
    pub fn body(&self) -> serde_json::Value {
        json!({
            "error": {
                "message": self.to_string(),
                "type": self.error_type(),
                "param": self.param(),
                "code": self.code(),
            }
        })
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status_code(), axum::Json(self.body())).into_response();
        let headers = response.headers_mut();
        match &self {
            ApiError::KeyRefused(_) => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static(r#"Bearer realm="gatewayd", error="invalid_token""#),
                );
            }
            ApiError::Unauthorized { token_presented } => {
                let challenge = if *token_presented {
                    r#"Bearer realm="gatewayd", error="invalid_token""#
                } else {
                    r#"Bearer realm="gatewayd""#
                };
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static(challenge),
                );
            }
            ApiError::RateLimited { retry_after_secs }
            | ApiError::AuthThrottled {
                retry_after_secs, ..
            }
            | ApiError::UpstreamUnavailable { retry_after_secs } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_secs));
            }
            ApiError::StorageUnavailable | ApiError::SessionBusy | ApiError::LimitsUnavailable => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            // Retrying cannot help until the key frees storage: the OpenAI SDKs read this
            // and do not retry the 429.
            ApiError::StorageQuotaExceeded(_) => {
                headers.insert("x-should-retry", HeaderValue::from_static("false"));
            }
            // A spent budget does not come back by retrying soon: the SDKs must not retry.
            ApiError::BudgetExceeded {
                retry_after_secs, ..
            } => {
                headers.insert("x-should-retry", HeaderValue::from_static("false"));
                if let Some(secs) = retry_after_secs {
                    headers.insert(header::RETRY_AFTER, HeaderValue::from(*secs));
                }
            }
            _ => {}
        }
        response
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        match rejection {
            JsonRejection::MissingJsonContentType(_) => ApiError::UnsupportedMediaType,
            JsonRejection::BytesRejection(_) => {
                ApiError::PayloadTooLarge("Request body is too large or could not be read.".into())
            }
            other => ApiError::bad_request(
                format!("Request body is not valid JSON: {}", other.body_text()),
                None,
            ),
        }
    }
}

/// `Json<T>` whose rejection is an [`ApiError`], so malformed bodies get OpenAI-shaped errors.
#[derive(axum::extract::FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct Json<T>(pub T);

impl<T: serde::Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}
