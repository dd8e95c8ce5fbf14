//! Unary calls per second with 1 and 64 calls in flight: plexus client to plexus server, and
//! tonic client to tonic server as the peer, measured in the same run on TCP loopback (plus the
//! two cross pairs as a check). Run with `cargo bench -p plexus-benches --bench unary`.
//!
//! Set `BENCH_SECONDS` to change the measuring time per case (default 3).

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use plexus::{CallOptions, Executor, ProstCodec, Request, Response, Server, SmolExecutor};
use tonic::codegen::{BoxFuture, Service, http};

/// The message both implementations echo.
#[derive(Clone, PartialEq, prost::Message)]
struct Payload {
    #[prost(bytes = "bytes", tag = "1")]
    data: Bytes,
}

const METHOD: &str = "/bench.Echo/Unary";
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
        .unary(
            METHOD,
            ProstCodec::<Payload, Payload>::new(),
            |req: Request<Payload>| async move { Ok(Response::new(req.into_message())) },
        )
        .build()
        .expect("server builds");
    let listener = plexus::Listener::bind_tcp("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("tcp");
    SmolExecutor.spawn(Box::pin(async move {
        let _ = server.serve(listener).await;
    }));
    addr
}

#[derive(Clone)]
struct TonicEcho;

impl tonic::server::NamedService for TonicEcho {
    const NAME: &'static str = "bench.Echo";
}

struct EchoUnary;

impl tonic::server::UnaryService<Payload> for EchoUnary {
    type Response = Payload;
    type Future = BoxFuture<tonic::Response<Payload>, tonic::Status>;

    fn call(&mut self, request: tonic::Request<Payload>) -> Self::Future {
        Box::pin(async move { Ok(tonic::Response::new(request.into_inner())) })
    }
}

impl Service<http::Request<tonic::body::Body>> for TonicEcho {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Infallible>;

    fn poll_ready(
        &mut self,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Infallible>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        Box::pin(async move {
            let mut grpc =
                tonic::server::Grpc::new(tonic_prost::ProstCodec::<Payload, Payload>::default());
            Ok(grpc.unary(EchoUnary, request).await)
        })
    }
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
            .add_service(TonicEcho)
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
    let client = channel.typed(ProstCodec::<Payload, Payload>::new());
    let payload = Payload {
        data: Bytes::from(vec![7u8; PAYLOAD_BYTES]),
    };
    smol::block_on(client.unary(METHOD, &payload, CallOptions::new())).expect("warm-up call");
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
                    .unary(METHOD, &payload, CallOptions::new())
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
    let payload = Payload {
        data: Bytes::from(vec![7u8; PAYLOAD_BYTES]),
    };
    let path = http::uri::PathAndQuery::from_static(METHOD);
    let call = |channel: tonic::transport::Channel,
                payload: Payload,
                path: http::uri::PathAndQuery| async move {
        let mut grpc = tonic::client::Grpc::new(channel);
        grpc.ready().await.expect("ready");
        grpc.unary(
            tonic::Request::new(payload),
            path,
            tonic_prost::ProstCodec::<Payload, Payload>::default(),
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
        "unary echo, {PAYLOAD_BYTES}-byte payload, TCP loopback, {:?} per case",
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
