//! Per-call and per-attempt measurements with gRFC A66's instrument names, handed to a
//! [`Metrics`] implementation of yours (a bridge to OpenTelemetry, Prometheus, StatsD...),
//! set with [`ChannelBuilder::metrics`](crate::ChannelBuilder::metrics) and
//! [`ServerBuilder::metrics`](crate::ServerBuilder::metrics). Nothing is measured without one.
//!
//! Client, per attempt (every retry and hedged attempt is one): [`CLIENT_ATTEMPT_STARTED`],
//! then [`CLIENT_ATTEMPT_DURATION`], [`CLIENT_ATTEMPT_SENT_BYTES`] and
//! [`CLIENT_ATTEMPT_RECEIVED_BYTES`]; per call: [`CLIENT_CALL_DURATION`]. Labels
//! [`METHOD`], [`TARGET`] and, once it ended, [`STATUS`].
//!
//! Server, per call: [`SERVER_CALL_STARTED`], then [`SERVER_CALL_DURATION`],
//! [`SERVER_CALL_SENT_BYTES`] and [`SERVER_CALL_RECEIVED_BYTES`]; labels [`METHOD`] and
//! [`STATUS`]. Durations are in seconds; sizes are the message bytes as sent on the wire
//! (compressed, with their 5-byte gRPC prefixes).
//!
//! With the `tracing` feature, calls are also [`tracing`](https://docs.rs/tracing) spans, at
//! level INFO, whether or not a [`Metrics`] is set: `grpc.client.call` (fields `grpc.method`,
//! `grpc.target`, `grpc.status`) with one child `grpc.client.attempt` per attempt (fields
//! `grpc.previous_rpc_attempts`, `grpc.status`), and `grpc.server.call` (fields
//! `grpc.method`, `grpc.status`), entered while the handler runs, so that the handler's own
//! events and the client calls it makes nest under it. A client call's span is a child of
//! the span current where the call starts.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use crate::status::Code;

/// `grpc.client.attempt.started`: a counter of attempts started.
pub const CLIENT_ATTEMPT_STARTED: &str = "grpc.client.attempt.started";
/// `grpc.client.attempt.duration`: a histogram of attempt durations, in seconds.
pub const CLIENT_ATTEMPT_DURATION: &str = "grpc.client.attempt.duration";
/// `grpc.client.attempt.sent_total_compressed_message_size`: bytes an attempt sent.
pub const CLIENT_ATTEMPT_SENT_BYTES: &str =
    "grpc.client.attempt.sent_total_compressed_message_size";
/// `grpc.client.attempt.rcvd_total_compressed_message_size`: bytes an attempt received.
pub const CLIENT_ATTEMPT_RECEIVED_BYTES: &str =
    "grpc.client.attempt.rcvd_total_compressed_message_size";
/// `grpc.client.call.duration`: a histogram of call durations (all attempts), in seconds.
pub const CLIENT_CALL_DURATION: &str = "grpc.client.call.duration";
/// `grpc.server.call.started`: a counter of calls a server received.
pub const SERVER_CALL_STARTED: &str = "grpc.server.call.started";
/// `grpc.server.call.duration`: a histogram of server call durations, in seconds.
pub const SERVER_CALL_DURATION: &str = "grpc.server.call.duration";
/// `grpc.server.call.sent_total_compressed_message_size`: bytes a server call sent.
pub const SERVER_CALL_SENT_BYTES: &str = "grpc.server.call.sent_total_compressed_message_size";
/// `grpc.server.call.rcvd_total_compressed_message_size`: bytes a server call received.
pub const SERVER_CALL_RECEIVED_BYTES: &str = "grpc.server.call.rcvd_total_compressed_message_size";

/// Label `grpc.method`: the full method name without its leading slash
/// (`package.Service/Method`).
pub const METHOD: &str = "grpc.method";
/// Label `grpc.target`: the channel's target, as given.
pub const TARGET: &str = "grpc.target";
/// Label `grpc.status`: the status code's name (`OK`, `UNAVAILABLE`, ...).
pub const STATUS: &str = "grpc.status";

/// Receives measurements. Called on the threads that run the calls: keep it quick.
pub trait Metrics: Send + Sync + 'static {
    /// Adds `value` to the counter `name`.
    fn add(&self, name: &'static str, value: u64, labels: &[(&'static str, &str)]);

    /// Records `value` in the histogram `name`.
    fn record(&self, name: &'static str, value: f64, labels: &[(&'static str, &str)]);
}

/// When an attempt started and, with the `tracing` feature, its span (closed once the last
/// clone is dropped).
#[derive(Clone)]
pub(crate) struct AttemptClock {
    started: Instant,
    #[cfg(feature = "tracing")]
    span: tracing::Span,
}

impl AttemptClock {
    /// An attempt of a call that is not measured.
    pub(crate) fn unmeasured() -> AttemptClock {
        AttemptClock {
            started: Instant::now(),
            #[cfg(feature = "tracing")]
            span: tracing::Span::none(),
        }
    }
}

/// One client call's measurements.
pub(crate) struct CallMetrics {
    sink: Option<Arc<dyn Metrics>>,
    method: Box<str>,
    target: Arc<str>,
    started: Instant,
    /// Request bytes the call sent so far (every attempt gets all of them).
    sent: AtomicU64,
    #[cfg(feature = "tracing")]
    span: tracing::Span,
}

impl CallMetrics {
    /// Measurements for a call of `path` on the channel to `target`, when there is a sink or
    /// a tracing subscriber that wants the call's span.
    pub(crate) fn new(
        sink: Option<&Arc<dyn Metrics>>,
        path: &str,
        target: &Arc<str>,
    ) -> Option<Box<CallMetrics>> {
        let method = path.trim_start_matches('/');
        #[cfg(feature = "tracing")]
        let span = tracing::info_span!(
            "grpc.client.call",
            "grpc.method" = method,
            "grpc.target" = &**target,
            "grpc.status" = tracing::field::Empty,
        );
        #[cfg(feature = "tracing")]
        let wanted = sink.is_some() || !span.is_disabled();
        #[cfg(not(feature = "tracing"))]
        let wanted = sink.is_some();
        wanted.then(|| {
            Box::new(CallMetrics {
                sink: sink.cloned(),
                method: method.into(),
                target: target.clone(),
                started: Instant::now(),
                sent: AtomicU64::new(0),
                #[cfg(feature = "tracing")]
                span,
            })
        })
    }

    pub(crate) fn sent(&self, bytes: usize) {
        self.sent.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// An attempt starts now, after `previous` others.
    pub(crate) fn attempt_started(&self, previous: u32) -> AttemptClock {
        if let Some(sink) = &self.sink {
            let labels = [(METHOD, &*self.method), (TARGET, &*self.target)];
            sink.add(CLIENT_ATTEMPT_STARTED, 1, &labels);
        }
        #[cfg(not(feature = "tracing"))]
        let _ = previous;
        AttemptClock {
            started: Instant::now(),
            #[cfg(feature = "tracing")]
            span: tracing::info_span!(
                parent: &self.span,
                "grpc.client.attempt",
                "grpc.previous_rpc_attempts" = previous,
                "grpc.status" = tracing::field::Empty,
            ),
        }
    }

    /// The attempt ended with `code`, having received `received` bytes.
    pub(crate) fn attempt_ended(&self, attempt: AttemptClock, code: Code, received: u64) {
        #[cfg(feature = "tracing")]
        attempt.span.record("grpc.status", code.name());
        let Some(sink) = &self.sink else { return };
        let labels = [
            (METHOD, &*self.method),
            (TARGET, &*self.target),
            (STATUS, code.name()),
        ];
        sink.record(CLIENT_ATTEMPT_DURATION, seconds(attempt.started), &labels);
        let sent = self.sent.load(Ordering::Relaxed);
        sink.record(CLIENT_ATTEMPT_SENT_BYTES, sent as f64, &labels);
        sink.record(CLIENT_ATTEMPT_RECEIVED_BYTES, received as f64, &labels);
    }

    /// The call ended with `code`.
    pub(crate) fn call_ended(&self, code: Code) {
        #[cfg(feature = "tracing")]
        self.span.record("grpc.status", code.name());
        let Some(sink) = &self.sink else { return };
        let labels = [
            (METHOD, &*self.method),
            (TARGET, &*self.target),
            (STATUS, code.name()),
        ];
        sink.record(CLIENT_CALL_DURATION, seconds(self.started), &labels);
    }
}

/// One server call's measurements.
pub(crate) struct ServerCallMetrics {
    sink: Option<Arc<dyn Metrics>>,
    method: Box<str>,
    started: Instant,
    pub(crate) sent: u64,
    pub(crate) received: Arc<AtomicU64>,
    #[cfg(feature = "tracing")]
    span: tracing::Span,
}

impl ServerCallMetrics {
    /// Measurements for a call of `path`, when the server has a sink or a tracing subscriber
    /// wants the call's span.
    pub(crate) fn start(sink: Option<&Arc<dyn Metrics>>, path: &str) -> Option<ServerCallMetrics> {
        let method = path.trim_start_matches('/');
        #[cfg(feature = "tracing")]
        let span = tracing::info_span!(
            "grpc.server.call",
            "grpc.method" = method,
            "grpc.status" = tracing::field::Empty,
        );
        #[cfg(feature = "tracing")]
        let wanted = sink.is_some() || !span.is_disabled();
        #[cfg(not(feature = "tracing"))]
        let wanted = sink.is_some();
        if !wanted {
            return None;
        }
        if let Some(sink) = sink {
            sink.add(SERVER_CALL_STARTED, 1, &[(METHOD, method)]);
        }
        Some(ServerCallMetrics {
            sink: sink.cloned(),
            method: method.into(),
            started: Instant::now(),
            sent: 0,
            received: Arc::new(AtomicU64::new(0)),
            #[cfg(feature = "tracing")]
            span,
        })
    }

    /// Runs `f` inside the call's span (with the `tracing` feature; else just runs it).
    pub(crate) fn in_scope<T>(&self, f: impl FnOnce() -> T) -> T {
        #[cfg(feature = "tracing")]
        return self.span.in_scope(f);
        #[cfg(not(feature = "tracing"))]
        f()
    }

    /// The call ended with `code`.
    pub(crate) fn ended(&self, code: Code) {
        #[cfg(feature = "tracing")]
        self.span.record("grpc.status", code.name());
        let Some(sink) = &self.sink else { return };
        let labels = [(METHOD, &*self.method), (STATUS, code.name())];
        sink.record(SERVER_CALL_DURATION, seconds(self.started), &labels);
        sink.record(SERVER_CALL_SENT_BYTES, self.sent as f64, &labels);
        let received = self.received.load(Ordering::Relaxed);
        sink.record(SERVER_CALL_RECEIVED_BYTES, received as f64, &labels);
    }
}

fn seconds(since: Instant) -> f64 {
    since.elapsed().as_secs_f64()
}
