//! Deadlines on top of `async-io` timers.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use async_io::Timer;
use futures_util::future::{Either, select};

use crate::status::Status;

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

/// Runs `fut` until `deadline`, giving DEADLINE_EXCEEDED when it passes first.
pub(crate) async fn with_deadline<F: Future>(
    deadline: Option<Instant>,
    fut: F,
) -> Result<F::Output, Status> {
    let Some(at) = deadline else {
        return Ok(fut.await);
    };
    let fut = std::pin::pin!(fut);
    match select(fut, async_io::Timer::at(at)).await {
        Either::Left((out, _)) => Ok(out),
        Either::Right(_) => Err(Status::deadline_exceeded("deadline exceeded")),
    }
}
