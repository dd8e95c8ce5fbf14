//! The Rust side of the ABI benchmark (benches/c/run.sh): the same unary calls as
//! benches/c/bench_unary.c, made with the Rust API, against the same echo server.
//!
//! `bench_client TARGET throughput IN_FLIGHT SECONDS` keeps IN_FLIGHT calls going as tasks
//! on the default executor; `bench_client TARGET latency SECONDS` makes blocking calls one at
//! a time. Prints `rust <mode> <in-flight> calls_per_sec=<n> p50_us=<n> p99_us=<n>`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use core_plexus::{CallOptions, Channel, DefaultExecutor, Executor};

const UNARY: &str = "/plexus.peer.Echo/Unary";

/// plexus.peer.EchoRequest { message = "bench"; payload = 64 bytes }, as the C side sends.
fn request() -> Bytes {
    let mut v = vec![0x0a, 5];
    v.extend_from_slice(b"bench");
    v.extend_from_slice(&[0x32, 64]);
    v.extend_from_slice(&[7u8; 64]);
    Bytes::from(v)
}

fn throughput(channel: Channel, in_flight: usize, secs: f64) {
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let running = Arc::new(AtomicUsize::new(in_flight));
    for _ in 0..in_flight {
        let (channel, stop, count, running) = (
            channel.clone(),
            stop.clone(),
            count.clone(),
            running.clone(),
        );
        DefaultExecutor.spawn(Box::pin(async move {
            let req = request();
            while !stop.load(Ordering::Relaxed) {
                channel
                    .unary(UNARY, req.clone(), CallOptions::new())
                    .await
                    .expect("call");
                count.fetch_add(1, Ordering::Relaxed);
            }
            running.fetch_sub(1, Ordering::Release);
        }));
    }
    std::thread::sleep(Duration::from_millis(500));
    let from = count.load(Ordering::Relaxed);
    let started = Instant::now();
    std::thread::sleep(Duration::from_secs_f64(secs));
    let calls = count.load(Ordering::Relaxed) - from;
    let elapsed = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    while running.load(Ordering::Acquire) > 0 {
        std::thread::sleep(Duration::from_millis(5));
    }
    println!(
        "rust throughput {in_flight} calls_per_sec={:.0} p50_us=0 p99_us=0",
        calls as f64 / elapsed
    );
}

fn latency(channel: Channel, secs: f64) {
    let req = request();
    let call = || {
        core_plexus::rt::block_on(channel.unary(UNARY, req.clone(), CallOptions::new()))
            .expect("call");
    };
    let warm = Instant::now() + Duration::from_millis(500);
    while Instant::now() < warm {
        call();
    }
    let mut samples = Vec::with_capacity(1 << 20);
    let started = Instant::now();
    let end = started + Duration::from_secs_f64(secs);
    loop {
        let t0 = Instant::now();
        if t0 >= end {
            break;
        }
        call();
        samples.push(t0.elapsed().as_secs_f64());
    }
    let total = started.elapsed().as_secs_f64();
    samples.sort_by(f64::total_cmp);
    println!(
        "rust latency 1 calls_per_sec={:.0} p50_us={:.1} p99_us={:.1}",
        samples.len() as f64 / total,
        samples[samples.len() / 2] * 1e6,
        samples[samples.len() * 99 / 100] * 1e6
    );
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: bench_client TARGET throughput IN_FLIGHT SECONDS | TARGET latency SECONDS";
    let channel = Channel::new(args.first().expect(usage)).expect("channel");
    async_io::block_on(channel.connect()).expect("connect");
    match args.get(1).map(String::as_str) {
        Some("throughput") => throughput(
            channel,
            args[2].parse().expect(usage),
            args[3].parse().expect(usage),
        ),
        Some("latency") => latency(channel, args[2].parse().expect(usage)),
        _ => panic!("{usage}"),
    }
}
