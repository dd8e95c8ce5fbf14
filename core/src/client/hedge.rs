//! Hedging (gRFC A6): a call whose method has a `hedgingPolicy` starts another attempt every
//! `hedgingDelay` (at once after a non-fatal failure) until one gets response headers, up to
//! `maxAttempts`. That attempt wins: the call commits to it and the others are cancelled, so
//! their servers see RST_STREAM(CANCEL). A fatal status from any attempt ends the call.
//!
//! Every attempt gets every request message: the first through flow control, the others as
//! whole messages queued in h2 (see [`SendHalf::push_message`](super::call::SendHalf)).
//!
//! The attempts are driven by whoever waits for the response (a unary call's future, a
//! stream's receiver): a client-streaming call whose response is awaited only after its
//! last message starts its hedges then, each given the whole request.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use h2::SendStream;
use h2::client::ResponseFuture as H2ResponseFuture;

use super::call::CallShared;
use super::retry::{Pushback, replay_onto};
use super::service_config::HedgingPolicy;
use super::subchannel::StreamSlot;
use crate::metrics::AttemptClock;
use crate::proto::headers::status_from_trailers;
use crate::rt::BoxFuture;
use crate::status::{Code, Status};

/// A started attempt: its stream's slot, response and id, and when it started.
type Opened = (
    StreamSlot,
    H2ResponseFuture,
    SendStream<Bytes>,
    AttemptClock,
);

/// One attempt waiting for its response headers.
struct Attempt {
    response: H2ResponseFuture,
    slot: StreamSlot,
    id: u32,
    started: AttemptClock,
}

/// What the attempts came to.
pub(super) enum Outcome {
    /// An attempt got its response headers (or a Trailers-Only response that ends the call):
    /// the call has committed to it.
    Won(
        http::Response<h2::RecvStream>,
        StreamSlot,
        u32,
        AttemptClock,
    ),
    /// The call committed to its first stream (its request outgrew the retry buffer): that
    /// attempt goes on alone.
    Alone(H2ResponseFuture, StreamSlot, u32, AttemptClock),
    /// Every attempt failed and no more may start; the status of the last, or of a fatal one.
    Failed(Status),
}

/// The attempts of a hedged call, until one wins.
pub(super) struct Hedging {
    policy: HedgingPolicy,
    attempts: Vec<Attempt>,
    /// The next attempt, starting after its delay.
    next: Option<BoxFuture<Result<Opened, Status>>>,
    /// Attempts started so far, the first included.
    started: u32,
    /// A pushback said not to start more.
    stopped: bool,
    last_failure: Option<Status>,
}

impl Hedging {
    /// Hedging for a call whose first attempt is open.
    pub(super) fn new(
        call: &Arc<CallShared>,
        policy: HedgingPolicy,
        response: H2ResponseFuture,
        slot: StreamSlot,
        id: u32,
        started: AttemptClock,
    ) -> Hedging {
        let mut hedging = Hedging {
            attempts: vec![Attempt {
                response,
                slot,
                id,
                started,
            }],
            next: None,
            started: 1,
            stopped: false,
            last_failure: None,
            policy,
        };
        let delay = hedging.policy.delay;
        hedging.schedule(call, delay);
        hedging
    }

    /// Starts the next attempt after `delay`, unless the policy's attempts are used up or a
    /// pushback said to stop.
    fn schedule(&mut self, call: &Arc<CallShared>, delay: Duration) {
        if self.stopped || self.started >= self.policy.max_attempts {
            self.next = None;
            return;
        }
        let previous = self.started;
        let call = call.clone();
        self.next = Some(Box::pin(async move {
            if !delay.is_zero() {
                async_io::Timer::after(delay).await;
            }
            let plan = call.with_plan(|plan| {
                let throttled = plan.channel.inner.retry_budget.throttled();
                (!throttled).then(|| {
                    (
                        plan.channel.clone(),
                        plan.path.clone(),
                        plan.options.clone(),
                    )
                })
            });
            let Some((channel, path, options)) = plan.flatten() else {
                return Err(Status::cancelled("no more hedged attempts"));
            };
            let started = match &call.metrics {
                Some(metrics) => metrics.attempt_started(previous),
                None => AttemptClock::unmeasured(),
            };
            let opened = channel.open_stream(&path, &options, false, previous).await;
            if let (Err(status), Some(metrics)) = (&opened, &call.metrics) {
                metrics.attempt_ended(started.clone(), status.code(), 0);
            }
            opened.map(|(slot, response, stream)| (slot, response, stream, started))
        }));
    }

    /// Drives the attempts: starts new ones when due, and reports the first response.
    pub(super) fn poll(&mut self, call: &Arc<CallShared>, cx: &mut Context<'_>) -> Poll<Outcome> {
        loop {
            if !call.uncommitted() {
                // The request outgrew the retry buffer: the first stream goes on alone.
                let primary = call.primary_id();
                self.next = None;
                if let Some(i) = self.attempts.iter().position(|a| a.id == primary) {
                    let attempt = self.attempts.swap_remove(i);
                    self.cancel_others(call);
                    return Poll::Ready(Outcome::Alone(
                        attempt.response,
                        attempt.slot,
                        attempt.id,
                        attempt.started,
                    ));
                }
                let status = self
                    .last_failure
                    .take()
                    .unwrap_or_else(|| Status::cancelled("the call was cancelled"));
                return Poll::Ready(Outcome::Failed(status));
            }
            if let Some(next) = &mut self.next {
                if let Poll::Ready(opened) = next.as_mut().poll(cx) {
                    self.next = None;
                    match opened {
                        Ok((slot, response, stream, started)) => {
                            self.started += 1;
                            let id = stream.stream_id().as_u32();
                            if call.add_hedge(stream) {
                                self.attempts.push(Attempt {
                                    response,
                                    slot,
                                    id,
                                    started,
                                });
                            }
                            let delay = self.policy.delay;
                            self.schedule(call, delay);
                        }
                        Err(status) => {
                            // No stream opened: an attempt that failed without a server.
                            self.started += 1;
                            if let Some(outcome) = self.failed(call, status, Pushback::None) {
                                return Poll::Ready(outcome);
                            }
                        }
                    }
                    continue;
                }
            }
            let mut progressed = false;
            let mut i = 0;
            while i < self.attempts.len() {
                let polled = Pin::new(&mut self.attempts[i].response).poll(cx);
                let Poll::Ready(result) = polled else {
                    i += 1;
                    continue;
                };
                progressed = true;
                let attempt = self.attempts.swap_remove(i);
                match result {
                    Ok(response) => {
                        if let Some(status) = status_from_trailers(response.headers()) {
                            let non_fatal = !status.is_ok()
                                && self.policy.non_fatal_codes.contains(status.code());
                            if non_fatal {
                                self.measure(call, &attempt, status.code());
                                call.drop_attempt(attempt.id, &status);
                                let pushback = Pushback::from_headers(response.headers());
                                if let Some(outcome) = self.failed(call, status, pushback) {
                                    return Poll::Ready(outcome);
                                }
                                continue;
                            }
                        }
                        call.commit_to(attempt.id);
                        self.cancel_others(call);
                        return Poll::Ready(Outcome::Won(
                            response,
                            attempt.slot,
                            attempt.id,
                            attempt.started,
                        ));
                    }
                    Err(err) => {
                        let refused = err.reason() == Some(h2::Reason::REFUSED_STREAM)
                            || (err.is_go_away() && attempt.slot.unprocessed(attempt.id));
                        let status = Status::from_h2(err);
                        self.measure(call, &attempt, status.code());
                        call.drop_attempt(attempt.id, &status);
                        // A stream the server never processed is always safe to try again.
                        let non_fatal =
                            refused || self.policy.non_fatal_codes.contains(status.code());
                        if !non_fatal {
                            self.cancel_others(call);
                            return Poll::Ready(Outcome::Failed(status));
                        }
                        if let Some(outcome) = self.failed(call, status, Pushback::None) {
                            return Poll::Ready(outcome);
                        }
                    }
                }
            }
            if !progressed {
                return Poll::Pending;
            }
        }
    }

    /// Records the end of `attempt` with `code`, if the channel has metrics.
    fn measure(&self, call: &CallShared, attempt: &Attempt, code: Code) {
        if let Some(metrics) = &call.metrics {
            metrics.attempt_ended(attempt.started.clone(), code, 0);
        }
    }

    /// The call is decided: every attempt still waiting is cancelled (their streams were
    /// reset with the commit, or are reset with the call).
    fn cancel_others(&mut self, call: &CallShared) {
        self.next = None;
        for attempt in std::mem::take(&mut self.attempts) {
            self.measure(call, &attempt, Code::Cancelled);
        }
    }

    /// An attempt failed with a non-fatal `status`: the next one starts now (or after the
    /// pushback), or, with none left, the call fails.
    fn failed(
        &mut self,
        call: &Arc<CallShared>,
        status: Status,
        pushback: Pushback,
    ) -> Option<Outcome> {
        if let Some(budget) = call.with_plan(|plan| plan.channel.inner.retry_budget.clone()) {
            budget.attempt_failed();
        }
        match pushback {
            Pushback::Stop => {
                self.stopped = true;
                self.next = None;
            }
            Pushback::After(delay) => self.schedule(call, delay),
            Pushback::None => self.schedule(call, Duration::ZERO),
        }
        self.last_failure = Some(status);
        if self.attempts.is_empty() && self.next.is_none() {
            let status = self.last_failure.take().expect("just set");
            return Some(Outcome::Failed(status));
        }
        None
    }
}

impl CallShared {
    /// Whether the call may still be tried again (it has not committed or ended).
    pub(super) fn uncommitted(&self) -> bool {
        let half = self.half();
        half.replay.is_some() && !half.reset
    }

    /// The id of the stream messages are flushed to.
    pub(super) fn primary_id(&self) -> u32 {
        self.half().stream.stream_id().as_u32()
    }

    /// Gives a new hedged attempt's stream everything sent so far (and END_STREAM if the
    /// request is closed). False, with the stream cancelled, if the call committed meanwhile.
    pub(super) fn add_hedge(&self, mut stream: SendStream<Bytes>) -> bool {
        let mut half = self.half();
        let Some(replay) = half.replay.as_ref().filter(|_| !half.reset) else {
            stream.send_reset(h2::Reason::CANCEL);
            return false;
        };
        replay_onto(&mut stream, &replay.frames, half.closed);
        if half.dead.take().is_some() {
            // Every earlier attempt failed: this one is where messages go now.
            half.stream = stream;
        } else {
            half.hedges.push(stream);
        }
        true
    }

    /// Cancels the stream of the attempt `id`, which failed with `status`.
    pub(super) fn drop_attempt(&self, id: u32, status: &Status) {
        let mut half = self.half();
        if half.stream.stream_id().as_u32() == id {
            half.primary_failed(status.clone());
        } else if let Some(i) = half
            .hedges
            .iter()
            .position(|s| s.stream_id().as_u32() == id)
        {
            half.hedges.swap_remove(i).send_reset(h2::Reason::CANCEL);
        }
    }

    /// Commits the call to the attempt `id`: its stream becomes the one messages go to, and
    /// every other attempt's stream is cancelled.
    pub(super) fn commit_to(&self, id: u32) {
        let mut half = self.half();
        if let Some(i) = half
            .hedges
            .iter()
            .position(|s| s.stream_id().as_u32() == id)
        {
            let winner = half.hedges.swap_remove(i);
            let mut loser = std::mem::replace(&mut half.stream, winner);
            loser.send_reset(h2::Reason::CANCEL);
            // The winner was given every message whole; what the old stream still had to
            // flush must not go out again.
            half.outbox.clear();
        }
        half.replay = None;
        half.drop_hedges();
    }
}
