//! The library's runtime: an executor thread pool started on first use, the blocking wait
//! every synchronous function uses, shutdown, and fork detection.
//!
//! Threads: `PLEXUS_THREADS` (or the count given to `plexus_init`, default one per core)
//! `plexus-ffi-N` workers (core's [`ThreadPool`], built from [`RuntimeSettings`]) run
//! connection drivers and asynchronous operations; each also drives the `async-io` reactor
//! while it has nothing else to do, first spinning for `PLEXUS_SPIN_MICROS` (default 100)
//! before it sleeps, unless the machine has more runnable threads than cores.
//! Blocking functions run their call on the calling thread, which parks between polls and
//! leaves the reactor to the workers (core's `rt::block_on`), so a blocking unary call costs
//! one wake-up of the caller and no hand-over of its connection's task.

use std::future::{Future, poll_fn};
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::task::Poll;
use std::time::Duration;

use async_io::Timer;
use core_plexus::rt::{BoxFuture, RuntimeSettings, ThreadPool};
use event_listener::Event;

use crate::error::{
    Error, PLEXUS_ERR_INVALID_ARGUMENT, PLEXUS_ERR_SHUTDOWN, PLEXUS_ERR_SYSTEM, Result,
};

/// Text of the error every call returns in a forked child.
pub(crate) const FORKED_MESSAGE: &str = "this process is a fork of the process that started \
    the plexus runtime; its threads and I/O reactor did not survive the fork, so this copy of \
    the library refuses every call (load a fresh copy of libplexus in the child)";

/// Set in a child forked after the runtime started (by the `pthread_atfork` handler that the
/// start registers), so the check on every call is one atomic load, not a `getpid`.
static FORKED: AtomicBool = AtomicBool::new(false);
/// Thread count asked for by `plexus_init` before the start (0: environment or cores).
static REQUESTED_THREADS: AtomicUsize = AtomicUsize::new(0);
/// Set by `plexus_shutdown`; final.
static SHUT_DOWN: AtomicBool = AtomicBool::new(false);
static RUNTIME: OnceLock<Runtime> = OnceLock::new();
static START: Mutex<()> = Mutex::new(());

/// Whether this process is a fork of one that had started the runtime.
pub(crate) fn forked() -> bool {
    FORKED.load(Ordering::Relaxed)
}

unsafe extern "C" {
    /// pthread_atfork(3): with glibc this binds to the wrapper that registers the handlers
    /// for this shared object only, and unregisters them if it is unloaded.
    fn pthread_atfork(
        prepare: Option<unsafe extern "C" fn()>,
        parent: Option<unsafe extern "C" fn()>,
        child: Option<unsafe extern "C" fn()>,
    ) -> std::ffi::c_int;
}

/// Runs in the child of a fork (after the runtime started): marks this copy unusable. Only
/// an atomic store, so it cannot panic or take a lock.
unsafe extern "C" fn on_fork_child() {
    FORKED.store(true, Ordering::Relaxed);
}

/// The executor pool and what stops it.
pub(crate) struct Runtime {
    pool: ThreadPool,
    /// Notified once, at shutdown.
    stop: Event,
}

/// The runtime's executor as core's [`core_plexus::Executor`]: channels spawn through it.
#[derive(Clone, Copy)]
pub(crate) struct FfiExecutor(&'static Runtime);

impl core_plexus::Executor for FfiExecutor {
    fn spawn(&self, future: BoxFuture<()>) {
        self.0.spawn(future);
    }
}

impl Runtime {
    /// Runs `future` on the pool; after shutdown it is dropped unrun.
    pub(crate) fn spawn(&self, future: impl Future<Output = ()> + Send + 'static) {
        self.pool.spawn_future(future);
    }

    /// How many tasks wait in the calling worker's queue (`None` off the pool's workers).
    pub(crate) fn local_backlog(&self) -> Option<usize> {
        self.pool.local_backlog()
    }

    /// The executor handle channels are built with.
    pub(crate) fn executor(&'static self) -> FfiExecutor {
        FfiExecutor(self)
    }

    /// Number of worker threads.
    pub(crate) fn threads(&self) -> usize {
        self.pool.threads()
    }
}

/// The running runtime, started now if it was not: SHUTDOWN after `plexus_shutdown`.
pub(crate) fn get() -> Result<&'static Runtime> {
    if SHUT_DOWN.load(Ordering::Acquire) {
        return Err(shut_down());
    }
    if let Some(rt) = RUNTIME.get() {
        return Ok(rt);
    }
    start(0)
}

/// The runtime if it is running (never starts it): `None` before the start and after
/// `plexus_shutdown`.
pub(crate) fn running() -> Option<&'static Runtime> {
    if SHUT_DOWN.load(Ordering::Acquire) {
        return None;
    }
    RUNTIME.get()
}

fn shut_down() -> Error {
    Error::new(PLEXUS_ERR_SHUTDOWN, "the plexus runtime was shut down")
}

/// Starts the runtime with `threads` workers (0: `PLEXUS_THREADS`, else one per core).
/// Returns the running runtime; WRONG_STATE if it already runs with another count.
pub(crate) fn start(threads: usize) -> Result<&'static Runtime> {
    let _guard = START.lock().unwrap_or_else(|e| e.into_inner());
    if SHUT_DOWN.load(Ordering::Acquire) {
        return Err(shut_down());
    }
    if let Some(rt) = RUNTIME.get() {
        if threads != 0 && threads != rt.threads() {
            return Err(Error::wrong_state(format!(
                "the runtime already runs with {} threads",
                rt.threads()
            )));
        }
        return Ok(rt);
    }
    // A variable that does not parse fails the start (the Rust crate only reports it): a C
    // host sees the error code and the variable's name in the message.
    let mut settings = RuntimeSettings::from_env()
        .map_err(|err| Error::new(PLEXUS_ERR_INVALID_ARGUMENT, err.to_string()))?;
    match (threads, REQUESTED_THREADS.load(Ordering::Relaxed)) {
        (0, 0) => {}
        (0, n) | (n, _) => settings.threads = n,
    }
    let pool = ThreadPool::new(&settings, "plexus-ffi").map_err(|err| {
        Error::new(
            PLEXUS_ERR_SYSTEM,
            format!("could not start a worker thread: {err}"),
        )
    })?;
    let rt = RUNTIME.get_or_init(|| Runtime {
        pool,
        stop: Event::new(),
    });
    // SAFETY: registers a handler that only stores to an atomic; called once, under START.
    unsafe { pthread_atfork(None, None, Some(on_fork_child)) };
    Ok(rt)
}

/// Records the thread count for a runtime that has not started yet.
pub(crate) fn request_threads(threads: usize) {
    REQUESTED_THREADS.store(threads, Ordering::Relaxed);
}

/// Stops the runtime for good: channels shut down, workers exit and are joined, and every
/// task still on the executor is dropped (its connection closes, its operation completes
/// with SHUTDOWN). Returns whether it had been running.
pub(crate) fn shutdown() -> bool {
    let _guard = START.lock().unwrap_or_else(|e| e.into_inner());
    if SHUT_DOWN.swap(true, Ordering::AcqRel) {
        return false;
    }
    let Some(rt) = RUNTIME.get() else {
        return false;
    };
    crate::channel::shutdown_all();
    rt.stop.notify(usize::MAX);
    // Joins the workers (not the calling thread, if it is one: plexus_shutdown from a release
    // callback) and drops every task left, which completes its operation with SHUTDOWN.
    rt.pool.shutdown();
    true
}

/// Why a blocking wait ended without the operation's result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Interrupted {
    Timeout,
    Shutdown,
    Cancelled,
}

/// A cancellation flag that blocking waits and tasks can await.
#[derive(Default)]
pub(crate) struct Cancel {
    flag: AtomicBool,
    event: Event,
}

impl Cancel {
    /// Sets the flag and wakes every waiter; returns whether it was already set.
    pub(crate) fn cancel(&self) -> bool {
        let was = self.flag.swap(true, Ordering::SeqCst);
        self.event.notify(usize::MAX);
        was
    }

    pub(crate) fn is_cancelled(&self) -> bool {
        self.flag.load(Ordering::SeqCst)
    }

    /// Completes once the flag is set.
    pub(crate) async fn wait(&self) {
        loop {
            let listener = self.event.listen();
            if self.is_cancelled() {
                return;
            }
            listener.await;
        }
    }
}

/// Runs `fut` to completion on the calling thread, unless `timeout_ms` passes first (a
/// negative timeout waits forever) or the runtime shuts down.
pub(crate) fn block_on<F: Future>(
    timeout_ms: i64,
    fut: F,
) -> std::result::Result<F::Output, Interrupted> {
    let rt = match get() {
        Ok(rt) => rt,
        Err(_) => return Err(Interrupted::Shutdown),
    };
    let mut stop = pin!(rt.stop.listen());
    if SHUT_DOWN.load(Ordering::Acquire) {
        return Err(Interrupted::Shutdown);
    }
    let mut timer =
        (timeout_ms >= 0).then(|| Timer::after(Duration::from_millis(timeout_ms as u64)));
    let mut fut = pin!(fut);
    // Parks between polls and leaves the reactor to the workers (see core's `block_on`).
    core_plexus::rt::block_on(poll_fn(|cx| {
        if let Poll::Ready(out) = fut.as_mut().poll(cx) {
            return Poll::Ready(Ok(out));
        }
        if stop.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(Interrupted::Shutdown));
        }
        if let Some(timer) = &mut timer {
            if std::pin::Pin::new(timer).poll(cx).is_ready() {
                return Poll::Ready(Err(Interrupted::Timeout));
            }
        }
        Poll::Pending
    }))
}

/// Runs `fut` until `cancel` is set or the runtime shuts down, for tasks on the pool.
pub(crate) async fn until_cancelled<F: Future>(
    cancel: &Cancel,
    fut: F,
) -> std::result::Result<F::Output, Interrupted> {
    let mut fut = pin!(fut);
    let mut cancelled = pin!(cancel.wait());
    poll_fn(|cx| {
        if let Poll::Ready(out) = fut.as_mut().poll(cx) {
            return Poll::Ready(Ok(out));
        }
        if cancelled.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(Interrupted::Cancelled));
        }
        Poll::Pending
    })
    .await
}

/// A timeout argument in milliseconds as a duration; negative is "none".
pub(crate) fn timeout_arg(ms: i64) -> Option<Duration> {
    (ms >= 0).then(|| Duration::from_millis(ms as u64))
}

