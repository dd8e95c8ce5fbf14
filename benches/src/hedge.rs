//! `plexus-bench hedge`: a hedged call's tail latency against an unhedged one's, when some
//! first attempts stall (issue 16's benchmark: 5 % of first attempts stall for 1 s).
//!
//! One plexus server (in this process, on loopback TCP) answers every call at once, except
//! that every `1 / fraction`-th first attempt (no `grpc-previous-rpc-attempts`) waits
//! `--stall-ms` first, or until it is cancelled. Two channels call it in alternating rounds:
//! one with no service config, one whose hedging policy starts a second attempt after
//! `--hedging-delay-ms`. Each round runs `--concurrency` workers making calls back to back
//! for `--duration` seconds after `--warmup`; the report gives calls/s and latency
//! percentiles per mode, medians over the rounds, and the hedged/unhedged p99 ratio.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_io::Timer;
use bytes::Bytes;
use futures_util::future::{Either, join_all, select};
use hdrhistogram::Histogram;
use plexus::{BytesCodec, CallOptions, Channel, Listener, Request, Response, Server};
use serde_json::json;

use crate::args::Args;

const USAGE: &str = "plexus-bench hedge [--rounds 3] [--duration 10] [--warmup 1]
    [--concurrency 16] [--stall-percent 5] [--stall-ms 1000] [--hedging-delay-ms 20] [--json]";

const PATH: &str = "/plexus.bench.Hedge/Call";

/// Runs the benchmark and prints its report.
pub fn main(raw: &[String]) -> Result<(), String> {
    let args = Args::parse(
        raw,
        &[
            "rounds",
            "duration",
            "warmup",
            "concurrency",
            "stall-percent",
            "stall-ms",
            "hedging-delay-ms",
        ],
        &["json", "help"],
    )?;
    if args.switch("help") {
        println!("{USAGE}");
        return Ok(());
    }
    let rounds: usize = args.parsed("rounds", 3)?;
    let duration = Duration::from_secs_f64(args.parsed("duration", 10.0)?);
    let warmup = Duration::from_secs_f64(args.parsed("warmup", 1.0)?);
    let concurrency: usize = args.parsed("concurrency", 16)?;
    let stall_percent: u64 = args.parsed("stall-percent", 5)?;
    let stall = Duration::from_millis(args.parsed("stall-ms", 1000)?);
    let delay_ms: u64 = args.parsed("hedging-delay-ms", 20)?;
    if rounds == 0 || concurrency == 0 || !(1..=100).contains(&stall_percent) {
        return Err(format!("bad arguments\n{USAGE}"));
    }

    let listener = Listener::bind_tcp("127.0.0.1:0").map_err(|e| e.to_string())?;
    let address = listener
        .local_addr()
        .ok_or("the listener has no TCP address")?;
    let target = format!("http://{address}");
    let server = stalling_server(100 / stall_percent, stall)?;
    std::thread::spawn(move || smol::block_on(server.serve(listener)));

    let hedged_config = format!(
        r#"{{"methodConfig": [{{"name": [{{"service": "plexus.bench.Hedge"}}],
            "hedgingPolicy": {{"maxAttempts": 2, "hedgingDelay": "{}s"}}}}]}}"#,
        delay_ms as f64 / 1000.0
    );
    let mut results: [Vec<Round>; 2] = [Vec::new(), Vec::new()];
    for _ in 0..rounds {
        for (mode, config) in [None, Some(hedged_config.as_str())].into_iter().enumerate() {
            let mut builder = Channel::builder(&target);
            if let Some(config) = config {
                builder = builder.default_service_config(config);
            }
            let channel = builder.build().map_err(|e| e.to_string())?;
            results[mode].push(smol::block_on(round(
                &channel,
                concurrency,
                warmup,
                duration,
            ))?);
        }
    }
    let [plain, hedged] = results.map(|rounds| Summary::of(&rounds));
    let ratio = hedged.p99_us / plain.p99_us;
    if args.switch("json") {
        println!(
            "{}",
            json!({
                "stall_percent": stall_percent,
                "stall_ms": stall.as_millis() as u64,
                "hedging_delay_ms": delay_ms,
                "concurrency": concurrency,
                "rounds": rounds,
                "unhedged": plain.to_json(),
                "hedged": hedged.to_json(),
                "p99_ratio": ratio,
            })
        );
    } else {
        println!(
            "{stall_percent} % of first attempts stall {} ms; hedging delay {delay_ms} ms; \
             {concurrency} workers; medians of {rounds} round(s)",
            stall.as_millis()
        );
        println!("unhedged: {}", plain.human());
        println!("hedged:   {}", hedged.human());
        println!("hedged p99 / unhedged p99 = {ratio:.4}");
    }
    Ok(())
}

/// A server whose every `every`-th first attempt waits `stall` (or until cancelled).
fn stalling_server(every: u64, stall: Duration) -> Result<Server, String> {
    let first_attempts = Arc::new(AtomicU64::new(0));
    Server::builder()
        .unary(PATH, BytesCodec, move |req: Request<Bytes>| {
            let context = req.context().clone();
            let stalls = context.previous_attempts() == 0
                && first_attempts.fetch_add(1, Ordering::Relaxed) % every == every - 1;
            async move {
                if stalls {
                    let cancelled = std::pin::pin!(context.cancelled());
                    select(Timer::after(stall), cancelled).await;
                }
                Ok(Response::new(Bytes::new()))
            }
        })
        .build()
        .map_err(|e| e.to_string())
}

/// One round of one mode.
struct Round {
    calls_per_s: f64,
    hist: Histogram<u64>,
}

async fn round(
    channel: &Channel,
    concurrency: usize,
    warmup: Duration,
    duration: Duration,
) -> Result<Round, String> {
    let start = Instant::now();
    let measure_from = start + warmup;
    let end = measure_from + duration;
    let workers = (0..concurrency).map(|_| async move {
        let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)
            .expect("static histogram bounds are valid");
        loop {
            let started = Instant::now();
            if started >= end {
                return Ok(hist);
            }
            let call = channel.unary(PATH, Bytes::new(), CallOptions::new());
            let timeout = Timer::after(Duration::from_secs(30));
            match select(std::pin::pin!(call), std::pin::pin!(timeout)).await {
                Either::Left((Ok(_), _)) => {}
                Either::Left((Err(status), _)) => return Err(status.to_string()),
                Either::Right(_) => return Err("a call took over 30 s".to_string()),
            }
            // Calls that started in the window count, however long they took.
            if started >= measure_from {
                let micros = started.elapsed().as_micros();
                hist.saturating_record(u64::try_from(micros).unwrap_or(u64::MAX).max(1));
            }
        }
    });
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)
        .expect("static histogram bounds are valid");
    for worker in join_all(workers).await {
        hist.add(worker?).map_err(|e| e.to_string())?;
    }
    let elapsed = (Instant::now() - measure_from).as_secs_f64();
    Ok(Round {
        calls_per_s: hist.len() as f64 / elapsed,
        hist,
    })
}

/// Medians over the rounds of one mode.
struct Summary {
    calls_per_s: f64,
    p50_us: f64,
    p99_us: f64,
    p999_us: f64,
    max_us: f64,
}

impl Summary {
    fn of(rounds: &[Round]) -> Summary {
        let median = |f: &dyn Fn(&Round) -> f64| {
            let mut values: Vec<f64> = rounds.iter().map(f).collect();
            values.sort_by(f64::total_cmp);
            values[values.len() / 2]
        };
        Summary {
            calls_per_s: median(&|r| r.calls_per_s),
            p50_us: median(&|r| r.hist.value_at_quantile(0.5) as f64),
            p99_us: median(&|r| r.hist.value_at_quantile(0.99) as f64),
            p999_us: median(&|r| r.hist.value_at_quantile(0.999) as f64),
            max_us: median(&|r| r.hist.max() as f64),
        }
    }

    fn to_json(&self) -> serde_json::Value {
        json!({
            "calls_per_s": self.calls_per_s,
            "p50_us": self.p50_us,
            "p99_us": self.p99_us,
            "p999_us": self.p999_us,
            "max_us": self.max_us,
        })
    }

    fn human(&self) -> String {
        format!(
            "{:.0} calls/s, p50 {:.0} µs, p99 {:.0} µs, p99.9 {:.0} µs, max {:.0} µs",
            self.calls_per_s, self.p50_us, self.p99_us, self.p999_us, self.max_us
        )
    }
}
