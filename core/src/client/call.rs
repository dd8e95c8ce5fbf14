//! One call's shared state: the request half ([`CallShared`]) that every [`Sender`] clone
//! and the response side hold, the call's hold on its stream ([`Tracker`]), and [`open`],
//! which starts both halves once h2 accepted the request headers.
//!
//! The halves live beside it: `send.rs` ([`Sender`]), `recv.rs` (the response state
//! machine, [`Streaming`], [`ResponseFuture`](super::ResponseFuture)), `retry.rs` (what is
//! kept to replay a stream the server never processed) and `typed.rs` (the typed
//! [`Client`](super::Client)).

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use bytes::Bytes;
use h2::SendStream;
use h2::client::ResponseFuture as H2ResponseFuture;

use super::recv::{ParentWatch, RawStreaming, RecvState};
use super::retry::{Replay, RetryPlan};
use super::stats::Counters;
use super::subchannel::StreamSlot;
use crate::codec::Compression;
use crate::codec::frame::Framed;
use crate::metrics::{AttemptClock, CallMetrics};
use crate::proto::send::Outbox;
use crate::rt::Deadline;
use crate::server::CallContext;
use crate::status::Status;

/// Frames one request message (codec, size limit, compression), as a typed client does.
pub(super) type EncodeFn<T> =
    Arc<dyn Fn(&T, usize, Compression) -> Result<Framed, Status> + Send + Sync>;
/// Decodes one response message.
pub(super) type DecodeFn<T> = Arc<dyn Fn(Bytes) -> Result<T, Status> + Send + Sync>;

/// A call's deadline and message size limits.
pub(crate) struct Limits {
    pub(crate) deadline: Option<Instant>,
    pub(crate) max_recv: usize,
    pub(crate) max_send: usize,
}

/// The request half of a call, shared by every [`Sender`] clone and the response side.
pub(crate) struct CallShared {
    pub(super) half: Mutex<SendHalf>,
    /// Held for the whole of one message, so messages from many senders never interleave.
    pub(super) turn: async_lock::Mutex<()>,
    pub(super) deadline: Option<Instant>,
    pub(super) max_send: usize,
    /// The server call this call was made for: sends fail once it is cancelled.
    pub(super) parent: Option<CallContext>,
    /// Where the call's measurements go, if the channel has metrics.
    pub(super) metrics: Option<Box<CallMetrics>>,
}

/// The request stream and what a call keeps to retry it; guarded by [`CallShared`]'s lock.
pub(super) struct SendHalf {
    /// The stream of the attempt messages are flushed to under flow control.
    pub(super) stream: SendStream<Bytes>,
    /// Hedged attempts beside it, while the call is uncommitted: each gets every message
    /// whole as it is sent (h2 queues what its window does not take; the retry buffer bounds
    /// how much that can be).
    pub(super) hedges: Vec<SendStream<Bytes>>,
    pub(super) outbox: Outbox,
    /// END_STREAM was sent.
    pub(super) closed: bool,
    /// RST_STREAM was sent.
    pub(super) reset: bool,
    /// Present until the response headers arrive, the call ends or it has sent too much.
    pub(super) replay: Option<Replay>,
    /// The stream failed while a retry was still possible: sends go only to the replay until
    /// the response side decides (retry on a new stream, or fail the call with this status).
    pub(super) dead: Option<Status>,
}

impl SendHalf {
    /// Accepts one message: kept for a replay, given whole to every hedged attempt, and
    /// queued for the current stream. A message that does not fit the retry buffer commits
    /// the call to the current stream.
    pub(super) fn push_message(&mut self, msg: Framed) {
        self.keep_message(&msg);
        self.outbox.push(msg);
    }

    /// Keeps `msg` for a replay and gives it whole to every hedged attempt; false (with the
    /// hedges cancelled) when it does not fit the retry buffer, which commits the call.
    pub(super) fn keep_message(&mut self, msg: &Framed) -> bool {
        let kept = self.keep(msg, true);
        if kept {
            for hedge in &mut self.hedges {
                let _ = hedge.send_data(msg.head.clone(), false);
                if let Some(tail) = &msg.tail {
                    let _ = hedge.send_data(tail.clone(), false);
                }
            }
        } else {
            self.drop_hedges();
        }
        kept
    }

    /// The current stream failed while the call could still be tried again: a hedged
    /// attempt's stream takes its place, or, with none, messages go only to the replay
    /// until a new stream is opened.
    pub(super) fn primary_failed(&mut self, status: Status) {
        // Whatever the old stream still had to flush, the others got whole.
        self.outbox.clear();
        match self.hedges.pop() {
            Some(next) => {
                let mut old = std::mem::replace(&mut self.stream, next);
                old.send_reset(h2::Reason::CANCEL);
            }
            None => {
                self.stream.send_reset(h2::Reason::CANCEL);
                self.dead = Some(status);
            }
        }
    }

    /// Ends the request on every hedged attempt's stream.
    pub(super) fn close_hedges(&mut self) {
        for hedge in &mut self.hedges {
            let _ = hedge.send_data(Bytes::new(), true);
        }
    }

    /// Cancels every hedged attempt's stream.
    pub(super) fn drop_hedges(&mut self) {
        for mut hedge in self.hedges.drain(..) {
            hedge.send_reset(h2::Reason::CANCEL);
        }
    }
}

impl CallShared {
    pub(super) fn half(&self) -> MutexGuard<'_, SendHalf> {
        self.half.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sends RST_STREAM(CANCEL) unless the stream was already reset (on hedged attempts'
    /// streams too).
    pub(super) fn cancel(&self) {
        let mut half = self.half();
        if !half.reset {
            half.reset = true;
            half.stream.send_reset(h2::Reason::CANCEL);
            half.drop_hedges();
        }
    }

    /// Whether END_STREAM was already sent.
    pub(super) fn request_closed(&self) -> bool {
        self.half().closed
    }

    /// The call is bound to its stream for good: no retry, nothing more to keep (the replay's
    /// bytes go back to the channel's retry buffer).
    pub(super) fn commit(&self) {
        let mut half = self.half();
        half.replay = None;
        half.drop_hedges();
    }
}

/// A call's hold on its stream slot and its place in the channel's counters, released when
/// the call ends.
pub(crate) struct Tracker {
    pub(super) slot: StreamSlot,
    pub(super) counters: Arc<Counters>,
}

impl Tracker {
    pub(crate) fn new(slot: StreamSlot, counters: Arc<Counters>) -> Tracker {
        Tracker { slot, counters }
    }

    /// The slot and counters, for a hedged call that keeps the slot with its attempt.
    pub(super) fn into_parts(self) -> (StreamSlot, Arc<Counters>) {
        (self.slot, self.counters)
    }

    pub(super) fn done(self, ok: bool) {
        self.counters.call_ended(ok);
        drop(self.slot);
    }

    /// Frees the stream but leaves the call uncounted, for an attempt being retried.
    pub(super) fn release(self) -> Arc<Counters> {
        self.counters
    }
}

/// What a call sends right away: its one message (unary and server-streaming calls), and
/// whether that ends the request.
pub(crate) struct FirstRequest {
    pub(crate) first: Option<Framed>,
    pub(crate) end: bool,
}

/// Starts the call's bookkeeping once h2 accepted the request headers.
pub(crate) fn open(
    response: H2ResponseFuture,
    mut stream: SendStream<Bytes>,
    request: FirstRequest,
    limits: Limits,
    tracker: Tracker,
    plan: RetryPlan,
    metrics: Option<Box<CallMetrics>>,
) -> (Arc<CallShared>, RawStreaming) {
    let FirstRequest { first, end } = request;
    let parent = plan.options.parent.clone();
    let budget = &plan.channel.inner.retry_budget;
    let budget = budget.throttles().then(|| budget.clone());
    let mut frames = Vec::new();
    if let Some(first) = first {
        // One message already in memory: h2 may hold it until the window opens, which costs
        // nothing extra. Errors surface on the response side.
        frames.push(first.head.clone());
        let has_tail = first.tail.is_some();
        let _ = stream.send_data(first.head, end && !has_tail);
        if let Some(tail) = first.tail {
            frames.push(tail.clone());
            let _ = stream.send_data(tail, end);
        }
    }
    let first_len: usize = frames.iter().map(Bytes::len).sum();
    let stream_id = stream.stream_id().as_u32();
    let call = Arc::new(CallShared {
        half: Mutex::new(SendHalf {
            stream,
            hedges: Vec::new(),
            outbox: Outbox::default(),
            closed: end,
            reset: false,
            replay: Some(Replay {
                plan,
                frames,
                bytes: 0,
            }),
            dead: None,
        }),
        turn: async_lock::Mutex::new(()),
        deadline: limits.deadline,
        max_send: limits.max_send,
        parent: parent.clone(),
        metrics,
    });
    let raw = RawStreaming {
        state: RecvState::Headers(response),
        call: call.clone(),
        deadline: Deadline::new(limits.deadline),
        max_recv: limits.max_recv,
        initial: None,
        status: None,
        stream_id,
        last_compressed: false,
        tracker: Some(tracker),
        retrying: None,
        budget,
        parent: parent.map(ParentWatch::new),
        observer: None,
        attempt_started: AttemptClock::unmeasured(),
    };
    if let Some(metrics) = &call.metrics {
        metrics.sent(first_len);
    }
    (call, raw)
}
