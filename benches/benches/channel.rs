//! Channel benchmarks (run with `cargo bench -p plexus-benches --bench channel`):
//! (b) 200 concurrent long calls to a server limited to 100 streams, with the channel's
//!     multiple connections on and off: calls/s and p99 latency;
//! (c) Unix domain socket against TCP loopback: unary p50 latency with 1 call in flight and
//!     calls/s with 64.
//!
//! Set `BENCH_SECONDS` to change the measuring time per case (default 3).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use plexus::{
    BytesCodec, CallOptions, Channel, Executor, Listener, Request, Response, Server, SmolExecutor,
};

const ECHO: &str = "/bench.Echo/Unary";
const SLOW: &str = "/bench.Echo/Slow";

/// How long a "long" call's handler takes in case (b).
const LONG_CALL: Duration = Duration::from_millis(20);

fn seconds() -> Duration {
    let secs = std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3.0);
    Duration::from_secs_f64(secs)
}

fn server(max_streams: u32) -> Server {
    Server::builder()
        .max_concurrent_streams(max_streams)
        .unary(ECHO, BytesCodec, |req: Request<Bytes>| async move {
            Ok(Response::new(req.into_message()))
        })
        .unary(SLOW, BytesCodec, |req: Request<Bytes>| async move {
            async_io::Timer::after(LONG_CALL).await;
            Ok(Response::new(req.into_message()))
        })
        .build()
        .expect("server builds")
}

fn spawn_serve(server: &Server, listener: Listener) {
    let server = server.clone();
    SmolExecutor.spawn(Box::pin(async move {
        let _ = server.serve(listener).await;
    }));
}

/// Runs `workers` loops of calls to `path` for the measuring time; returns calls/s and the
/// sorted latencies.
fn load(channel: &Channel, path: &'static str, workers: usize) -> (f64, Vec<Duration>) {
    let payload = Bytes::from_static(&[7u8; 64]);
    smol::block_on(channel.unary(path, payload.clone(), CallOptions::new())).expect("warm-up");
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = async_channel::unbounded::<Vec<Duration>>();
    for _ in 0..workers {
        let (channel, payload, stop, tx) =
            (channel.clone(), payload.clone(), stop.clone(), tx.clone());
        SmolExecutor.spawn(Box::pin(async move {
            let mut latencies = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                channel
                    .unary(path, payload.clone(), CallOptions::new())
                    .await
                    .expect("call");
                latencies.push(started.elapsed());
            }
            let _ = tx.send(latencies).await;
        }));
    }
    let started = Instant::now();
    std::thread::sleep(seconds());
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    for _ in 0..workers {
        all.extend(smol::block_on(rx.recv()).expect("worker finished"));
    }
    let elapsed = started.elapsed();
    all.sort();
    (all.len() as f64 / elapsed.as_secs_f64(), all)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn main() {
    println!(
        "(b) 200 concurrent {LONG_CALL:?} calls, server limited to 100 streams per connection, {:?} per case",
        seconds()
    );
    let limited = server(100);
    let listener = Listener::bind_tcp("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("tcp");
    spawn_serve(&limited, listener);
    let mut results = Vec::new();
    for multi in [true, false] {
        let channel = Channel::builder(&format!("http://{addr}"))
            .multiple_connections(multi)
            .build()
            .expect("channel");
        let (rate, latencies) = load(&channel, SLOW, 200);
        let p99 = percentile(&latencies, 0.99);
        println!(
            "  multiple connections {:<5}: {rate:>8.0} calls/s, p99 {p99:>9.2?}, {} connection(s)",
            multi,
            channel.stats().connections()
        );
        results.push((rate, p99));
    }
    println!(
        "  on/off: {:.2}x calls/s, p99 {:.2}x",
        results[0].0 / results[1].0,
        results[0].1.as_secs_f64() / results[1].1.as_secs_f64()
    );

    println!("(c) Unix socket against TCP loopback, 64-byte unary echo");
    let echo = server(100);
    let tcp = Listener::bind_tcp("127.0.0.1:0").expect("bind");
    let tcp_target = format!("http://{}", tcp.local_addr().expect("tcp"));
    let path = std::env::temp_dir().join(format!("plexus-bench-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let uds = Listener::bind_unix(&path).expect("bind unix");
    let uds_target = format!("unix:{}", path.display());
    spawn_serve(&echo, tcp);
    spawn_serve(&echo, uds);
    let mut rows = Vec::new();
    for (name, target) in [("tcp", &tcp_target), ("unix", &uds_target)] {
        let channel = Channel::new(target).expect("channel");
        let (_, one) = load(&channel, ECHO, 1);
        let (rate, _) = load(&channel, ECHO, 64);
        let p50 = percentile(&one, 0.5);
        println!("  {name:<5}: p50 {p50:>9.2?} (1 in flight), {rate:>8.0} calls/s (64 in flight)");
        rows.push((p50, rate));
    }
    println!(
        "  unix/tcp: p50 {:.2}x, calls/s {:.2}x",
        rows[1].0.as_secs_f64() / rows[0].0.as_secs_f64(),
        rows[1].1 / rows[0].1
    );
    let _ = std::fs::remove_file(&path);
}
