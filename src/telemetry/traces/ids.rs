//! Trace and span ids, and the W3C `traceparent` header that carries them between services.

use std::cell::Cell;

use http::HeaderValue;

/// A span's place in a trace: its trace id and its own span id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpanIds {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
}

thread_local! {
    /// Per-thread id generator state, seeded from the OS once per thread.
    static STATE: Cell<u64> = Cell::new(seed());
}

fn seed() -> u64 {
    let mut bytes = [0u8; 8];
    let _ = getrandom::getrandom(&mut bytes);
    // Never zero: an all-zero id is invalid, and a zero state would stay zero.
    u64::from_le_bytes(bytes) | 1
}

/// SplitMix64: fast, well spread, and enough for ids that must be unique, not secret.
fn next_u64() -> u64 {
    STATE.with(|state| {
        let next = state.get().wrapping_add(0x9E37_79B9_7F4A_7C15);
        state.set(next);
        let mut z = next;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    })
}

/// A new, non-zero span id.
pub fn new_span_id() -> [u8; 8] {
    loop {
        let id = next_u64();
        if id != 0 {
            return id.to_be_bytes();
        }
    }
}

/// A new, non-zero trace id.
pub fn new_trace_id() -> [u8; 16] {
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&next_u64().to_be_bytes());
    id[8..].copy_from_slice(&new_span_id());
    id
}

/// Reads a `traceparent` (version 00 layout; later versions are read the same way, as
/// the spec asks). `None` for anything malformed or with an all-zero id.
pub fn parse_traceparent(value: &[u8]) -> Option<(SpanIds, bool)> {
    let value = value.trim_ascii();
    if value.len() < 55 || (value.len() > 55 && value.get(55) != Some(&b'-')) {
        return None;
    }
    let fields: [&[u8]; 4] = [&value[0..2], &value[3..35], &value[36..52], &value[53..55]];
    if value[2] != b'-' || value[35] != b'-' || value[52] != b'-' {
        return None;
    }
    let [version, trace, span, flags] = fields;
    let lower_hex = |s: &[u8]| s.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    if !fields.iter().all(|f| lower_hex(f))
        || version == b"ff"
        || (version == b"00" && value.len() != 55)
    {
        return None;
    }
    let mut ids = SpanIds {
        trace_id: [0; 16],
        span_id: [0; 8],
    };
    hex::decode_to_slice(trace, &mut ids.trace_id).ok()?;
    hex::decode_to_slice(span, &mut ids.span_id).ok()?;
    let mut flag = [0u8; 1];
    hex::decode_to_slice(flags, &mut flag).ok()?;
    if ids.trace_id == [0; 16] || ids.span_id == [0; 8] {
        return None;
    }
    Some((ids, flag[0] & 1 == 1))
}

/// The `traceparent` naming `ids` as the parent of whatever the receiver does; gatewayd
/// exports every span it makes, so the sampled flag is set.
pub fn traceparent(ids: &SpanIds) -> HeaderValue {
    let mut text = [0u8; 55];
    text[..3].copy_from_slice(b"00-");
    let _ = hex::encode_to_slice(ids.trace_id, &mut text[3..35]);
    text[35] = b'-';
    let _ = hex::encode_to_slice(ids.span_id, &mut text[36..52]);
    text[52..].copy_from_slice(b"-01");
    HeaderValue::from_bytes(&text).unwrap_or(HeaderValue::from_static(
        "00-00000000000000000000000000000000-0000000000000000-00",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_traceparent_round_trips() {
        let (ids, sampled) = parse_traceparent(GOOD.as_bytes()).unwrap();
        assert!(sampled);
        assert_eq!(
            hex::encode(ids.trace_id),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(traceparent(&ids), GOOD);
        let (_, sampled) = parse_traceparent(
            &GOOD.as_bytes()[..54]
                .iter()
                .chain(b"0")
                .copied()
                .collect::<Vec<_>>(),
        )
        .unwrap();
        assert!(!sampled);
    }

    #[test]
    fn malformed_values_are_refused() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
        ] {
            assert!(parse_traceparent(bad.as_bytes()).is_none(), "{bad}");
        }
        // A later version may add fields after a dash.
        let later = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-more";
        assert!(parse_traceparent(later.as_bytes()).is_some());
    }

    #[test]
    fn ids_are_never_zero_and_differ() {
        let (a, b) = (new_trace_id(), new_trace_id());
        assert_ne!(a, b);
        assert_ne!(a, [0; 16]);
        assert_ne!(new_span_id(), new_span_id());
    }
}
