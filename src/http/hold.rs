//! A response body that holds a value (a permit, a guard) until the body has ended.
//!
//! A handler returns long before a streamed body is sent; anything that must last for
//! the whole response (a concurrency permit, a "request in flight" mark) rides along here.

use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::{Body, Bytes, HttpBody};
use hyper::body::{Frame, SizeHint};

/// Wraps `inner` and drops `held` when the last frame has been read, on error, or
/// when the body is dropped unread (a client that went away).
pub struct HoldBody<T> {
    inner: Body,
    held: Option<T>,
}

impl<T: Send + 'static> HoldBody<T> {
    /// The wrapped body as an axum `Body`, ready to put back into a response.
    pub fn wrap(inner: Body, held: T) -> Body {
        Body::new(HoldBody {
            inner,
            held: Some(held),
        })
    }
}

// `Body` is `Unpin` and `held` is never pinned, so plain `&mut` access is sound.
impl<T> Unpin for HoldBody<T> {}

impl<T: Send + 'static> HttpBody for HoldBody<T> {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) | Poll::Ready(Some(Err(_))) => self.held = None,
            Poll::Ready(Some(Ok(_))) if self.inner.is_end_stream() => self.held = None,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
