//! Unit tests of the Anthropic request translation: Claude Code-shaped requests, tool round trips, content blocks and refusals.

use serde_json::{json, Value};

use super::*;

fn ok(body: Value) -> Translated {
    translate(body.to_string().as_bytes(), ToolPolicy::Drop).unwrap()
}

fn refused(body: Value) -> Refusal {
    translate(body.to_string().as_bytes(), ToolPolicy::Drop).unwrap_err()
}

fn body(t: &Translated, context: &[String], cap: Option<u64>) -> Value {
    serde_json::from_slice(&chat_body(t, context, cap)).unwrap()
}

#[test]
fn claude_code_request() {
    let t = ok(json!({
        "model": "qwen3-coder",
        "max_tokens": 32000,
        "stream": true,
        "system": [
            {"type": "text", "text": "You are Claude Code.", "cache_control": {"type": "ephemeral"}},
            {"type": "text", "text": "Be brief."}
        ],
        "messages": [
            {"role": "user", "content": [
                {"type": "text", "text": "<system-reminder>ctx</system-reminder>"},
                {"type": "text", "text": "fix the bug", "cache_control": {"type": "ephemeral"}}
            ]},
            {"role": "system", "content": "Model-specific note."}
        ],
        "tools": [
            {"name": "Read", "description": "Read a file", "input_schema": {"type": "object", "properties": {"path": {"type": "string"}}}},
            {"name": "Bash", "description": "Run", "input_schema": {"type": "object"}, "cache_control": {"type": "ephemeral"}},
            {"type": "web_search_20250305", "name": "web_search", "max_uses": 5}
        ],
        "tool_choice": {"type": "auto", "disable_parallel_tool_use": true},
        "metadata": {"user_id": "{\"device_id\":\"abc\",\"session_id\":\"s1\"}"},
        "context_management": {"edits": []},
        "thinking": {"type": "enabled", "budget_tokens": 10000},
        "output_config": {"effort": "high"},
        "temperature": 1,
        "stop_sequences": ["</done>"]
    }));
    assert_eq!(t.max_tokens, 32000);
    assert!(t.stream);
    assert_eq!(
        t.ignored,
        ["context_management", "output_config", "thinking"]
    );
    assert_eq!(t.dropped_tools, ["web_search_20250305"]);
    assert_eq!(t.stop_sequences, ["</done>"]);
    let context = vec![
        json!({"role": "system", "content": "Stored prompt."}).to_string(),
        json!({"role": "user", "content": "earlier"}).to_string(),
        json!({"role": "assistant", "content": "reply"}).to_string(),
    ];
    let b = body(&t, &context, Some(8192));
    assert_eq!(
        b["messages"],
        json!([
            {"role": "system", "content": "Stored prompt.\n\nYou are Claude Code.\n\nBe brief.\n\nModel-specific note."},
            {"role": "user", "content": "earlier"},
            {"role": "assistant", "content": "reply"},
            {"role": "user", "content": "<system-reminder>ctx</system-reminder>\n\nfix the bug"}
        ])
    );
    assert_eq!(b["max_tokens"], 8192);
    assert_eq!(b["model"], "qwen3-coder");
    assert_eq!(b["stream"], true);
    assert_eq!(b["stream_options"], json!({"include_usage": true}));
    assert_eq!(b["tool_choice"], "auto");
    assert_eq!(b["parallel_tool_calls"], false);
    assert_eq!(b["user"], "{\"device_id\":\"abc\",\"session_id\":\"s1\"}");
    assert_eq!(b["temperature"], 1);
    assert_eq!(b["stop"], json!(["</done>"]));
    assert_eq!(
        b["tools"],
        json!([
            {"type": "function", "function": {"name": "Read", "description": "Read a file",
                "parameters": {"type": "object", "properties": {"path": {"type": "string"}}}}},
            {"type": "function", "function": {"name": "Bash", "description": "Run", "parameters": {"type": "object"}}}
        ])
    );
    for absent in [
        "thinking",
        "context_management",
        "output_config",
        "metadata",
        "system",
    ] {
        assert!(b.get(absent).is_none(), "{absent}");
    }
}

#[test]
fn server_tool_rejected_under_reject() {
    let request = json!({"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": "x"}],
        "tools": [{"type": "bash_20250124", "name": "bash"}]});
    let r = translate(request.to_string().as_bytes(), ToolPolicy::Reject).unwrap_err();
    assert_eq!(r.param, "tools[0]");
    assert!(r.message.contains("bash_20250124"));
}

#[test]
fn tool_round_trip() {
    let t = ok(json!({
        "model": "m", "max_tokens": 100,
        "messages": [
            {"role": "user", "content": "list files"},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "hmm", "signature": "sig"},
                {"type": "text", "text": "Checking."},
                {"type": "tool_use", "id": "toolu_call_1", "name": "Bash", "input": {"cmd": "ls"}},
                {"type": "tool_use", "id": "toolu_01abc", "name": "Read", "input": {}}
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_call_1", "content": "a.rs\nb.rs"},
                {"type": "tool_result", "tool_use_id": "toolu_01abc", "is_error": true,
                 "content": [{"type": "text", "text": "no such file"}]},
                {"type": "text", "text": "go on"}
            ]}
        ],
        "tools": [{"name": "Bash", "input_schema": {"type": "object"}}],
        "tool_choice": {"type": "tool", "name": "Bash"}
    }));
    assert_eq!(
        t.input_messages,
        vec![
            json!({"role": "user", "content": "list files"}),
            json!({"role": "assistant", "content": "Checking.", "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "Bash", "arguments": "{\"cmd\":\"ls\"}"}},
                {"id": "01abc", "type": "function", "function": {"name": "Read", "arguments": "{}"}}
            ]}),
            json!({"role": "tool", "tool_call_id": "call_1", "content": "a.rs\nb.rs"}),
            json!({"role": "tool", "tool_call_id": "01abc", "content": "Error: no such file"}),
            json!({"role": "user", "content": "go on"}),
        ]
    );
    assert_eq!(
        t.chat_fields["tool_choice"],
        json!({"type": "function", "function": {"name": "Bash"}})
    );
    // The id the client sees for an upstream call maps back to that call.
    let client_id = super::super::reply::tool_use_id(Some("chatcmpl-tool-7"));
    let back = ok(
        json!({"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": client_id, "content": "ok"}]}]}),
    );
    assert_eq!(back.input_messages[0]["tool_call_id"], "chatcmpl-tool-7");
}

#[test]
fn images_and_documents() {
    let t = ok(json!({
        "model": "m", "max_tokens": 10,
        "messages": [{"role": "user", "content": [
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBOR"}},
            {"type": "image", "source": {"type": "url", "url": "https://example.com/a.jpg"}},
            {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "doc text"}},
            {"type": "text", "text": "describe"}
        ]}, {"role": "assistant", "content": "ok"}, {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_x", "content": [
                {"type": "text", "text": "read image"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": "/9j"}}
            ]}
        ]}]
    }));
    assert_eq!(
        t.input_messages,
        vec![
            json!({"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBOR"}},
                {"type": "image_url", "image_url": {"url": "https://example.com/a.jpg"}},
                {"type": "text", "text": "doc text"},
                {"type": "text", "text": "describe"}
            ]}),
            json!({"role": "assistant", "content": "ok"}),
            json!({"role": "tool", "tool_call_id": "x", "content": "read image"}),
            json!({"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,/9j"}}
            ]}),
        ]
    );
    let b = body(&t, &[], None);
    assert_eq!(b["max_tokens"], 10);
    assert!(b.get("stream_options").is_none());
    assert_eq!(b["messages"][0]["role"], "user");
}

#[test]
fn refusals_name_the_parameter() {
    let base = |extra: Value| {
        let mut request =
            json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]});
        for (k, v) in extra.as_object().unwrap() {
            request[k] = v.clone();
        }
        refused(request).param
    };
    assert_eq!(refused(json!([1])).param, "body");
    assert_eq!(
        refused(json!({"model": "m", "messages": []})).param,
        "max_tokens"
    );
    assert_eq!(base(json!({"max_tokens": 0})), "max_tokens");
    assert_eq!(base(json!({"max_tokens": "9"})), "max_tokens");
    assert_eq!(base(json!({"model": ""})), "model");
    assert_eq!(base(json!({"messages": []})), "messages");
    assert_eq!(
        base(json!({"messages": [{"role": "tool", "content": "x"}]})),
        "messages[0].role"
    );
    assert_eq!(
        base(
            json!({"messages": [{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "audio"}]}]})
        ),
        "messages[0].content[1].type"
    );
    assert_eq!(
        base(
            json!({"messages": [{"role": "assistant", "content": [{"type": "image", "source": {}}]}]})
        ),
        "messages[0].content[0].type"
    );
    assert_eq!(
        base(
            json!({"messages": [{"role": "user", "content": [{"type": "image", "source": {"type": "file", "file_id": "f"}}]}]})
        ),
        "messages[0].content[0].source"
    );
    assert_eq!(
        base(json!({"messages": [{"role": "user", "content": 7}]})),
        "messages[0].content"
    );
    assert_eq!(
        base(json!({"tool_choice": {"type": "tool", "name": "nope"}})),
        "tool_choice.name"
    );
    assert_eq!(
        base(json!({"tool_choice": {"type": "weird"}})),
        "tool_choice.type"
    );
    assert_eq!(
        base(json!({"tools": [{"input_schema": {}}]})),
        "tools[0].name"
    );
    assert_eq!(
        base(json!({"stop_sequences": ["a", 1]})),
        "stop_sequences[1]"
    );
    assert_eq!(base(json!({"temperature": "hot"})), "temperature");
    assert_eq!(
        base(json!({"metadata": {"user_id": 5}})),
        "metadata.user_id"
    );
    assert_eq!(
        base(json!({"system": [{"type": "image"}]})),
        "system[0].type"
    );
}

#[test]
fn no_tools_means_no_tool_choice() {
    let t = ok(
        json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}],
        "tool_choice": {"type": "none", "disable_parallel_tool_use": true},
        "tools": [{"type": "code_execution_20250522", "name": "code_execution"}],
        "service_tier": "auto", "weird\nfield": 1}),
    );
    assert!(t.chat_fields.is_empty());
    assert_eq!(t.ignored, ["service_tier", "weirdfield"]);
    assert_eq!(t.system, None);
}

#[test]
fn context_system_parts_and_bad_entries() {
    let t = ok(json!({"model": "m", "max_tokens": 5, "system": "req",
        "messages": [{"role": "user", "content": "x"}]}));
    let context = vec![
        json!({"role": "system", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}).to_string(),
        "not json".to_string(),
        json!({"role": "user", "content": "old"}).to_string(),
    ];
    let b = body(&t, &context, Some(0));
    assert_eq!(
        b["messages"],
        json!([
            {"role": "system", "content": "a\n\nb\n\nreq"},
            {"role": "user", "content": "old"},
            {"role": "user", "content": "x"}
        ])
    );
    assert_eq!(b["max_tokens"], 5);
}

#[test]
fn odd_shapes_are_refused_or_accepted_never_panic() {
    let odd = [
        json!({"model": "m", "max_tokens": 1, "messages": [null, 1]}),
        json!({"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": [null, [], {"type": 3}]}]}),
        json!({"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "t", "content": [{"type": "image", "source": 5}]}]}]}),
        json!({"model": "m", "max_tokens": 1, "messages": [{"role": "assistant", "content": [
            {"type": "tool_use", "id": 1, "name": "x"}]}]}),
        json!({"model": "m", "max_tokens": 1, "tools": [null, 5, {"type": 7}], "tool_choice": 3,
            "messages": [{"role": "user", "content": ""}]}),
        json!({"model": "m", "max_tokens": -3, "messages": []}),
        json!({"model": "m", "max_tokens": 1.5, "messages": [{"role": "user", "content": "x"}]}),
        json!({"model": "m", "max_tokens": 1, "system": {"a": 1}, "messages": [{"role": "user", "content": "x"}]}),
        json!({"model": "m", "max_tokens": 1, "metadata": "x", "messages": [{"role": "user", "content": "x"}]}),
    ];
    for body in odd {
        if let Ok(t) = translate(body.to_string().as_bytes(), ToolPolicy::Reject) {
            let _ = chat_body(&t, &["[]".to_string(), "{\"role\":5}".to_string()], Some(1));
        }
    }
    assert!(translate(b"\xff\xfe", ToolPolicy::Drop).is_err());
    // A user message of only tool results adds no empty user message after them.
    let t = ok(
        json!({"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "toolu_a"}]}]}),
    );
    assert_eq!(
        t.input_messages,
        vec![json!({"role": "tool", "tool_call_id": "a", "content": ""})]
    );
}
