//! Unit tests of the raw-JSON reading: nesting, walking lists, values passed through as sent, the `input_items` list, stored messages as items.

use serde_json::value::RawValue;
use serde_json::{json, Value};

use super::raw::{for_each, nesting_within, Fields, Members, MAX_DEPTH};
use super::responses::{chat_body, translate, ToolPolicy, Translated};
use super::responses_items::items_to_messages;
use super::responses_reply::{response_object, Outcome, ResponseMeta};
use super::stored_items::message_to_items;
use super::Refusal;

fn tr(body: &str) -> Result<Translated, Refusal> {
    translate(body.as_bytes(), ToolPolicy::Drop)
}

fn chat_text(t: &Translated) -> String {
    let mut t = t.clone();
    let input = std::mem::take(&mut t.input_messages);
    String::from_utf8(chat_body(&mut t, &[], &input)).unwrap()
}

fn nested(depth: usize) -> String {
    format!("{}1{}", "[".repeat(depth), "]".repeat(depth))
}

#[test]
fn nesting_is_counted_outside_strings_only() {
    assert!(nesting_within(nested(MAX_DEPTH).as_bytes(), MAX_DEPTH));
    assert!(!nesting_within(nested(MAX_DEPTH + 1).as_bytes(), MAX_DEPTH));
    let quoted = format!("[\"{}\\\"{}\"]", "[".repeat(500), "{".repeat(500));
    assert!(nesting_within(quoted.as_bytes(), 1));
    let body = format!(
        r#"{{"model":"m","input":"x","metadata":{}}}"#,
        nested(MAX_DEPTH)
    );
    assert_eq!(tr(&body).unwrap_err().param, "body");
}

#[test]
fn a_walk_stops_at_the_first_refusal() {
    let list: Box<serde_json::value::RawValue> =
        serde_json::from_str(r#"[1, {"a": [2]}, "three", 4]"#).unwrap();
    let mut seen = Vec::new();
    let refused = for_each(&list, |index, element| {
        seen.push(element.get().to_string());
        match index {
            2 => Err(Refusal::new(format!("input[{index}]"), "stop")),
            _ => Ok(()),
        }
    });
    assert_eq!(refused.unwrap_err().param, "input[2]");
    assert_eq!(seen, ["1", r#"{"a": [2]}"#, r#""three""#]);
}

/// Schemas, metadata and sampling fields reach the chat request and the response object
/// as the client wrote them: copied, never re-serialised.
#[test]
fn passed_values_keep_the_clients_text() {
    let schema = r#"{"type" : "object", "properties": {"n": {"type":"number","maximum": 1.50}}}"#;
    let body = format!(
        r#"{{"model":"m","input":"x","temperature": 0.70,"metadata": {{"k" :"v"}},
            "tools":[{{"type":"function","name":"f","parameters":{schema},"strict":true}},{{"type":"web_search"}}],
            "text":{{"format":{{"type":"json_schema","name":"s","schema":{schema}}}}}}}"#
    );
    let t = tr(&body).unwrap();
    let chat = chat_text(&t);
    assert_eq!(chat.matches(schema).count(), 2, "{chat}");
    assert!(chat.contains(r#""temperature":0.70"#), "{chat}");
    let value: Value = serde_json::from_str(&chat).unwrap();
    assert_eq!(
        value["tools"][0]["function"]["parameters"]["type"],
        "object"
    );
    assert!(value.get("metadata").is_none());

    let meta = ResponseMeta::new(&t, 1);
    let object = String::from_utf8(response_object(&meta, &Outcome::default())).unwrap();
    assert!(object.contains(schema), "{object}");
    let object: Value = serde_json::from_str(&object).unwrap();
    assert_eq!(object["metadata"], json!({"k": "v"}));
    assert_eq!(
        object["tools"].as_array().unwrap().len(),
        1,
        "only functions"
    );
    assert_eq!(object["tools"][0]["strict"], true);
    assert_eq!(object["temperature"], 0.7);
}

/// `input_items` lists every item with a type and an id: kept when the client sent a
/// string id, made otherwise. An unstored response lists nothing.
#[test]
fn input_items_get_types_and_ids() {
    let body = r#"{"model":"m","input":[
        {"role":"user","content":"a"},
        {"type":"message","role":"assistant","content":"b","id":"msg_kept"},
        {"type":"function_call","call_id":"c1","name":"f","arguments":"{}","id":7},
        {"type":"function_call_output","call_id":"c1","output":"r"},
        {"type":"reasoning","summary":[]}]}"#;
    let t = tr(body).unwrap();
    let items: Vec<Value> = serde_json::from_str(&t.input_items).unwrap();
    let kinds: Vec<&str> = items.iter().map(|i| i["type"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        [
            "message",
            "message",
            "function_call",
            "function_call_output",
            "reasoning"
        ]
    );
    let ids: Vec<&str> = items.iter().map(|i| i["id"].as_str().unwrap()).collect();
    assert_eq!(ids[1], "msg_kept");
    for (id, prefix) in [(0, "msg_"), (2, "fc_"), (3, "fco_"), (4, "rs_")] {
        assert!(ids[id].starts_with(prefix) && ids[id].len() > 30, "{ids:?}");
    }
    assert_eq!(items[0]["content"], "a");
    assert_eq!(t.input_messages.len(), 3, "{:?}", t.input_messages);

    let unstored = body.replacen("{\"model\":\"m\",", "{\"model\":\"m\",\"store\":false,", 1);
    let t = tr(&unstored).unwrap();
    assert_eq!(t.input_items, "[]");
    assert_eq!(t.input_messages.len(), 3);
}

#[test]
fn content_parts_are_converted_as_sent() {
    let t = tr(r#"{"model":"m","input":[{"role":"user","content":[
        {"type":"input_text","text":"caf\u00e9 \"q\""},
        {"type":"input_image","image_url":"https://x/y.png","detail":"low"},
        {"type":"refusal"}]}]}"#)
    .unwrap();
    assert_eq!(
        t.input_messages,
        [concat!(
            r#"{"role":"user","content":[{"type":"text","text":"caf\u00e9 \"q\""},"#,
            r#"{"type":"image_url","image_url":{"url":"https://x/y.png","detail":"low"}},"#,
            r#"{"type":"text","text":""}]}"#
        )]
    );
    let twice = r#"{"model":"m","input":[{"role":"user","content":[{"type":"input_text","text":"a","text":"b"}]}]}"#;
    assert_eq!(tr(twice).unwrap_err().param, "input[0].content");
    let joined = tr(r#"{"model":"m","input":[{"role":"system","content":[
        {"type":"input_text","text":"a\n"},{"type":"input_text","text":"b"}]}]}"#)
    .unwrap();
    assert_eq!(
        joined.input_messages,
        [r#"{"role":"system","content":"a\nb"}"#]
    );
}

#[test]
fn stored_messages_become_items_again() {
    let items = stored_items(
        json!({"role": "assistant", "content": "hi", "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}),
        "7",
    );
    assert_eq!(items[0]["id"], "msg_7");
    assert_eq!(
        items[0]["content"],
        json!([{"type": "output_text", "text": "hi", "annotations": [], "logprobs": []}])
    );
    assert_eq!(
        items[1],
        json!({"id": "fc_7_0", "type": "function_call", "status": "completed",
            "call_id": "call_1", "name": "f", "arguments": "{}"})
    );
    let back = messages(Value::Array(items));
    assert_eq!(back[0]["tool_calls"][0]["function"]["name"], "f");
    let tool = stored_items(
        json!({"role": "tool", "tool_call_id": "call_1", "content": [{"type": "text", "text": "x"}]}),
        "8",
    );
    assert_eq!(
        tool,
        [
            json!({"id": "fco_8", "type": "function_call_output", "status": "completed",
            "call_id": "call_1", "output": "x"})
        ]
    );
    let user = stored_items(
        json!({"role": "user", "content": [{"type": "text", "text": "look"},
            {"type": "image_url", "image_url": {"url": "https://x/y.png"}}]}),
        "9",
    );
    assert_eq!(
        user[0]["content"],
        json!([{"type": "input_text", "text": "look"},
            {"type": "input_image", "detail": "auto", "image_url": "https://x/y.png"}])
    );
    let calls_only = stored_items(
        json!({"role": "assistant", "content": "", "tool_calls": []}),
        "10",
    );
    assert!(calls_only.is_empty(), "{calls_only:?}");
    let unreadable = message_to_items("not json", "11");
    assert_eq!(unreadable.len(), 1);
}

/// The items of a stored message, as values.
fn stored_items(message: Value, base: &str) -> Vec<Value> {
    message_to_items(&message.to_string(), base)
        .iter()
        .map(|item| serde_json::from_str(item.get()).unwrap())
        .collect()
}

/// Chat messages for a list of items, as values.
fn messages(items: Value) -> Vec<Value> {
    let items = serde_json::value::to_raw_value(&items).unwrap();
    items_to_messages(&items)
        .unwrap()
        .iter()
        .map(|m| serde_json::from_str(m).unwrap())
        .collect()
}

/// The top level of a request reads as `Members` does: sorted by name, a repeated name's
/// last value kept, escaped names unescaped.
#[test]
fn request_fields_read_as_members_do() {
    let body = r#"{"b":1,"a":2,"b":3,"c\u0041":4,"b":5,"":6}"#;
    let mut fields: Fields<'_> = serde_json::from_str(body).unwrap();
    let members: Members<'_> = serde_json::from_str(body).unwrap();
    assert_eq!(fields.remove("b").map(RawValue::get), Some("5"));
    assert!(fields.remove("b").is_none());
    let rest: Vec<(String, String)> = fields
        .into_iter()
        .map(|(name, value)| (name.into_owned(), value.get().to_string()))
        .collect();
    let expected: Vec<(String, String)> = members
        .into_iter()
        .filter(|(name, _)| name != "b")
        .map(|(name, value)| (name, value.get().to_string()))
        .collect();
    assert_eq!(rest, expected);
    assert_eq!(rest[1], ("a".to_string(), "2".to_string()));
    assert!(serde_json::from_str::<Fields<'_>>("[1]").is_err());
}
