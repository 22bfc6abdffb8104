//! A finished span as the exporter takes it: ids, timing, attributes, events, status.

use std::borrow::Cow;
use std::time::{SystemTime, UNIX_EPOCH};

use super::ids::SpanIds;

/// An attribute's value; only the kinds gatewayd writes.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Str(Cow<'static, str>),
    Int(i64),
    Bool(bool),
    StrList(Vec<String>),
}

impl From<&'static str> for Value {
    fn from(value: &'static str) -> Self {
        Value::Str(Cow::Borrowed(value))
    }
}

impl From<String> for Value {
    fn from(value: String) -> Self {
        Value::Str(Cow::Owned(value))
    }
}

impl From<i64> for Value {
    fn from(value: i64) -> Self {
        Value::Int(value)
    }
}

impl From<bool> for Value {
    fn from(value: bool) -> Self {
        Value::Bool(value)
    }
}

pub type Attributes = Vec<(&'static str, Value)>;

/// What kind of work a span is, as OTLP numbers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Internal = 1,
    Server = 2,
    Client = 3,
}

/// Something that happened at one moment inside a span.
#[derive(Debug, Clone)]
pub struct Event {
    pub time_ns: u64,
    pub name: &'static str,
    pub attributes: Attributes,
}

/// A finished span, ready to export.
#[derive(Debug, Clone)]
pub struct Record {
    pub ids: SpanIds,
    pub parent: Option<[u8; 8]>,
    /// The client's `tracestate`, on the span that continues its trace.
    pub trace_state: String,
    pub name: String,
    pub kind: Kind,
    pub start_ns: u64,
    pub end_ns: u64,
    pub attributes: Attributes,
    pub events: Vec<Event>,
    /// Set when the span's work failed: OTLP status ERROR.
    pub error: bool,
}

/// Now, in nanoseconds since the Unix epoch (0 if the clock is before it).
pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// Sets `key` on `attributes`, replacing an earlier value.
pub fn set(attributes: &mut Attributes, key: &'static str, value: impl Into<Value>) {
    let value = value.into();
    match attributes.iter_mut().find(|(k, _)| *k == key) {
        Some((_, old)) => *old = value,
        None => attributes.push((key, value)),
    }
}
