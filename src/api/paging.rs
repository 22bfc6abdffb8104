//! Paging of list requests: the `limit` parameter.

use crate::wire::error::ApiError;

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
