//! Channel behaviour end to end, over loopback TCP (and an abstract Unix socket) on plexus's
//! default executor: per-endpoint connection pools against a server's MAX_CONCURRENT_STREAMS,
//! FIFO queueing, connectivity states, reconnects after a server dies, GOAWAY, many calls
//! from many threads, pick_first / round_robin / custom pickers, the idle timeout and the
//! channel's statistics. Every test body has a hard 30 s timeout.

#[path = "support/gated.rs"]
mod gated;

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_io::Timer;
use bytes::Bytes;
use futures_util::future::{Either, join, join_all, select};
use gated::GatedIo;
use plexus::rt::BoxFuture;
use plexus::transport::{Address, BoxedIo, Connector, SocketConnector};
use plexus::{
    BackoffConfig, BytesCodec, CallOptions, Channel, ChannelBuilder, Code, ConnectivityState,
    EndpointStats, Executor, LbPolicy, Listener, Picker, Request, Response, Server, ServerBuilder,
    SmolExecutor, Status,
};

use ConnectivityState::{Connecting, Idle, Ready, TransientFailure};

/// Hard limit on one test body.
const TEST_TIMEOUT: Duration = Duration::from_secs(30);

const MS: Duration = Duration::from_millis(1);
const SECOND: Duration = Duration::from_secs(1);

/// Replies with the server's name after the server's delay.
const WORK: &str = "/channel.Test/Work";
/// Replies after 300 ms.
const SLOW: &str = "/channel.Test/Slow";
/// Replies after 700 ms.
const LONG: &str = "/channel.Test/Long";
/// Replies after 10 s (a call that is still in flight when the test acts).
const HOLD: &str = "/channel.Test/Hold";
/// Not routed: UNIMPLEMENTED.
const MISSING: &str = "/channel.Test/Missing";

// ---------------------------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------------------------

/// Runs `fut` on smol, failing the test if it takes longer than [`TEST_TIMEOUT`].
fn run<F: Future<Output = ()>>(fut: F) {
    smol::block_on(async {
        if let Either::Right(_) = select(pin!(fut), Timer::after(TEST_TIMEOUT)).await {
            panic!("test did not finish within {TEST_TIMEOUT:?}");
        }
    })
}

/// `fut`'s output; panics naming `what` if it takes longer than `limit`.
async fn within<F: Future>(limit: Duration, what: &str, fut: F) -> F::Output {
    match select(pin!(fut), Timer::after(limit)).await {
        Either::Left((out, _)) => out,
        Either::Right(_) => panic!("{what}: did not complete within {limit:?}"),
    }
}

/// Waits until `cond` holds, checking every 5 ms; panics naming `what` after `limit`.
async fn eventually(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        if start.elapsed() > limit {
            panic!("{what}: still false after {limit:?}");
        }
        Timer::after(5 * MS).await;
    }
}

/// Reconnect backoff short enough for tests: 50 ms, ×1.6, ±20 %, at most 500 ms.
fn fast_backoff() -> BackoffConfig {
    BackoffConfig {
        initial: 50 * MS,
        multiplier: 1.6,
        jitter: 0.2,
        max: 500 * MS,
    }
}

/// A channel builder for `target` with the fast backoff.
fn channel_to(target: &str) -> ChannelBuilder {
    Channel::builder(target).backoff(fast_backoff())
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A request body naming the call: its index as decimal text.
fn tag(i: usize) -> Bytes {
    Bytes::from(i.to_string())
}

/// The name of the server that answered.
fn who(reply: &Result<Response<Bytes>, Status>) -> String {
    match reply {
        Ok(r) => String::from_utf8_lossy(r.message()).into_owned(),
        Err(status) => panic!("call failed: {status:?}"),
    }
}

/// An address on `ip` where nothing listens (a port that was free a moment ago).
fn dead_addr(ip: &str) -> SocketAddr {
    let listener = std::net::TcpListener::bind((ip, 0)).expect("bind a free port");
    listener.local_addr().expect("local address")
}

/// Binds `addr` again, retrying for up to 2 s while the old socket lets go of it.
async fn rebind(addr: SocketAddr) -> Listener {
    let start = Instant::now();
    loop {
        match Listener::bind_tcp(addr) {
            Ok(listener) => return listener,
            Err(err) if start.elapsed() < 2 * SECOND => {
                let _ = err;
                Timer::after(20 * MS).await;
            }
            Err(err) => panic!("could not bind {addr} again: {err}"),
        }
    }
}

/// What a server's handlers saw.
#[derive(Debug, Default)]
struct Load {
    /// Handlers running now.
    active: AtomicUsize,
    /// Most handlers ever running at once.
    peak: AtomicUsize,
    started: AtomicUsize,
    finished: AtomicUsize,
    /// Request tags in the order the handlers started.
    order: Mutex<Vec<usize>>,
}

impl Load {
    fn enter(self: &Arc<Self>, message: &Bytes) -> Entered {
        self.started.fetch_add(1, Ordering::SeqCst);
        let now = self.active.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak.fetch_max(now, Ordering::SeqCst);
        if let Some(tag) = std::str::from_utf8(message)
            .ok()
            .and_then(|s| s.parse().ok())
        {
            lock(&self.order).push(tag);
        }
        Entered(self.clone())
    }

    fn started(&self) -> usize {
        self.started.load(Ordering::SeqCst)
    }

    fn active(&self) -> usize {
        self.active.load(Ordering::SeqCst)
    }

    fn peak(&self) -> usize {
        self.peak.load(Ordering::SeqCst)
    }

    fn finished(&self) -> usize {
        self.finished.load(Ordering::SeqCst)
    }
}

/// A running handler; leaving (even by cancellation) lowers the active count.
struct Entered(Arc<Load>);

impl Drop for Entered {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The test routes: `WORK` answers `name` after `delay`, `SLOW` after 300 ms, `LONG` after
/// 700 ms, `HOLD` after 10 s.
fn routes(name: &'static str, delay: Duration, load: &Arc<Load>) -> ServerBuilder {
    let handler = move |load: Arc<Load>, pause: Duration| {
        move |req: Request<Bytes>| {
            let load = load.clone();
            async move {
                let _entered = load.enter(req.message());
                if !pause.is_zero() {
                    Timer::after(pause).await;
                }
                load.finished.fetch_add(1, Ordering::SeqCst);
                Ok(Response::new(Bytes::from_static(name.as_bytes())))
            }
        }
    };
    Server::builder()
        .unary(WORK, BytesCodec, handler(load.clone(), delay))
        .unary(SLOW, BytesCodec, handler(load.clone(), 300 * MS))
        .unary(LONG, BytesCodec, handler(load.clone(), 700 * MS))
        .unary(HOLD, BytesCodec, handler(load.clone(), 10 * SECOND))
}

/// A server serving a listener on plexus's executor; shut down (100 ms grace) when dropped.
struct Backend {
    server: Server,
    addr: SocketAddr,
    load: Arc<Load>,
}

impl Backend {
    /// `routes(name, delay)` with `configure` applied, on `ip` port 0.
    fn start(
        ip: &str,
        name: &'static str,
        delay: Duration,
        configure: impl FnOnce(ServerBuilder) -> ServerBuilder,
    ) -> Backend {
        let listener = Listener::bind_tcp((ip, 0)).expect("bind tcp");
        Backend::on(listener, name, delay, configure)
    }

    fn on(
        listener: Listener,
        name: &'static str,
        delay: Duration,
        configure: impl FnOnce(ServerBuilder) -> ServerBuilder,
    ) -> Backend {
        let addr = listener.local_addr().expect("tcp address");
        let load = Arc::new(Load::default());
        let server = configure(routes(name, delay, &load))
            .build()
            .expect("server settings are valid");
        serve(&server, listener);
        Backend { server, addr, load }
    }

    fn target(&self) -> String {
        format!("ipv4:{}", self.addr)
    }

    /// Closes every connection at once, as if the process died.
    async fn kill(&self) {
        self.server.shutdown(Duration::ZERO).await;
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        let server = self.server.clone();
        SmolExecutor.spawn(Box::pin(async move {
            server.shutdown(100 * MS).await;
        }));
    }
}

fn serve(server: &Server, listener: Listener) {
    let server = server.clone();
    SmolExecutor.spawn(Box::pin(async move {
        if let Err(err) = server.serve(listener).await {
            panic!("serve failed: {err}");
        }
    }));
}

/// Connections a [`CountingConnector`] opened, and how many are still open.
#[derive(Debug, Clone, Default)]
struct Tally {
    connects: Arc<AtomicUsize>,
    open: Arc<AtomicUsize>,
}

impl Tally {
    fn connects(&self) -> usize {
        self.connects.load(Ordering::SeqCst)
    }

    fn open(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }
}

/// The socket connector, counting connections; optionally slow to connect, and optionally
/// holding back everything the server sends for `latency` after connecting (as over a link
/// with that round-trip time: the client's first frames go out before the server's SETTINGS
/// arrive).
#[derive(Debug, Clone, Default)]
struct CountingConnector {
    tally: Tally,
    delay: Duration,
    latency: Duration,
}

impl Connector for CountingConnector {
    fn connect(&self, address: &Address) -> BoxFuture<io::Result<BoxedIo>> {
        let connecting = SocketConnector.connect(address);
        let tally = self.tally.clone();
        let delay = self.delay;
        let latency = self.latency;
        Box::pin(async move {
            if !delay.is_zero() {
                Timer::after(delay).await;
            }
            let io = connecting.await?;
            tally.connects.fetch_add(1, Ordering::SeqCst);
            tally.open.fetch_add(1, Ordering::SeqCst);
            Ok(GatedIo::boxed(io, latency, Some(tally.open.clone())))
        })
    }
}

/// Every state a channel reports, from its state now until it is shut down.
#[derive(Clone)]
struct StateLog(Arc<Mutex<Vec<ConnectivityState>>>);

impl StateLog {
    /// Starts recording; call `channel.shutdown()` at the end to stop.
    fn record(channel: &Channel) -> StateLog {
        let first = channel.state();
        let log = StateLog(Arc::new(Mutex::new(vec![first])));
        let channel = channel.clone();
        let recorder = log.clone();
        SmolExecutor.spawn(Box::pin(async move {
            let mut last = first;
            while last != ConnectivityState::Shutdown {
                last = channel.wait_for_state_change(last).await;
                lock(&recorder.0).push(last);
            }
        }));
        log
    }

    /// The states recorded once the recorder has seen `now` (the channel's current state:
    /// the recorder runs on its own task and may not have heard of the last change yet).
    async fn states_up_to(&self, now: ConnectivityState) -> Vec<ConnectivityState> {
        eventually(5 * SECOND, "the state log catches up", || {
            lock(&self.0).last() == Some(&now)
        })
        .await;
        lock(&self.0).clone()
    }
}

/// One call with a generous deadline.
async fn call(channel: &Channel, path: &str, i: usize) -> Result<Response<Bytes>, Status> {
    channel
        .unary(path, tag(i), CallOptions::new().timeout(20 * SECOND))
        .await
}

/// `n` concurrent `WORK` calls; returns their results and the most connections the channel
/// reported while they ran.
async fn burst(channel: &Channel, n: usize) -> (Vec<Result<Response<Bytes>, Status>>, usize) {
    let done = AtomicBool::new(false);
    let peak = AtomicUsize::new(0);
    let calls = async {
        let results = join_all((0..n).map(|i| call(channel, WORK, i))).await;
        done.store(true, Ordering::SeqCst);
        results
    };
    let sample = async {
        while !done.load(Ordering::SeqCst) {
            peak.fetch_max(channel.stats().connections(), Ordering::SeqCst);
            Timer::after(2 * MS).await;
        }
    };
    let (results, ()) = join(calls, sample).await;
    peak.fetch_max(channel.stats().connections(), Ordering::SeqCst);
    (results, peak.load(Ordering::SeqCst))
}

fn assert_all_ok(results: &[Result<Response<Bytes>, Status>], what: &str) {
    let failed: Vec<_> = results
        .iter()
        .enumerate()
        .filter_map(|(i, r)| {
            r.as_ref()
                .err()
                .map(|s| (i, s.code(), s.message().to_string()))
        })
        .collect();
    assert!(
        failed.is_empty(),
        "{what}: {} of {} calls failed, first ones: {:?}",
        failed.len(),
        results.len(),
        &failed[..failed.len().min(5)]
    );
}

// ---------------------------------------------------------------------------------------------
// 1 + 3. Connection pools against MAX_CONCURRENT_STREAMS (and SETTINGS honoured)
// ---------------------------------------------------------------------------------------------

/// 100 concurrent 200 ms calls to a server allowing 10 streams per connection, over
/// connections that see nothing from the server for `latency` after connecting.
async fn pool_scenario(
    latency: Duration,
    configure: impl FnOnce(ChannelBuilder) -> ChannelBuilder,
) -> PoolOutcome {
    let backend = Backend::start("127.0.0.1", "pool", 200 * MS, |b| {
        b.max_concurrent_streams(10)
    });
    let tally = Tally::default();
    let channel = configure(channel_to(&backend.target()).connector(CountingConnector {
        tally: tally.clone(),
        latency,
        ..CountingConnector::default()
    }))
    .build()
    .expect("channel settings are valid");
    let started = Instant::now();
    let (results, peak_connections) = burst(&channel, 100).await;
    let took = started.elapsed();
    assert_all_ok(&results, "100 concurrent calls");
    assert_eq!(backend.load.finished(), 100, "handlers that finished");
    let stats = channel.stats();
    // The server enforces 10 streams per connection itself (refusing the rest), so the
    // handlers never run more than 10 per connection; the calls above all succeeding is
    // what shows the client kept to the limit.
    let peak_handlers = backend.load.peak();
    assert!(
        peak_handlers <= 10 * peak_connections,
        "{peak_handlers} handlers ran at once over at most {peak_connections} connections"
    );
    PoolOutcome {
        peak_connections,
        final_connections: stats.connections(),
        connects: tally.connects(),
        peak_handlers,
        took,
        stats,
    }
}

#[derive(Debug)]
struct PoolOutcome {
    peak_connections: usize,
    final_connections: usize,
    connects: usize,
    peak_handlers: usize,
    took: Duration,
    stats: plexus::ChannelStats,
}

#[test]
fn pool_of_one_connection_queues_every_call() {
    run(async {
        let out = pool_scenario(Duration::ZERO, |b| b.multiple_connections(false)).await;
        assert_eq!(out.peak_connections, 1, "{out:?}");
        assert_eq!(out.final_connections, 1, "{out:?}");
        assert_eq!(out.connects, 1, "{out:?}");
        assert!(out.peak_handlers <= 10, "{out:?}");
        // 100 calls, 10 at a time, 200 ms each.
        assert!(out.took >= 1900 * MS, "{out:?}");
        let s = &out.stats;
        assert_eq!(
            (
                s.calls_started,
                s.calls_succeeded,
                s.calls_failed,
                s.active_streams
            ),
            (100, 100, 0, 0),
            "{s:?}"
        );
    });
}

#[test]
fn pool_respects_max_connections_per_endpoint() {
    run(async {
        let out = pool_scenario(Duration::ZERO, |b| b.max_connections_per_endpoint(3)).await;
        assert!(
            (1..=3).contains(&out.peak_connections),
            "at most 3 connections: {out:?}"
        );
        assert!(out.final_connections <= 3, "{out:?}");
        assert!(out.connects <= 3, "{out:?}");
        assert!(out.peak_handlers <= 30, "{out:?}");
        let s = &out.stats;
        assert_eq!(
            (
                s.calls_started,
                s.calls_succeeded,
                s.calls_failed,
                s.active_streams
            ),
            (100, 100, 0, 0),
            "{s:?}"
        );
    });
}

// ---------------------------------------------------------------------------------------------
// 2. FIFO queueing
// ---------------------------------------------------------------------------------------------

#[test]
fn queued_calls_run_in_arrival_order() {
    run(async {
        let backend = Backend::start("127.0.0.1", "fifo", 50 * MS, |b| {
            b.max_concurrent_streams(1)
        });
        let channel = channel_to(&backend.target())
            .multiple_connections(false)
            .build()
            .unwrap();
        let completed = Mutex::new(Vec::new());
        let results = join_all((0..10).map(|i| {
            let channel = &channel;
            let completed = &completed;
            async move {
                // Each call starts once the one before is queued behind the single stream.
                Timer::after(20 * MS * i as u32).await;
                let result = call(channel, WORK, i).await;
                lock(completed).push(i);
                result
            }
        }))
        .await;
        assert_all_ok(&results, "queued calls");
        let expected: Vec<usize> = (0..10).collect();
        assert_eq!(*lock(&backend.load.order), expected, "order the server saw");
        assert_eq!(*lock(&completed), expected, "order the calls completed");
        assert_eq!(backend.load.peak(), 1);
        assert_eq!(channel.stats().connections(), 1);
    });
}

// ---------------------------------------------------------------------------------------------
// 4. Connectivity states, fail-fast and wait-for-ready
// ---------------------------------------------------------------------------------------------

#[test]
fn connect_moves_idle_to_connecting_to_ready() {
    run(async {
        let backend = Backend::start("127.0.0.1", "a", Duration::ZERO, |b| b);
        let tally = Tally::default();
        // A slow connect keeps CONNECTING visible long enough to be observed.
        let channel = channel_to(&backend.target())
            .connector(CountingConnector {
                tally: tally.clone(),
                delay: 100 * MS,
                ..CountingConnector::default()
            })
            .build()
            .unwrap();
        assert_eq!(channel.state(), Idle, "a new channel is idle");
        Timer::after(50 * MS).await;
        assert_eq!(channel.state(), Idle, "nothing connects before a call");
        assert_eq!(tally.connects(), 0);
        let watch = async {
            let first = channel.wait_for_state_change(Idle).await;
            let second = channel.wait_for_state_change(first).await;
            (first, second)
        };
        let (connected, seen) = within(5 * SECOND, "connect", join(channel.connect(), watch)).await;
        connected.expect("connect to a live server");
        assert_eq!(seen, (Connecting, Ready));
        assert_eq!(channel.state(), Ready);
        let stats = channel.stats();
        assert_eq!(stats.state, Ready);
        assert_eq!(stats.connections(), 1, "{stats:?}");
        assert_eq!(stats.endpoints.len(), 1);
        assert_eq!(stats.endpoints[0].state, Ready);
        assert_eq!(stats.endpoints[0].address, Address::Tcp(backend.addr));
        // Connected already: returns at once and the call reuses the connection.
        within(SECOND, "connect again", channel.connect())
            .await
            .unwrap();
        assert_eq!(who(&call(&channel, WORK, 0).await), "a");
        assert_eq!(tally.connects(), 1);
    });
}

#[test]
fn failed_connect_gives_transient_failure_and_calls_fail_fast() {
    run(async {
        let addr = dead_addr("127.0.0.1");
        let channel = channel_to(&format!("ipv4:{addr}")).build().unwrap();
        let err = within(5 * SECOND, "connect to a dead address", channel.connect())
            .await
            .expect_err("nothing listens there");
        assert_eq!(err.code(), Code::Unavailable, "{err:?}");
        assert_eq!(channel.state(), TransientFailure);
        assert_eq!(channel.stats().endpoints[0].state, TransientFailure);
        // Without wait_for_ready or a deadline, a call that waited for the connection would
        // never end: failing at all is failing fast.
        for i in 0..5 {
            let err = within(5 * SECOND, "a fail-fast call", call(&channel, WORK, i))
                .await
                .expect_err("no server to answer");
            assert_eq!(err.code(), Code::Unavailable, "call {i}: {err:?}");
            Timer::after(30 * MS).await;
        }
        let stats = channel.stats();
        assert_eq!(
            (stats.calls_started, stats.calls_failed),
            (5, 5),
            "{stats:?}"
        );
        channel.shutdown();
    });
}

#[test]
fn wait_for_ready_call_waits_for_a_late_server() {
    run(async {
        let addr = dead_addr("127.0.0.1");
        let channel = channel_to(&format!("ipv4:{addr}")).build().unwrap();
        let started = Instant::now();
        let waiting = async {
            let reply = channel
                .unary(
                    WORK,
                    tag(1),
                    CallOptions::new().wait_for_ready(true).timeout(20 * SECOND),
                )
                .await;
            (reply, started.elapsed())
        };
        let meanwhile = async {
            // While the server is down, a call that does not wait fails fast.
            // (Without a deadline, failing at all is failing fast.)
            Timer::after(150 * MS).await;
            let err = within(5 * SECOND, "a fail-fast call", call(&channel, WORK, 2))
                .await
                .expect_err("the server is not up yet");
            assert_eq!(err.code(), Code::Unavailable, "{err:?}");
            Timer::after(300 * MS - started.elapsed().min(300 * MS)).await;
            let listener = rebind(addr).await;
            Backend::on(listener, "late", Duration::ZERO, |b| b)
        };
        let ((reply, took), backend) = join(waiting, meanwhile).await;
        assert_eq!(who(&reply), "late");
        assert!(
            took >= 300 * MS,
            "answered after {took:?}, before the server started"
        );
        assert_eq!(backend.load.finished(), 1);
        assert_eq!(channel.state(), Ready);
    });
}

#[test]
fn wait_for_ready_without_a_server_ends_at_the_deadline() {
    run(async {
        let addr = dead_addr("127.0.0.1");
        let channel = channel_to(&format!("ipv4:{addr}")).build().unwrap();
        let started = Instant::now();
        let err = channel
            .unary(
                WORK,
                tag(0),
                CallOptions::new().wait_for_ready(true).timeout(300 * MS),
            )
            .await
            .expect_err("no server");
        let took = started.elapsed();
        assert_eq!(err.code(), Code::DeadlineExceeded, "{err:?}");
        // Not before the deadline (a loaded machine may end it later; `run` catches a hang).
        assert!(
            took >= 290 * MS,
            "failed after {took:?}, deadline was 300 ms"
        );
        let stats = channel.stats();
        assert_eq!(
            (stats.calls_started, stats.calls_failed),
            (1, 1),
            "{stats:?}"
        );
        assert_eq!(stats.active_streams, 0);
        channel.shutdown();
    });
}

// ---------------------------------------------------------------------------------------------
// 5. A server killed mid-call, then restarted on the same port
// ---------------------------------------------------------------------------------------------

#[test]
fn killed_server_fails_the_call_and_the_channel_reconnects() {
    run(async {
        let first = Backend::start("127.0.0.1", "first", Duration::ZERO, |b| b);
        let addr = first.addr;
        let channel = channel_to(&first.target()).build().unwrap();
        let log = StateLog::record(&channel);
        assert_eq!(who(&call(&channel, WORK, 0).await), "first");
        assert_eq!(channel.state(), Ready);

        let in_flight = async {
            let reply = call(&channel, HOLD, 1).await;
            (reply, Instant::now())
        };
        let kill = async {
            eventually(5 * SECOND, "HOLD handler start", || {
                first.load.active() == 1
            })
            .await;
            let at = Instant::now();
            within(2 * SECOND, "hard shutdown", first.kill()).await;
            at
        };
        let ((reply, ended), killed_at) =
            within(5 * SECOND, "killed call", join(in_flight, kill)).await;
        let killed = reply.expect_err("the server died under the call");
        let took = ended - killed_at;
        assert!(took < 2 * SECOND, "the call noticed after {took:?}");
        assert_eq!(
            killed.code(),
            Code::Unavailable,
            "a lost connection is UNAVAILABLE: {killed:?}"
        );
        eventually(2 * SECOND, "channel leaves READY", || {
            channel.state() != Ready
        })
        .await;
        // The GOAWAY that came before the close takes the channel out of READY while the
        // draining connection is still listed; it leaves the list when its socket closes.
        eventually(2 * SECOND, "the dead connection leaves the channel", || {
            channel.stats().connections() == 0
        })
        .await;
        let err = call(&channel, WORK, 2).await.expect_err("no server");
        assert_eq!(err.code(), Code::Unavailable, "{err:?}");

        let second = Backend::on(rebind(addr).await, "second", Duration::ZERO, |b| b);
        let restarted = Instant::now();
        let mut failures = 0;
        loop {
            match call(&channel, WORK, 3).await {
                Ok(reply) => {
                    assert_eq!(reply.message().as_ref(), b"second");
                    break;
                }
                Err(err) => {
                    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
                    failures += 1;
                }
            }
            assert!(
                restarted.elapsed() < 3 * SECOND,
                "no successful call within 3 s of the restart ({failures} failed)"
            );
            Timer::after(20 * MS).await;
        }
        assert_eq!(channel.state(), Ready);
        assert_eq!(second.load.finished(), 1);
        let states = log.states_up_to(Ready).await;
        let ready = states.iter().position(|&s| s == Ready).expect("was READY");
        let down = ready
            + states[ready..]
                .iter()
                .position(|&s| s == TransientFailure || s == Idle)
                .unwrap_or_else(|| panic!("never left READY: {states:?}"));
        assert!(
            states[down..].contains(&Ready),
            "READY again after the restart: {states:?}"
        );
        channel.shutdown();
    });
}

// ---------------------------------------------------------------------------------------------
// 6. GOAWAY with calls in flight
// ---------------------------------------------------------------------------------------------

#[test]
fn graceful_shutdown_lets_50_calls_in_flight_finish() {
    run(async {
        let backend = Backend::start("127.0.0.1", "drain", 300 * MS, |b| b);
        let channel = channel_to(&backend.target()).build().unwrap();
        let calls = join_all((0..50).map(|i| call(&channel, WORK, i)));
        let shutdown = async {
            eventually(5 * SECOND, "50 handlers running", || {
                backend.load.active() == 50
            })
            .await;
            let started = Instant::now();
            backend.server.shutdown(5 * SECOND).await;
            started.elapsed()
        };
        let (results, took) =
            within(10 * SECOND, "calls and shutdown", join(calls, shutdown)).await;
        assert_all_ok(&results, "calls in flight during GOAWAY");
        assert!(results.iter().all(|r| who(r) == "drain"));
        assert_eq!(backend.load.finished(), 50);
        assert!(
            took < 2 * SECOND,
            "shutdown took {took:?}; the calls needed 300 ms"
        );
        let stats = channel.stats();
        assert_eq!(
            (
                stats.calls_started,
                stats.calls_succeeded,
                stats.active_streams
            ),
            (50, 50, 0),
            "{stats:?}"
        );
    });
}

// ---------------------------------------------------------------------------------------------
// 7. Many sequential calls on one connection
// ---------------------------------------------------------------------------------------------

#[test]
fn ten_thousand_sequential_calls_use_one_connection() {
    run(async {
        let backend = Backend::start("127.0.0.1", "seq", Duration::ZERO, |b| b);
        let tally = Tally::default();
        let channel = channel_to(&backend.target())
            .connector(CountingConnector {
                tally: tally.clone(),
                ..CountingConnector::default()
            })
            .build()
            .unwrap();
        for i in 0..10_000 {
            if let Err(err) = call(&channel, WORK, i).await {
                panic!("call {i} failed: {err:?}");
            }
        }
        let stats = channel.stats();
        assert_eq!(stats.connections(), 1, "{stats:?}");
        assert_eq!(tally.connects(), 1, "connections opened");
        assert_eq!(tally.open(), 1, "connections open");
        assert_eq!(
            (
                stats.calls_started,
                stats.calls_succeeded,
                stats.calls_failed
            ),
            (10_000, 10_000, 0),
            "{stats:?}"
        );
        assert_eq!(stats.active_streams, 0);
        assert_eq!(backend.load.finished(), 10_000);
        assert_eq!(backend.load.peak(), 1);
    });
}

// ---------------------------------------------------------------------------------------------
// 8. Many concurrent calls from many threads
// ---------------------------------------------------------------------------------------------

#[test]
fn thousand_concurrent_calls_from_eight_threads() {
    run(async {
        const THREADS: usize = 8;
        const PER_THREAD: usize = 125;
        let backend = Backend::start("127.0.0.1", "mt", 20 * MS, |b| b);
        let channel = channel_to(&backend.target()).build().unwrap();
        let (tx, rx) = async_channel::unbounded();
        for t in 0..THREADS {
            let channel = channel.clone();
            let tx = tx.clone();
            std::thread::spawn(move || {
                let results = smol::block_on(join_all(
                    (0..PER_THREAD).map(|i| call(&channel, WORK, t * PER_THREAD + i)),
                ));
                let _ = tx.send_blocking((t, results));
            });
        }
        drop(tx);
        let mut ok = 0;
        for _ in 0..THREADS {
            let (t, results) = rx.recv().await.expect("a calling thread panicked");
            assert_all_ok(&results, &format!("thread {t}"));
            ok += results.len();
        }
        assert_eq!(ok, THREADS * PER_THREAD);
        assert_eq!(backend.load.finished(), THREADS * PER_THREAD);
        let stats = channel.stats();
        assert_eq!(
            (
                stats.calls_started,
                stats.calls_succeeded,
                stats.calls_failed
            ),
            (1000, 1000, 0),
            "{stats:?}"
        );
        assert_eq!(stats.active_streams, 0, "{stats:?}");
        assert!(
            backend.load.peak() <= 100 * stats.connections(),
            "{} handlers at once over {} connections",
            backend.load.peak(),
            stats.connections()
        );
    });
}

// ---------------------------------------------------------------------------------------------
// 9. round_robin over three servers, one of which dies and comes back
// ---------------------------------------------------------------------------------------------

/// How many of `results` each of `names` answered; panics on a failed call.
fn spread(results: &[Result<Response<Bytes>, Status>], names: &[&str]) -> Vec<usize> {
    let mut counts = vec![0; names.len()];
    for r in results {
        let name = who(r);
        let i = names
            .iter()
            .position(|n| *n == name)
            .unwrap_or_else(|| panic!("unknown server {name:?}"));
        counts[i] += 1;
    }
    counts
}

async fn sequential(channel: &Channel, n: usize) -> Vec<Result<Response<Bytes>, Status>> {
    let mut results = Vec::with_capacity(n);
    for i in 0..n {
        results.push(call(channel, WORK, i).await);
    }
    results
}

#[test]
fn round_robin_spreads_calls_and_routes_around_a_dead_server() {
    run(async {
        let names = ["s1", "s2", "s3"];
        let s1 = Backend::start("127.0.0.1", "s1", Duration::ZERO, |b| b);
        let s2 = Backend::start("127.0.0.2", "s2", Duration::ZERO, |b| b);
        let s3 = Backend::start("127.0.0.3", "s3", Duration::ZERO, |b| b);
        let target = format!("ipv4:{},{},{}", s1.addr, s2.addr, s3.addr);
        let channel = channel_to(&target)
            .lb_policy(LbPolicy::RoundRobin)
            .build()
            .unwrap();
        within(5 * SECOND, "connect", channel.connect())
            .await
            .expect("connect");
        eventually(3 * SECOND, "every endpoint READY", || {
            channel.stats().endpoints.iter().all(|e| e.state == Ready)
        })
        .await;

        let counts = spread(&sequential(&channel, 300).await, &names);
        assert!(
            counts.iter().all(|c| (90..=110).contains(c)),
            "300 calls over 3 servers: {counts:?}"
        );
        let stats = channel.stats();
        assert!(
            stats.endpoints.iter().all(|e| e.connections == 1),
            "{stats:?}"
        );

        // Server 2 dies: once the channel sees it, calls go to 1 and 3 only.
        within(2 * SECOND, "kill s2", s2.kill()).await;
        eventually(2 * SECOND, "endpoint 2 leaves READY", || {
            channel.stats().endpoints[1].state != Ready
        })
        .await;
        let s2_before = s2.load.started();
        let counts = spread(&sequential(&channel, 150).await, &names);
        assert_eq!(counts[1], 0, "a dead server got calls: {counts:?}");
        assert!(
            counts[0] >= 60 && counts[2] >= 60,
            "150 calls over the 2 live servers: {counts:?}"
        );
        assert_eq!(s2.load.started(), s2_before);

        // Server 2 comes back on the same address: it gets calls again within 3 s.
        let s2b = Backend::on(rebind(s2.addr).await, "s2", Duration::ZERO, |b| b);
        let restarted = Instant::now();
        let mut i = 0;
        while s2b.load.finished() == 0 {
            assert!(
                restarted.elapsed() < 3 * SECOND,
                "the restarted server got no call within 3 s ({i} calls); {:?}",
                channel.stats()
            );
            let reply = call(&channel, WORK, i).await;
            reply.unwrap_or_else(|err| panic!("call {i} after the restart: {err:?}"));
            i += 1;
            Timer::after(5 * MS).await;
        }
        eventually(SECOND, "endpoint 2 READY", || {
            channel.stats().endpoints[1].state == Ready
        })
        .await;
        let counts = spread(&sequential(&channel, 90).await, &names);
        assert!(
            counts.iter().all(|c| (25..=35).contains(c)),
            "90 calls once all three are back: {counts:?}"
        );
    });
}

// ---------------------------------------------------------------------------------------------
// 10. pick_first skips a dead address and sticks to one endpoint
// ---------------------------------------------------------------------------------------------

#[test]
fn pick_first_skips_a_dead_address_and_uses_one_endpoint() {
    run(async {
        let dead = dead_addr("127.0.0.1");
        let a = Backend::start("127.0.0.1", "a", Duration::ZERO, |b| b);
        let b = Backend::start("127.0.0.1", "b", Duration::ZERO, |b| b);
        let channel = channel_to(&format!("ipv4:{dead},{},{}", a.addr, b.addr))
            .build()
            .unwrap();
        for i in 0..20 {
            let reply = call(&channel, WORK, i).await;
            assert_eq!(who(&reply), "a", "call {i}");
        }
        assert_eq!(a.load.finished(), 20);
        assert_eq!(b.load.started(), 0);
        let stats = channel.stats();
        let conns: Vec<_> = stats.endpoints.iter().map(|e| e.connections).collect();
        assert_eq!(conns, [0, 1, 0], "{stats:?}");
        assert_ne!(stats.endpoints[0].state, Ready, "{stats:?}");
        assert_eq!(stats.endpoints[1].state, Ready, "{stats:?}");
        assert_eq!(
            stats.endpoints[2].state, Idle,
            "pick_first leaves the rest alone"
        );
        assert_eq!(stats.state, Ready);
    });
}

// ---------------------------------------------------------------------------------------------
// 11. A custom picker
// ---------------------------------------------------------------------------------------------

/// Always the last endpoint.
#[derive(Debug, Default)]
struct LastPicker {
    picks: AtomicUsize,
    saw: Mutex<Vec<usize>>,
}

impl Picker for LastPicker {
    fn pick(&self, endpoints: &[EndpointStats]) -> Option<usize> {
        self.picks.fetch_add(1, Ordering::SeqCst);
        lock(&self.saw).push(endpoints.len());
        endpoints.len().checked_sub(1)
    }
}

#[test]
fn custom_picker_decides_where_calls_go() {
    run(async {
        let servers = [
            Backend::start("127.0.0.1", "one", Duration::ZERO, |b| b),
            Backend::start("127.0.0.1", "two", Duration::ZERO, |b| b),
            Backend::start("127.0.0.1", "three", Duration::ZERO, |b| b),
        ];
        let target = format!(
            "ipv4:{},{},{}",
            servers[0].addr, servers[1].addr, servers[2].addr
        );
        let picker = Arc::new(LastPicker::default());
        let channel = channel_to(&target)
            .lb_policy(LbPolicy::Custom(picker.clone()))
            .build()
            .unwrap();
        for i in 0..30 {
            assert_eq!(who(&call(&channel, WORK, i).await), "three", "call {i}");
        }
        assert_eq!(servers[2].load.finished(), 30);
        assert_eq!(servers[0].load.started() + servers[1].load.started(), 0);
        assert!(picker.picks.load(Ordering::SeqCst) >= 30);
        assert!(lock(&picker.saw).iter().all(|&n| n == 3), "endpoint lists");
        let conns: Vec<_> = channel
            .stats()
            .endpoints
            .iter()
            .map(|e| e.connections)
            .collect();
        assert_eq!(conns, [0, 0, 1]);
    });
}

// ---------------------------------------------------------------------------------------------
// 12. Idle timeout
// ---------------------------------------------------------------------------------------------

#[test]
fn idle_timeout_closes_connections_and_the_next_call_reconnects() {
    run(async {
        let backend = Backend::start("127.0.0.1", "idle", Duration::ZERO, |b| b);
        let tally = Tally::default();
        let channel = channel_to(&backend.target())
            .idle_timeout(300 * MS)
            .connector(CountingConnector {
                tally: tally.clone(),
                ..CountingConnector::default()
            })
            .build()
            .unwrap();
        assert_eq!(who(&call(&channel, WORK, 0).await), "idle");
        assert_eq!(channel.state(), Ready);
        assert_eq!(channel.stats().connections(), 1);
        eventually(10 * SECOND, "the unused channel goes idle", || {
            channel.state() == Idle
        })
        .await;
        assert_eq!(channel.stats().connections(), 0);
        eventually(SECOND, "the idle connection's socket closed", || {
            tally.open() == 0
        })
        .await;
        assert_eq!(who(&call(&channel, WORK, 1).await), "idle");
        assert_eq!(channel.state(), Ready);
        assert_eq!(tally.connects(), 2, "the call after idling reconnected");
        assert_eq!(channel.stats().connections(), 1);
        // A channel in use does not go idle: calls 50 ms apart (a sixth of the idle timeout,
        // so a loaded machine has room) over twice the timeout keep the connection.
        for i in 0..12 {
            Timer::after(50 * MS).await;
            assert_eq!(who(&call(&channel, WORK, i).await), "idle");
        }
        assert_eq!(tally.connects(), 2, "calls every 50 ms keep the connection");
        // Nor does one with a call in flight for longer than the idle timeout (a held call,
        // so it is still in flight however late the check runs).
        let held = call(&channel, HOLD, 9);
        let watch = async {
            eventually(10 * SECOND, "the held call reaches its handler", || {
                backend.load.active() == 1
            })
            .await;
            Timer::after(600 * MS).await;
            (channel.state(), channel.stats().connections())
        };
        let during = match select(pin!(held), pin!(watch)).await {
            Either::Right((during, _held)) => during,
            Either::Left((reply, _)) => panic!("the held call ended: {reply:?}"),
        };
        assert_eq!(during, (Ready, 1), "600 ms into a held call");
        assert_eq!(tally.connects(), 2);
    });
}

// ---------------------------------------------------------------------------------------------
// 13. Statistics
// ---------------------------------------------------------------------------------------------

#[test]
fn stats_count_calls_and_active_streams() {
    run(async {
        let backend = Backend::start("127.0.0.1", "stats", Duration::ZERO, |b| b);
        let channel = channel_to(&backend.target()).build().unwrap();
        let stats = channel.stats();
        assert_eq!(
            (
                stats.calls_started,
                stats.calls_succeeded,
                stats.calls_failed
            ),
            (0, 0, 0)
        );
        assert_eq!(stats.state, Idle);
        for i in 0..5 {
            call(&channel, WORK, i).await.expect("WORK is routed");
        }
        for i in 0..2 {
            let err = call(&channel, MISSING, i).await.expect_err("not routed");
            assert_eq!(err.code(), Code::Unimplemented, "{err:?}");
        }
        let stats = channel.stats();
        assert_eq!(
            (
                stats.calls_started,
                stats.calls_succeeded,
                stats.calls_failed,
                stats.active_streams
            ),
            (7, 5, 2, 0),
            "{stats:?}"
        );
        assert_eq!(stats.state, Ready);
        assert_eq!(stats.connections(), 1);

        let slow = call(&channel, SLOW, 7);
        let during = async {
            eventually(5 * SECOND, "SLOW handler start", || {
                backend.load.active() == 1
            })
            .await;
            channel.stats()
        };
        let (reply, during) = join(slow, during).await;
        reply.expect("SLOW call");
        assert_eq!(during.active_streams, 1, "{during:?}");
        assert_eq!(during.endpoints[0].active_streams, 1, "{during:?}");
        assert_eq!((during.calls_started, during.calls_succeeded), (8, 5));
        let stats = channel.stats();
        assert_eq!(
            (
                stats.calls_started,
                stats.calls_succeeded,
                stats.calls_failed,
                stats.active_streams
            ),
            (8, 6, 2, 0),
            "{stats:?}"
        );
    });
}

// ---------------------------------------------------------------------------------------------
// 14. Abstract Unix socket
// ---------------------------------------------------------------------------------------------

#[cfg(target_os = "linux")]
#[test]
fn unix_abstract_socket_target() {
    run(async {
        let name = format!("plexus-test-{}", std::process::id());
        let listener = Listener::bind_unix_abstract(name.as_bytes()).expect("bind abstract");
        let load = Arc::new(Load::default());
        let server = routes("abstract", Duration::ZERO, &load).build().unwrap();
        serve(&server, listener);
        let channel = channel_to(&format!("unix-abstract:{name}"))
            .build()
            .unwrap();
        for i in 0..3 {
            assert_eq!(who(&call(&channel, WORK, i).await), "abstract");
        }
        let stats = channel.stats();
        assert_eq!(
            stats.endpoints[0].address,
            Address::UnixAbstract(name.into_bytes())
        );
        assert_eq!(stats.connections(), 1);
        assert_eq!(load.finished(), 3);
        server.shutdown(100 * MS).await;
    });
}

#[test]
fn pool_grows_past_the_servers_stream_limit() {
    run(async {
        let out = pool_scenario(Duration::ZERO, |b| b).await;
        assert!(
            out.final_connections >= 10 && out.final_connections <= 16,
            "100 calls over a 10-stream limit should use 10..=16 connections: {out:?}"
        );
        assert!(out.peak_connections <= 16, "{out:?}");
        assert!(out.connects <= 16, "{out:?}");
        assert!(
            out.took < 2 * SECOND,
            "with ≥10 connections the 200 ms calls run in parallel: {out:?}"
        );
    });
}

#[test]
fn pool_over_a_slow_link_keeps_every_call() {
    // With 50 ms before the server's SETTINGS reach the client, a new connection must not
    // take calls over the server's real limit of 10: every call succeeds, and the pool grows
    // to carry them in parallel.
    run(async {
        let out = pool_scenario(50 * MS, |b| b).await;
        assert!(
            out.final_connections >= 10 && out.final_connections <= 16,
            "100 calls over a 10-stream limit should use 10..=16 connections: {out:?}"
        );
    });
}

#[test]
fn refused_streams_are_not_counted_as_failed_calls() {
    // The user made 100 calls that all succeeded, and the channel's counters should say so,
    // whatever happened to individual streams on the way.
    run(async {
        let out = pool_scenario(50 * MS, |b| b.multiple_connections(false)).await;
        assert_eq!(out.connects, 1, "{out:?}");
        let s = &out.stats;
        assert_eq!(
            (s.calls_started, s.calls_succeeded, s.calls_failed),
            (100, 100, 0),
            "{s:?}"
        );
    });
}

/// Many tiny messages buffered unread on either side must not look like a small-frame flood:
/// h2 closes a connection whose buffered small DATA frames exceed its budget.
#[test]
fn slow_readers_of_many_tiny_messages_keep_their_connection() {
    const COUNT: usize = 5_000;
    run(async {
        let server = Server::builder()
            .server_streaming("/channel.Test/Tiny", BytesCodec, |_req, sink| async move {
                for _ in 0..COUNT {
                    sink.send(Bytes::from_static(b"t")).await?;
                }
                Ok(())
            })
            .client_streaming(
                "/channel.Test/Count",
                BytesCodec,
                |req: plexus::Request<plexus::RequestStream<Bytes>>| async move {
                    // Let the client's messages pile up before reading any.
                    Timer::after(Duration::from_millis(500)).await;
                    let mut stream = req.into_message();
                    let mut n = 0usize;
                    while stream.message().await?.is_some() {
                        n += 1;
                    }
                    Ok(Response::new(Bytes::from(n.to_string())))
                },
            )
            .build()
            .unwrap();
        let listener = Listener::bind_tcp("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        serve(&server, listener);
        for adaptive in [true, false] {
            let channel = channel_to(&format!("http://{addr}"))
                .adaptive_window(adaptive)
                .build()
                .unwrap();
            let mut stream = channel
                .server_streaming("/channel.Test/Tiny", Bytes::new(), CallOptions::new())
                .await
                .expect("call starts");
            // Let the server's messages pile up before reading any.
            Timer::after(Duration::from_millis(500)).await;
            let mut n = 0;
            while let Some(message) = stream.message().await.expect("no connection error") {
                assert_eq!(message.as_ref(), b"t");
                n += 1;
            }
            assert_eq!(n, COUNT, "adaptive windows: {adaptive}");

            let (sender, response) = channel
                .client_streaming("/channel.Test/Count", CallOptions::new())
                .await
                .expect("call starts");
            for _ in 0..COUNT {
                sender.send(Bytes::from_static(b"t")).await.expect("send");
            }
            drop(sender);
            let reply = response.await.expect("no connection error");
            assert_eq!(reply.message().as_ref(), COUNT.to_string().as_bytes());
        }
    });
}
