//! `plexus_cq`: the completion queue. Asynchronous operations run on the runtime's workers
//! and push a tagged event here; hosts take events with `plexus_cq_next`, and may wait for
//! them on `plexus_cq_fd` (an eventfd) in their own event loop.

use std::collections::VecDeque;
use std::ffi::c_void;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::boundary::boundary;
use crate::bytes::plexus_bytes;
use crate::call::{Call, plexus_call};
use crate::channel::plexus_connectivity_state;
use crate::error::{
    Error, PLEXUS_ERR_SHUTDOWN, PLEXUS_ERR_SYSTEM, PLEXUS_ERR_TIMEOUT, PLEXUS_OK, Result,
    plexus_result,
};
use crate::handle::{ArcHandle, BoxHandle, check_out, write_out};
use crate::metadata::{Metadata, plexus_metadata};
use crate::server_call::{ServerCall, plexus_server_call};
use crate::status::{CallStatus, plexus_status};

/// A completion queue: finished asynchronous operations wait here as tagged events.
/// Thread-safe: operations may be started and events taken from any threads. Created by
/// `plexus_cq_new`, owned by the caller, freed with `plexus_cq_free`.
pub struct plexus_cq {
    _private: [u8; 0],
}

impl ArcHandle for plexus_cq {
    type Rust = Cq;
    const NAME: &'static str = "cq";
}

/// Which asynchronous operation an event reports.
#[repr(i32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(non_camel_case_types, reason = "C names")]
pub enum plexus_op {
    /// `plexus_unary_async`: `message` (on PLEXUS_OK) and `status` are set.
    PLEXUS_OP_UNARY = 1,
    /// `plexus_call_start_async` / `plexus_call_start_server_streaming_async`: `call` is set
    /// on PLEXUS_OK; `status` on PLEXUS_ERR_RPC.
    PLEXUS_OP_START = 2,
    /// `plexus_call_send_async`.
    PLEXUS_OP_SEND = 3,
    /// `plexus_call_recv_async`: `message` is set on PLEXUS_OK; PLEXUS_END_OF_STREAM when the
    /// call ended.
    PLEXUS_OP_RECV = 4,
    /// `plexus_call_close_send_async`.
    PLEXUS_OP_CLOSE_SEND = 5,
    /// `plexus_call_finish_async`: `status` is set (PLEXUS_OK or PLEXUS_ERR_RPC).
    PLEXUS_OP_FINISH = 6,
    /// `plexus_call_initial_metadata_async`: `metadata` is set on PLEXUS_OK.
    PLEXUS_OP_INITIAL_METADATA = 7,
    /// `plexus_channel_watch_state_async`: `state` is the new state (PLEXUS_OK), or the state
    /// when the watch timed out (PLEXUS_ERR_TIMEOUT).
    PLEXUS_OP_STATE_CHANGE = 8,
    /// An incoming call on a registered method or the catch-all (the tag given at
    /// registration): `server_call` is set; for UNARY and SERVER_STREAMING methods `message`
    /// holds the single request.
    PLEXUS_OP_SERVER_CALL = 9,
    /// `plexus_server_call_send_initial_metadata_async`.
    PLEXUS_OP_SEND_INITIAL_METADATA = 10,
    /// `plexus_server_call_done_async`: PLEXUS_OK when the call ended with the host's status;
    /// PLEXUS_ERR_RPC when it did not, with `status` saying why.
    PLEXUS_OP_SERVER_DONE = 11,
    /// `plexus_server_shutdown_async`: every connection of the server is closed.
    PLEXUS_OP_SERVER_SHUTDOWN = 12,
}

/// One finished operation, as `plexus_cq_next` writes it. The caller owns every non-NULL
/// pointer in it and frees each with its type's `_free` function.
#[repr(C)]
pub struct plexus_event {
    /// The tag given when the operation started.
    pub tag: *mut c_void,
    /// Which operation finished.
    pub op: plexus_op,
    /// Its result: PLEXUS_OK, or the code the blocking version would have returned
    /// (PLEXUS_ERR_SHUTDOWN when the runtime shut down first).
    pub result: plexus_result,
    /// PLEXUS_OP_START: the new call, owned by the caller (`plexus_call_free`).
    pub call: *const plexus_call,
    /// PLEXUS_OP_RECV, PLEXUS_OP_UNARY: the received message (`plexus_bytes_free`).
    pub message: *mut plexus_bytes,
    /// PLEXUS_OP_UNARY, PLEXUS_OP_FINISH, failed PLEXUS_OP_START: the status
    /// (`plexus_status_free`).
    pub status: *mut plexus_status,
    /// PLEXUS_OP_INITIAL_METADATA: the response headers (`plexus_metadata_free`).
    pub metadata: *mut plexus_metadata,
    /// PLEXUS_OP_STATE_CHANGE: the channel's connectivity state.
    pub state: plexus_connectivity_state,
    /// PLEXUS_OP_SERVER_CALL: the incoming call, owned by the caller
    /// (`plexus_server_call_free`).
    pub server_call: *const plexus_server_call,
}

/// A finished operation inside the queue.
pub(crate) struct Event {
    tag: usize,
    op: plexus_op,
    result: plexus_result,
    pub(crate) call: Option<Arc<Call>>,
    pub(crate) message: Option<Bytes>,
    pub(crate) status: Option<CallStatus>,
    pub(crate) metadata: Option<Metadata>,
    state: plexus_connectivity_state,
    server_call: Option<Arc<ServerCall>>,
}

impl Event {
    fn into_c(self) -> plexus_event {
        plexus_event {
            tag: self.tag as *mut c_void,
            op: self.op,
            result: self.result,
            call: self.call.map_or(std::ptr::null(), plexus_call::into_raw),
            message: self
                .message
                .map_or(std::ptr::null_mut(), plexus_bytes::into_raw),
            status: self
                .status
                .map_or(std::ptr::null_mut(), plexus_status::into_raw),
            metadata: self
                .metadata
                .map_or(std::ptr::null_mut(), plexus_metadata::into_raw),
            state: self.state,
            server_call: self
                .server_call
                .map_or(std::ptr::null(), plexus_server_call::into_raw),
        }
    }
}

/// What an operation hands back when it finishes.
#[derive(Default)]
pub(crate) struct Outcome {
    pub(crate) call: Option<Arc<Call>>,
    pub(crate) message: Option<Bytes>,
    pub(crate) status: Option<CallStatus>,
    pub(crate) metadata: Option<Metadata>,
    /// PLEXUS_OP_STATE_CHANGE's state (IDLE, unused, for every other operation).
    pub(crate) state: plexus_connectivity_state,
    /// PLEXUS_OP_SERVER_CALL's call.
    pub(crate) server_call: Option<Arc<ServerCall>>,
}

/// How many times a put-off wake-up of a waiting host thread goes back behind its worker's
/// queued tasks at most (so a worker that never runs dry still wakes the host).
const DEFER_ROUNDS: usize = 16;

/// The queue.
pub(crate) struct Cq {
    state: Mutex<State>,
    ready: Condvar,
    /// Created by the first `plexus_cq_fd`; until then nothing is signalled.
    fd: OnceLock<Notifier>,
}

#[derive(Default)]
struct State {
    events: VecDeque<Event>,
    /// Operations started and not yet finished.
    pending: usize,
    shut_down: bool,
    /// Threads asleep in `plexus_cq_next` that no push has woken yet, so that a push makes
    /// the wake-up system call only when it wakes someone. Never below the true number (a
    /// wakeup that lands on no one, or on two threads, leaves it above: a harmless extra
    /// wakeup later).
    sleepers: usize,
    /// A wake-up of a sleeper is put off until the pushing worker has run its queue (see
    /// [`Cq::push`]).
    wake_deferred: bool,
}

impl State {
    /// Shut down with nothing left: `plexus_cq_next` returns SHUTDOWN from now on.
    fn drained(&self) -> bool {
        self.shut_down && self.pending == 0 && self.events.is_empty()
    }

    /// Whether the fd should be readable.
    fn readable(&self) -> bool {
        !self.events.is_empty() || (self.shut_down && self.pending == 0)
    }
}

impl Cq {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers an operation about to start; SHUTDOWN once the queue is shut down.
    pub(crate) fn begin(self: &Arc<Self>, tag: *mut c_void, op: plexus_op) -> Result<Completion> {
        let mut state = self.lock();
        if state.shut_down {
            return Err(Error::new(
                PLEXUS_ERR_SHUTDOWN,
                "the completion queue was shut down",
            ));
        }
        state.pending += 1;
        Ok(Completion {
            cq: self.clone(),
            tag: tag as usize,
            op,
            done: false,
        })
    }

    fn push(self: &Arc<Self>, event: Event) {
        let mut state = self.lock();
        let was_readable = state.readable();
        state.events.push_back(event);
        state.pending -= 1;
        if !was_readable {
            if let Some(fd) = self.fd.get() {
                fd.signal();
            }
        }
        if state.sleepers == 0 || state.wake_deferred {
            return;
        }
        // Pushed by a worker with tasks queued (often the rest of a batch of calls or
        // responses, each about to push an event): wake the sleeper once, after them. The wake
        // goes to the back of the queue again while that holds more (the tasks it ran may
        // have woken others), up to DEFER_ROUNDS times: a host thread woken once per burst
        // instead of every few events is the largest saving a busy C server gets.
        if let Some(rt) = crate::runtime::running() {
            if rt.local_backlog().is_some_and(|n| n > 0) {
                state.wake_deferred = true;
                drop(state);
                let wake = DeferredWake(self.clone());
                rt.spawn(async move {
                    for _ in 0..DEFER_ROUNDS {
                        if rt.local_backlog().unwrap_or(0) == 0 {
                            break;
                        }
                        core_plexus::rt::yield_now().await;
                    }
                    drop(wake);
                });
                return;
            }
        }
        state.sleepers -= 1;
        // Woken after the unlock, so the waiter does not wake only to block on the lock.
        drop(state);
        self.ready.notify_one();
    }

    /// Wakes the sleepers for the events pushed since a wake-up was put off: one per event
    /// waiting, as many as the pushes would have woken one by one, so threads sharing the
    /// queue take a burst in parallel.
    fn wake_deferred(&self) {
        let mut state = self.lock();
        state.wake_deferred = false;
        let wake = state.sleepers.min(state.events.len());
        state.sleepers -= wake;
        drop(state);
        for _ in 0..wake {
            self.ready.notify_one();
        }
    }

    /// Takes the oldest event, waiting up to `timeout` (None: no limit).
    fn next(&self, timeout: Option<Duration>) -> Result<Event> {
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        let mut state = self.lock();
        loop {
            if let Some(event) = state.events.pop_front() {
                if !state.readable() {
                    if let Some(fd) = self.fd.get() {
                        fd.clear();
                    }
                }
                return Ok(event);
            }
            if state.drained() {
                return Err(Error::new(
                    PLEXUS_ERR_SHUTDOWN,
                    "the completion queue is shut down and drained",
                ));
            }
            // No deadline: no limit (or one too far away to represent).
            let wait = match deadline {
                Some(at) => match at.checked_duration_since(Instant::now()) {
                    Some(left) if !left.is_zero() => Some(left),
                    _ => {
                        return Err(Error::new(
                            PLEXUS_ERR_TIMEOUT,
                            "no event before the timeout",
                        ));
                    }
                },
                None => None,
            };
            state.sleepers += 1;
            state = match wait {
                Some(left) => {
                    let (mut state, waited) = self
                        .ready
                        .wait_timeout(state, left)
                        .unwrap_or_else(|e| e.into_inner());
                    // Timed out: no push woke this thread, so none counted it off.
                    if waited.timed_out() {
                        state.sleepers = state.sleepers.saturating_sub(1);
                    }
                    state
                }
                None => self.ready.wait(state).unwrap_or_else(|e| e.into_inner()),
            };
        }
    }

    fn shutdown(&self) {
        let mut state = self.lock();
        if state.shut_down {
            return;
        }
        let was_readable = state.readable();
        state.shut_down = true;
        if !was_readable && state.readable() {
            if let Some(fd) = self.fd.get() {
                fd.signal();
            }
        }
        state.sleepers = 0;
        drop(state);
        self.ready.notify_all();
    }

    fn fd(&self) -> Result<i32> {
        if let Some(fd) = self.fd.get() {
            return Ok(fd.raw());
        }
        // Under the lock, so no push or pop sees the fd half set up.
        let state = self.lock();
        if let Some(fd) = self.fd.get() {
            return Ok(fd.raw());
        }
        let fd = Notifier::new().map_err(|e| {
            Error::new(
                PLEXUS_ERR_SYSTEM,
                format!("could not create the eventfd: {e}"),
            )
        })?;
        if state.readable() {
            fd.signal();
        }
        let raw = fd.raw();
        let _ = self.fd.set(fd);
        Ok(raw)
    }
}

/// A wake-up put off until the worker that pushed an event has run its queue: a task at the
/// back of that queue, which wakes when it runs or when it is dropped unrun (shutdown).
struct DeferredWake(Arc<Cq>);

impl Drop for DeferredWake {
    fn drop(&mut self) {
        self.0.wake_deferred();
    }
}

/// An operation's promise to put exactly one event on its queue: dropped unfinished (the
/// runtime shut down and dropped its task), it reports PLEXUS_ERR_SHUTDOWN.
pub(crate) struct Completion {
    cq: Arc<Cq>,
    tag: usize,
    op: plexus_op,
    done: bool,
}

impl Completion {
    /// Puts the operation's event on the queue.
    pub(crate) fn complete(mut self, result: plexus_result, outcome: Outcome) {
        self.done = true;
        // Shutdown closes the channels before it drops the operations' tasks, so an operation
        // it cuts off may end first with the error that closing caused: it ended because of
        // the shutdown, and says so, as one whose task was dropped does.
        let result = if result != PLEXUS_OK && crate::runtime::is_shut_down() {
            PLEXUS_ERR_SHUTDOWN
        } else {
            result
        };
        self.cq.push(Event {
            tag: self.tag,
            op: self.op,
            result,
            call: outcome.call,
            message: outcome.message,
            status: outcome.status,
            metadata: outcome.metadata,
            state: outcome.state,
            server_call: outcome.server_call,
        });
    }
}

impl Drop for Completion {
    fn drop(&mut self) {
        if !self.done {
            self.cq.push(Event {
                tag: self.tag,
                op: self.op,
                result: PLEXUS_ERR_SHUTDOWN,
                call: None,
                message: None,
                status: None,
                metadata: None,
                state: plexus_connectivity_state::PLEXUS_STATE_IDLE,
                server_call: None,
            });
        }
    }
}

/// Reads the queue argument of an asynchronous operation and registers the operation.
///
/// # Safety
/// `cq` is NULL or live.
pub(crate) unsafe fn begin(
    cq: *const plexus_cq,
    tag: *mut c_void,
    op: plexus_op,
) -> Result<Completion> {
    // SAFETY: per this function's contract.
    let cq = unsafe { plexus_cq::clone_arc(cq) }?;
    cq.begin(tag, op)
}

/// A readiness flag for host event loops: an eventfd on Linux (on the architectures whose
/// O_CLOEXEC and O_NONBLOCK values are the generic ones), a socket pair elsewhere.
#[cfg(all(
    target_os = "linux",
    any(
        target_arch = "x86_64",
        target_arch = "x86",
        target_arch = "aarch64",
        target_arch = "arm",
        target_arch = "riscv64",
        target_arch = "powerpc64",
        target_arch = "s390x",
        target_arch = "loongarch64"
    )
))]
mod notifier {
    use std::ffi::{c_int, c_uint};
    use std::io::{Read, Write};
    use std::os::fd::{AsRawFd, FromRawFd};

    unsafe extern "C" {
        /// eventfd(2) from the C library.
        fn eventfd(initval: c_uint, flags: c_int) -> c_int;
    }

    /// EFD_CLOEXEC (= O_CLOEXEC) on these architectures.
    const EFD_CLOEXEC: c_int = 0o2000000;
    /// EFD_NONBLOCK (= O_NONBLOCK) on these architectures.
    const EFD_NONBLOCK: c_int = 0o4000;

    /// An eventfd: readable while its counter is above zero.
    pub(super) struct Notifier(std::fs::File);

    impl Notifier {
        pub(super) fn new() -> std::io::Result<Notifier> {
            // SAFETY: eventfd takes plain integers and returns a new descriptor or -1.
            let fd = unsafe { eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK) };
            if fd < 0 {
                return Err(std::io::Error::last_os_error());
            }
            // SAFETY: fd is a fresh descriptor that nothing else owns.
            Ok(Notifier(unsafe { std::fs::File::from_raw_fd(fd) }))
        }

        pub(super) fn raw(&self) -> i32 {
            self.0.as_raw_fd()
        }

        /// Makes it readable: adds 1 to the counter (never blocks: the counter stays tiny).
        pub(super) fn signal(&self) {
            let _ = (&self.0).write(&1u64.to_ne_bytes());
        }

        /// Makes it unreadable: resets the counter (non-blocking, so a zero counter is fine).
        pub(super) fn clear(&self) {
            let mut buf = [0u8; 8];
            let _ = (&self.0).read(&mut buf);
        }
    }
}

/// A readiness flag for host event loops: a socket pair where no eventfd is known.
#[cfg(not(all(
    target_os = "linux",
    any(
        target_arch = "x86_64",
        target_arch = "x86",
        target_arch = "aarch64",
        target_arch = "arm",
        target_arch = "riscv64",
        target_arch = "powerpc64",
        target_arch = "s390x",
        target_arch = "loongarch64"
    )
)))]
mod notifier {
    use std::io::{Read, Write};
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;

    /// A socket pair: the first end is readable while a byte waits in it.
    pub(super) struct Notifier(UnixStream, UnixStream);

    impl Notifier {
        pub(super) fn new() -> std::io::Result<Notifier> {
            let (read, write) = UnixStream::pair()?;
            read.set_nonblocking(true)?;
            write.set_nonblocking(true)?;
            Ok(Notifier(read, write))
        }

        pub(super) fn raw(&self) -> i32 {
            self.0.as_raw_fd()
        }

        pub(super) fn signal(&self) {
            let _ = (&self.1).write(&[1]);
        }

        pub(super) fn clear(&self) {
            let mut buf = [0u8; 64];
            while matches!((&self.0).read(&mut buf), Ok(n) if n > 0) {}
        }
    }
}

use notifier::Notifier;

/// Creates a completion queue, owned by the caller (free with `plexus_cq_free`).
///
/// Returns PLEXUS_OK and writes `*out`; PLEXUS_ERR_NULL_ARGUMENT if `out` is NULL.
///
/// # Safety
/// `out` is writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn plexus_cq_new(out: *mut *const plexus_cq) -> plexus_result {
    boundary("plexus_cq_new", || {
        check_out(out, "out")?;
        let cq = Arc::new(Cq {
            state: Mutex::new(State::default()),
            ready: Condvar::new(),
            fd: OnceLock::new(),
        });
        // SAFETY: out was checked and is writable.
        unsafe { write_out(out, "out", plexus_cq::into_raw(cq)) }?;
        Ok(PLEXUS_OK)
    })
}

/// Takes the oldest finished operation, waiting up to `timeout_ms` milliseconds (0: do not
/// wait; negative: no limit), and writes it to `*event`. The caller owns the pointers in the
/// event. Thread-safe: several threads may wait on one queue (each event goes to one).
///
/// Returns PLEXUS_OK and writes `*event`; PLEXUS_ERR_TIMEOUT when no event came in time;
/// PLEXUS_ERR_SHUTDOWN once the queue is shut down and every event was taken;
/// PLEXUS_ERR_NULL_ARGUMENT; PLEXUS_ERR_WRONG_STATE for a wait (`timeout_ms` not 0) on a
/// plexus worker thread (in a server callback or a hook).
///
/// # Safety
/// `cq` is live; `event` is writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn plexus_cq_next(
    cq: *const plexus_cq,
    timeout_ms: i64,
    event: *mut plexus_event,
) -> plexus_result {
    boundary("plexus_cq_next", || {
        // SAFETY: the caller passes a live handle or NULL (checked).
        let cq = unsafe { plexus_cq::as_ref(cq) }?;
        check_out(event, "event")?;
        if timeout_ms != 0 && crate::runtime::on_worker() {
            return Err(crate::channel::on_worker_error());
        }
        let next = cq.next(crate::runtime::timeout_arg(timeout_ms))?;
        // SAFETY: event was checked and is writable.
        unsafe { write_out(event, "event", next.into_c()) }?;
        Ok(PLEXUS_OK)
    })
}

/// Writes to `*fd` a file descriptor that is readable exactly while `plexus_cq_next` has
/// something to return (an event, or the end of a shut-down queue): an eventfd on Linux.
/// Wait for it with epoll, poll, libuv or asyncio's `add_reader`, then call
/// `plexus_cq_next(cq, 0, ...)` until it returns PLEXUS_ERR_TIMEOUT. Never read, write or
/// close it: it belongs to the queue and closes with `plexus_cq_free`. Thread-safe.
///
/// Returns PLEXUS_OK; PLEXUS_ERR_NULL_ARGUMENT; PLEXUS_ERR_SYSTEM when no eventfd could be
/// created.
///
/// # Safety
/// `cq` is live; `fd` is writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn plexus_cq_fd(cq: *const plexus_cq, fd: *mut i32) -> plexus_result {
    boundary("plexus_cq_fd", || {
        // SAFETY: the caller passes a live handle or NULL (checked).
        let cq = unsafe { plexus_cq::as_ref(cq) }?;
        check_out(fd, "fd")?;
        let raw = cq.fd()?;
        // SAFETY: fd was checked and is writable.
        unsafe { write_out(fd, "fd", raw) }?;
        Ok(PLEXUS_OK)
    })
}

/// Shuts the queue down: new operations on it fail with PLEXUS_ERR_SHUTDOWN; operations
/// already started still finish and deliver their events (cancel their calls to make that
/// quick); then `plexus_cq_next` returns PLEXUS_ERR_SHUTDOWN. Idempotent; thread-safe.
///
/// Returns PLEXUS_OK; PLEXUS_ERR_NULL_ARGUMENT.
///
/// # Safety
/// `cq` is live.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn plexus_cq_shutdown(cq: *const plexus_cq) -> plexus_result {
    boundary("plexus_cq_shutdown", || {
        // SAFETY: the caller passes a live handle or NULL (checked).
        let cq = unsafe { plexus_cq::as_ref(cq) }?;
        cq.shutdown();
        Ok(PLEXUS_OK)
    })
}

/// Releases the caller's handle. Events not taken are freed with their contents; operations
/// still running complete into the void (their resources are freed). Closes the fd once no
/// operation uses the queue any more. NULL is a no-op. No thread may be waiting in
/// `plexus_cq_next` on it.
///
/// # Safety
/// `cq` is NULL or live, not used again.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn plexus_cq_free(cq: *const plexus_cq) {
    boundary("plexus_cq_free", || {
        // SAFETY: the caller gives up a live handle or NULL.
        drop(unsafe { plexus_cq::take(cq) });
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Barrier, mpsc};

    fn new_cq() -> Arc<Cq> {
        Arc::new(Cq {
            state: Mutex::new(State::default()),
            ready: Condvar::new(),
            fd: OnceLock::new(),
        })
    }

    /// Has `waiters` threads wait in `next` on a new queue (each takes `per_waiter` events,
    /// then waits for the others at a barrier, so no thread takes a second share), then
    /// completes `waiters * per_waiter` operations, each a task of its own spawned from one
    /// worker: a worker pushing an event has the rest queued behind it, so every wake-up of the
    /// burst is put off. Fails unless every event reaches a waiter (waiting at most 60 s, a bound
    /// for a hang, not a speed).
    fn burst_from_a_busy_worker(waiters: usize, per_waiter: usize) {
        let n = waiters * per_waiter;
        let rt = crate::runtime::get().expect("runtime");
        let cq = new_cq();
        let completions: Vec<Completion> = (0..n)
            .map(|i| {
                cq.begin(i as *mut c_void, plexus_op::PLEXUS_OP_UNARY)
                    .unwrap()
            })
            .collect();
        let (tx, rx) = mpsc::channel();
        let barrier = Arc::new(Barrier::new(waiters));
        for _ in 0..waiters {
            let (waiter, tx, barrier) = (cq.clone(), tx.clone(), barrier.clone());
            std::thread::spawn(move || {
                for _ in 0..per_waiter {
                    let event = waiter.next(None).expect("an event");
                    let _ = tx.send(event.tag);
                }
                barrier.wait();
            });
        }
        while cq.lock().sleepers < waiters {
            std::thread::sleep(Duration::from_millis(1));
        }
        rt.spawn(async move {
            let rt = crate::runtime::get().expect("runtime");
            for completion in completions {
                rt.spawn(async move {
                    completion.complete(PLEXUS_OK, Outcome::default());
                });
            }
            // Queued behind them all, so even the last push finds a backlog and puts the
            // wake-up off: only the deferred wake-up can get the waiters going.
            rt.spawn(async { std::thread::sleep(Duration::from_millis(100)) });
        });
        let mut seen = vec![false; n];
        for _ in 0..n {
            let tag = rx
                .recv_timeout(Duration::from_secs(60))
                .expect("the waiters got every event");
            seen[tag] = true;
        }
        assert!(seen.iter().all(|&s| s));
    }

    /// A burst of completions from a busy worker reaches one thread asleep in `next`, every
    /// event of it.
    #[test]
    fn a_burst_of_completions_from_busy_workers_reaches_a_sleeping_waiter() {
        burst_from_a_busy_worker(1, 500);
    }

    /// The put-off wake-up wakes as many sleepers as events came in: four threads asleep on
    /// one queue each get one of a burst of four (with a single wake-up, three would sleep
    /// beside three waiting events).
    #[test]
    fn a_burst_of_completions_wakes_a_sleeper_per_event() {
        burst_from_a_busy_worker(4, 1);
    }
}
