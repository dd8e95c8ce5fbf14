//! Unary calls per second with 1 and 64 calls in flight: plexus client to plexus server, and
//! tonic client to tonic server as the peer, measured in the same run on TCP loopback (plus the
//! two cross pairs as a check). Both sides call `grpc.testing.BenchmarkService/UnaryCall` with
//! 64-byte payloads each way: plexus through the client and server generated from
//! `interop/proto`, tonic through the benchmark's hand-written tonic glue over the same prost
//! types. Run with `cargo bench -p plexus-benches --bench unary`.
//!
//! Set `BENCH_SECONDS` to change the measuring time per case (default 3).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use plexus::{CallOptions, Executor, Server, SmolExecutor};
use plexus_benches::tonic_peer;
use plexus_benches::{UNARY_PATH, bench_request};
use plexus_interop::grpc::testing::benchmark_service_client::BenchmarkServiceClient;
use plexus_interop::grpc::testing::benchmark_service_server::BenchmarkServiceServer;
use plexus_interop::grpc::testing::{SimpleRequest, SimpleResponse};
use plexus_interop::server::Benchmark;
use tonic::codegen::http;

/// Payload size of each request and each response.
const PAYLOAD_BYTES: usize = 64;

fn seconds() -> Duration {
    let secs = std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3.0);
    Duration::from_secs_f64(secs)
}

// ---- servers ----

fn start_plexus_server() -> std::net::SocketAddr {
    let server = Server::builder()
        .add_service(BenchmarkServiceServer::new(Benchmark))
        .build()
        .expect("server builds");
    let listener = plexus::Listener::bind_tcp("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("tcp");
    SmolExecutor.spawn(Box::pin(async move {
        let _ = server.serve(listener).await;
    }));
    addr
}

fn start_tonic_server(rt: &tokio::runtime::Runtime) -> std::net::SocketAddr {
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    rt.spawn(async move {
        // `tcp_nodelay` on the builder covers only listeners tonic binds itself: set it on
        // each accepted socket, as plexus's server does.
        let incoming = async_stream_nodelay(listener);
        let _ = tonic::transport::Server::builder()
            .add_service(tonic_peer::BenchmarkService)
            .serve_with_incoming(incoming)
            .await;
    });
    addr
}

/// Accepted sockets with TCP_NODELAY set.
fn async_stream_nodelay(
    listener: tokio::net::TcpListener,
) -> impl tokio_stream::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    use tokio_stream::StreamExt;
    tokio_stream::wrappers::TcpListenerStream::new(listener).map(|accepted| {
        let stream = accepted?;
        stream.set_nodelay(true)?;
        Ok(stream)
    })
}

// ---- clients ----

/// Runs `in_flight` workers that each loop on unary calls for the measuring time.
fn run_plexus_client(addr: std::net::SocketAddr, in_flight: usize) -> f64 {
    let channel = plexus::Channel::new(&format!("http://{addr}")).expect("channel");
    let client = BenchmarkServiceClient::new(channel);
    let payload = bench_request(PAYLOAD_BYTES);
    smol::block_on(client.unary_call(&payload, CallOptions::new())).expect("warm-up call");
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let (done_tx, done_rx) = async_channel::bounded::<()>(in_flight);
    for _ in 0..in_flight {
        let (client, payload, stop, count, done) = (
            client.clone(),
            payload.clone(),
            stop.clone(),
            count.clone(),
            done_tx.clone(),
        );
        SmolExecutor.spawn(Box::pin(async move {
            while !stop.load(Ordering::Relaxed) {
                client
                    .unary_call(&payload, CallOptions::new())
                    .await
                    .expect("call");
                count.fetch_add(1, Ordering::Relaxed);
            }
            let _ = done.send(()).await;
        }));
    }
    measure(&count, &stop, || {
        for _ in 0..in_flight {
            smol::block_on(done_rx.recv()).expect("worker finished");
        }
    })
}

fn run_tonic_client(
    rt: &tokio::runtime::Runtime,
    addr: std::net::SocketAddr,
    in_flight: usize,
) -> f64 {
    let channel = rt
        .block_on(
            tonic::transport::Channel::from_shared(format!("http://{addr}"))
                .expect("uri")
                .connect(),
        )
        .expect("connect");
    let payload = bench_request(PAYLOAD_BYTES);
    let path = http::uri::PathAndQuery::from_static(UNARY_PATH);
    let call = |channel: tonic::transport::Channel,
                payload: SimpleRequest,
                path: http::uri::PathAndQuery| async move {
        let mut grpc = tonic::client::Grpc::new(channel);
        grpc.ready().await.expect("ready");
        grpc.unary(
            tonic::Request::new(payload),
            path,
            tonic_prost::ProstCodec::<SimpleRequest, SimpleResponse>::default(),
        )
        .await
        .expect("call")
    };
    rt.block_on(call(channel.clone(), payload.clone(), path.clone()));
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::new();
    for _ in 0..in_flight {
        let (channel, payload, path, stop, count) = (
            channel.clone(),
            payload.clone(),
            path.clone(),
            stop.clone(),
            count.clone(),
        );
        workers.push(rt.spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                call(channel.clone(), payload.clone(), path.clone()).await;
                count.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    measure(&count, &stop, || {
        for w in workers {
            rt.block_on(w).expect("worker");
        }
    })
}

/// Counts completed calls over the measuring window, after a short warm-up.
fn measure(count: &AtomicU64, stop: &AtomicBool, join: impl FnOnce()) -> f64 {
    std::thread::sleep(Duration::from_millis(500));
    let start_count = count.load(Ordering::Relaxed);
    let started = Instant::now();
    std::thread::sleep(seconds());
    let calls = count.load(Ordering::Relaxed) - start_count;
    let elapsed = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    join();
    calls as f64 / elapsed.as_secs_f64()
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let plexus_addr = start_plexus_server();
    let tonic_addr = start_tonic_server(&rt);
    println!(
        "BenchmarkService/UnaryCall, {PAYLOAD_BYTES}-byte payloads, TCP loopback, {:?} per case",
        seconds()
    );
    println!(
        "{:<8} {:>22} {:>22} {:>8}",
        "in-flight", "plexus->plexus calls/s", "tonic->tonic calls/s", "ratio"
    );
    for in_flight in [1, 64] {
        let p = run_plexus_client(plexus_addr, in_flight);
        let t = run_tonic_client(&rt, tonic_addr, in_flight);
        println!("{in_flight:<8} {p:>22.0} {t:>22.0} {:>7.2}x", p / t);
    }
    println!("cross checks (same servers):");
    for in_flight in [1, 64] {
        let pt = run_plexus_client(tonic_addr, in_flight);
        let tp = run_tonic_client(&rt, plexus_addr, in_flight);
        println!(
            "  {in_flight:>2} in flight: plexus->tonic {pt:.0} calls/s, tonic->plexus {tp:.0} calls/s"
        );
    }
}
