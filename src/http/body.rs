//! Request bodies: JSON only (415 otherwise), at most `max_body_bytes` (413), in time
//! (408), and nested at most [`MAX_JSON_DEPTH`] levels deep (400).

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

/// JSON nested deeper than this is refused at the door. serde_json reads at most 127
/// levels into a value (its recursion limit is 128) and gatewayd reads a stored message
/// back inside a few more (a session's history, a stored response), so a body that
/// nests deeper would be stored and forwarded, yet read back as nothing.
pub const MAX_JSON_DEPTH: usize = 100;

/// The longest top-level field name an error names as its `param`.
const MAX_PARAM_LEN: usize = 64;

/// Reads the whole body, refusing more than `limit` bytes, chunked or not, and JSON
/// nested more than [`MAX_JSON_DEPTH`] levels deep (every body read here is JSON).
pub async fn read_body(body: Body, limit: usize) -> Result<Bytes, ApiError> {
    let body = read_bytes(body, limit).await?;
    match nesting_past(&body, MAX_JSON_DEPTH) {
        None => Ok(body),
        Some(field) => {
            let message = format!(
                "The request body nests JSON more than {MAX_JSON_DEPTH} levels deep; \
                 flatten it."
            );
            Err(match field {
                Some(param) => ApiError::InvalidParam { message, param },
                None => ApiError::bad_request(message, None),
            })
        }
    }
}

async fn read_bytes(body: Body, limit: usize) -> Result<Bytes, ApiError> {
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

/// Does `json` open more than `max` arrays and objects inside each other? If so, the
/// top-level field where it does (`Some(None)` when that has no short plain name). One
/// pass, no recursion and no allocation until found, so any input is safe: text that is
/// not JSON is scanned the same way and refused by the parse that follows.
fn nesting_past(json: &[u8], max: usize) -> Option<Option<String>> {
    let mut depth = 0usize;
    let mut top_level_object = false;
    let mut expecting_key = false;
    let mut key = (0, 0);
    let mut at = 0;
    while let Some(&byte) = json.get(at) {
        match byte {
            b'"' => {
                let start = at + 1;
                at = string_end(json, start)?;
                if depth == 1 && expecting_key {
                    key = (start, at);
                    expecting_key = false;
                }
            }
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return Some(param_name(json, top_level_object, key));
                }
                if depth == 1 {
                    top_level_object = byte == b'{';
                    expecting_key = top_level_object;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            b',' if depth == 1 => expecting_key = top_level_object,
            _ => {}
        }
        at += 1;
    }
    None
}

/// The index of the quote that closes the string starting at `from`; `None` when the
/// string never closes.
fn string_end(json: &[u8], mut from: usize) -> Option<usize> {
    loop {
        let found = from + memchr::memchr2(b'"', b'\\', json.get(from..)?)?;
        match json[found] {
            b'\\' => from = found + 2,
            _ => return Some(found),
        }
    }
}

fn param_name(json: &[u8], top_level_object: bool, (start, end): (usize, usize)) -> Option<String> {
    let name = json.get(start..end).filter(|_| top_level_object)?;
    let plain = !name.is_empty()
        && name.len() <= MAX_PARAM_LEN
        && name
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(b));
    plain.then(|| String::from_utf8_lossy(name).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nested(depth: usize) -> String {
        "[".repeat(depth) + &"]".repeat(depth)
    }

    #[test]
    fn depth_is_counted_outside_strings() {
        assert_eq!(nesting_past(nested(100).as_bytes(), 100), None);
        assert_eq!(nesting_past(nested(101).as_bytes(), 100), Some(None));
        let body = format!(
            r#"{{"model":"m","a[{{":"\"[[[[","messages":[{}]}}"#,
            nested(3)
        );
        assert_eq!(
            nesting_past(body.as_bytes(), 4),
            Some(Some("messages".into()))
        );
        assert_eq!(nesting_past(body.as_bytes(), 5), None);
        let braces = format!(r#"{{"input":[{{"content":{}}}]}}"#, nested(3));
        assert_eq!(
            nesting_past(braces.as_bytes(), 5),
            Some(Some("input".into()))
        );
    }

    #[test]
    fn any_input_is_safe() {
        let deep = "[".repeat(100_000);
        assert_eq!(nesting_past(deep.as_bytes(), 100), Some(None));
        for odd in [
            "",
            "\"",
            "\"\\",
            "\"\\\"",
            "{\"a",
            "]]]]{",
            "{\"a\\\"b\":[[[",
        ] {
            let _ = nesting_past(odd.as_bytes(), 1);
        }
        let unplain = format!(r#"{{"a b":{}}}"#, nested(5));
        assert_eq!(nesting_past(unplain.as_bytes(), 3), Some(None));
    }

    #[test]
    fn serde_json_reads_back_what_passes() {
        // The headroom the limit claims: what passes, wrapped twice more, still parses.
        let body = format!("[[{}]]", nested(MAX_JSON_DEPTH));
        assert!(serde_json::from_str::<serde_json::Value>(&body).is_ok());
    }
}
