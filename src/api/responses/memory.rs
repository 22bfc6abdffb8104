//! Giving memory back after a large request: the binary registers its allocator's release (glibc's `malloc_trim`), run when a large request's handler is done.
//!
//! A large request leaves freed memory inside the allocator: glibc keeps free pages in
//! each thread's arena until asked to return them. The binary tunes glibc so that every
//! large buffer is its own mapping, unmapped when freed, and registers a release for
//! the small pieces left behind, which runs after each request of at least
//! [`LARGE_BODY`] bytes. Without a registered release (gateways served in-process, other
//! allocators) nothing happens.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::OnceLock;

/// Bodies of at least this many bytes are followed by a release.
pub const LARGE_BODY: usize = 1 << 20;

static RELEASE: OnceLock<fn()> = OnceLock::new();

/// One release runs at a time; a request that ends while it runs asks for one more pass.
static STATE: AtomicU8 = AtomicU8::new(IDLE);
const IDLE: u8 = 0;
const RUNNING: u8 = 1;
const AGAIN: u8 = 2;

/// Sets the process's release (once; later calls are ignored).
pub fn set_release(release: fn()) {
    let _ = RELEASE.set(release);
}

/// Releases memory when dropped (see [`after_request`]): held by a handler for its whole run.
pub struct ReleaseAfter(usize);

impl Drop for ReleaseAfter {
    fn drop(&mut self) {
        after_request(self.0);
    }
}

/// A guard that releases memory once the handler holding it is done with a body of
/// `body_bytes`.
pub fn release_after(body_bytes: usize) -> ReleaseAfter {
    ReleaseAfter(body_bytes)
}

/// Called when a request of `body_bytes` has been handled: releases free memory to the
/// OS, on the blocking pool, when the body was large.
fn after_request(body_bytes: usize) {
    let Some(release) = RELEASE.get().copied() else {
        return;
    };
    if body_bytes < LARGE_BODY {
        return;
    }
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    // A running release is asked for one more pass; otherwise one starts.
    if STATE.fetch_max(AGAIN, Ordering::AcqRel) != IDLE {
        return;
    }
    runtime.spawn_blocking(move || loop {
        STATE.store(RUNNING, Ordering::Release);
        release();
        if STATE
            .compare_exchange(RUNNING, IDLE, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            break;
        }
    });
}
