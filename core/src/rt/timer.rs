//! Deadlines on top of `async-io` timers.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use async_io::Timer;

/// An optional point in time that a call must finish by; pending forever when unset.
#[derive(Debug)]
pub(crate) struct Deadline {
    timer: Option<Timer>,
    at: Option<Instant>,
}

impl Deadline {
    /// A deadline at `at`, or none.
    pub(crate) fn new(at: Option<Instant>) -> Deadline {
        Deadline { timer: None, at }
    }

    /// Ready once the deadline has passed; the timer is armed lazily on first poll.
    pub(crate) fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let Some(at) = self.at else {
            return Poll::Pending;
        };
        let timer = self.timer.get_or_insert_with(|| Timer::at(at));
        match Pin::new(timer).poll(cx) {
            Poll::Ready(_) => Poll::Ready(()),
            Poll::Pending => Poll::Pending,
        }
    }
}
