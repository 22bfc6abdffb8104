//! The request body's deadline: a body not fully received within `body_read_timeout_secs` ends in an error that becomes a 408.
//!
//! Without it, a client with a valid key could trickle a body a byte at a time and hold
//! a connection, a handler and a growing buffer for as long as it likes.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes, HttpBody};
use hyper::body::{Frame, SizeHint};
use tokio::time::{Instant, Sleep};

/// The error a late body ends with; `routes::read_body` turns it into a 408.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within the body read timeout")]
pub struct BodyTimedOut;

/// Is `err`, or anything in its source chain, a [`BodyTimedOut`]?
pub fn is_timeout(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(err);
    while let Some(err) = current {
        if err.is::<BodyTimedOut>() {
            return true;
        }
        current = err.source();
    }
    false
}

/// A request body that fails with [`BodyTimedOut`] once `deadline` passes before its end.
pub struct DeadlineBody<B> {
    inner: B,
    deadline: Instant,
    /// Created on the first wait, so bodies that arrive at once never allocate a timer.
    sleep: Option<Pin<Box<Sleep>>>,
    timed_out: bool,
}

impl<B> DeadlineBody<B>
where
    B: HttpBody<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<axum::BoxError>,
{
    /// `inner` as an axum `Body` that must end within `limit` from now.
    pub fn wrap(inner: B, limit: Duration) -> Body {
        if inner.is_end_stream() {
            return Body::new(inner);
        }
        Body::new(DeadlineBody {
            inner,
            deadline: Instant::now() + limit,
            sleep: None,
            timed_out: false,
        })
    }
}

impl<B> HttpBody for DeadlineBody<B>
where
    B: HttpBody<Data = Bytes> + Unpin,
    B::Error: Into<axum::BoxError>,
{
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::BoxError>>> {
        if self.timed_out {
            return Poll::Ready(None);
        }
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(frame) => return Poll::Ready(frame.map(|f| f.map_err(Into::into))),
            Poll::Pending => {}
        }
        let deadline = self.deadline;
        let sleep = self
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        match sleep.as_mut().poll(cx) {
            Poll::Ready(()) => {
                self.timed_out = true;
                Poll::Ready(Some(Err(Box::new(BodyTimedOut))))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.timed_out || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
