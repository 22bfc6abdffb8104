//! The `Span` handle of an open span below a request's server span: it sends its
//! record to the exporter when it ends.

use super::export;
use super::ids::{new_span_id, SpanIds};
use super::record::{now_ns, set, Kind, Record, Value};

/// An open span below a request's server span. It is exported when dropped, ending
/// then unless [`Span::end_now`] ended it earlier.
pub struct Span {
    record: Option<Record>,
}

impl Span {
    /// A span starting now, as a child of `parent`.
    pub fn child_of(parent: SpanIds, name: String, kind: Kind) -> Span {
        Span {
            record: Some(Record {
                ids: SpanIds {
                    trace_id: parent.trace_id,
                    span_id: new_span_id(),
                },
                parent: Some(parent.span_id),
                trace_state: String::new(),
                name,
                kind,
                start_ns: now_ns(),
                end_ns: 0,
                attributes: Vec::with_capacity(8),
                events: Vec::new(),
                error: false,
            }),
        }
    }

    /// This span's ids: the parent of whatever it calls.
    pub fn ids(&self) -> Option<SpanIds> {
        self.record.as_ref().map(|r| r.ids)
    }

    pub fn set(&mut self, key: &'static str, value: impl Into<Value>) {
        if let Some(record) = &mut self.record {
            set(&mut record.attributes, key, value);
        }
    }

    /// Marks the work failed, with `error.type` saying how.
    pub fn fail(&mut self, error_type: &'static str) {
        if let Some(record) = &mut self.record {
            record.error = true;
        }
        self.set("error.type", error_type);
    }

    /// Ends the span now (it is still exported when dropped).
    pub fn end_now(&mut self) {
        if let Some(record) = self.record.as_mut().filter(|r| r.end_ns == 0) {
            record.end_ns = now_ns();
        }
    }
}

impl Drop for Span {
    fn drop(&mut self) {
        self.end_now();
        if let Some(record) = self.record.take() {
            export::submit(record);
        }
    }
}
