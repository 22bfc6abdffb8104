//! The fallback for paths no route serves: a 404 that names the method and path, and
//! says when the path is an OpenAI API route this gateway does not implement, listing
//! what it does serve.

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

/// Every route pattern the API serves, with what a client would call it. The 404 lists
/// these names; `tests/routes.rs` checks that every pattern here is served and that every
/// route the source registers is here, so the list cannot drift from the router.
pub const SERVED_ROUTES: &[(&str, &str)] = &[
    ("chat completions", "/v1/chat/completions"),
    ("completions", "/v1/completions"),
    ("embeddings", "/v1/embeddings"),
    ("models", "/v1/models"),
    ("models", "/v1/models/{*id}"),
    ("Responses", "/v1/responses"),
    ("Responses", "/v1/responses/{id}"),
    ("Responses", "/v1/responses/{id}/input_items"),
    ("Conversations", "/v1/conversations"),
    ("Conversations", "/v1/conversations/{id}"),
    ("Conversations", "/v1/conversations/{id}/items"),
    ("Conversations", "/v1/conversations/{id}/items/{item_id}"),
    ("Anthropic Messages", "/v1/messages"),
    ("Anthropic Messages", "/v1/messages/count_tokens"),
    ("sessions", "/v1/sessions"),
    ("sessions", "/v1/sessions/{id}"),
    ("health", "/health"),
    ("health", "/health/ready"),
    ("metrics", "/metrics"),
];

/// "chat completions, completions, … and metrics": each name once, in table order.
fn served_names() -> String {
    let mut names: Vec<&str> = Vec::new();
    for (name, _) in SERVED_ROUTES {
        if !names.contains(name) {
            names.push(name);
        }
    }
    match names.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} and {last}", rest.join(", ")),
        Some((last, _)) => last.to_string(),
        None => String::new(),
    }
}

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
                 gatewayd serves {}; see docs/api.md.",
                served_names()
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
