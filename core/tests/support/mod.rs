//! Shared harness for the plexus integration tests: the executors and transports every scenario
//! runs under, a running server with a matching channel builder, hard timeouts, and probes that
//! let handlers report what they observed back to the test body.

pub(crate) mod gated;

use std::fmt;
use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::pin::pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_io::Timer;
use futures_executor::ThreadPool;
use futures_util::future::{Either, select};
use gated::GatedIo;
use plexus::rt::BoxFuture;
use plexus::transport::memory::{self, MemoryConnector};
use plexus::transport::{Address, BoxedIo, Connector, SocketConnector};
use plexus::{
    Channel, ChannelBuilder, DefaultExecutor, Executor, Listener, Server, ServerBuilder,
    SmolExecutor, StaticResolver,
};

/// Hard limit on one test body; nothing in this file should come anywhere near it.
pub(crate) const TEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Which executor runs plexus's background work and blocks the test thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ExecKind {
    /// plexus's default executor ([`DefaultExecutor`], the work-stealing pool), test thread
    /// blocked with `plexus::rt::block_on`.
    Default,
    /// smol's executor ([`SmolExecutor`]), test thread blocked with `smol::block_on`.
    Smol,
    /// A `futures_executor::ThreadPool`, test thread blocked with `futures_executor::block_on`.
    Pool,
}

impl ExecKind {
    /// Runs `fut` to completion on the current thread, the way this executor's users would.
    pub(crate) fn block_on<F: Future>(self, fut: F) -> F::Output {
        match self {
            ExecKind::Default => plexus::rt::block_on(fut),
            ExecKind::Smol => smol::block_on(fut),
            ExecKind::Pool => futures_executor::block_on(fut),
        }
    }
}

/// How the channel reaches the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Transport {
    /// `plexus::transport::memory` pipes.
    Memory,
    /// TCP on 127.0.0.1.
    Tcp,
    /// A Unix domain socket in a fresh temporary directory.
    Unix,
}

/// `plexus::Executor` on top of a `futures_executor::ThreadPool`.
#[derive(Clone)]
pub(crate) struct PoolExecutor(ThreadPool);

impl fmt::Debug for PoolExecutor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PoolExecutor")
    }
}

impl Executor for PoolExecutor {
    fn spawn(&self, future: BoxFuture<()>) {
        self.0.spawn_ok(future);
    }
}

/// The executor under test, handed to both `ChannelBuilder::executor` and
/// `ServerBuilder::executor`, and used for the tests' own tasks.
#[derive(Debug, Clone)]
pub(crate) enum TestExecutor {
    /// plexus's default executor.
    Default(DefaultExecutor),
    /// smol's executor.
    Smol(SmolExecutor),
    /// A thread pool from `futures-executor`.
    Pool(PoolExecutor),
}

impl Executor for TestExecutor {
    fn spawn(&self, future: BoxFuture<()>) {
        match self {
            TestExecutor::Default(e) => e.spawn(future),
            TestExecutor::Smol(e) => e.spawn(future),
            TestExecutor::Pool(e) => e.spawn(future),
        }
    }
}

/// A task spawned on the executor under test; [`Task::join`] waits for its output.
#[derive(Debug)]
pub(crate) struct Task<T> {
    done: async_channel::Receiver<T>,
}

impl<T> Task<T> {
    /// The task's output; panics if the task panicked or was dropped unfinished.
    pub(crate) async fn join(self) -> T {
        self.done
            .recv()
            .await
            .expect("spawned task panicked or was dropped before finishing")
    }
}

/// One combination of executor and transport, as handed to a scenario.
#[derive(Debug, Clone)]
pub(crate) struct Env {
    /// Which executor this run uses.
    pub(crate) exec: ExecKind,
    transport: Transport,
    executor: TestExecutor,
}

impl Env {
    fn new(exec: ExecKind, transport: Transport) -> Env {
        let executor = match exec {
            ExecKind::Default => TestExecutor::Default(DefaultExecutor),
            ExecKind::Smol => TestExecutor::Smol(SmolExecutor),
            ExecKind::Pool => TestExecutor::Pool(PoolExecutor(
                ThreadPool::builder()
                    .pool_size(3)
                    .name_prefix("test-pool-")
                    .create()
                    .expect("thread pool"),
            )),
        };
        Env {
            exec,
            transport,
            executor,
        }
    }

    /// The executor under test.
    pub(crate) fn executor(&self) -> TestExecutor {
        self.executor.clone()
    }

    /// Spawns `fut` on the executor under test.
    pub(crate) fn spawn<T, F>(&self, fut: F) -> Task<T>
    where
        T: Send + 'static,
        F: Future<Output = T> + Send + 'static,
    {
        let (tx, rx) = async_channel::bounded(1);
        self.executor.spawn(Box::pin(async move {
            let out = fut.await;
            let _ = tx.send(out).await;
        }));
        Task { done: rx }
    }

    /// Builds `builder` on the executor under test and serves it on this run's transport.
    pub(crate) fn serve(&self, builder: ServerBuilder) -> Running {
        let server = builder
            .executor(self.executor())
            .build()
            .expect("server settings are valid");
        let mut dir = None;
        let mut connector = None;
        let target = match self.transport {
            Transport::Memory => {
                let (conn, listener) = memory::channel();
                connector = Some(conn);
                let s = server.clone();
                self.executor.spawn(Box::pin(async move {
                    let _ = s.serve_incoming(listener).await;
                }));
                "http://in-memory.test:50051".to_string()
            }
            Transport::Tcp => {
                let listener = Listener::bind_tcp("127.0.0.1:0").expect("bind tcp");
                let addr = listener.local_addr().expect("tcp address");
                self.spawn_serve(&server, listener);
                format!("http://{addr}")
            }
            Transport::Unix => {
                let d = TempDir::new().expect("temp dir");
                let path = d.0.join("grpc.sock");
                let listener = Listener::bind_unix(&path).expect("bind unix");
                assert_eq!(listener.unix_path(), Some(path.as_path()));
                self.spawn_serve(&server, listener);
                dir = Some(d);
                format!("unix:{}", path.display())
            }
        };
        Running {
            server,
            target,
            connector,
            executor: self.executor(),
            _dir: dir,
        }
    }

    fn spawn_serve(&self, server: &Server, listener: Listener) {
        let s = server.clone();
        self.executor.spawn(Box::pin(async move {
            if let Err(err) = s.serve(listener).await {
                panic!("serve failed: {err}");
            }
        }));
    }
}

/// A server being served on one transport.
pub(crate) struct Running {
    /// The server (clone it to shut it down from a task).
    pub(crate) server: Server,
    target: String,
    connector: Option<MemoryConnector>,
    executor: TestExecutor,
    _dir: Option<TempDir>,
}

impl fmt::Debug for Running {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Running")
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

impl Running {
    /// A channel builder aimed at this server, on the executor (and connector) under test.
    pub(crate) fn channel_builder(&self) -> ChannelBuilder {
        let builder = Channel::builder(&self.target).executor(self.executor.clone());
        match &self.connector {
            // The in-memory connector ignores addresses, but the channel needs one to resolve.
            Some(connector) => builder
                .connector(connector.clone())
                .resolver(StaticResolver::new([Address::Unix("in-memory".into())])),
            None => builder,
        }
    }

    /// A channel with default settings to this server.
    pub(crate) fn channel(&self) -> Channel {
        self.channel_builder()
            .build()
            .expect("channel settings are valid")
    }

    /// A channel whose connections see nothing from the server for `latency` after connecting,
    /// as over a network with that round-trip time: the client's first frames go out before the
    /// server's SETTINGS arrive.
    pub(crate) fn channel_with_latency(&self, latency: Duration) -> Channel {
        let inner: Box<dyn Connector> = match &self.connector {
            Some(connector) => Box::new(connector.clone()),
            None => Box::new(SocketConnector),
        };
        self.channel_builder()
            .connector(SlowStart { inner, latency })
            .build()
            .expect("channel settings are valid")
    }
}

/// A connector whose connections hold back the first read for a while.
struct SlowStart {
    inner: Box<dyn Connector>,
    latency: Duration,
}

impl Connector for SlowStart {
    fn connect(&self, address: &Address) -> BoxFuture<io::Result<BoxedIo>> {
        let connecting = self.inner.connect(address);
        let latency = self.latency;
        Box::pin(async move {
            let io = connecting.await?;
            Ok(GatedIo::boxed(io, latency, None))
        })
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        // Don't leave servers (and their executors' threads) running after the test.
        let server = self.server.clone();
        self.executor.spawn(Box::pin(async move {
            server.shutdown(Duration::from_millis(100)).await;
        }));
    }
}

/// A directory under the system temp dir, removed on drop.
#[derive(Debug)]
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> io::Result<TempDir> {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("plexus-calls-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir(&path)?;
        Ok(TempDir(path))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs one scenario under the given executor and transport, failing after [`TEST_TIMEOUT`].
pub(crate) fn run<F, Fut>(exec: ExecKind, transport: Transport, scenario: F)
where
    F: FnOnce(Env) -> Fut,
    Fut: Future<Output = ()>,
{
    let env = Env::new(exec, transport);
    exec.block_on(async move {
        let body = pin!(scenario(env));
        if let Either::Right(_) = select(body, Timer::after(TEST_TIMEOUT)).await {
            panic!("{exec:?}/{transport:?}: test did not finish within {TEST_TIMEOUT:?}");
        }
    });
}

/// `fut`'s output if it completes within `limit`.
pub(crate) async fn try_within<F: Future>(limit: Duration, fut: F) -> Option<F::Output> {
    match select(pin!(fut), Timer::after(limit)).await {
        Either::Left((out, _)) => Some(out),
        Either::Right(_) => None,
    }
}

/// `fut`'s output; panics naming `what` if it takes longer than `limit`.
pub(crate) async fn within<F: Future>(limit: Duration, what: &str, fut: F) -> F::Output {
    match try_within(limit, fut).await {
        Some(out) => out,
        None => panic!("{what}: did not complete within {limit:?}"),
    }
}

/// The sending half of a [`probe`]; cheap to clone into handlers.
#[derive(Debug)]
pub(crate) struct ProbeTx<T>(async_channel::Sender<T>);

impl<T> Clone for ProbeTx<T> {
    fn clone(&self) -> Self {
        ProbeTx(self.0.clone())
    }
}

impl<T> ProbeTx<T> {
    /// Reports an observation; never blocks (the queue is unbounded).
    pub(crate) fn report(&self, value: T) {
        let _ = self.0.try_send(value);
    }
}

/// The receiving half of a [`probe`].
#[derive(Debug)]
pub(crate) struct ProbeRx<T>(async_channel::Receiver<T>);

impl<T> ProbeRx<T> {
    /// The next observation; panics naming `what` if none arrives within `limit`.
    pub(crate) async fn next(&self, limit: Duration, what: &str) -> T {
        within(limit, what, self.0.recv())
            .await
            .expect("probe senders are kept by the server")
    }

    /// An observation already reported, if any.
    pub(crate) fn try_next(&self) -> Option<T> {
        self.0.try_recv().ok()
    }
}

/// A channel for handlers to report what they saw back to the test body.
pub(crate) fn probe<T>() -> (ProbeTx<T>, ProbeRx<T>) {
    let (tx, rx) = async_channel::unbounded();
    (ProbeTx(tx), ProbeRx(rx))
}

/// Declares `mod $executor::$transport::$scenario` tests for every scenario under every
/// executor and transport, so a failure names its combination.
#[macro_export]
macro_rules! matrix {
    ($($scenario:ident),* $(,)?) => {
        $crate::matrix!(@exec default, $crate::support::ExecKind::Default, [$($scenario),*]);
        $crate::matrix!(@exec smol, $crate::support::ExecKind::Smol, [$($scenario),*]);
        $crate::matrix!(@exec pool, $crate::support::ExecKind::Pool, [$($scenario),*]);
    };
    (@exec $exec:ident, $kind:expr, [$($scenario:ident),*]) => {
        mod $exec {
            $crate::matrix!(@transport memory, $kind, $crate::support::Transport::Memory, [$($scenario),*]);
            $crate::matrix!(@transport tcp, $kind, $crate::support::Transport::Tcp, [$($scenario),*]);
            $crate::matrix!(@transport unix, $kind, $crate::support::Transport::Unix, [$($scenario),*]);
        }
    };
    (@transport $name:ident, $kind:expr, $transport:expr, [$($scenario:ident),*]) => {
        mod $name {
            $(
                #[test]
                fn $scenario() {
                    $crate::support::run($kind, $transport, $crate::$scenario);
                }
            )*
        }
    };
}
