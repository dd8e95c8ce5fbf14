//! Calls attempted more than once (gRFC A6).
//!
//! - Transparent retry: a stream the server never processed (RST_STREAM(REFUSED_STREAM), or
//!   above the last stream id of a GOAWAY) is opened again at once, whatever the service
//!   config says, once per call, without counting as an attempt.
//! - The service config's retry policy: an attempt that fails with a retryable code before
//!   the call commits is tried again after an exponential backoff with full jitter (or the
//!   server's `grpc-retry-pushback-ms`), up to `maxAttempts`, while the channel's retry
//!   throttle allows. Each retry carries `grpc-previous-rpc-attempts`.
//!
//! Until the call commits (response headers arrive, or it buffers more than the per-call or
//! per-channel retry buffer allows), what it sent is kept as `Bytes` handles in a [`Replay`]
//! and sent again on the new stream.

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::future::{Either, select};
use h2::SendStream;
use h2::client::ResponseFuture as H2ResponseFuture;
use http::HeaderValue;

use super::call;
use super::call::{CallShared, FirstRequest, SendHalf};
use super::channel::Channel;
use super::options::CallOptions;
use super::recv::RawStreaming;
use super::recv::Reopened;
use super::service_config::{AttemptPolicy, HedgingPolicy, RetryPolicy, ThrottlingConfig};
use super::subchannel::StreamSlot;
use crate::codec::frame::Framed;
use crate::intercept::{ClientCall, Observer};
use crate::metrics::{AttemptClock, CallMetrics};
use crate::proto::headers;
use crate::rt::BoxFuture;
use crate::rt::with_deadline;
use crate::server::CallContext;
use crate::status::Status;

/// The channel's retry throttle (gRFC A6): a token bucket in thousandths of a token. Failed
/// attempts take a token, successful calls give back `tokenRatio`; at or below half full,
/// nothing is retried.
#[derive(Debug)]
pub(crate) struct Throttle {
    config: ThrottlingConfig,
    milli_tokens: AtomicU64,
}

impl Throttle {
    pub(crate) fn new(config: ThrottlingConfig) -> Throttle {
        Throttle {
            config,
            milli_tokens: AtomicU64::new(config.max_milli_tokens),
        }
    }

    /// Records a failed attempt; returns whether a retry is still allowed.
    fn failed(&self) -> bool {
        let previous = self
            .milli_tokens
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |t| {
                Some(t.saturating_sub(1000))
            })
            .unwrap_or(0);
        previous.saturating_sub(1000) > self.config.max_milli_tokens / 2
    }

    /// Records a successful call.
    fn succeeded(&self) {
        let max = self.config.max_milli_tokens;
        let ratio = self.config.milli_token_ratio;
        let _ = self
            .milli_tokens
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |t| {
                Some((t + ratio).min(max))
            });
    }
}

/// What the channel keeps for retries, shared by its calls.
#[derive(Debug)]
pub(crate) struct RetryBudget {
    /// Request bytes all replays hold now, against `limit`.
    held: AtomicUsize,
    limit: usize,
    per_call: usize,
    throttle: Option<Throttle>,
}

impl RetryBudget {
    pub(crate) fn new(
        per_call: usize,
        limit: usize,
        throttling: Option<ThrottlingConfig>,
    ) -> RetryBudget {
        RetryBudget {
            held: AtomicUsize::new(0),
            limit,
            per_call,
            throttle: throttling.map(Throttle::new),
        }
    }

    /// Whether the channel throttles retries (and so counts successful calls).
    pub(super) fn throttles(&self) -> bool {
        self.throttle.is_some()
    }

    /// Whether the throttle holds back further attempts now (hedges check before starting).
    pub(super) fn throttled(&self) -> bool {
        self.throttle.as_ref().is_some_and(|t| {
            t.milli_tokens.load(Ordering::Acquire) <= t.config.max_milli_tokens / 2
        })
    }

    /// Records an attempt that failed with a code the policy goes on after.
    pub(super) fn attempt_failed(&self) {
        if let Some(throttle) = &self.throttle {
            throttle.failed();
        }
    }

    /// Records a call that ended OK, for the throttle.
    pub(super) fn succeeded(&self) {
        if let Some(throttle) = &self.throttle {
            throttle.succeeded();
        }
    }
}

/// How to open a call again: what [`Channel::start`] was given, and where the call stands
/// in its retry policy.
pub(crate) struct RetryPlan {
    pub(crate) channel: Channel,
    pub(crate) path: Box<str>,
    pub(crate) options: CallOptions,
    /// The service config's retry policy, if retries are on and the method has one.
    pub(crate) policy: Option<RetryPolicy>,
    /// Its hedging policy, if it has that instead (taken when the call starts).
    pub(crate) hedging: Option<HedgingPolicy>,
    /// Attempts made before the current one (transparent retries do not count).
    pub(crate) previous_attempts: u32,
    /// The upper bound of the next backoff's random delay.
    pub(crate) next_backoff: Duration,
    /// Whether the call's one transparent retry was used.
    pub(crate) transparent_used: bool,
}

impl RetryPlan {
    /// The plan for a new call to `path`.
    pub(crate) fn new(channel: &Channel, path: &str, mut options: CallOptions) -> RetryPlan {
        let config = &channel.inner.config;
        // Looked up already when the channel applied the method config to the options.
        let method = match options.method_config.take() {
            Some(looked_up) => looked_up,
            None => config
                .service_config
                .as_ref()
                .and_then(|sc| sc.method(path).cloned()),
        };
        let method = method.filter(|_| config.retries);
        let (policy, hedging) = match method.as_ref().and_then(|m| m.policy.as_ref()) {
            Some(AttemptPolicy::Retry(policy)) => (Some(policy.clone()), None),
            Some(AttemptPolicy::Hedging(policy)) => (None, Some(policy.clone())),
            None => (None, None),
        };
        RetryPlan {
            channel: channel.clone(),
            path: path.into(),
            next_backoff: policy
                .as_ref()
                .map_or(Duration::ZERO, |p| p.initial_backoff),
            policy,
            hedging,
            options,
            previous_attempts: 0,
            transparent_used: false,
        }
    }

    /// After an attempt failed with `status` (and the server's `pushback`, if it sent one):
    /// the delay before the next attempt, or `None` when the call ends with this status.
    pub(super) fn next_attempt(&mut self, status: &Status, pushback: Pushback) -> Option<Duration> {
        let policy = self.policy.as_ref()?;
        let retryable = policy.retryable_codes.contains(status.code());
        let budget = &self.channel.inner.retry_budget;
        // Only failures the policy would retry (or the server refusing retries) drain the
        // throttle: a malformed request says nothing about the server's health.
        let counted = retryable || pushback == Pushback::Stop;
        let throttled = counted && budget.throttle.as_ref().is_some_and(|t| !t.failed());
        if !retryable || throttled || pushback == Pushback::Stop {
            return None;
        }
        if self.previous_attempts + 1 >= policy.max_attempts {
            return None;
        }
        let delay = match pushback {
            Pushback::After(delay) => {
                self.next_backoff = policy.initial_backoff;
                delay
            }
            _ => {
                let bound = self.next_backoff;
                let scaled = bound.as_secs_f64() * policy.backoff_multiplier;
                self.next_backoff = Duration::try_from_secs_f64(scaled)
                    .unwrap_or(policy.max_backoff)
                    .min(policy.max_backoff);
                bound.mul_f64(fastrand::f64())
            }
        };
        if self
            .options
            .deadline
            .is_some_and(|deadline| Instant::now() + delay >= deadline)
        {
            // The deadline would pass first: end with the attempt's own status.
            return None;
        }
        self.previous_attempts += 1;
        Some(delay)
    }
}

/// What the server said about retrying, in `grpc-retry-pushback-ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pushback {
    /// Nothing: the policy's backoff decides.
    None,
    /// Retry after this long.
    After(Duration),
    /// Do not retry (a negative or malformed value).
    Stop,
}

impl Pushback {
    /// Reads `grpc-retry-pushback-ms` from a trailers (or Trailers-Only) block.
    pub(crate) fn from_headers(headers: &http::HeaderMap) -> Pushback {
        let Some(value) = headers.get(headers::GRPC_RETRY_PUSHBACK_MS) else {
            return Pushback::None;
        };
        match value.to_str().ok().and_then(|v| v.parse::<i32>().ok()) {
            Some(ms) if ms >= 0 => Pushback::After(Duration::from_millis(ms as u64)),
            _ => Pushback::Stop,
        }
    }
}

/// What a call has sent so far, kept (as `Bytes` handles, not copies) while it may be tried
/// again.
pub(super) struct Replay {
    pub(super) plan: RetryPlan,
    pub(super) frames: Vec<Bytes>,
    /// Bytes of streamed messages kept, against the per-call and channel retry buffers.
    pub(super) bytes: usize,
}

impl Drop for Replay {
    fn drop(&mut self) {
        let budget = &self.plan.channel.inner.retry_budget;
        budget.held.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

impl SendHalf {
    /// Keeps `msg` for a replay; `counted` messages count against the retry buffers, past
    /// which the replay is dropped and the call commits to its stream. Returns whether the
    /// message is kept.
    pub(super) fn keep(&mut self, msg: &Framed, counted: bool) -> bool {
        let Some(replay) = &mut self.replay else {
            return false;
        };
        if counted {
            let len = msg.len();
            let budget = &replay.plan.channel.inner.retry_budget;
            let over_call = replay.bytes + len > budget.per_call;
            let over_channel =
                !over_call && budget.held.fetch_add(len, Ordering::AcqRel) + len > budget.limit;
            if over_channel {
                budget.held.fetch_sub(len, Ordering::AcqRel);
            }
            if over_call || over_channel {
                self.replay = None;
                return false;
            }
            replay.bytes += len;
        }
        replay.frames.push(msg.head.clone());
        if let Some(tail) = &msg.tail {
            replay.frames.push(tail.clone());
        }
        true
    }
}

impl CallShared {
    /// The current attempt failed and another will follow: stop its stream and send new
    /// messages only to the replay until the next stream is open. False if the call
    /// committed (or was cancelled) meanwhile, so there is nothing to retry.
    pub(super) fn begin_retry(&self, status: &Status) -> bool {
        let mut half = self.half();
        if half.replay.is_none() || half.reset {
            return false;
        }
        half.outbox.clear();
        half.dead = Some(status.clone());
        half.stream.send_reset(h2::Reason::CANCEL);
        true
    }

    /// Runs `decide` on the call's retry plan, if it still has one.
    pub(super) fn with_plan<R>(&self, decide: impl FnOnce(&mut RetryPlan) -> R) -> Option<R> {
        self.half()
            .replay
            .as_mut()
            .map(|replay| decide(&mut replay.plan))
    }

    /// Moves the call onto `stream`: sends everything the replay kept, then END_STREAM if
    /// the request was already closed.
    pub(super) fn replace_stream(&self, mut stream: SendStream<Bytes>) {
        let mut half = self.half();
        half.outbox.clear();
        half.dead = None;
        if half.reset {
            stream.send_reset(h2::Reason::CANCEL);
        } else {
            let frames = half.replay.as_ref().map_or(&[][..], |r| &r.frames[..]);
            replay_onto(&mut stream, frames, half.closed);
        }
        half.stream = stream;
    }
}

/// Sends what a call sent so far (`frames`) on a new attempt's `stream`, then END_STREAM if
/// the request was `closed`. h2 queues data beyond the window and sends it as credit arrives.
pub(super) fn replay_onto(stream: &mut SendStream<Bytes>, frames: &[Bytes], closed: bool) {
    let count = frames.len();
    for (i, frame) in frames.iter().enumerate() {
        let _ = stream.send_data(frame.clone(), closed && i + 1 == count);
    }
    if closed && count == 0 {
        let _ = stream.send_data(Bytes::new(), true);
    }
}

/// Opens the call again after `delay` on a new stream and moves `call` onto it, replaying
/// what it sent: what the response side waits on in place of the failed stream. A new
/// stream that cannot be opened is one more failed attempt for the policy.
pub(super) fn reopen(
    call: Arc<CallShared>,
    mut delay: Duration,
) -> BoxFuture<Result<Reopened, Status>> {
    Box::pin(async move {
        loop {
            if !delay.is_zero() {
                async_io::Timer::after(delay).await;
            }
            let plan = call.with_plan(|plan| {
                (
                    plan.channel.clone(),
                    plan.path.clone(),
                    plan.options.clone(),
                    plan.previous_attempts,
                )
            });
            let Some((channel, path, options, previous)) = plan else {
                return Err(Status::cancelled(
                    "the call ended while a retry was pending",
                ));
            };
            let started = call.metrics.as_ref().map(|m| m.attempt_started(previous));
            match channel.open_stream(&path, &options, false, previous).await {
                Ok((slot, response, stream)) => {
                    let id = stream.stream_id().as_u32();
                    call.replace_stream(stream);
                    let started = started.unwrap_or_else(AttemptClock::unmeasured);
                    return Ok((response, slot, id, started));
                }
                Err(status) => {
                    if let (Some(metrics), Some(started)) = (&call.metrics, started) {
                        metrics.attempt_ended(started, status.code(), 0);
                    }
                    let next = call.with_plan(|plan| plan.next_attempt(&status, Pushback::None));
                    match next.flatten() {
                        Some(next) => delay = next,
                        None => return Err(status),
                    }
                }
            }
        }
    })
}

/// `fut`'s output, or CANCELLED if `parent` is cancelled first.
async fn unless_cancelled<T>(
    parent: Option<&CallContext>,
    fut: impl Future<Output = Result<T, Status>>,
) -> Result<T, Status> {
    let Some(parent) = parent else {
        return fut.await;
    };
    match select(pin!(fut), pin!(parent.cancelled())).await {
        Either::Left((out, _)) => out,
        Either::Right(_) => Err(Status::cancelled("the parent call was cancelled")),
    }
}

/// Connections tried for one call when each turns out to be going away before the stream
/// starts (the stream never reached a server, so trying again is safe).
const MAX_UNSTARTED_ATTEMPTS: usize = 3;

impl Channel {
    /// Starts a call: opens a stream, sends `first` (and ends the request when `end`). The
    /// call keeps `options` and what it sends until it commits, so that it can be tried
    /// again: transparently, for a stream the server never processed, and as the service
    /// config's retry policy says.
    pub(crate) async fn start(
        &self,
        path: &str,
        mut options: CallOptions,
        first: Option<Framed>,
        end: bool,
    ) -> Result<(Arc<CallShared>, RawStreaming), Status> {
        let inner = &self.inner;
        if options.parent.as_ref().is_some_and(|p| p.is_cancelled()) {
            return Err(Status::cancelled("the parent call was cancelled"));
        }
        let observer = Observer::new(&inner.interceptors, path);
        if observer.is_some() {
            let metadata = std::mem::take(&mut options.metadata);
            let mut call = ClientCall::new(path, metadata, options.deadline);
            inner.interceptors.before(&mut call).await?;
            (options.metadata, options.deadline) = call.into_parts();
        }
        inner.counters.call_started();
        inner.touch();
        let mut plan = RetryPlan::new(self, path, options);
        let metrics = CallMetrics::new(inner.metrics.as_ref(), path, &inner.target_text);
        let mut attempt_started = AttemptClock::unmeasured();
        let (slot, response, stream) = loop {
            if let Some(metrics) = &metrics {
                attempt_started = metrics.attempt_started(plan.previous_attempts);
            }
            let open = self.open_stream(
                path,
                &plan.options,
                end && first.is_none(),
                plan.previous_attempts,
            );
            let opened = unless_cancelled(plan.options.parent.as_ref(), open).await;
            match opened {
                Ok(opened) => break opened,
                Err(status) => match plan.next_attempt(&status, Pushback::None) {
                    // No stream opened (no connection, failing fast): the policy decides.
                    Some(delay) => {
                        if let Some(metrics) = &metrics {
                            let attempt =
                                std::mem::replace(&mut attempt_started, AttemptClock::unmeasured());
                            metrics.attempt_ended(attempt, status.code(), 0);
                        }
                        async_io::Timer::after(delay).await
                    }
                    None => {
                        if let Some(metrics) = &metrics {
                            metrics.attempt_ended(attempt_started, status.code(), 0);
                            metrics.call_ended(status.code());
                        }
                        inner.counters.call_ended(false);
                        if let Some(observer) = observer {
                            observer.done(&status);
                        }
                        return Err(status);
                    }
                },
            };
        };
        let config = &inner.config;
        let options = &plan.options;
        let limits = call::Limits {
            deadline: options.deadline,
            max_recv: options
                .max_recv_message_size
                .unwrap_or(config.max_recv_message_size),
            max_send: options
                .max_send_message_size
                .unwrap_or(config.max_send_message_size),
        };
        let tracker = call::Tracker::new(slot, inner.counters.clone());
        let hedging = plan.hedging.take();
        let (call, mut raw) = call::open(
            response,
            stream,
            FirstRequest { first, end },
            limits,
            tracker,
            plan,
            metrics,
        );
        raw.observer = observer;
        raw.attempt_started = attempt_started;
        if let Some(policy) = hedging {
            raw.start_hedging(policy);
        }
        Ok((call, raw))
    }

    /// Picks a connection and opens a stream on it (request headers sent, ending the request
    /// when `end`), passing over connections that turn out to be going away.
    pub(crate) async fn open_stream(
        &self,
        path: &str,
        options: &CallOptions,
        end: bool,
        previous_attempts: u32,
    ) -> Result<(StreamSlot, H2ResponseFuture, SendStream<Bytes>), Status> {
        let deadline = options.deadline;
        let build = || {
            let mut request = self.request(path, options)?;
            if previous_attempts > 0 {
                request.headers_mut().insert(
                    headers::GRPC_PREVIOUS_RPC_ATTEMPTS,
                    HeaderValue::from(previous_attempts),
                );
            }
            Ok::<_, Status>(request)
        };
        let mut request = Some(build()?);
        if deadline.is_some_and(|d| d <= Instant::now()) {
            return Err(Status::deadline_exceeded(
                "deadline exceeded before the call started",
            ));
        }
        // A connection that is going away never started our stream: try another one.
        let mut attempts = 0;
        loop {
            attempts += 1;
            let slot = with_deadline(
                deadline,
                self.inner.pick(options.wait_for_ready.unwrap_or(false)),
            )
            .await??;
            let ready = with_deadline(deadline, slot.sender().ready()).await?;
            let mut send = match ready {
                Ok(send) => send,
                Err(err) => {
                    slot.connection_failed();
                    if attempts < MAX_UNSTARTED_ATTEMPTS {
                        continue;
                    }
                    return Err(Status::from_h2(err));
                }
            };
            let req = match request.take() {
                Some(req) => req,
                None => build()?,
            };
            match send.send_request(req, end) {
                Ok((response, stream)) => return Ok((slot, response, stream)),
                Err(err) => {
                    slot.connection_failed();
                    if attempts >= MAX_UNSTARTED_ATTEMPTS {
                        return Err(Status::from_h2(err));
                    }
                }
            }
        }
    }
}
