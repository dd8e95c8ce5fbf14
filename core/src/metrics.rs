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

/// One client call's measurements.
pub(crate) struct CallMetrics {
    sink: Arc<dyn Metrics>,
    method: Box<str>,
    target: Arc<str>,
    started: Instant,
    /// Request bytes the call sent so far (every attempt gets all of them).
    sent: AtomicU64,
}

impl CallMetrics {
    pub(crate) fn new(sink: &Arc<dyn Metrics>, path: &str, target: &Arc<str>) -> CallMetrics {
        CallMetrics {
            sink: sink.clone(),
            method: path.trim_start_matches('/').into(),
            target: target.clone(),
            started: Instant::now(),
            sent: AtomicU64::new(0),
        }
    }

    pub(crate) fn sent(&self, bytes: usize) {
        self.sent.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// An attempt starts now; returns its start time.
    pub(crate) fn attempt_started(&self) -> Instant {
        let labels = [(METHOD, &*self.method), (TARGET, &*self.target)];
        self.sink.add(CLIENT_ATTEMPT_STARTED, 1, &labels);
        Instant::now()
    }

    /// The attempt that started at `started` ended with `code`, having received `received`
    /// bytes.
    pub(crate) fn attempt_ended(&self, started: Instant, code: Code, received: u64) {
        let labels = [
            (METHOD, &*self.method),
            (TARGET, &*self.target),
            (STATUS, code.name()),
        ];
        let sink = &self.sink;
        sink.record(CLIENT_ATTEMPT_DURATION, seconds(started), &labels);
        let sent = self.sent.load(Ordering::Relaxed);
        sink.record(CLIENT_ATTEMPT_SENT_BYTES, sent as f64, &labels);
        sink.record(CLIENT_ATTEMPT_RECEIVED_BYTES, received as f64, &labels);
    }

    /// The call ended with `code`.
    pub(crate) fn call_ended(&self, code: Code) {
        let labels = [
            (METHOD, &*self.method),
            (TARGET, &*self.target),
            (STATUS, code.name()),
        ];
        self.sink
            .record(CLIENT_CALL_DURATION, seconds(self.started), &labels);
    }
}

/// One server call's measurements.
pub(crate) struct ServerCallMetrics {
    sink: Arc<dyn Metrics>,
    method: Box<str>,
    started: Instant,
    pub(crate) sent: u64,
    pub(crate) received: Arc<AtomicU64>,
}

impl ServerCallMetrics {
    pub(crate) fn start(sink: &Arc<dyn Metrics>, path: &str) -> ServerCallMetrics {
        let method: Box<str> = path.trim_start_matches('/').into();
        sink.add(SERVER_CALL_STARTED, 1, &[(METHOD, &method)]);
        ServerCallMetrics {
            sink: sink.clone(),
            method,
            started: Instant::now(),
            sent: 0,
            received: Arc::new(AtomicU64::new(0)),
        }
    }

    /// The call ended with `code`.
    pub(crate) fn ended(&self, code: Code) {
        let labels = [(METHOD, &*self.method), (STATUS, code.name())];
        let sink = &self.sink;
        sink.record(SERVER_CALL_DURATION, seconds(self.started), &labels);
        sink.record(SERVER_CALL_SENT_BYTES, self.sent as f64, &labels);
        let received = self.received.load(Ordering::Relaxed);
        sink.record(SERVER_CALL_RECEIVED_BYTES, received as f64, &labels);
    }
}

fn seconds(since: Instant) -> f64 {
    since.elapsed().as_secs_f64()
}
