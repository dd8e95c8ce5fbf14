//! gRFC A9 on the server: `max_connection_age` sends GOAWAY and clients move their next calls
//! to new connections without a failed call; `max_connection_age_grace` cuts the calls still
//! open after it; `max_connection_idle` closes connections with no calls, and not busy ones.
//! The client counts its connections through its connector, and resolves again on GOAWAY.

use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use async_io::Timer;
use bytes::Bytes;
use futures_util::future::{Either, select};
use plexus::rt::BoxFuture;
use plexus::transport::{Address, BoxedIo, Connector, SocketConnector};
use plexus::{
    BytesCodec, CallOptions, Channel, Code, ConnectivityState, Listener, Request, Resolver,
    Response, Server, ServerBuilder, Status,
};

/// Answers at once.
const ECHO: &str = "/age.Test/Echo";
/// Answers after the number of milliseconds in its request (as text).
const NAP: &str = "/age.Test/Nap";
/// Never answers; ends only when cancelled.
const HANG: &str = "/age.Test/Hang";

const TEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Counts the connections the channel opens.
#[derive(Clone, Default)]
struct Counting(Arc<AtomicUsize>);

impl Counting {
    fn count(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

impl Connector for Counting {
    fn connect(&self, address: &Address) -> BoxFuture<std::io::Result<BoxedIo>> {
        self.0.fetch_add(1, Ordering::SeqCst);
        SocketConnector.connect(address)
    }
}

fn serve(builder: ServerBuilder) -> String {
    let server = builder
        .unary(ECHO, BytesCodec, |req: Request<Bytes>| async move {
            Ok(Response::new(req.into_message()))
        })
        .unary(NAP, BytesCodec, |req: Request<Bytes>| async move {
            let ms: u64 = std::str::from_utf8(req.message()).unwrap().parse().unwrap();
            Timer::after(Duration::from_millis(ms)).await;
            Ok(Response::new(Bytes::new()))
        })
        .unary(HANG, BytesCodec, |req: Request<Bytes>| async move {
            req.context().cancelled().await;
            Ok(Response::new(Bytes::new()))
        })
        .build()
        .unwrap();
    let listener = Listener::bind_tcp("127.0.0.1:0").unwrap();
    let target = format!("http://{}", listener.local_addr().unwrap());
    smol::spawn(async move { server.serve(listener).await }).detach();
    target
}

fn channel(target: &str) -> (Channel, Counting) {
    let counting = Counting::default();
    let channel = Channel::builder(target)
        .connector(counting.clone())
        .build()
        .unwrap();
    (channel, counting)
}

fn run(fut: impl std::future::Future<Output = ()>) {
    smol::block_on(async {
        if let Either::Right(_) = select(pin!(fut), Timer::after(TEST_TIMEOUT)).await {
            panic!("test did not finish within {TEST_TIMEOUT:?}");
        }
    })
}

#[test]
fn aged_connections_are_replaced_without_a_failed_call() {
    let target = serve(Server::builder().max_connection_age(Duration::from_millis(100)));
    let (channel, connections) = channel(&target);
    run(async {
        let mut calls = 0;
        while connections.count() < 4 {
            let reply = channel
                .unary(ECHO, Bytes::from_static(b"x"), CallOptions::new())
                .await;
            assert_eq!(reply.unwrap().into_message(), "x", "call {calls} failed");
            calls += 1;
            Timer::after(Duration::from_millis(5)).await;
        }
    });
}

#[test]
fn calls_left_after_the_grace_are_cut() {
    let target = serve(
        Server::builder()
            .max_connection_age(Duration::from_millis(100))
            .max_connection_age_grace(Duration::from_millis(200)),
    );
    let (channel, _) = channel(&target);
    run(async {
        let status = channel
            .unary(HANG, Bytes::new(), CallOptions::new())
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
        // The next call goes to a new connection.
        let reply = channel.unary(ECHO, Bytes::from_static(b"y"), CallOptions::new());
        assert_eq!(reply.await.unwrap().into_message(), "y");
    });
}

#[test]
fn a_call_within_the_grace_finishes() {
    let target = serve(
        Server::builder()
            .max_connection_age(Duration::from_millis(50))
            .max_connection_age_grace(Duration::from_secs(60)),
    );
    let (channel, _) = channel(&target);
    run(async {
        // Outlives the connection's age several times over, within the grace.
        let reply = channel.unary(NAP, Bytes::from_static(b"500"), CallOptions::new());
        reply.await.unwrap();
    });
}

#[test]
fn idle_connections_are_closed_and_busy_ones_kept() {
    let target = serve(Server::builder().max_connection_idle(Duration::from_secs(1)));
    let (channel, connections) = channel(&target);
    run(async {
        // A call three times the idle limit long keeps its connection: no GOAWAY (which
        // would take the channel out of READY) arrives before its answer. An answer and a
        // later GOAWAY come in that order on the one connection, and `select` looks at the
        // call first, so this holds however slow the machine is.
        let reply = channel.unary(ECHO, Bytes::from_static(b"z"), CallOptions::new());
        assert_eq!(reply.await.unwrap().into_message(), "z");
        assert_eq!(channel.state(), ConnectivityState::Ready);
        let long = channel.unary(NAP, Bytes::from_static(b"3000"), CallOptions::new());
        let left = channel.wait_for_state_change(ConnectivityState::Ready);
        match select(pin!(long), pin!(left)).await {
            Either::Left((reply, _)) => {
                reply.unwrap();
            }
            Either::Right((state, _)) => panic!("a busy connection went {state:?}"),
        }
        assert_eq!(connections.count(), 1);

        // Then nothing: the server says GOAWAY and the channel goes IDLE.
        let limit = Instant::now() + Duration::from_secs(20);
        while channel.state() != ConnectivityState::Idle {
            assert!(
                Instant::now() < limit,
                "the idle connection was never closed"
            );
            let changed = channel.wait_for_state_change(channel.state());
            let _ = select(pin!(changed), Timer::after(Duration::from_millis(100))).await;
        }
        let reply = channel.unary(ECHO, Bytes::from_static(b"w"), CallOptions::new());
        assert_eq!(reply.await.unwrap().into_message(), "w");
        assert_eq!(connections.count(), 2);
    });
}

#[test]
fn zero_lifetimes_are_refused() {
    for builder in [
        Server::builder().max_connection_age(Duration::ZERO),
        Server::builder().max_connection_idle(Duration::ZERO),
        Server::builder().max_connection_age_grace(Duration::ZERO),
    ] {
        let err = builder.build().unwrap_err();
        assert!(err.to_string().contains("max connection"), "{err}");
    }
}

/// Answers one fixed address and counts how often it was asked.
struct CountingResolver {
    address: Address,
    asked: Arc<AtomicUsize>,
}

impl Resolver for CountingResolver {
    fn resolve(&self) -> BoxFuture<Result<Vec<Address>, Status>> {
        self.asked.fetch_add(1, Ordering::SeqCst);
        let address = self.address.clone();
        Box::pin(async move { Ok(vec![address]) })
    }
}

/// A channel to a server whose connections age after `age`, resolving through a
/// [`CountingResolver`] with no periodic resolution (only GOAWAYs ask for one) and
/// `min_interval` between them; and the resolver's count.
fn resolving_channel(age: Duration, min_interval: Duration) -> (Channel, Arc<AtomicUsize>) {
    let target = serve(Server::builder().max_connection_age(age));
    let address = Address::Tcp(target.trim_start_matches("http://").parse().unwrap());
    let asked = Arc::new(AtomicUsize::new(0));
    let channel = Channel::builder(&target)
        .resolver(CountingResolver {
            address,
            asked: asked.clone(),
        })
        .resolve_interval(Duration::from_secs(3600))
        .min_resolve_interval(min_interval)
        .build()
        .unwrap();
    (channel, asked)
}

#[test]
fn a_goaway_makes_the_channel_resolve_again() {
    let (channel, asked) = resolving_channel(Duration::from_millis(100), Duration::from_millis(1));
    run(async {
        let reply = channel.unary(ECHO, Bytes::from_static(b"x"), CallOptions::new());
        reply.await.unwrap();
        assert_eq!(asked.load(Ordering::SeqCst), 1);
        let limit = Instant::now() + Duration::from_secs(20);
        while asked.load(Ordering::SeqCst) < 2 {
            assert!(
                Instant::now() < limit,
                "the GOAWAY did not make the channel resolve"
            );
            Timer::after(Duration::from_millis(10)).await;
        }
        let reply = channel.unary(ECHO, Bytes::from_static(b"y"), CallOptions::new());
        assert_eq!(reply.await.unwrap().into_message(), "y");
    });
}

#[test]
fn resolutions_asked_too_soon_wait_for_the_minimum_interval() {
    let (channel, asked) = resolving_channel(Duration::from_millis(50), Duration::from_secs(3600));
    run(async {
        // Several GOAWAYs, each asking; the minimum interval holds them all back.
        for _ in 0..5 {
            let reply = channel.unary(NAP, Bytes::from_static(b"120"), CallOptions::new());
            reply.await.unwrap();
        }
        assert_eq!(asked.load(Ordering::SeqCst), 1);
    });
}

/// A server whose WHO answers `name`, with connections that age after 50 ms.
fn aging_server(name: &'static str) -> String {
    let server = Server::builder()
        .max_connection_age(Duration::from_millis(50))
        .unary(WHO, BytesCodec, move |_req: Request<Bytes>| async move {
            Ok(Response::new(Bytes::from_static(name.as_bytes())))
        })
        .build()
        .unwrap();
    let listener = Listener::bind_tcp("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    smol::spawn(async move { server.serve(listener).await }).detach();
    address
}

const WHO: &str = "/age.Test/Who";

#[test]
fn pick_first_shuffles_its_addresses_when_asked() {
    let addresses = ["a", "b", "c"].map(aging_server);
    let target = format!("ipv4:{}", addresses.join(","));
    let shuffled = r#"{"loadBalancingConfig": [{"pick_first": {"shuffleAddressList": true}}]}"#;
    let channel = |config: &str| {
        Channel::builder(&target)
            .default_service_config(config)
            .min_resolve_interval(Duration::from_millis(1))
            .build()
            .unwrap()
    };
    run(async {
        // In list order, pick_first always goes back to the first server, however often its
        // connection ages out.
        let plain = channel("{}");
        for _ in 0..20 {
            let reply = plain.unary(WHO, Bytes::new(), CallOptions::new()).await;
            assert_eq!(reply.unwrap().into_message(), "a");
            Timer::after(Duration::from_millis(10)).await;
        }
        // Shuffled, each resolution after a GOAWAY may start with another.
        let shuffling = channel(shuffled);
        let mut seen = std::collections::BTreeSet::new();
        let limit = Instant::now() + Duration::from_secs(20);
        while seen.len() < 3 {
            assert!(Instant::now() < limit, "only {seen:?} answered");
            let reply = shuffling.unary(WHO, Bytes::new(), CallOptions::new()).await;
            seen.insert(reply.unwrap().into_message());
            Timer::after(Duration::from_millis(5)).await;
        }
    });
}
