//! The shape of one load run: warm-up, then a measuring window in which each worker records
//! the latency of every call that completes, then stop. The report is the same for every
//! client, so the matrix runner compares like with like.

use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde_json::{Value, json};

use crate::sys::{CpuTime, cpu_time};

/// Which BenchmarkService method the workers drive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rpc {
    /// `UnaryCall`, one call after the other per worker.
    Unary,
    /// `StreamingCall` ping-pong: each worker holds one stream and sends a request, waits for
    /// its response, and repeats.
    Streaming,
}

impl Rpc {
    /// Parses `unary` or `streaming`.
    pub fn parse(s: &str) -> Result<Rpc, String> {
        match s {
            "unary" => Ok(Rpc::Unary),
            "streaming" => Ok(Rpc::Streaming),
            other => Err(format!("--rpc must be unary or streaming, not {other:?}")),
        }
    }

    /// The name on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Rpc::Unary => "unary",
            Rpc::Streaming => "streaming",
        }
    }
}

/// What one client run does.
#[derive(Debug, Clone)]
pub struct Spec {
    /// The method.
    pub rpc: Rpc,
    /// Calls (unary) or streams (streaming) in flight.
    pub concurrency: usize,
    /// Request payload bytes; the response asks for as many.
    pub payload: usize,
    /// The measuring window.
    pub duration: Duration,
    /// Load before the window that is not measured (connections, caches, windows).
    pub warmup: Duration,
}

/// The phase every worker checks after each call.
#[derive(Debug, Default)]
pub struct Phase(AtomicU8);

const WARMUP: u8 = 0;
const MEASURE: u8 = 1;
const STOP: u8 = 2;

impl Phase {
    /// A phase that starts in warm-up.
    pub fn new() -> Phase {
        Phase(AtomicU8::new(WARMUP))
    }

    fn set(&self, phase: u8) {
        self.0.store(phase, Ordering::Release);
    }

    /// Whether workers should stop now.
    pub fn stopped(&self) -> bool {
        self.0.load(Ordering::Acquire) == STOP
    }
}

/// Lowest and highest latency the histogram tracks, in nanoseconds, and its precision:
/// 1 ns to 60 s with three significant digits (0.1 % error).
const HIST_LOW_NS: u64 = 1;
const HIST_HIGH_NS: u64 = 60_000_000_000;
const HIST_DIGITS: u8 = 3;

/// One worker's record: the latencies of the calls that completed inside the window.
#[derive(Debug, Clone)]
pub struct Recorder {
    hist: Histogram<u64>,
    /// Calls completed in any phase, warm-up included (for the server's CPU per call).
    total: u64,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder::new()
    }
}

impl Recorder {
    /// An empty record.
    pub fn new() -> Recorder {
        Recorder {
            hist: Histogram::new_with_bounds(HIST_LOW_NS, HIST_HIGH_NS, HIST_DIGITS)
                .expect("static histogram bounds are valid"),
            total: 0,
        }
    }

    /// Notes a call that started at `started` and has just completed. Returns false once the
    /// run is over and the worker should stop.
    pub fn completed(&mut self, phase: &Phase, started: Instant) -> bool {
        let elapsed = started.elapsed();
        self.total += 1;
        match phase.0.load(Ordering::Acquire) {
            WARMUP => true,
            MEASURE => {
                let ns = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
                self.hist.saturating_record(ns.max(HIST_LOW_NS));
                true
            }
            _ => false,
        }
    }

    fn merge(&mut self, other: &Recorder) {
        // Same bounds on both sides, so adding cannot fail.
        let _ = self.hist.add(&other.hist);
        self.total += other.total;
    }
}

/// The result of one client run.
#[derive(Debug, Clone)]
pub struct Report {
    /// Which client produced it (`plexus`, `tonic`, ...).
    pub client: String,
    /// The run's parameters.
    pub rpc: Rpc,
    /// Calls or streams in flight.
    pub concurrency: usize,
    /// Payload bytes each way.
    pub payload: usize,
    /// Length of the measuring window.
    pub elapsed: Duration,
    /// Calls that completed in the window.
    pub calls: u64,
    /// Calls completed in the whole run, warm-up included.
    pub calls_total: u64,
    /// Latency percentiles (µs): p50, p90, p99, max, mean.
    pub p50_us: f64,
    /// 90th percentile (µs).
    pub p90_us: f64,
    /// 99th percentile (µs).
    pub p99_us: f64,
    /// Slowest call (µs).
    pub max_us: f64,
    /// Mean (µs).
    pub mean_us: f64,
    /// The client's CPU time in the window, all threads.
    pub cpu: CpuTime,
}

impl Report {
    /// Completed calls (or ping-pong round trips) per second.
    pub fn calls_per_s(&self) -> f64 {
        self.calls as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Payload bytes moved per second, both directions.
    pub fn bytes_per_s(&self) -> f64 {
        self.calls_per_s() * 2.0 * self.payload as f64
    }

    /// The report as one JSON object (the format every client prints with `--json`).
    pub fn to_json(&self) -> Value {
        let per_call = if self.calls > 0 {
            self.cpu.total().as_secs_f64() * 1e6 / self.calls as f64
        } else {
            0.0
        };
        json!({
            "client": self.client,
            "rpc": self.rpc.name(),
            "concurrency": self.concurrency,
            "payload": self.payload,
            "duration_s": self.elapsed.as_secs_f64(),
            "calls": self.calls,
            "calls_total": self.calls_total,
            "calls_per_s": self.calls_per_s(),
            "p50_us": self.p50_us,
            "p90_us": self.p90_us,
            "p99_us": self.p99_us,
            "max_us": self.max_us,
            "mean_us": self.mean_us,
            "bytes_per_s": self.bytes_per_s(),
            "cpu_user_s": self.cpu.user.as_secs_f64(),
            "cpu_system_s": self.cpu.system.as_secs_f64(),
            "cpu_s": self.cpu.total().as_secs_f64(),
            "cpu_us_per_call": per_call,
        })
    }

    /// The report for people.
    pub fn human(&self) -> String {
        format!(
            "{} {} x{} payload {} B: {:.0} calls/s, latency p50 {:.1} µs p90 {:.1} µs p99 {:.1} µs \
             (max {:.1}), {:.2} MiB/s, client CPU {:.2} s ({:.2} user, {:.2} system) in {:.2} s",
            self.client,
            self.rpc.name(),
            self.concurrency,
            self.payload,
            self.calls_per_s(),
            self.p50_us,
            self.p90_us,
            self.p99_us,
            self.max_us,
            self.bytes_per_s() / (1024.0 * 1024.0),
            self.cpu.total().as_secs_f64(),
            self.cpu.user.as_secs_f64(),
            self.cpu.system.as_secs_f64(),
            self.elapsed.as_secs_f64(),
        )
    }
}

/// Runs the phases on the calling thread while the workers (already started) load the
/// server: warm-up, the measuring window, stop. `join` waits for every worker and returns
/// their records, or the first error.
pub fn drive(
    client: &str,
    spec: &Spec,
    phase: &Phase,
    join: impl FnOnce() -> Result<Vec<Recorder>, String>,
) -> Result<Report, String> {
    std::thread::sleep(spec.warmup);
    let cpu_before = cpu_time();
    let started = Instant::now();
    phase.set(MEASURE);
    std::thread::sleep(spec.duration);
    phase.set(STOP);
    let elapsed = started.elapsed();
    let cpu = cpu_time().since(&cpu_before);
    let records = join()?;
    let mut all = Recorder::new();
    for r in &records {
        all.merge(r);
    }
    let us = |ns: u64| ns as f64 / 1000.0;
    let h = &all.hist;
    Ok(Report {
        client: client.to_string(),
        rpc: spec.rpc,
        concurrency: spec.concurrency,
        payload: spec.payload,
        elapsed,
        calls: h.len(),
        calls_total: all.total,
        p50_us: us(h.value_at_quantile(0.50)),
        p90_us: us(h.value_at_quantile(0.90)),
        p99_us: us(h.value_at_quantile(0.99)),
        max_us: us(h.max()),
        mean_us: h.mean() / 1000.0,
        cpu,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_calls_completed_in_the_window_are_measured() {
        let phase = Phase::new();
        let mut r = Recorder::new();
        assert!(r.completed(&phase, Instant::now()));
        phase.set(MEASURE);
        let started = Instant::now() - Duration::from_micros(250);
        assert!(r.completed(&phase, started));
        assert!(r.completed(&phase, started));
        phase.set(STOP);
        assert!(!r.completed(&phase, Instant::now()));
        assert_eq!(r.hist.len(), 2);
        assert_eq!(r.total, 4);
        let p50 = r.hist.value_at_quantile(0.5);
        assert!((250_000..400_000_000).contains(&p50), "{p50}");
    }

    #[test]
    fn report_rates() {
        let spec = Spec {
            rpc: Rpc::Unary,
            concurrency: 2,
            payload: 10,
            duration: Duration::from_millis(30),
            warmup: Duration::ZERO,
        };
        let phase = Phase::new();
        let report = drive("test", &spec, &phase, || {
            let mut r = Recorder::new();
            for _ in 0..30 {
                r.hist.record(1000).unwrap();
            }
            Ok(vec![r])
        })
        .unwrap();
        assert_eq!(report.calls, 30);
        assert!(report.calls_per_s() > 0.0);
        assert_eq!(report.bytes_per_s(), report.calls_per_s() * 20.0);
        assert_eq!(report.p50_us, 1.0);
        let json = report.to_json();
        assert_eq!(json["rpc"], "unary");
        assert_eq!(json["calls"], 30);
        assert!(phase.stopped());
    }
}
