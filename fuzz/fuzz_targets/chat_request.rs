//! Request-body validation: `parse_request` for chat completions on arbitrary bytes, and
//! `forward_body`'s byte splicing (model rename + history insert) on whatever it accepts.
#![no_main]

use bytes::Bytes;
use gatewayd::openai::{parse_request, Endpoint};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

const RENAMED: &str = "renamed-model";
const HISTORY: &[u8] = br#"{"role":"user","content":"h"}"#;

/// Known and accepted (see README.md): `parse_request` skips the fields it does not read, and
/// the values inside `messages`, with serde_json's skipping parser, which does not reject
/// numbers outside f64 range (`1e400`) or lone UTF-16 surrogate escapes (`"\ud800"`),
/// while `serde_json::Value` rejects both. So `{"model":"m","messages":[{}],"x":1e400}`
/// is accepted by the gateway and refused by a strict parser. With `STRICT_VALUE` false the
/// harness tolerates exactly those two error classes and keeps fuzzing. Both forms are
/// valid JSON grammar (RFC 8259 leaves number range and surrogate pairing to the
/// receiver); the gateway passes such fields through and the upstream decides.
const STRICT_VALUE: bool = false;

fn is_known_skip_leniency(e: &serde_json::Error) -> bool {
    let msg = e.to_string();
    msg.starts_with("number out of range")
        || msg.starts_with("unexpected end of hex escape")
        || msg.starts_with("lone leading surrogate in hex escape")
        || msg.starts_with("invalid unicode code point")
}

/// `forward_body` on a body only the lenient parser accepts: the edit must still be
/// accepted by `parse_request`, renamed, with one more message, history first.
fn check_lenient_forward(req: &gatewayd::openai::ChatRequest) {
    let before: Vec<&serde_json::value::RawValue> =
        serde_json::from_slice(req.messages_json().expect("messages span")).expect("messages");
    let n = before.len();
    let forwarded = req.forward_body(Some(RENAMED), Some(HISTORY));
    let again = parse_request(forwarded, Endpoint::ChatCompletions)
        .expect("forward_body output rejected by parse_request");
    assert_eq!(again.model, RENAMED);
    assert_eq!(again.stream, req.stream);
    let after: Vec<&serde_json::value::RawValue> =
        serde_json::from_slice(again.messages_json().expect("messages span")).expect("messages");
    assert_eq!(after.len(), n + 1);
    assert_eq!(after[0].get().as_bytes(), HISTORY);
    let tail: Vec<&str> = after[1..].iter().map(|r| r.get()).collect();
    let orig: Vec<&str> = before.iter().map(|r| r.get()).collect();
    assert_eq!(
        tail, orig,
        "forward_body changed the request's own messages"
    );
}

fuzz_target!(|data: &[u8]| {
    let Ok(req) = parse_request(Bytes::copy_from_slice(data), Endpoint::ChatCompletions) else {
        return;
    };

    // Anything accepted is a JSON object a standard parser reads the same way...
    let original: Value = match serde_json::from_slice(data) {
        Ok(v) => v,
        Err(e) if !STRICT_VALUE && is_known_skip_leniency(&e) => {
            // ...except for the known differential (see `STRICT_VALUE`): check the edit
            // with the same lenient parser instead, then stop.
            check_lenient_forward(&req);
            return;
        }
        Err(e) => panic!(
            "parse_request accepted a body serde_json::Value rejects ({e}): {:?}",
            String::from_utf8_lossy(data)
        ),
    };
    let object = original
        .as_object()
        .expect("accepted body is not an object");
    let model = object.get("model").and_then(Value::as_str);
    assert_eq!(model, Some(req.model.as_str()), "model differs");
    assert!(!req.model.is_empty());
    let messages = object
        .get("messages")
        .and_then(Value::as_array)
        .expect("accepted body has no messages array");
    assert!(!messages.is_empty(), "accepted empty messages");
    assert!(
        messages.iter().all(Value::is_object),
        "non-object message accepted"
    );
    assert_eq!(
        req.stream,
        object.get("stream") == Some(&Value::Bool(true)),
        "stream flag differs"
    );
    let raw_messages = req
        .messages_json()
        .expect("chat request without messages span");
    let reparsed: Value = serde_json::from_slice(raw_messages).expect("messages span is not JSON");
    assert_eq!(&reparsed, object.get("messages").unwrap_or(&Value::Null));

    // No edits: the very same bytes.
    assert_eq!(&req.forward_body(None, None)[..], data);
    assert_eq!(&req.forward_body(Some(req.model.as_str()), None)[..], data);

    // Rename + history: still JSON, model replaced, history first, nothing else changed.
    let forwarded = req.forward_body(Some(RENAMED), Some(HISTORY));
    let edited: Value = match serde_json::from_slice(&forwarded) {
        Ok(v) => v,
        Err(e) => panic!(
            "forward_body produced invalid JSON ({e}): {:?}",
            String::from_utf8_lossy(&forwarded)
        ),
    };
    let mut expected = original.clone();
    expected["model"] = Value::String(RENAMED.to_string());
    let history: Value = serde_json::from_slice(HISTORY).expect("history constant");
    if let Some(list) = expected["messages"].as_array_mut() {
        list.insert(0, history);
    }
    assert_eq!(
        edited["messages"].as_array().map(Vec::len),
        Some(messages.len() + 1)
    );
    assert_eq!(edited["model"], Value::String(RENAMED.to_string()));
    assert_eq!(
        edited, expected,
        "forward_body changed more than model and messages"
    );

    // And the edited body is itself accepted, with the new model.
    let again = parse_request(forwarded, Endpoint::ChatCompletions)
        .expect("forward_body output rejected by parse_request");
    assert_eq!(again.model, RENAMED);
    assert_eq!(again.stream, req.stream);
});
