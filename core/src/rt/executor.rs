//! The `Executor` trait and the default executor built on smol's `async-executor`.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};

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

/// The default executor: one process-wide `async_executor::Executor` (smol's executor) driven
/// by `PLEXUS_THREADS` threads, or one per available core.
///
/// Its threads, named `plexus-worker-N`, start on the first spawn and also drive the
/// `async-io` reactor while idle, so socket readiness costs no extra thread hop.
#[derive(Debug, Clone, Copy, Default)]
pub struct SmolExecutor;

impl SmolExecutor {
    fn global() -> &'static async_executor::Executor<'static> {
        static GLOBAL: OnceLock<&'static async_executor::Executor<'static>> = OnceLock::new();
        GLOBAL.get_or_init(|| {
            let executor: &'static async_executor::Executor<'static> =
                Box::leak(Box::new(async_executor::Executor::new()));
            let threads = std::env::var(THREADS_ENV)
                .ok()
                .and_then(|v| v.trim().parse::<usize>().ok())
                .filter(|&n| n > 0)
                .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
            for i in 0..threads {
                std::thread::Builder::new()
                    .name(format!("plexus-worker-{i}"))
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
