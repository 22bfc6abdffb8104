//! The fallback for paths no route serves: a 404 that names the method and path, and
//! says when the path is an OpenAI API route this gateway does not implement.

use axum::http::{Method, Uri};

use crate::wire::error::ApiError;

/// OpenAI API routes gatewayd does not serve (matched on whole path segments). Clients
/// that call them learn it is the gateway, not the model, that is missing. Remove an
/// entry when its route lands.
const OPENAI_ROUTES: &[&str] = &[
    "/v1/images",
    "/v1/audio",
    "/v1/moderations",
    "/v1/files",
    "/v1/uploads",
    "/v1/batches",
    "/v1/fine_tuning",
    "/v1/fine-tunes",
    "/v1/assistants",
    "/v1/threads",
    "/v1/vector_stores",
    "/v1/realtime",
    "/v1/evals",
    "/v1/containers",
    "/v1/organization",
    "/v1/chat/completions/",
];

pub async fn fallback(method: Method, uri: Uri) -> ApiError {
    let path = uri.path();
    let shown: String = path.chars().take(200).collect();
    let openai = OPENAI_ROUTES
        .iter()
        .any(|route| match route.strip_suffix('/') {
            Some(parent) => path.starts_with(route) && path.len() > parent.len() + 1,
            None => path == *route || path.starts_with(&format!("{route}/")),
        });
    if openai {
        ApiError::NotFound {
            message: format!(
                "{method} {shown} is an OpenAI API route that this gateway does not support. \
                 gatewayd serves chat completions, completions, embeddings, models and sessions; \
                 see docs/api.md."
            ),
            code: Some("unsupported_route"),
        }
    } else {
        ApiError::NotFound {
            message: format!(
                "No route for {method} {shown}. See docs/api.md for the routes gatewayd serves."
            ),
            code: Some("unknown_route"),
        }
    }
}
