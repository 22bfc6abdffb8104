//! Pure translations between wire formats: no I/O, no state, unit-tested on recorded shapes.

pub mod output;
pub mod raw;
pub mod responses;
pub mod responses_items;
pub mod responses_reply;
pub mod responses_stream;
pub mod responses_tools;
pub mod stored_items;
pub mod translated;

use crate::wire::error::ApiError;

/// A request the gateway cannot translate faithfully: a 400 naming the parameter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub message: String,
    pub param: String,
}

impl Refusal {
    pub fn new(param: impl Into<String>, message: impl Into<String>) -> Self {
        Refusal {
            message: message.into(),
            param: param.into(),
        }
    }
}

impl From<Refusal> for ApiError {
    fn from(refusal: Refusal) -> Self {
        ApiError::InvalidParam {
            message: refusal.message,
            param: refusal.param,
        }
    }
}

/// Wall-clock seconds since the Unix epoch (0 if the clock is before it).
pub fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// `prefix_` + 128 random bits as 32 lowercase hex characters.
pub fn random_id(prefix: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut bytes = [0u8; 16];
    // getrandom only fails without an OS entropy source; a time-seeded fallback would
    // still be unique per process, but every supported platform has one.
    let _ = getrandom::getrandom(&mut bytes);
    let mut id = String::with_capacity(prefix.len() + 33);
    id.push_str(prefix);
    id.push('_');
    for byte in bytes {
        id.push(char::from(HEX[usize::from(byte >> 4)]));
        id.push(char::from(HEX[usize::from(byte & 15)]));
    }
    id
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_output;
#[cfg(test)]
mod tests_raw;
#[cfg(test)]
mod tests_shapes;
