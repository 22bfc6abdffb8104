//! Reading event streams: chat `data:` payloads and Responses API semantic events.

use serde_json::Value;

/// Asserts a 200 answered as `text/event-stream`.
pub fn assert_event_stream(response: &reqwest::Response) {
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
}

/// The `data:` payloads of an SSE body, in order; comments (keep-alives) are skipped.
/// Asserts that the body ends at an event boundary.
pub fn data_payloads(text: &str) -> Vec<String> {
    assert!(
        text.ends_with("\n\n"),
        "body does not end an event: {text:?}"
    );
    text.split("\n\n")
        .filter_map(|event| {
            let data: Vec<&str> = event
                .lines()
                .filter_map(|line| line.strip_prefix("data:"))
                .map(|d| d.strip_prefix(' ').unwrap_or(d))
                .collect();
            (!data.is_empty()).then(|| data.join("\n"))
        })
        .collect()
}

/// Responses API events in order: each one's `event:` name must equal its `type`, and
/// `sequence_number` must count from 0. Keep-alive comments are skipped.
pub fn parse_events(text: &str) -> Vec<Value> {
    let mut events = Vec::new();
    for block in text.split("\n\n").filter(|b| !b.trim().is_empty()) {
        if block.starts_with(':') {
            continue; // keep-alive comment
        }
        let name = block
            .lines()
            .find_map(|l| l.strip_prefix("event: "))
            .unwrap();
        let data: Value = serde_json::from_str(
            block
                .lines()
                .find_map(|l| l.strip_prefix("data: "))
                .unwrap(),
        )
        .unwrap();
        assert_eq!(data["type"], name, "{block}");
        assert_eq!(data["sequence_number"], events.len() as u64, "{block}");
        events.push(data);
    }
    events
}

/// The `type` of each event.
pub fn kinds(events: &[Value]) -> Vec<&str> {
    events.iter().map(|e| e["type"].as_str().unwrap()).collect()
}
