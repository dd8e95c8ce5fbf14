//! The `Executor` trait, the default executor (a process-wide [`ThreadPool`]) and one built on
//! smol's `async-executor`.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use super::pool::{DEFAULT_SPIN, ThreadPool};

/// A boxed, sendable future, as handed to [`Executor::spawn`].
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// Something that runs background futures: connection drivers and server call handlers.
///
/// Implement it to run plexus on your own executor; the future must be polled to completion
/// (dropping it early aborts the connection or call it drives).
pub trait Executor: Send + Sync + 'static {
    /// Runs `future` in the background until it completes.
    fn spawn(&self, future: BoxFuture<()>);
}

impl<E: Executor + ?Sized> Executor for Arc<E> {
    fn spawn(&self, future: BoxFuture<()>) {
        (**self).spawn(future)
    }
}

/// Environment variable that sizes the default executor's thread pool.
pub const THREADS_ENV: &str = "PLEXUS_THREADS";

/// The thread count `PLEXUS_THREADS` asks for, else one per available core.
fn default_threads() -> usize {
    std::env::var(THREADS_ENV)
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|&n| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// Environment variable that sets, in microseconds, how long an idle worker of the default
/// executor spins before it sleeps (0: never; default [`DEFAULT_SPIN`]).
pub const SPIN_ENV: &str = "PLEXUS_SPIN_MICROS";

/// The spin time `PLEXUS_SPIN_MICROS` asks for, if it is set to a whole number of microseconds.
pub fn spin_from_env() -> Option<Result<Duration, String>> {
    let value = std::env::var(SPIN_ENV).ok()?;
    Some(
        value
            .trim()
            .parse::<u64>()
            .map(Duration::from_micros)
            .map_err(|_| {
                format!("{SPIN_ENV} must be a whole number of microseconds, not {value:?}")
            }),
    )
}

/// The default executor of channels and servers: one process-wide [`ThreadPool`] of
/// `PLEXUS_THREADS` threads (default: one per available core), named `plexus-worker-N`,
/// started on first use and never stopped. Its idle workers spin for `PLEXUS_SPIN_MICROS`
/// (default [`DEFAULT_SPIN`]; a value that is not a number is ignored) before they sleep.
///
/// Its workers drive the `async-io` reactor while idle, and a task woken by another task runs
/// next on the same thread, so a call's connection driver and handler do not hop between
/// threads. Spawn your own tasks here too (`DefaultExecutor.spawn(...)`) for the same effect.
#[derive(Debug, Clone, Copy, Default)]
pub struct DefaultExecutor;

impl DefaultExecutor {
    /// The pool itself.
    pub fn pool() -> &'static ThreadPool {
        static POOL: OnceLock<ThreadPool> = OnceLock::new();
        POOL.get_or_init(|| {
            let spin = spin_from_env().and_then(Result::ok).unwrap_or(DEFAULT_SPIN);
            ThreadPool::with_spin(default_threads(), "plexus-worker", spin)
                .expect("failed to spawn a plexus worker thread")
        })
    }
}

impl Executor for DefaultExecutor {
    fn spawn(&self, future: BoxFuture<()>) {
        DefaultExecutor::pool().spawn_future(future);
    }
}

/// smol's executor (`async-executor`) as an [`Executor`]: one process-wide instance driven by
/// `PLEXUS_THREADS` threads (default: one per core) named `plexus-smol-N`, started on the
/// first spawn. Every wake-up goes through its global queue (and usually to another thread);
/// [`DefaultExecutor`] is faster for plexus's task chains. Kept for users who want smol's.
#[derive(Debug, Clone, Copy, Default)]
pub struct SmolExecutor;

impl SmolExecutor {
    fn global() -> &'static async_executor::Executor<'static> {
        static GLOBAL: OnceLock<&'static async_executor::Executor<'static>> = OnceLock::new();
        GLOBAL.get_or_init(|| {
            let executor: &'static async_executor::Executor<'static> =
                Box::leak(Box::new(async_executor::Executor::new()));
            for i in 0..default_threads() {
                std::thread::Builder::new()
                    .name(format!("plexus-smol-{i}"))
                    .spawn(move || {
                        loop {
                            // A panicking task must not take the worker down with it.
                            let run = std::panic::catch_unwind(|| {
                                async_io::block_on(executor.run(std::future::pending::<()>()))
                            });
                            if run.is_ok() {
                                break;
                            }
                        }
                    })
                    .expect("failed to spawn a plexus worker thread");
            }
            executor
        })
    }
}

impl Executor for SmolExecutor {
    fn spawn(&self, future: BoxFuture<()>) {
        SmolExecutor::global().spawn(future).detach();
    }
}

/// Lets every other task the executor has ready run before this one continues: wakes this task
/// and returns `Pending` once. On plexus's pool the task goes to the back of its worker's
/// queue, behind the tasks it just woke or spawned.
pub(crate) async fn yield_now() {
    let mut yielded = false;
    std::future::poll_fn(|cx| {
        if yielded {
            return std::task::Poll::Ready(());
        }
        yielded = true;
        cx.waker().wake_by_ref();
        std::task::Poll::Pending
    })
    .await
}
