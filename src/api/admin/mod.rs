//! The admin API, served only on `[admin] listen` and only to the admin key: runtime keys and usage. Declarations and the route table.

mod fields;
mod keys;
mod usage;

use axum::routing::get;
use axum::Router;

use super::state::AppState;

/// Every admin route. The auth layer in front of them (see `router::admin_app`) accepts
/// the admin key alone.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/admin/v1/keys", get(keys::list).post(keys::create))
        .route(
            "/admin/v1/keys/{name}",
            get(keys::show).patch(keys::update).delete(keys::revoke),
        )
        .route("/admin/v1/usage", get(usage::report))
}
