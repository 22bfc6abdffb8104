//! The OTLP trace messages gatewayd sends (the subset of `opentelemetry/proto` it
//! fills, with the official field numbers), and a batch of records encoded as one
//! `ExportTraceServiceRequest`.

use prost::Message;

use super::record::{Kind, Record, Value};

#[derive(Clone, PartialEq, Message)]
pub struct ExportTraceServiceRequest {
    #[prost(message, repeated, tag = "1")]
    pub resource_spans: Vec<ResourceSpans>,
}

#[derive(Clone, PartialEq, Message)]
pub struct ResourceSpans {
    #[prost(message, optional, tag = "1")]
    pub resource: Option<Resource>,
    #[prost(message, repeated, tag = "2")]
    pub scope_spans: Vec<ScopeSpans>,
}

#[derive(Clone, PartialEq, Message)]
pub struct Resource {
    #[prost(message, repeated, tag = "1")]
    pub attributes: Vec<KeyValue>,
}

#[derive(Clone, PartialEq, Message)]
pub struct ScopeSpans {
    #[prost(message, optional, tag = "1")]
    pub scope: Option<InstrumentationScope>,
    #[prost(message, repeated, tag = "2")]
    pub spans: Vec<Span>,
}

#[derive(Clone, PartialEq, Message)]
pub struct InstrumentationScope {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub version: String,
}

#[derive(Clone, PartialEq, Message)]
pub struct Span {
    #[prost(bytes = "vec", tag = "1")]
    pub trace_id: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    pub span_id: Vec<u8>,
    #[prost(string, tag = "3")]
    pub trace_state: String,
    #[prost(bytes = "vec", tag = "4")]
    pub parent_span_id: Vec<u8>,
    #[prost(string, tag = "5")]
    pub name: String,
    #[prost(int32, tag = "6")]
    pub kind: i32,
    #[prost(fixed64, tag = "7")]
    pub start_time_unix_nano: u64,
    #[prost(fixed64, tag = "8")]
    pub end_time_unix_nano: u64,
    #[prost(message, repeated, tag = "9")]
    pub attributes: Vec<KeyValue>,
    #[prost(message, repeated, tag = "11")]
    pub events: Vec<Event>,
    #[prost(message, optional, tag = "15")]
    pub status: Option<Status>,
    /// W3C trace flags: sampled.
    #[prost(fixed32, tag = "16")]
    pub flags: u32,
}

#[derive(Clone, PartialEq, Message)]
pub struct Event {
    #[prost(fixed64, tag = "1")]
    pub time_unix_nano: u64,
    #[prost(string, tag = "2")]
    pub name: String,
    #[prost(message, repeated, tag = "3")]
    pub attributes: Vec<KeyValue>,
}

#[derive(Clone, PartialEq, Message)]
pub struct Status {
    #[prost(string, tag = "2")]
    pub message: String,
    /// 0 unset, 1 ok, 2 error.
    #[prost(int32, tag = "3")]
    pub code: i32,
}

#[derive(Clone, PartialEq, Message)]
pub struct KeyValue {
    #[prost(string, tag = "1")]
    pub key: String,
    #[prost(message, optional, tag = "2")]
    pub value: Option<AnyValue>,
}

#[derive(Clone, PartialEq, Message)]
pub struct AnyValue {
    #[prost(oneof = "any_value::Value", tags = "1, 2, 3, 5")]
    pub value: Option<any_value::Value>,
}

pub mod any_value {
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Value {
        #[prost(string, tag = "1")]
        Text(String),
        #[prost(bool, tag = "2")]
        Bool(bool),
        #[prost(int64, tag = "3")]
        Int(i64),
        #[prost(message, tag = "5")]
        Array(super::ArrayValue),
    }
}

#[derive(Clone, PartialEq, Message)]
pub struct ArrayValue {
    #[prost(message, repeated, tag = "1")]
    pub values: Vec<AnyValue>,
}

/// The W3C "sampled" flag, plus "the parent is known to be remote or local" (bit 8,
/// set) and its value (bit 9) as OTLP defines them.
const FLAGS_SAMPLED: u32 = 0x01;
const FLAGS_HAS_IS_REMOTE: u32 = 0x100;
const FLAGS_IS_REMOTE: u32 = 0x200;

/// One request body holding `records`, from `service_name`.
pub fn encode(records: Vec<Record>, service_name: &str) -> Vec<u8> {
    let spans = records.into_iter().map(span).collect();
    let request = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![
                    key_value("service.name", string(service_name.to_string())),
                    key_value("service.version", string(env!("CARGO_PKG_VERSION").into())),
                ],
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "gatewayd".into(),
                    version: env!("CARGO_PKG_VERSION").into(),
                }),
                spans,
            }],
        }],
    };
    request.encode_to_vec()
}

fn span(record: Record) -> Span {
    let remote_parent = record.kind == Kind::Server && record.parent.is_some();
    Span {
        trace_id: record.ids.trace_id.to_vec(),
        span_id: record.ids.span_id.to_vec(),
        trace_state: record.trace_state,
        parent_span_id: record.parent.map(|p| p.to_vec()).unwrap_or_default(),
        name: record.name,
        kind: record.kind as i32,
        start_time_unix_nano: record.start_ns,
        end_time_unix_nano: record.end_ns.max(record.start_ns),
        attributes: record
            .attributes
            .into_iter()
            .map(|(key, value)| key_value(key, any(value)))
            .collect(),
        events: record
            .events
            .into_iter()
            .map(|event| Event {
                time_unix_nano: event.time_ns,
                name: event.name.into(),
                attributes: event
                    .attributes
                    .into_iter()
                    .map(|(key, value)| key_value(key, any(value)))
                    .collect(),
            })
            .collect(),
        status: record.error.then(|| Status {
            message: String::new(),
            code: 2,
        }),
        flags: FLAGS_SAMPLED
            | FLAGS_HAS_IS_REMOTE
            | if remote_parent { FLAGS_IS_REMOTE } else { 0 },
    }
}

fn key_value(key: &str, value: AnyValue) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(value),
    }
}

fn string(text: String) -> AnyValue {
    AnyValue {
        value: Some(any_value::Value::Text(text)),
    }
}

fn any(value: Value) -> AnyValue {
    let value = match value {
        Value::Str(text) => any_value::Value::Text(text.into_owned()),
        Value::Int(n) => any_value::Value::Int(n),
        Value::Bool(b) => any_value::Value::Bool(b),
        Value::StrList(list) => any_value::Value::Array(ArrayValue {
            values: list.into_iter().map(string).collect(),
        }),
    };
    AnyValue { value: Some(value) }
}
