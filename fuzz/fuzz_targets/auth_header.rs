//! Credential parsing: `parse_bearer` on raw bytes, and `extract_token` on a header map
//! holding 0-3 Authorization / x-api-key values taken from the input.
//!
//! Input layout: byte 0 is a control byte (bits 0-1: how many headers, 0-3; bits 2-4:
//! for header i, bit 2+i set means x-api-key, clear means Authorization). The rest is
//! split on b'\n' and the first pieces become the header values (pieces that
//! `HeaderValue::from_bytes` refuses are skipped). `parse_bearer` also sees the whole
//! input and every piece.
#![no_main]

use gatewayd::auth::{extract_token, parse_bearer, CredentialError};
use http::header::{HeaderMap, HeaderName, HeaderValue, AUTHORIZATION};
use libfuzzer_sys::fuzz_target;

/// RFC 6750 `b64token`: 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="
fn is_b64token(t: &[u8]) -> bool {
    let body_len = t.len() - t.iter().rev().take_while(|&&b| b == b'=').count();
    let body = &t[..body_len];
    !body.is_empty()
        && body
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~+/".contains(b))
}

/// What may sit between "Bearer" and the token: one or more SP (RFC 7235). The fuzzer
/// once found `parse_bearer` also skipping HTAB ("Bearer \tx"); that was fixed, and this
/// check is strict so it stays fixed.
fn is_separator(b: u8) -> bool {
    const STRICT_SEPARATOR: bool = true;
    if STRICT_SEPARATOR {
        b == b' '
    } else {
        b.is_ascii_whitespace()
    }
}

/// True when `inner` points into `outer`'s memory (a real subslice, not a copy).
fn is_subslice(inner: &[u8], outer: &[u8]) -> bool {
    let (o, i) = (outer.as_ptr() as usize, inner.as_ptr() as usize);
    i >= o && i + inner.len() <= o + outer.len()
}

/// Checks one `parse_bearer` call against the documented grammar.
fn check_bearer(input: &[u8]) -> Option<&[u8]> {
    let out = parse_bearer(input);
    if let Some(token) = out {
        assert!(!token.is_empty(), "empty bearer token from {input:?}");
        assert!(is_b64token(token), "non-token68 bearer token {token:?}");
        assert!(
            is_subslice(token, input),
            "bearer token is not a subslice of its input"
        );
        // The token is a suffix; before it: "bearer" (any case), a space, separators.
        let prefix = &input[..input.len() - token.len()];
        assert_eq!(token, &input[prefix.len()..]);
        assert!(prefix.len() >= 7, "prefix too short: {prefix:?}");
        assert!(
            prefix[..6].eq_ignore_ascii_case(b"bearer"),
            "bad scheme: {prefix:?}"
        );
        assert_eq!(prefix[6], b' ', "bad separator: {prefix:?}");
        assert!(
            prefix[6..].iter().all(|&b| is_separator(b)),
            "bad separator: {prefix:?}"
        );
    } else if input.len() >= 7 && input[..6].eq_ignore_ascii_case(b"bearer") && input[6] == b' ' {
        // Conversely: a well-formed header must be accepted.
        let rest = &input[6..];
        let token = &rest[rest.iter().take_while(|&&b| is_separator(b)).count()..];
        assert!(
            !is_b64token(token),
            "rejected a valid bearer header {input:?}"
        );
    }
    out
}

fuzz_target!(|data: &[u8]| {
    check_bearer(data);
    let Some((&control, rest)) = data.split_first() else {
        return;
    };
    for piece in rest.split(|&b| b == b'\n') {
        check_bearer(piece);
    }

    let count = usize::from(control & 3);
    let x_api_key = HeaderName::from_static("x-api-key");
    let mut headers = HeaderMap::new();
    let (mut n_auth, mut n_key) = (0usize, 0usize);
    for (i, piece) in rest.split(|&b| b == b'\n').take(count).enumerate() {
        let Ok(value) = HeaderValue::from_bytes(piece) else {
            continue;
        };
        if control & (4 << i) != 0 {
            headers.append(x_api_key.clone(), value);
            n_key += 1;
        } else {
            headers.append(AUTHORIZATION, value);
            n_auth += 1;
        }
    }

    let result = extract_token(&headers);
    let auth_value = headers.get(AUTHORIZATION).map(HeaderValue::as_bytes);
    let key_value = headers.get(&x_api_key).map(HeaderValue::as_bytes);
    match result {
        Err(CredentialError::Duplicate) => assert!(n_auth > 1 || n_key > 1),
        Err(e) => {
            assert!(n_auth <= 1 && n_key <= 1, "{e:?} with duplicate headers");
            let bearer = auth_value.map(parse_bearer);
            let key_ok = key_value.map(is_b64token);
            match e {
                CredentialError::Malformed => {
                    assert!(bearer == Some(None) || key_ok == Some(false))
                }
                CredentialError::Conflicting => {
                    let (Some(Some(a)), Some(k)) = (bearer, key_value) else {
                        panic!("Conflicting without two valid tokens");
                    };
                    assert!(is_b64token(k));
                    assert_ne!(a, k);
                }
                CredentialError::Duplicate => unreachable!(),
            }
        }
        Ok(None) => assert_eq!((n_auth, n_key), (0, 0), "headers present but no token"),
        Ok(Some(token)) => {
            assert!(n_auth <= 1 && n_key <= 1, "token despite duplicate headers");
            assert!(!token.is_empty());
            assert!(is_b64token(token), "non-token68 token {token:?}");
            // A subslice of the header value it came from, and of the fuzz input.
            let from_auth = auth_value.is_some_and(|v| is_subslice(token, v));
            let from_key = key_value.is_some_and(|v| is_subslice(token, v));
            assert!(
                from_auth || from_key,
                "token is not a subslice of a header value"
            );
            assert!(
                rest.windows(token.len()).any(|w| w == token),
                "token is not part of the input"
            );
            if let Some(k) = key_value {
                assert_eq!(token, k, "x-api-key and returned token differ");
            }
            if let Some(a) = auth_value {
                assert_eq!(Some(token), parse_bearer(a));
            }
        }
    }
});
