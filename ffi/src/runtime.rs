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

/// Whether `plexus_shutdown` has run (or is running).
pub(crate) fn is_shut_down() -> bool {
    SHUT_DOWN.load(Ordering::Acquire)
}

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
    // Blocked operations first, so they learn of the shutdown before their connections close.
    rt.stop.notify(usize::MAX);
    crate::channel::shutdown_all();
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
    /// Asked on one of the runtime's own workers, which a wait would stall.
    OnWorker,
}

/// Whether the calling thread is one of the runtime's workers (a server callback or a hook
/// runs there), where a blocking wait would hold up every task queued behind it.
pub(crate) fn on_worker() -> bool {
    running().is_some_and(|rt| rt.local_backlog().is_some())
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
    if rt.local_backlog().is_some() {
        return Err(Interrupted::OnWorker);
    }
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
            // Shutdown closes the channels before it stops the pool, so an operation it cuts
            // off may end first with the transport error that closing caused (a broken pipe,
            // end of stream): the flag, set before any of that, says what really happened.
            if SHUT_DOWN.load(Ordering::Acquire) {
                return Poll::Ready(Err(Interrupted::Shutdown));
            }
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

#[cfg(test)]
mod tests {
    use std::process::Command;
    use std::ptr;
    use std::sync::mpsc;
    use std::time::Duration;

    use bytes::Bytes;
    use core_plexus::rt::BoxFuture;
    use core_plexus::{BytesCodec, Executor, Listener, Request, Response, Server};

    use crate::bytes::{plexus_bytes, plexus_bytes_copy, plexus_bytes_free};
    use crate::channel::{plexus_channel, plexus_channel_free, plexus_channel_new};
    use crate::cq::{plexus_cq, plexus_cq_free, plexus_cq_new, plexus_cq_next, plexus_event};
    use crate::error::{PLEXUS_ERR_SHUTDOWN, PLEXUS_OK};
    use crate::status::{plexus_status, plexus_status_free};
    use crate::unary::plexus_unary;

    /// Set in the child processes, to the round's number.
    const ROUND_ENV: &str = "PLEXUS_FFI_SHUTDOWN_ROUND";
    const CHILD: &str = "runtime::tests::blocked_calls_then_shutdown";
    const ROUNDS: usize = 24;
    const CALLS: usize = 4;
    const ASYNC_CALLS: usize = 4;

    /// Every call blocked in `plexus_unary` when `plexus_shutdown` runs returns
    /// PLEXUS_ERR_SHUTDOWN, and every `plexus_unary_async` in flight completes with it: never
    /// with the transport error of its connection being closed under it.
    /// Shutdown is final for a process, so each round is a child process (this test binary,
    /// running the ignored test below); the rounds shut down at different points after the
    /// calls reached the server, to meet the race wherever it is.
    #[test]
    fn blocked_calls_return_shutdown_not_a_transport_error() {
        let exe = std::env::current_exe().unwrap();
        for round in 0..ROUNDS {
            let out = Command::new(&exe)
                .args([
                    "--exact",
                    CHILD,
                    "--ignored",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env(ROUND_ENV, round.to_string())
                .output()
                .unwrap();
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(out.status.success(), "round {round} failed:\n{text}");
            assert!(
                text.contains("1 passed"),
                "round {round} did not run:\n{text}"
            );
        }
    }

    /// One round of the test above (run by it, in a process of its own).
    #[test]
    #[ignore = "a child process of blocked_calls_return_shutdown_not_a_transport_error"]
    fn blocked_calls_then_shutdown() {
        let round: usize = std::env::var(ROUND_ENV).unwrap().parse().unwrap();
        // A server (on core's own pool, which shutdown does not stop) that holds every call.
        let (arrived_tx, arrived_rx) = mpsc::channel::<()>();
        let arrived_tx = std::sync::Mutex::new(arrived_tx);
        let server = Server::builder()
            .unary("/t.T/Hold", BytesCodec, move |_req: Request<Bytes>| {
                let _ = arrived_tx.lock().unwrap().send(());
                async move {
                    std::future::pending::<()>().await;
                    Ok(Response::new(Bytes::new()))
                }
            })
            .build()
            .unwrap();
        let listener = Listener::bind_tcp("127.0.0.1:0").unwrap();
        let target = format!("127.0.0.1:{}\0", listener.local_addr().unwrap().port());
        let serve: BoxFuture<()> = Box::pin(async move {
            let _ = server.serve(listener).await;
        });
        core_plexus::DefaultExecutor.spawn(serve);

        let mut channel: *const plexus_channel = ptr::null();
        // SAFETY: a NUL-terminated target and a writable out-parameter.
        let rc = unsafe { plexus_channel_new(target.as_ptr().cast(), ptr::null(), &mut channel) };
        assert_eq!(rc, PLEXUS_OK);
        let channel = channel as usize;
        let mut cq: *const plexus_cq = ptr::null();
        // SAFETY: a writable out-parameter.
        assert_eq!(unsafe { plexus_cq_new(&mut cq) }, PLEXUS_OK);
        for i in 0..ASYNC_CALLS {
            let mut request: *mut plexus_bytes = ptr::null_mut();
            // SAFETY: live handles, a NUL-terminated method, a writable out-parameter.
            unsafe {
                assert_eq!(plexus_bytes_copy(b"x".as_ptr(), 1, &mut request), PLEXUS_OK);
                let rc = crate::unary::plexus_unary_async(
                    channel as *const plexus_channel,
                    c"/t.T/Hold".as_ptr(),
                    request,
                    ptr::null(),
                    cq,
                    i as *mut std::ffi::c_void,
                );
                assert_eq!(rc, PLEXUS_OK);
                plexus_bytes_free(request);
            }
        }
        let (done_tx, done_rx) = mpsc::channel();
        for _ in 0..CALLS {
            let done_tx = done_tx.clone();
            std::thread::spawn(move || {
                let mut request: *mut plexus_bytes = ptr::null_mut();
                let mut response: *mut plexus_bytes = ptr::null_mut();
                let mut status: *mut plexus_status = ptr::null_mut();
                // SAFETY: live handles, a NUL-terminated method, writable out-parameters.
                let rc = unsafe {
                    assert_eq!(plexus_bytes_copy(b"x".as_ptr(), 1, &mut request), PLEXUS_OK);
                    let rc = plexus_unary(
                        channel as *const plexus_channel,
                        c"/t.T/Hold".as_ptr(),
                        request,
                        ptr::null(),
                        -1,
                        &mut response,
                        &mut status,
                    );
                    plexus_bytes_free(request);
                    plexus_bytes_free(response);
                    plexus_status_free(status);
                    rc
                };
                // SAFETY: the thread's last error text, NUL-terminated, read before any other
                // call on this thread.
                let text = unsafe { std::ffi::CStr::from_ptr(crate::plexus_last_error()) };
                let _ = done_tx.send((rc, text.to_string_lossy().into_owned()));
            });
        }
        for _ in 0..CALLS + ASYNC_CALLS {
            arrived_rx
                .recv_timeout(Duration::from_secs(60))
                .expect("the calls reach the server");
        }
        // Each round shuts down a little later after the last call arrived (a few µs per
        // round of busy work), so the rounds meet the calls' threads in different states.
        let mut spin = 0u64;
        for i in 0..(round as u64 * 2_000) {
            spin = std::hint::black_box(spin.wrapping_add(i));
        }
        assert_eq!(crate::plexus_shutdown(), PLEXUS_OK);
        for _ in 0..CALLS {
            let (rc, text) = done_rx
                .recv_timeout(Duration::from_secs(60))
                .expect("every blocked call returns");
            assert_eq!(rc, PLEXUS_ERR_SHUTDOWN, "round {round}: {text}");
        }
        for _ in 0..ASYNC_CALLS {
            let mut event = std::mem::MaybeUninit::<plexus_event>::uninit();
            // SAFETY: a live queue and a writable event.
            let rc = unsafe { plexus_cq_next(cq, 60_000, event.as_mut_ptr()) };
            assert_eq!(rc, PLEXUS_OK);
            // SAFETY: written by plexus_cq_next, which returned PLEXUS_OK.
            let event = unsafe { event.assume_init() };
            assert_eq!(
                event.result, PLEXUS_ERR_SHUTDOWN,
                "round {round}: async call"
            );
            // SAFETY: the event's objects are the caller's, freed once.
            unsafe {
                plexus_bytes_free(event.message);
                plexus_status_free(event.status);
            }
        }
        // SAFETY: the queue is live and freed once.
        unsafe { plexus_cq_free(cq) };
        // SAFETY: the handle is live and freed once.
        unsafe { plexus_channel_free(channel as *const plexus_channel) };
    }
}
