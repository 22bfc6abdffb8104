//! Unit tests of the direct JSON writers: each compared with what serde_json writes for the `Value` the old code built.

use serde_json::{json, Value};

use super::output::{
    chat_messages, write_i64, write_items, write_str, write_u64, OutputItem, TokenUsage,
};
use super::responses_items::items_to_messages;

const AWKWARD: &[&str] = &[
    "",
    "plain",
    "quote \" backslash \\ slash /",
    "lines\n\r\t and \u{1}\u{1f}\u{7f}",
    "caf\u{e9} \u{2028} \u{1f600}",
    "</script>",
];

/// Written text, checked to be what serde_json writes for `expected`: the same keys in
/// the same (sorted) order with the same escapes.
fn same_as_value(written: Vec<u8>, expected: Value) {
    let written = String::from_utf8(written).unwrap();
    assert_eq!(written, expected.to_string());
}

fn message(text: Option<&str>, refusal: Option<&str>) -> OutputItem {
    OutputItem::Message {
        id: "msg_1".into(),
        status: "completed",
        text: text.map(String::from),
        refusal: refusal.map(String::from),
    }
}

fn call(call_id: &str, name: &str, arguments: &str) -> OutputItem {
    OutputItem::FunctionCall {
        id: "fc_1".into(),
        status: "completed",
        call_id: call_id.into(),
        name: name.into(),
        arguments: arguments.into(),
    }
}

#[test]
fn strings_and_numbers_are_written_as_serde_json_writes_them() {
    for text in AWKWARD {
        let mut out = Vec::new();
        write_str(&mut out, text);
        assert_eq!(out, serde_json::to_vec(text).unwrap(), "{text:?}");
    }
    // Every byte value at every position of an 8-byte chunk and of the tail.
    for byte in 0u8..0x80 {
        for at in 0..11 {
            let mut text = vec![b'a'; 11];
            text[at] = byte;
            let text = String::from_utf8(text).unwrap();
            let mut out = Vec::new();
            write_str(&mut out, &text);
            assert_eq!(out, serde_json::to_vec(&text).unwrap(), "{text:?}");
        }
    }
    for n in [0, 7, 10, 99, 12345, u64::MAX] {
        let mut out = Vec::new();
        write_u64(&mut out, n);
        assert_eq!(out, n.to_string().into_bytes());
    }
    for n in [0, -1, 42, i64::MIN, i64::MAX] {
        let mut out = Vec::new();
        write_i64(&mut out, n);
        assert_eq!(out, n.to_string().into_bytes());
    }
}

#[test]
fn items_are_written_with_their_old_shapes() {
    for text in AWKWARD {
        let mut out = Vec::new();
        write_items(
            &mut out,
            &[
                message(Some(text), Some(text)),
                message(None, None),
                call(text, text, text),
            ],
        );
        same_as_value(
            out,
            json!([
                {"id": "msg_1", "type": "message", "status": "completed", "role": "assistant",
                 "content": [
                    {"type": "output_text", "text": text, "annotations": [], "logprobs": []},
                    {"type": "refusal", "refusal": text}]},
                {"id": "msg_1", "type": "message", "status": "completed", "role": "assistant",
                 "content": []},
                {"id": "fc_1", "type": "function_call", "status": "completed", "call_id": text,
                 "name": text, "arguments": text},
            ]),
        );
    }
    let mut out = Vec::new();
    message(None, Some("no")).write(&mut out);
    same_as_value(
        out,
        json!({"id": "msg_1", "type": "message", "status": "completed", "role": "assistant",
               "content": [{"type": "refusal", "refusal": "no"}]}),
    );
}

#[test]
fn usage_is_written_with_its_details() {
    let usage = TokenUsage {
        input: 3,
        cached: 1,
        output: 2,
        reasoning: 0,
        total: 7,
    };
    let mut out = Vec::new();
    usage.write(&mut out);
    same_as_value(
        out,
        json!({"input_tokens": 3, "input_tokens_details": {"cached_tokens": 1},
               "output_tokens": 2, "output_tokens_details": {"reasoning_tokens": 0},
               "total_tokens": 7}),
    );
}

/// The stored messages are those `items_to_messages` makes of the items' JSON, as the
/// turn once stored them.
#[test]
fn stored_messages_are_those_of_the_items_json() {
    let lists = [
        vec![message(Some("hi"), None)],
        vec![message(Some(""), None)],
        vec![message(None, Some("no"))],
        vec![message(Some("a\"\n"), Some("b\u{1}"))],
        vec![call("call_1", "f", "{\"a\":1}")],
        vec![call("call_1", "f", ""), call("call_2", "g\u{e9}", "{}")],
        vec![
            message(Some("x"), None),
            call("c", "f", "{}"),
            call("d", "g", ""),
        ],
        vec![call("c", "f", "{}"), message(Some("after"), Some("no"))],
        vec![message(Some("one"), None), message(Some("two"), None)],
        vec![],
    ];
    for items in lists {
        let mut json = Vec::new();
        write_items(&mut json, &items);
        let json: Box<serde_json::value::RawValue> = serde_json::from_slice(&json).unwrap();
        assert_eq!(
            chat_messages(&items),
            items_to_messages(&json).unwrap(),
            "{items:?}"
        );
    }
}
