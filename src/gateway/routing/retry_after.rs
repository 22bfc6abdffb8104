//! `Retry-After` as an upstream sends it: delay seconds, or an HTTP date.

use std::time::{Duration, SystemTime};

use axum::http::{header, HeaderMap};

/// How long the upstream asked to be left alone, in milliseconds; `None` when it did not
/// say, or said something unreadable or already past.
pub fn retry_after_ms(headers: &HeaderMap) -> Option<u64> {
    let value = headers.get(header::RETRY_AFTER)?.to_str().ok()?.trim();
    let wait = match value.parse::<u64>() {
        Ok(seconds) => Duration::from_secs(seconds),
        Err(_) => {
            let at = httpdate::parse_http_date(value).ok()?;
            at.duration_since(SystemTime::now()).ok()?
        }
    };
    let ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX);
    (ms > 0).then_some(ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::RETRY_AFTER, value.parse().unwrap());
        headers
    }

    #[test]
    fn seconds_and_dates() {
        assert_eq!(retry_after_ms(&headers("3")), Some(3_000));
        assert_eq!(retry_after_ms(&headers("0")), None);
        assert_eq!(retry_after_ms(&headers("soon")), None);
        assert_eq!(retry_after_ms(&HeaderMap::new()), None);
        let later = SystemTime::now() + Duration::from_secs(30);
        let ms = retry_after_ms(&headers(&httpdate::fmt_http_date(later))).unwrap();
        assert!((28_000..=30_000).contains(&ms), "{ms}");
        let past = httpdate::fmt_http_date(SystemTime::now() - Duration::from_secs(30));
        assert_eq!(retry_after_ms(&headers(&past)), None);
    }
}
