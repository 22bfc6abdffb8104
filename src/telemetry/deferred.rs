//! The request span's fields, formatted only when a log line is written inside the span.
//!
//! The edge opens one `request` span per request with its fields empty and attaches their
//! raw values here ([`attach`]: a few reference-count increments, no formatting). Most
//! requests write no line at the default level, so most never pay for formatting the
//! request id, client address, method and path. [`Deferred`] wraps the line-writing layer:
//! before it writes an event, it records the pending values of every span the event is in,
//! so each line reads exactly as if the fields had been formatted when the span opened.

use std::net::IpAddr;

use axum::http::{HeaderValue, Method, Uri};
use tracing::field::{display, Value};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::registry::LookupSpan;

/// The request span's field values, kept raw until a line needs them.
pub struct RequestFields {
    pub request_id: HeaderValue,
    pub client: IpAddr,
    pub method: Method,
    /// The request's URI; only its path is logged.
    pub uri: Uri,
}

/// Hands `fields` to `span` (a span with the fields `request_id`, `client`, `method` and
/// `path`, declared empty). Nothing happens when the span is disabled or no registry
/// is installed.
pub fn attach(span: &tracing::Span, fields: RequestFields) {
    span.with_subscriber(|(id, dispatch)| {
        let registry = dispatch.downcast_ref::<tracing_subscriber::Registry>();
        if let Some(span) = registry.and_then(|registry| registry.span(id)) {
            span.extensions_mut().insert(fields);
        }
    });
}

/// Wraps the layer that writes lines: it sees each span's deferred fields, recorded, before
/// its first line in that span.
pub struct Deferred<L> {
    inner: L,
}

impl<L> Deferred<L> {
    pub fn new(inner: L) -> Self {
        Deferred { inner }
    }
}

impl<S, L> Layer<S> for Deferred<L>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    L: Layer<S>,
{
    fn on_register_dispatch(&self, subscriber: &tracing::Dispatch) {
        self.inner.on_register_dispatch(subscriber);
    }

    fn on_layer(&mut self, subscriber: &mut S) {
        self.inner.on_layer(subscriber);
    }

    fn register_callsite(
        &self,
        metadata: &'static Metadata<'static>,
    ) -> tracing::subscriber::Interest {
        self.inner.register_callsite(metadata)
    }

    fn enabled(&self, metadata: &Metadata<'_>, ctx: Context<'_, S>) -> bool {
        self.inner.enabled(metadata, ctx)
    }

    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        self.inner.on_new_span(attrs, id, ctx);
    }

    fn on_record(&self, span: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        self.inner.on_record(span, values, ctx);
    }

    fn on_follows_from(&self, span: &Id, follows: &Id, ctx: Context<'_, S>) {
        self.inner.on_follows_from(span, follows, ctx);
    }

    fn event_enabled(&self, event: &Event<'_>, ctx: Context<'_, S>) -> bool {
        self.inner.event_enabled(event, ctx)
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        if let Some(scope) = ctx.event_scope(event) {
            for span in scope.from_root() {
                // Taken out first: the inner layer locks the same extensions to record.
                let pending = span.extensions_mut().remove::<RequestFields>();
                if let Some(fields) = pending {
                    record(&fields, span.metadata(), &span.id(), &ctx, &self.inner);
                }
            }
        }
        self.inner.on_event(event, ctx);
    }

    fn on_enter(&self, id: &Id, ctx: Context<'_, S>) {
        self.inner.on_enter(id, ctx);
    }

    fn on_exit(&self, id: &Id, ctx: Context<'_, S>) {
        self.inner.on_exit(id, ctx);
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        self.inner.on_close(id, ctx);
    }

    fn on_id_change(&self, old: &Id, new: &Id, ctx: Context<'_, S>) {
        self.inner.on_id_change(old, new, ctx);
    }
}

/// Records `fields` on the span, as `span.record` would have.
fn record<S, L: Layer<S>>(
    fields: &RequestFields,
    metadata: &'static Metadata<'static>,
    id: &Id,
    ctx: &Context<'_, S>,
    inner: &L,
) where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    let names = metadata.fields();
    let (Some(request_id), Some(client), Some(method), Some(path)) = (
        names.field("request_id"),
        names.field("client"),
        names.field("method"),
        names.field("path"),
    ) else {
        return;
    };
    let id_text = fields.request_id.to_str().unwrap_or("-");
    let path_text = fields.uri.path();
    let values: [(&tracing::field::Field, Option<&dyn Value>); 4] = [
        (&request_id, Some(&display(id_text))),
        (&client, Some(&display(fields.client))),
        (&method, Some(&display(fields.method.as_str()))),
        (&path, Some(&display(path_text))),
    ];
    let values = names.value_set(&values);
    inner.on_record(id, &Record::new(&values), ctx.clone());
}
