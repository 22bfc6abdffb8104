//! Tests for the Messages API stream encoder: event order, block indexes and endings.

use bytes::Bytes;
use serde_json::{json, Value};

use super::*;
use crate::gateway::decode::Usage;

/// Parses SSE bytes back into (event, data) pairs, checking that each `event:` line
/// equals its data's `type`.
fn parse(bytes: &[u8]) -> Vec<(String, Value)> {
    let text = std::str::from_utf8(bytes).unwrap();
    assert!(text.is_empty() || text.ends_with("\n\n"), "{text:?}");
    text.split("\n\n")
        .filter(|block| !block.is_empty())
        .map(|block| {
            let mut lines = block.lines();
            let kind = lines.next().unwrap().strip_prefix("event: ").unwrap();
            let data = lines.next().unwrap().strip_prefix("data: ").unwrap();
            assert!(lines.next().is_none(), "{block:?}");
            let data: Value = serde_json::from_str(data).unwrap();
            assert_eq!(data["type"], kind, "{block:?}");
            (kind.to_string(), data)
        })
        .collect()
}

fn encoder() -> MessageEvents {
    MessageEvents::new("msg_1".into(), "claude-test".into(), 42)
}

fn tool(index: u64, id: Option<&str>, name: &str, arguments: &str) -> Delta {
    Delta::ToolCall {
        index,
        id: id.map(str::to_string),
        kind: id.map(|_| "function".to_string()),
        name: name.into(),
        arguments: arguments.into(),
    }
}

fn reply(finish: &str, usage: Option<(u64, u64)>) -> Reply {
    Reply {
        message: json!({"role": "assistant", "content": "hi"}),
        model: None,
        finish_reason: Some(finish.into()),
        usage: usage.map(|(input, output)| Usage {
            input_tokens: input,
            output_tokens: output,
            cached_input_tokens: 0,
            reasoning_tokens: 0,
            raw: Value::Null,
        }),
    }
}

/// Runs a whole stream: the chunks, then record and done (or failed).
fn run(
    e: &mut MessageEvents,
    chunks: &[Vec<Delta>],
    ending: Result<(&Reply, Result<(), &ApiError>), &ApiError>,
) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for deltas in chunks {
        out.extend_from_slice(&e.chunk(&Bytes::new(), deltas).unwrap());
    }
    match ending {
        Ok((reply, settled)) => {
            let record = e.record(reply).unwrap();
            assert_eq!(record.output, vec![reply.message.to_string()]);
            assert!(record.response.is_none());
            out.extend_from_slice(&e.done(settled).unwrap());
        }
        Err(error) => out.extend_from_slice(&e.failed(error).unwrap()),
    }
    let events = parse(&out);
    check(&events);
    events
}

/// message_start first and once; blocks indexed 0.. in order, never overlapping; an
/// `error` (which may cut a block short) is the last event.
fn check(events: &[(String, Value)]) {
    assert_eq!(events[0].0, "message_start");
    assert_eq!(events.iter().filter(|e| e.0 == "message_start").count(), 1);
    let mut next = 0;
    let mut open = None;
    for (kind, data) in events {
        match kind.as_str() {
            "content_block_start" => {
                assert_eq!(open, None);
                assert_eq!(data["index"], next);
                open = Some(next);
                next += 1;
            }
            "content_block_delta" | "content_block_stop" => {
                assert_eq!(data["index"].as_u64(), open);
                if kind == "content_block_stop" {
                    open = None;
                }
            }
            "error" => {
                assert_eq!(events.last().map(|e| e.0.as_str()), Some("error"));
                return;
            }
            _ => assert_eq!(open, None, "{kind} inside a block"),
        }
    }
    assert_eq!(open, None);
}

fn kinds(events: &[(String, Value)]) -> Vec<&str> {
    events.iter().map(|e| e.0.as_str()).collect()
}

#[test]
fn text_only() {
    let mut e = encoder();
    let chunks = [
        vec![],
        vec![Delta::Text("Hel".into())],
        vec![Delta::Text("lo".into()), Delta::Finish("stop".into())],
        vec![Delta::Done],
    ];
    let r = reply("stop", Some((10, 2)));
    let events = run(&mut e, &chunks, Ok((&r, Ok(()))));
    assert_eq!(
        kinds(&events),
        [
            "message_start",
            "content_block_start",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]
    );
    let message = &events[0].1["message"];
    assert_eq!(message["id"], "msg_1");
    assert_eq!(message["model"], "claude-test");
    assert_eq!(message["content"], json!([]));
    assert_eq!(message["usage"]["input_tokens"], 42);
    assert_eq!(
        events[1].1["content_block"],
        json!({"type": "text", "text": ""})
    );
    assert_eq!(
        events[2].1["delta"],
        json!({"type": "text_delta", "text": "Hel"})
    );
    assert_eq!(events[3].1["delta"]["text"], "lo");
    assert_eq!(events[5].1["delta"]["stop_reason"], "end_turn");
    assert_eq!(events[5].1["delta"]["stop_sequence"], Value::Null);
    assert_eq!(events[5].1["usage"]["output_tokens"], 2);
    assert_eq!(events[5].1["usage"]["input_tokens"], 10);
}

#[test]
fn text_then_tool_call() {
    let mut e = encoder();
    let chunks = [
        vec![Delta::Text("Let me look.".into())],
        vec![tool(0, Some("call_abc"), "get_weather", "")],
        vec![tool(0, None, "", "{\"ci")],
        vec![tool(0, None, "", "ty\": ")],
        vec![tool(0, None, "", "\"Paris\"}")],
        vec![Delta::Finish("tool_calls".into()), Delta::Done],
    ];
    let r = reply("tool_calls", None);
    let events = run(&mut e, &chunks, Ok((&r, Ok(()))));
    assert_eq!(
        kinds(&events),
        [
            "message_start",
            "content_block_start",
            "content_block_delta",
            "content_block_stop",
            "content_block_start",
            "content_block_delta",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]
    );
    assert_eq!(
        events[4].1["content_block"],
        json!({"type": "tool_use", "id": "toolu_call_abc", "name": "get_weather", "input": {}})
    );
    let json: String = events[5..8]
        .iter()
        .map(|e| {
            assert_eq!(e.1["delta"]["type"], "input_json_delta");
            e.1["delta"]["partial_json"].as_str().unwrap()
        })
        .collect();
    assert_eq!(json, "{\"city\": \"Paris\"}");
    assert_eq!(events[9].1["delta"]["stop_reason"], "tool_use");
    // No upstream usage: the count of deltas sent.
    assert_eq!(events[9].1["usage"]["output_tokens"], 4);
}

#[test]
fn parallel_tool_calls() {
    let mut e = encoder();
    let chunks = [
        vec![Delta::Text("Two calls.".into())],
        vec![tool(0, Some("call_a"), "f", ""), tool(0, None, "", "{}")],
        vec![tool(1, Some(""), "g", "{\"x\"")],
        vec![tool(1, None, "", ":1}")],
        vec![tool(2, Some("call_c"), "h", "")],
        vec![Delta::Finish("tool_calls".into()), Delta::Done],
    ];
    let r = reply("tool_calls", Some((5, 9)));
    let events = run(&mut e, &chunks, Ok((&r, Ok(()))));
    let starts: Vec<&Value> = events
        .iter()
        .filter(|e| e.0 == "content_block_start")
        .map(|e| &e.1["content_block"])
        .collect();
    assert_eq!(starts.len(), 4);
    assert_eq!(starts[0]["type"], "text");
    assert_eq!(
        (&starts[1]["id"], &starts[1]["name"]),
        (&json!("toolu_call_a"), &json!("f"))
    );
    assert_eq!(starts[2]["name"], "g");
    assert!(starts[2]["id"].as_str().unwrap().starts_with("toolu_"));
    assert_eq!(
        (&starts[3]["id"], &starts[3]["name"]),
        (&json!("toolu_call_c"), &json!("h"))
    );
    // The call with no arguments still gets a start and a stop, and no empty delta.
    let n = events.len();
    assert_eq!(
        kinds(&events[n - 4..]),
        [
            "content_block_start",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]
    );
    assert_eq!(events[n - 2].1["usage"]["output_tokens"], 9);
}

#[test]
fn name_in_pieces_and_late_fragments() {
    let mut e = encoder();
    let chunks = [
        vec![tool(0, Some("call_a"), "get_", "")],
        vec![tool(0, None, "weather", "")],
        vec![tool(0, None, "", "{}")],
        vec![tool(1, Some("call_b"), "other", "{}")],
        // A fragment for a closed call is not streamed.
        vec![tool(0, None, "", "junk")],
        vec![tool(1, None, "", "")],
    ];
    let r = reply("tool_calls", None);
    let events = run(&mut e, &chunks, Ok((&r, Ok(()))));
    assert_eq!(events[1].1["content_block"]["name"], "get_weather");
    assert_eq!(events[1].1["content_block"]["id"], "toolu_call_a");
    let deltas: Vec<&Value> = events
        .iter()
        .filter(|e| e.0 == "content_block_delta")
        .map(|e| &e.1["delta"]["partial_json"])
        .collect();
    assert_eq!(deltas, [&json!("{}"), &json!("{}")]);
}

#[test]
fn empty_stream_gets_one_empty_text_block() {
    let mut e = encoder();
    let r = reply("stop", None);
    let events = run(&mut e, &[vec![], vec![Delta::Done]], Ok((&r, Ok(()))));
    assert_eq!(
        kinds(&events),
        [
            "message_start",
            "content_block_start",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]
    );
    assert_eq!(
        events[1].1["content_block"],
        json!({"type": "text", "text": ""})
    );
    assert_eq!(events[3].1["usage"]["output_tokens"], 0);
}

#[test]
fn failed_mid_stream_ends_with_error() {
    let mut e = encoder();
    let chunks = [vec![Delta::Text("partial".into())]];
    let events = run(&mut e, &chunks, Err(&ApiError::UpstreamTruncated));
    assert_eq!(
        kinds(&events),
        [
            "message_start",
            "content_block_start",
            "content_block_delta",
            "error"
        ]
    );
    let error = &events[3].1["error"];
    assert_eq!(error["type"], "api_error");
    assert_eq!(
        error["message"],
        "The upstream ended its stream before the reply was complete."
    );
    // Nothing after the error.
    assert!(e.done(Ok(())).unwrap().is_empty());
    assert!(e.chunk(&Bytes::new(), &[Delta::Done]).unwrap().is_empty());
}

#[test]
fn done_with_error_closes_blocks_then_errors() {
    let mut e = encoder();
    let chunks = [vec![Delta::Text("hi".into()), Delta::Finish("stop".into())]];
    let r = reply("stop", None);
    let error = ApiError::StorageUnavailable;
    let events = run(&mut e, &chunks, Ok((&r, Err(&error))));
    assert_eq!(
        kinds(&events),
        [
            "message_start",
            "content_block_start",
            "content_block_delta",
            "content_block_stop",
            "error"
        ]
    );
    assert_eq!(events[4].1["error"]["type"], "overloaded_error");
}

#[test]
fn done_without_record_still_ends_the_message() {
    let mut e = encoder();
    let mut out = e
        .chunk(&Bytes::new(), &[Delta::Text("a".into())])
        .unwrap()
        .to_vec();
    out.extend_from_slice(&e.done(Ok(())).unwrap());
    let events = parse(&out);
    check(&events);
    assert_eq!(events.last().unwrap().0, "message_stop");
}

#[test]
fn stop_reasons_and_ping() {
    assert_eq!(stop_reason(Some("stop")), "end_turn");
    assert_eq!(stop_reason(Some("length")), "max_tokens");
    assert_eq!(stop_reason(Some("function_call")), "tool_use");
    assert_eq!(stop_reason(Some("content_filter")), "refusal");
    assert_eq!(stop_reason(None), "end_turn");
    let ping = parse(&ping());
    assert_eq!(ping, [("ping".to_string(), json!({"type": "ping"}))]);
    assert_eq!(tool_use_id(Some("call_1")), "toolu_call_1");
    assert!(tool_use_id(Some("")).starts_with("toolu_"));
}
