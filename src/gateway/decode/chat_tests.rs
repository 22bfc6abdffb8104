//! The chat decoder on recorded stream shapes, split every way.
use super::*;

const STREAM: &str = concat!(
    "data: {\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n",
    "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel\"}}]}\n\n",
    ": keep-alive\n\n",
    "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"lo\"}}]}\r\n\r\n",
    "data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"call_1\",\"type\":\"function\",\"function\":{\"name\":\"get_\",\"arguments\":\"\"}}]}}]}\n\n",
    "data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"name\":\"weather\",\"arguments\":\"{\\\"city\\\":\"}}]}}]}\n\n",
    "data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"\\\"Oslo\\\"}\"}}]}}]}\n\n",
    "data: {\"choices\":[],\"usage\":{\"total_tokens\":3}}\n\n",
    "data: [DONE]\n\n",
);

fn decode(stream: &[u8], size: usize) -> (ChatDecoder, Vec<Delta>) {
    let mut decoder = ChatDecoder::default();
    let mut out = Vec::new();
    for piece in stream.chunks(size) {
        decoder.push(piece, &mut out);
    }
    (decoder, out)
}

fn call(index: u64, id: Option<&str>, name: &str, arguments: &str) -> Delta {
    Delta::ToolCall {
        index,
        id: id.map(Into::into),
        kind: id.map(|_| "function".into()),
        name: name.into(),
        arguments: arguments.into(),
    }
}

#[test]
fn the_same_reply_and_deltas_under_any_split() {
    for size in [1, 7, 64, STREAM.len()] {
        let (decoder, deltas) = decode(STREAM.as_bytes(), size);
        assert!(decoder.is_done());
        let reply = decoder.reply();
        assert_eq!(
            reply.message,
            json!({"role": "assistant", "content": "Hello", "tool_calls": [
                {"id": "call_1", "type": "function",
                 "function": {"name": "get_weather", "arguments": "{\"city\":\"Oslo\"}"}}]}),
            "split {size}"
        );
        assert_eq!(reply.usage.map(|u| u.raw), Some(json!({"total_tokens": 3})));
        assert_eq!(
            deltas,
            [
                Delta::Text("Hel".into()),
                Delta::Text("lo".into()),
                call(0, Some("call_1"), "get_", ""),
                call(0, None, "weather", "{\"city\":"),
                call(0, None, "", "\"Oslo\"}"),
                Delta::Done,
            ],
            "split {size}"
        );
    }
}

#[test]
fn parallel_tool_calls_are_ordered_by_index_and_other_choices_ignored() {
    let stream = concat!(
        "data: {\"choices\":[{\"index\":1,\"delta\":{\"content\":\"other\"}}]}\n\n",
        "data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":1,\"id\":\"b\",\"function\":{\"name\":\"g\",\"arguments\":\"{}\"}}]}}]}\n\n",
        "data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"a\",\"type\":\"function\",\"function\":{\"name\":\"f\",\"arguments\":\"{\"}}]}}]}\n\n",
        "data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"}\"}}]},\"finish_reason\":\"tool_calls\"}]}\n\n",
    );
    let (decoder, deltas) = decode(stream.as_bytes(), 5);
    assert!(!decoder.is_done());
    let reply = decoder.reply();
    assert_eq!(
        reply.message,
        json!({"role": "assistant", "content": null, "tool_calls": [
            {"id": "a", "type": "function", "function": {"name": "f", "arguments": "{}"}},
            {"id": "b", "type": "function", "function": {"name": "g", "arguments": "{}"}}]})
    );
    assert_eq!(reply.finish_reason.as_deref(), Some("tool_calls"));
    assert_eq!(deltas.last(), Some(&Delta::Finish("tool_calls".into())));
}

#[test]
fn garbage_is_ignored_without_panic() {
    let stream = concat!(
        "data: {not json\n\ndata: \u{1}\n\nevent: x\ndata: 17\n\ndata: null\n\n",
        "data: {\"choices\":[{\"delta\":{\"content\":[1],\"refusal\":\"no\"},\"index\":\"0\",\"finish_reason\":7}]}\n\n",
        "data: {\"choices\":{},\"usage\":[]}\n\n",
    );
    let mut bytes = stream.as_bytes().to_vec();
    bytes.extend_from_slice(b"data: \xff\xfe\n\n");
    let (decoder, deltas) = decode(&bytes, 3);
    assert_eq!(deltas, [Delta::Refusal("no".into())]);
    let reply = decoder.reply();
    assert_eq!(
        reply.message,
        json!({"role": "assistant", "content": null, "refusal": "no"})
    );
    assert_eq!((reply.finish_reason, reply.usage), (None, None));
}

#[test]
fn done_is_found_whole_split_tight_or_unterminated() {
    for stream in [
        &b"data: {}\n\ndata: [DONE]\n\n"[..],
        b"data:[DONE]\r\n\r\n",
        b"data: [DONE]",
        b"data: [DONE]\n\ndata: [DONE]\n\n",
        b"data: [DONE]\n\ndata: {\"choices\":[{\"delta\":{\"content\":\"late\"}}]}\n\n",
    ] {
        for size in [1, 4, stream.len()] {
            let (decoder, deltas) = decode(stream, size);
            assert!(decoder.is_done());
            assert_eq!(deltas, [Delta::Done], "{stream:?} split {size}");
        }
    }
    for stream in [
        &b"data: {\"choices\":[{\"delta\":{\"content\":\"data: [DONE]\"}}]}\n\n"[..],
        b"xdata: [DONE]\n\n",
        b"data: [DONE",
        b": data: [DONE]\n\n",
    ] {
        assert!(!decode(stream, 3).0.is_done(), "{stream:?}");
    }
}

#[test]
fn a_finished_body_reads_like_the_same_stream() {
    let usage = r#"{"prompt_tokens":10,"completion_tokens":5,"total_tokens":15,"prompt_tokens_details":{"cached_tokens":4},"completion_tokens_details":{"reasoning_tokens":2}}"#;
    let body = format!(
        r#"{{"id":"c","choices":[{{"index":0,"finish_reason":"tool_calls","message":{{"role":"assistant","content":"Hello","tool_calls":[{{"id":"call_1","type":"function","function":{{"name":"get_weather","arguments":"{{\"city\":\"Oslo\"}}"}}}}]}}}}],"usage":{usage}}}"#
    );
    let stream = STREAM.replace(
        r#""choices":[],"usage":{"total_tokens":3}"#,
        &format!(
            r#""choices":[{{"index":0,"delta":{{}},"finish_reason":"tool_calls"}}],"usage":{usage}"#
        ),
    );
    let reply = Reply::from_completion(body.as_bytes()).unwrap();
    assert_eq!(reply, decode(stream.as_bytes(), 7).0.reply());
    assert_eq!(reply.finish_reason.as_deref(), Some("tool_calls"));
    let u = reply.usage.unwrap();
    let counts = (
        u.input_tokens,
        u.output_tokens,
        u.cached_input_tokens,
        u.reasoning_tokens,
    );
    assert_eq!(
        (counts, u.raw["total_tokens"].as_u64()),
        ((10, 5, 4, 2), Some(15))
    );
    for body in [
        &b"[]"[..],
        b"{}",
        br#"{"choices":[{"message":null}]}"#,
        b"\xff",
    ] {
        assert!(Reply::from_completion(body).is_none());
    }
}

#[test]
fn a_finished_body_is_read_for_its_first_choice_and_skips_the_rest() {
    let body = br#"{"id":"c","object":"chat.completion","created":1,"model":"m-2","system_fingerprint":"fp","choices":[{"index":0,"logprobs":{"content":[{"token":"x","logprob":-1}]},"message":{"role":"assistant","content":"one"},"finish_reason":7},{"index":1,"message":{"role":"assistant","content":"two"},"finish_reason":"stop"}],"usage":"none","extra":[1,{"a":null}]}"#;
    let reply = Reply::from_completion(body).unwrap();
    assert_eq!(reply.message["content"], "one");
    assert_eq!(reply.model.as_deref(), Some("m-2"));
    // Members of an unexpected type read as absent, not as a broken reply.
    assert_eq!((reply.finish_reason, reply.usage), (None, None));
    for body in [
        &br#"{"choices":{"0":{"message":{}}}}"#[..],
        br#"{"choices":null}"#,
        br#"{"choices":[]}"#,
        br#"{"choices":["text"]}"#,
        br#"{"choices":[{"message":"text"}]}"#,
        br#"{"model":"m","choices":[{"message":{}}]"#,
    ] {
        assert!(
            Reply::from_completion(body).is_none(),
            "{}",
            String::from_utf8_lossy(body)
        );
    }
}

#[test]
fn a_summary_keeps_what_the_reply_says_about_itself_and_no_content() {
    let stream = concat!(
        "data: {\"model\":\"m-1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"secret text\"}}]}\n\n",
        "data: {\"model\":\"m-1\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"length\"}]}\n\n",
        "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":5}}\n\n",
        "data: [DONE]\n\n",
    );
    let mut decoder = ChatDecoder::summary();
    let mut deltas = Vec::new();
    assert!(decoder.push(stream.as_bytes(), &mut deltas).is_some());
    assert_eq!(deltas, [Delta::Done]);
    let reply = decoder.reply();
    assert_eq!(reply.model.as_deref(), Some("m-1"));
    assert_eq!(reply.finish_reason.as_deref(), Some("length"));
    let usage = reply.usage.unwrap();
    assert_eq!((usage.input_tokens, usage.output_tokens), (3, 5));
    assert!(!reply.message.to_string().contains("secret"));
}
