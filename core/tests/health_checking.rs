//! Client-side health checking (gRFC A17) end to end, over loopback TCP on 127.0.0.1-3: plexus
//! servers whose `grpc.health.v1.Health/Watch` the test implements by hand and flips, and
//! channels that name `healthCheckConfig.serviceName` in their service config. Every scenario
//! runs on plexus's default executor and on smol's; each body has a hard 60 s timeout, and
//! every wait for the channel to notice a change is a bounded loop (20 s), never a sleep.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::atomic::{AtomicI32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_io::Timer;
use bytes::Bytes;
use event_listener::Event;
use futures_util::future::{Either, select};
use plexus::{
    BackoffConfig, BytesCodec, CallOptions, Channel, Code, ConnectivityState, DefaultExecutor,
    Executor, Listener, ProstCodec, Request, Response, ResponseSink, Server, SmolExecutor, Status,
};

/// Answers with the server's name.
const WORK: &str = "/health.Test/Work";
/// The health service's streaming method.
const WATCH: &str = "/grpc.health.v1.Health/Watch";
/// The service the channels ask about.
const SERVICE: &str = "health.Test";

const SERVING: i32 = 1;
const NOT_SERVING: i32 = 2;

/// Hard limit on one test body.
const TEST_TIMEOUT: Duration = Duration::from_secs(60);
/// Limit on waiting for the channel to notice a change.
const NOTICE: Duration = Duration::from_secs(20);
const MS: Duration = Duration::from_millis(1);

/// `grpc.health.v1.HealthCheckRequest`.
#[derive(Clone, PartialEq, prost::Message)]
struct HealthCheckRequest {
    #[prost(string, tag = "1")]
    service: String,
}

/// `grpc.health.v1.HealthCheckResponse`.
#[derive(Clone, PartialEq, prost::Message)]
struct HealthCheckResponse {
    #[prost(int32, tag = "1")]
    status: i32,
}

// ---------------------------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------------------------

/// Which executor a run uses, for both the servers and the channels.
#[derive(Debug, Clone, Copy)]
enum Exec {
    Default,
    Smol,
}

impl Exec {
    fn spawn(self, fut: plexus::rt::BoxFuture<()>) {
        match self {
            Exec::Default => DefaultExecutor.spawn(fut),
            Exec::Smol => SmolExecutor.spawn(fut),
        }
    }
}

#[derive(Clone, Copy)]
struct ExecHandle(Exec);

impl Executor for ExecHandle {
    fn spawn(&self, fut: plexus::rt::BoxFuture<()>) {
        self.0.spawn(fut);
    }
}

/// Runs `fut` on smol, failing the test if it takes longer than [`TEST_TIMEOUT`].
fn run<F: Future<Output = ()>>(fut: F) {
    smol::block_on(async {
        if let Either::Right(_) = select(pin!(fut), Timer::after(TEST_TIMEOUT)).await {
            panic!("test did not finish within {TEST_TIMEOUT:?}");
        }
    })
}

/// The serving status a test sets for one server, and what its Watch handler saw.
#[derive(Debug, Default)]
struct Switch {
    status: AtomicI32,
    changed: Event,
    /// Watch calls started.
    watches: AtomicUsize,
    /// Watch calls running now.
    open: AtomicUsize,
    /// The service names the Watch calls asked about.
    services: Mutex<Vec<String>>,
}

impl Switch {
    fn set(&self, status: i32) {
        self.status.store(status, Ordering::SeqCst);
        self.changed.notify(usize::MAX);
    }

    fn watches(&self) -> usize {
        self.watches.load(Ordering::SeqCst)
    }

    fn open(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }
}

/// Counts a running Watch handler out when it ends (cancelled included).
struct Running(Arc<Switch>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Streams the switch's status: now, then at every change, until the call goes away.
async fn watch(
    switch: Arc<Switch>,
    req: Request<HealthCheckRequest>,
    sink: ResponseSink<HealthCheckResponse>,
) -> Result<(), Status> {
    switch.watches.fetch_add(1, Ordering::SeqCst);
    switch.open.fetch_add(1, Ordering::SeqCst);
    let _running = Running(switch.clone());
    let service = req.message().service.clone();
    switch.services.lock().unwrap().push(service);
    let context = req.context().clone();
    let follow = async {
        let mut sent = None;
        loop {
            let listener = switch.changed.listen();
            let now = switch.status.load(Ordering::SeqCst);
            if sent != Some(now) {
                sink.send(HealthCheckResponse { status: now }).await?;
                sent = Some(now);
            }
            listener.await;
        }
    };
    match select(pin!(follow), pin!(context.cancelled())).await {
        Either::Left((result, _)) => result,
        Either::Right(_) => Ok(()),
    }
}

/// A server answering `WORK` with its name, with or without the health service.
struct Backend {
    server: Server,
    addr: SocketAddr,
    switch: Arc<Switch>,
    /// `WORK` calls answered.
    hits: Arc<AtomicUsize>,
    exec: Exec,
}

impl Backend {
    fn start(exec: Exec, ip: &str, name: &'static str, status: Option<i32>) -> Backend {
        let listener = Listener::bind_tcp((ip, 0)).expect("bind tcp");
        Backend::on(exec, listener, name, status)
    }

    /// A server on `addr` again, once the old socket lets go of it (up to 2 s).
    async fn restart(exec: Exec, addr: SocketAddr, name: &'static str, status: i32) -> Backend {
        let start = Instant::now();
        let listener = loop {
            match Listener::bind_tcp(addr) {
                Ok(listener) => break listener,
                Err(err) if start.elapsed() < Duration::from_secs(2) => {
                    let _ = err;
                    Timer::after(20 * MS).await;
                }
                Err(err) => panic!("could not bind {addr} again: {err}"),
            }
        };
        Backend::on(exec, listener, name, Some(status))
    }

    fn on(exec: Exec, listener: Listener, name: &'static str, status: Option<i32>) -> Backend {
        let switch = Arc::new(Switch::default());
        let hits = Arc::new(AtomicUsize::new(0));
        let counted = hits.clone();
        let mut builder = Server::builder().executor(ExecHandle(exec)).unary(
            WORK,
            BytesCodec,
            move |_req: Request<Bytes>| {
                counted.fetch_add(1, Ordering::SeqCst);
                async move { Ok(Response::new(Bytes::from_static(name.as_bytes()))) }
            },
        );
        if let Some(status) = status {
            switch.set(status);
            let s = switch.clone();
            builder = builder.server_streaming(
                WATCH,
                ProstCodec::<HealthCheckResponse, HealthCheckRequest>::default(),
                move |req, sink| watch(s.clone(), req, sink),
            );
        }
        let server = builder.build().expect("server settings are valid");
        let addr = listener.local_addr().expect("tcp address");
        let serving = server.clone();
        exec.spawn(Box::pin(async move {
            if let Err(err) = serving.serve(listener).await {
                panic!("serve failed: {err}");
            }
        }));
        Backend {
            server,
            addr,
            switch,
            hits,
            exec,
        }
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        let server = self.server.clone();
        self.exec.spawn(Box::pin(async move {
            server.shutdown(100 * MS).await;
        }));
    }
}

/// The `ipv4:` target listing `backends` in order.
fn target(backends: &[&Backend]) -> String {
    let addrs: Vec<_> = backends.iter().map(|b| b.addr.to_string()).collect();
    format!("ipv4:{}", addrs.join(","))
}

/// A service config choosing `policy`, with health checking of [`SERVICE`] if `health`.
fn service_config(policy: &str, health: bool) -> String {
    let check = match health {
        true => format!(r#", "healthCheckConfig": {{"serviceName": "{SERVICE}"}}"#),
        false => String::new(),
    };
    format!(r#"{{"loadBalancingConfig": [{{"{policy}": {{}}}}]{check}}}"#)
}

/// A channel to `backends` with `config`, on `exec`, with a reconnect (and health-check
/// retry) backoff short enough for tests.
fn channel(exec: Exec, backends: &[&Backend], config: &str) -> Channel {
    Channel::builder(&target(backends))
        .executor(ExecHandle(exec))
        .backoff(BackoffConfig {
            initial: 50 * MS,
            multiplier: 1.6,
            jitter: 0.2,
            max: 500 * MS,
        })
        .default_service_config(config)
        .build()
        .expect("channel settings are valid")
}

/// One `WORK` call; the name of the server that answered.
async fn call(channel: &Channel, options: CallOptions) -> Result<String, Status> {
    let reply = channel.unary(WORK, Bytes::new(), options).await?;
    Ok(String::from_utf8_lossy(reply.message()).into_owned())
}

/// One `WORK` call that must succeed.
async fn who(channel: &Channel) -> String {
    call(channel, CallOptions::default().timeout(NOTICE))
        .await
        .unwrap_or_else(|status| panic!("call failed: {status:?}"))
}

/// Calls until `done` holds for the set of servers that answered so far; panics naming
/// `what` after [`NOTICE`].
async fn call_until(channel: &Channel, what: &str, done: impl Fn(&[String]) -> bool) {
    let start = Instant::now();
    let mut seen = Vec::new();
    while !done(&seen) {
        assert!(
            start.elapsed() < NOTICE,
            "{what}: not after {NOTICE:?}; answers {seen:?}, {:?}",
            channel.stats()
        );
        let name = who(channel).await;
        if !seen.contains(&name) {
            seen.push(name);
        }
        Timer::after(MS).await;
    }
}

/// Waits until `cond` holds, checking every 5 ms; panics naming `what` after [`NOTICE`].
async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < NOTICE,
            "{what}: still false after {NOTICE:?}"
        );
        Timer::after(5 * MS).await;
    }
}

/// The state of the channel's endpoint `i` (in target order).
fn endpoint_state(channel: &Channel, i: usize) -> ConnectivityState {
    channel.stats().endpoints[i].state
}

macro_rules! on_both_executors {
    ($($scenario:ident),* $(,)?) => {
        mod default_executor {
            $(#[test] fn $scenario() { super::run(super::$scenario(super::Exec::Default)) })*
        }
        mod smol_executor {
            $(#[test] fn $scenario() { super::run(super::$scenario(super::Exec::Smol)) })*
        }
    };
}

on_both_executors!(
    round_robin_drops_and_readds_a_backend_that_flips,
    a_server_without_the_health_service_counts_as_healthy,
    pick_first_ignores_health_checking,
    no_health_check_config_makes_no_watch_call,
    with_no_healthy_backend_calls_fail_or_wait_for_one,
    a_reconnected_backend_is_watched_again,
    the_watch_ends_when_the_channel_goes_idle_or_is_dropped,
);

// ---------------------------------------------------------------------------------------------
// Scenarios
// ---------------------------------------------------------------------------------------------

/// round_robin over three SERVING servers reaches all three; one flips to NOT_SERVING and
/// calls stop reaching it; it flips back and calls reach it again.
async fn round_robin_drops_and_readds_a_backend_that_flips(exec: Exec) {
    let s1 = Backend::start(exec, "127.0.0.1", "s1", Some(SERVING));
    let s2 = Backend::start(exec, "127.0.0.2", "s2", Some(SERVING));
    let s3 = Backend::start(exec, "127.0.0.3", "s3", Some(SERVING));
    let channel = channel(exec, &[&s1, &s2, &s3], &service_config("round_robin", true));
    call_until(&channel, "all three servers answer", |seen| seen.len() == 3).await;
    assert!(s2.switch.watches() >= 1, "no Watch call reached s2");
    assert!(
        s2.switch
            .services
            .lock()
            .unwrap()
            .iter()
            .all(|s| s == SERVICE),
        "Watch asked about the wrong service"
    );

    s2.switch.set(NOT_SERVING);
    eventually("s2 leaves READY once NOT_SERVING", || {
        endpoint_state(&channel, 1) == ConnectivityState::TransientFailure
    })
    .await;
    let before = s2.hits();
    for _ in 0..60 {
        let name = who(&channel).await;
        assert_ne!(name, "s2", "a NOT_SERVING server got a call");
    }
    assert_eq!(s2.hits(), before);
    assert!(s1.hits() > 0 && s3.hits() > 0);

    s2.switch.set(SERVING);
    call_until(&channel, "s2 answers again once SERVING", |seen| {
        seen.iter().any(|s| s == "s2")
    })
    .await;
    assert_eq!(endpoint_state(&channel, 1), ConnectivityState::Ready);
}

/// A server whose Watch is UNIMPLEMENTED is used as healthy, while a NOT_SERVING one beside it
/// is not.
async fn a_server_without_the_health_service_counts_as_healthy(exec: Exec) {
    let s1 = Backend::start(exec, "127.0.0.1", "s1", Some(NOT_SERVING));
    let s2 = Backend::start(exec, "127.0.0.2", "s2", None);
    let channel = channel(exec, &[&s1, &s2], &service_config("round_robin", true));
    for _ in 0..30 {
        assert_eq!(who(&channel).await, "s2");
    }
    assert_eq!(s1.hits(), 0, "the NOT_SERVING server got calls");
    assert_eq!(endpoint_state(&channel, 1), ConnectivityState::Ready);
    eventually("s1 is TRANSIENT_FAILURE once its Watch answers", || {
        endpoint_state(&channel, 0) == ConnectivityState::TransientFailure
    })
    .await;
    assert!(s1.switch.watches() >= 1);
}

/// pick_first does not health-check (A17): its calls go to the first server even when that
/// one says NOT_SERVING, and no Watch call is made; round_robin with the same config avoids it.
async fn pick_first_ignores_health_checking(exec: Exec) {
    let s1 = Backend::start(exec, "127.0.0.1", "s1", Some(NOT_SERVING));
    let s2 = Backend::start(exec, "127.0.0.2", "s2", Some(SERVING));
    let first = channel(exec, &[&s1, &s2], &service_config("pick_first", true));
    for _ in 0..20 {
        assert_eq!(who(&first).await, "s1");
    }
    assert_eq!(endpoint_state(&first, 0), ConnectivityState::Ready);
    assert_eq!(s1.switch.watches() + s2.switch.watches(), 0);

    let rr = channel(exec, &[&s1, &s2], &service_config("round_robin", true));
    for _ in 0..20 {
        assert_eq!(who(&rr).await, "s2");
    }
    assert!(s1.switch.watches() >= 1);
}

/// Without healthCheckConfig (or with health checking turned off on the channel) no Watch call
/// is made and a NOT_SERVING server still gets calls; with it, the same servers see Watch calls
/// and the NOT_SERVING one none of the calls.
async fn no_health_check_config_makes_no_watch_call(exec: Exec) {
    let s1 = Backend::start(exec, "127.0.0.1", "s1", Some(NOT_SERVING));
    let s2 = Backend::start(exec, "127.0.0.2", "s2", Some(SERVING));
    let plain = channel(exec, &[&s1, &s2], &service_config("round_robin", false));
    call_until(&plain, "both servers answer", |seen| seen.len() == 2).await;
    assert_eq!(s1.switch.watches() + s2.switch.watches(), 0);
    assert_eq!(endpoint_state(&plain, 0), ConnectivityState::Ready);
    drop(plain);
    // The config, with health checking turned off on the channel (A17's channel setting).
    let inhibited = Channel::builder(&target(&[&s1, &s2]))
        .executor(ExecHandle(exec))
        .default_service_config(&service_config("round_robin", true))
        .health_checking(false)
        .build()
        .expect("channel settings are valid");
    call_until(&inhibited, "both servers answer", |seen| seen.len() == 2).await;
    assert_eq!(s1.switch.watches() + s2.switch.watches(), 0);
    drop(inhibited);

    let checked = channel(exec, &[&s1, &s2], &service_config("round_robin", true));
    let before = s1.hits();
    for _ in 0..20 {
        assert_eq!(who(&checked).await, "s2");
    }
    assert_eq!(s1.hits(), before);
    assert!(s1.switch.watches() >= 1 && s2.switch.watches() >= 1);
}

/// With every server NOT_SERVING a call fails UNAVAILABLE saying no endpoint is healthy (and
/// naming the service), while a wait-for-ready call waits and completes once one recovers.
async fn with_no_healthy_backend_calls_fail_or_wait_for_one(exec: Exec) {
    let s1 = Backend::start(exec, "127.0.0.1", "s1", Some(NOT_SERVING));
    let s2 = Backend::start(exec, "127.0.0.2", "s2", Some(NOT_SERVING));
    let channel = channel(exec, &[&s1, &s2], &service_config("round_robin", true));
    // The first call starts connecting; it waits for the health checks' first answers.
    let status = call(&channel, CallOptions::default().timeout(NOTICE))
        .await
        .expect_err("a call succeeded with no healthy server");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(
        status.message().contains("no endpoint is healthy")
            && status.message().contains(SERVICE)
            && status.message().contains("NOT_SERVING"),
        "{status:?}"
    );
    assert_eq!(channel.state(), ConnectivityState::TransientFailure);
    assert_eq!(s1.hits() + s2.hits(), 0);
    let status = channel
        .connect()
        .await
        .expect_err("connected with no healthy server");
    assert!(status.message().contains("NOT_SERVING"), "{status:?}");

    let waiting = {
        let channel = channel.clone();
        let options = CallOptions::default().wait_for_ready(true).timeout(NOTICE);
        async move { call(&channel, options).await }
    };
    let (tx, rx) = async_channel::bounded(1);
    exec.spawn(Box::pin(async move {
        let _ = tx.send(waiting.await).await;
    }));
    // The call has started (it is counted before it picks an endpoint) with no server healthy.
    eventually("the wait-for-ready call starts", || {
        channel.stats().calls_started == 2
    })
    .await;
    s1.switch.set(SERVING);
    let answer = rx.recv().await.expect("the waiting call's task ended");
    assert_eq!(answer.expect("the wait-for-ready call"), "s1");
    assert_eq!(s2.hits(), 0);
}

/// A server that dies and comes back on the same address NOT_SERVING: the reconnected
/// subchannel starts a new Watch, gets no calls until SERVING, then gets them again.
async fn a_reconnected_backend_is_watched_again(exec: Exec) {
    let s1 = Backend::start(exec, "127.0.0.1", "s1", Some(SERVING));
    let s2 = Backend::start(exec, "127.0.0.2", "s2", Some(SERVING));
    let channel = channel(exec, &[&s1, &s2], &service_config("round_robin", true));
    call_until(&channel, "both servers answer", |seen| seen.len() == 2).await;

    s2.server.shutdown(Duration::ZERO).await;
    eventually("s2 leaves READY once it is gone", || {
        endpoint_state(&channel, 1) != ConnectivityState::Ready
    })
    .await;
    let s2b = Backend::restart(exec, s2.addr, "s2", NOT_SERVING).await;
    // Calls keep the channel busy while it reconnects to s2 and asks it again.
    let start = Instant::now();
    while s2b.switch.watches() == 0 {
        assert!(start.elapsed() < NOTICE, "no Watch on the restarted server");
        assert_eq!(who(&channel).await, "s1");
        Timer::after(MS).await;
    }
    eventually("the restarted s2 is TRANSIENT_FAILURE", || {
        endpoint_state(&channel, 1) == ConnectivityState::TransientFailure
    })
    .await;
    for _ in 0..20 {
        assert_eq!(who(&channel).await, "s1");
    }
    assert_eq!(s2b.hits(), 0, "the restarted NOT_SERVING server got calls");

    s2b.switch.set(SERVING);
    call_until(&channel, "the restarted s2 answers once SERVING", |seen| {
        seen.iter().any(|s| s == "s2")
    })
    .await;
}

/// The Watch does not keep a channel from going idle (its connection closes, and the Watch
/// with it), healthy or not, and dropping a channel ends its Watch.
async fn the_watch_ends_when_the_channel_goes_idle_or_is_dropped(exec: Exec) {
    let s1 = Backend::start(exec, "127.0.0.1", "s1", Some(SERVING));
    let idle = Channel::builder(&target(&[&s1]))
        .executor(ExecHandle(exec))
        .idle_timeout(200 * MS)
        .default_service_config(&service_config("round_robin", true))
        .build()
        .expect("channel settings are valid");
    assert_eq!(who(&idle).await, "s1");
    assert_eq!(s1.switch.watches(), 1);
    eventually("the idle channel's Watch ends", || {
        s1.switch.open() == 0 && idle.state() == ConnectivityState::Idle
    })
    .await;
    assert_eq!(idle.stats().calls_started, 1);

    // A channel whose only endpoint is connected but NOT_SERVING goes idle too.
    let s2 = Backend::start(exec, "127.0.0.2", "s2", Some(NOT_SERVING));
    let unhealthy = Channel::builder(&target(&[&s2]))
        .executor(ExecHandle(exec))
        .idle_timeout(200 * MS)
        .default_service_config(&service_config("round_robin", true))
        .build()
        .expect("channel settings are valid");
    let status = call(&unhealthy, CallOptions::default().timeout(NOTICE))
        .await
        .expect_err("a call succeeded with no healthy server");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert_eq!(s2.switch.watches(), 1);
    eventually("the unhealthy channel's Watch ends", || {
        s2.switch.open() == 0 && unhealthy.state() == ConnectivityState::Idle
    })
    .await;

    let dropped = channel(exec, &[&s1], &service_config("round_robin", true));
    assert_eq!(who(&dropped).await, "s1");
    assert_eq!(s1.switch.open(), 1);
    drop(dropped);
    eventually("the dropped channel's Watch ends", || s1.switch.open() == 0).await;
}
