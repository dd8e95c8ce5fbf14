//! [`ThreadPool`]: the default executor, a work-stealing pool in which a task woken on a worker
//! thread runs on that same thread.
//!
//! Why not smol's `async-executor`: it schedules every wake-up through one global queue and
//! wakes a sleeping worker for it, so a unary call's tasks (connection driver, call, handler)
//! hop between threads at every step: two or more context switches and futex calls per call.
//! Here a task woken on a worker goes to the back of that worker's own queue, so the chain
//! driver → handler → driver runs on one thread, hot in its cache, with no system call. FIFO
//! order within a worker keeps write coalescing: handlers answering in a burst all run before
//! the connection driver they wake, which then writes their responses at once. Idle workers
//! are woken only for a backlog worth the handoff (500 µs of queued work, timed by each
//! worker's average poll), and steal half a queue; work from outside the pool wakes one only
//! when no worker is running (a running one takes it between its own tasks). A monitor thread
//! also wakes one when a worker has run for 5 ms without running out of work (it is saturated,
//! or a handler is doing blocking work) with tasks queued, so those are not held up.
//!
//! Each worker thread blocks in `async_io::block_on`, so an idle worker drives the `async-io`
//! reactor: a socket that becomes readable wakes its task on the worker that polled the
//! reactor, which runs it next.
//!
//! A worker that runs out of work spins before it sleeps: for up to the pool's spin time
//! ([`DEFAULT_SPIN`], `PLEXUS_SPIN_MICROS` for the default pool) it polls the reactor without
//! blocking and looks at the queues (yielding its core to any thread that wants it), so a reply
//! or request that arrives meanwhile is taken at once instead of after a thread wake-up (tens of
//! µs on a virtual machine). One worker of a pool spins at a time, and a worker whose spins
//! keep ending empty-handed backs off (it skips the next 1, 3, 7, ... up to 1023 chances), so
//! a lightly loaded process does not burn a core.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use async_task::{Runnable, ScheduleInfo, WithInfo};
use slab::Slab;

use super::executor::{BoxFuture, Executor};

/// Tasks a worker runs in one poll of its loop before it lets `block_on` look at the reactor
/// (so a busy worker still turns I/O readiness and timers into wake-ups).
const BATCH: usize = 64;
/// Work waiting in a worker's local queue (its length times the worker's average poll time)
/// from which an idle worker is woken to steal, in nanoseconds: 500 µs.
///
/// A handoff pays only when the queue would take longer than the other worker needs to wake
/// (tens of µs on these machines) and start. Short tasks of one connection are better run
/// where they are: a thief takes h2's connection lock too, and on a machine shared with the
/// peer it takes a core the peer was using. Measured with 64 ping-pong streams between a plexus
/// client and server on 2 cores (messages/s): a fixed backlog of 4 tasks (the earlier rule)
/// 170k-185k; 100 µs 197k-213k; 300 µs 218k-225k; 500 µs 243k-249k; 1 ms 246k-248k; 2 ms
/// 247k-255k; tonic 182k. Unary calls with 64 in flight did not change, and three clients
/// with a connection each still spread over both workers. Slow handlers (a poll of 250 µs or
/// more) are stolen from a backlog of two.
const STEAL_WORK_NANOS: u64 = 500_000;
/// A worker that has run this long without running out of work, with tasks queued, gets an
/// idle worker woken to steal them: it is saturated, or stuck in one long poll (a handler doing
/// blocking work).
const STALL: Duration = Duration::from_millis(5);
/// How long a worker that ran out of work spins (polls the reactor without blocking and looks
/// at the queues) before it sleeps, unless the pool is built with another.
///
/// A thread wake-up costs 40 µs or more on these virtual machines (two C processes bouncing
/// 40 bytes over loopback TCP: 83-88 µs a round trip with blocking reads, 6.5 µs spinning).
/// Measured on 2 cores, plexus client and server, messages or calls/s: spin 0, 20, 50 and 100 µs
/// gave unary with 1 in flight 11k, 28-31k, 44-46k and 45-46k; ping-pong with 64 streams
/// 275-287k, 276k, 294-306k and 387-414k; unary with 64 in flight 128-144k, 129-141k, 135-154k,
/// 149-151k. The tonic client against the plexus server, unary with 1 in flight: 10k, 10k, 20k,
/// 20k.
pub const DEFAULT_SPIN: Duration = Duration::from_micros(100);
/// A worker whose spin ended with no work skips the next 2^n - 1 chances to spin after its n-th
/// such spin in a row, up to this n (1023 chances).
const SPIN_BACKOFF_MAX: u32 = 10;
/// How often the monitor looks while every worker is waiting for work.
const IDLE_CHECK: Duration = Duration::from_millis(50);
/// Every this many tasks a worker looks at the global queue first, so tasks woken from outside
/// the pool are not starved by busy local queues.
const GLOBAL_EVERY: u32 = 61;

/// A work-stealing thread pool: runs spawned futures on its worker threads until they finish.
///
/// Cheap to clone (a clone is a handle on the same pool). Workers named `<name>-N` start in
/// [`ThreadPool::new`] and run until [`ThreadPool::shutdown`] (the pool's last handle being
/// dropped does not stop them, since spawned tasks keep running in the background).
#[derive(Clone)]
pub struct ThreadPool {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for ThreadPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ThreadPool")
            .field("threads", &self.shared.locals.len())
            .finish_non_exhaustive()
    }
}

struct Shared {
    /// Tasks woken or spawned outside the pool's threads.
    global: Mutex<VecDeque<Runnable>>,
    /// Each worker's local queue; other workers steal from it.
    locals: Box<[Mutex<VecDeque<Runnable>>]>,
    /// Wakers of workers with nothing to do.
    sleepers: Mutex<Vec<(usize, Waker)>>,
    /// Length of `sleepers`, read without the lock on every schedule.
    idle: AtomicUsize,
    stopping: AtomicBool,
    threads: Mutex<Vec<JoinHandle<()>>>,
    /// Wakers of every live task, so shutdown can reach the ones waiting on I/O or timers.
    active: Mutex<Slab<Waker>>,
    /// Per worker: since when it has been running without a pause for lack of work
    /// (nanoseconds since `epoch`, plus one), or 0 while it waits for work. The monitor reads
    /// it to find saturated workers (or one stuck in a long poll).
    awake_since: Box<[AtomicU64]>,
    /// How long a worker out of work spins before it sleeps, in nanoseconds (0: never).
    spin_nanos: u64,
    /// Whether a worker is spinning: one at a time, so the others' cores stay free.
    spinning: AtomicBool,
    epoch: Instant,
    /// Times a worker went to sleep (tests count them).
    #[cfg(test)]
    sleeps: AtomicUsize,
    /// Spins begun (tests count them).
    #[cfg(test)]
    spins: AtomicUsize,
}

/// The pool worker this thread is, if it is one.
struct WorkerContext {
    shared: Arc<Shared>,
    index: usize,
    /// Whether this worker's waker is in `sleepers` (set only by this thread; a notifier
    /// removes the entry, so a stale `true` only costs a search of the list).
    asleep: Cell<bool>,
    /// How long one task's poll takes on this worker, in nanoseconds: a moving average over
    /// about the last eight.
    avg_poll: Cell<u64>,
    /// When this worker began its current spin (nanoseconds since `epoch`, plus one), or 0.
    spin_since: Cell<u64>,
    /// Spins in a row that ended with no work.
    spin_misses: Cell<u32>,
    /// Chances to spin this worker still skips after those misses.
    spin_skip: Cell<u32>,
}

thread_local! {
    static WORKER: RefCell<Option<Rc<WorkerContext>>> = const { RefCell::new(None) };
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// This thread's worker context, if the thread is a worker of `shared`'s pool.
fn current_worker(shared: &Arc<Shared>) -> Option<Rc<WorkerContext>> {
    // `try_with`: a wake-up during this thread's exit goes the foreign way.
    WORKER
        .try_with(|w| {
            w.borrow()
                .as_ref()
                .filter(|w| Arc::ptr_eq(&w.shared, shared))
                .cloned()
        })
        .ok()
        .flatten()
}

impl ThreadPool {
    /// Starts a pool of `threads` workers (at least one) named `<name>-0`, `<name>-1`, ...
    /// whose idle workers spin for [`DEFAULT_SPIN`] before they sleep.
    /// Fails only if not a single thread could be started.
    pub fn new(threads: usize, name: &str) -> io::Result<ThreadPool> {
        ThreadPool::with_spin(threads, name, DEFAULT_SPIN)
    }

    /// Like [`ThreadPool::new`], with the time a worker that ran out of work spins (polls the
    /// reactor and the queues) before it sleeps: `Duration::ZERO` never spins, which saves CPU
    /// at the cost of a thread wake-up for each message that arrives while the pool is idle.
    pub fn with_spin(threads: usize, name: &str, spin: Duration) -> io::Result<ThreadPool> {
        let threads = threads.max(1);
        let shared = Arc::new(Shared {
            global: Mutex::new(VecDeque::new()),
            locals: (0..threads).map(|_| Mutex::new(VecDeque::new())).collect(),
            sleepers: Mutex::new(Vec::with_capacity(threads)),
            idle: AtomicUsize::new(0),
            stopping: AtomicBool::new(false),
            threads: Mutex::new(Vec::with_capacity(threads)),
            active: Mutex::new(Slab::new()),
            awake_since: (0..threads).map(|_| AtomicU64::new(0)).collect(),
            spin_nanos: u64::try_from(spin.as_nanos()).unwrap_or(u64::MAX),
            spinning: AtomicBool::new(false),
            epoch: Instant::now(),
            #[cfg(test)]
            sleeps: AtomicUsize::new(0),
            #[cfg(test)]
            spins: AtomicUsize::new(0),
        });
        let mut handles = Vec::with_capacity(threads);
        for index in 0..threads {
            let shared = shared.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("{name}-{index}"))
                .spawn(move || run_worker(shared, index));
            match spawned {
                Ok(handle) => handles.push(handle),
                Err(err) if handles.is_empty() => return Err(err),
                // Fewer workers than asked is still a working pool: their queues are only
                // ever stolen from (no thread owns them).
                Err(_) => break,
            }
        }
        // Without a monitor a blocked worker's queue waits for its worker; still a pool.
        let monitor = shared.clone();
        if let Ok(handle) = std::thread::Builder::new()
            .name(format!("{name}-monitor"))
            .spawn(move || run_monitor(&monitor))
        {
            handles.push(handle);
        }
        *lock(&shared.threads) = handles;
        Ok(ThreadPool { shared })
    }

    /// Number of worker threads.
    pub fn threads(&self) -> usize {
        self.shared.locals.len()
    }

    /// How many tasks wait in the calling thread's queue, if it is one of this pool's workers
    /// (`None` on any other thread): a task that is about to wake another thread can put the
    /// wake-up off until the worker has run them, as one wake-up for several results.
    pub fn local_backlog(&self) -> Option<usize> {
        current_worker(&self.shared).map(|worker| lock(&self.shared.locals[worker.index]).len())
    }

    /// Runs `future` on the pool. After [`shutdown`](Self::shutdown) it is dropped unrun.
    pub fn spawn_future(&self, future: impl Future<Output = ()> + Send + 'static) {
        if self.shared.stopping.load(Ordering::Acquire) {
            return;
        }
        let shared = self.shared.clone();
        let schedule = WithInfo(move |runnable: Runnable, info: ScheduleInfo| {
            shared.schedule(runnable, info.woken_while_running);
        });
        let runnable = {
            let mut active = lock(&self.shared.active);
            let entry = active.vacant_entry();
            let registered = Registered {
                shared: self.shared.clone(),
                key: entry.key(),
            };
            let future = async move {
                let _registered = registered;
                future.await
            };
            // A panicking task ends there: the panic is caught and dropped with the task.
            let (runnable, task) = async_task::Builder::new()
                .propagate_panic(true)
                .spawn(|()| future, schedule);
            task.detach();
            entry.insert(runnable.waker());
            runnable
        };
        runnable.schedule();
    }

    /// Stops the pool: the workers finish the task they are running and exit, and are joined
    /// (except the calling thread, if it is one of them); then every task left, queued or
    /// waiting, is dropped unfinished. Spawning afterwards drops the future. Idempotent.
    pub fn shutdown(&self) {
        let shared = &self.shared;
        shared.stopping.store(true, Ordering::SeqCst);
        for (_, waker) in lock(&shared.sleepers).drain(..) {
            waker.wake();
        }
        shared.idle.store(0, Ordering::SeqCst);
        let handles = std::mem::take(&mut *lock(&shared.threads));
        let me = std::thread::current().id();
        for handle in &handles {
            // The monitor sleeps parked.
            handle.thread().unpark();
        }
        for handle in handles {
            if handle.thread().id() != me {
                let _ = handle.join();
            }
        }
        // Waking a waiting task queues it (the pool is stopping), and dropping a queued
        // Runnable drops its future, whose destructors may wake more: repeat until none is left.
        let waiting: Vec<Waker> = lock(&shared.active).drain().collect();
        for waker in waiting {
            waker.wake();
        }
        loop {
            let mut orphans: Vec<Runnable> = lock(&shared.global).drain(..).collect();
            for local in shared.locals.iter() {
                orphans.extend(lock(local).drain(..));
            }
            if orphans.is_empty() {
                break;
            }
            drop(orphans);
        }
    }
}

/// Keeps a task's waker in the pool's `active` list while its future exists.
struct Registered {
    shared: Arc<Shared>,
    key: usize,
}

impl Drop for Registered {
    fn drop(&mut self) {
        let mut active = lock(&self.shared.active);
        // Shutdown empties the list before it drops the tasks.
        if active.contains(self.key) {
            active.remove(self.key);
        }
    }
}

impl Executor for ThreadPool {
    fn spawn(&self, future: BoxFuture<()>) {
        self.spawn_future(future);
    }
}

impl Shared {
    /// Where a woken task goes: on one of this pool's workers, to the back of that worker's
    /// local queue; elsewhere into the global queue, waking an idle worker for it.
    fn schedule(self: &Arc<Self>, runnable: Runnable, yielded: bool) {
        if self.stopping.load(Ordering::Acquire) {
            // Dropping it here could run the task's destructors inside a waker; park it in
            // the global queue, which shutdown empties.
            lock(&self.global).push_back(runnable);
            return;
        }
        if let Some(worker) = current_worker(self) {
            let backlog = {
                let mut local = lock(&self.locals[worker.index]);
                local.push_back(runnable);
                local.len()
            };
            // More work queued than this worker gets through in the time another would take to
            // wake up and start: wake an idle one to steal some. (Never for a single task.)
            let queued = (backlog as u64).saturating_mul(worker.avg_poll.get());
            if backlog >= 2 && queued >= STEAL_WORK_NANOS && !yielded {
                self.notify_one();
            }
            // The worker may be in its reactor wait (this wake-up came from an I/O event it
            // is processing): make its loop look again. Same thread, so no system call.
            if worker.asleep.get() {
                self.wake_worker(worker.index);
            }
            return;
        }
        lock(&self.global).push_back(runnable);
        // A worker that is running looks at the global queue between its own tasks (and the
        // monitor wakes another if it stays saturated): wake one only when all are asleep.
        // Spreading a host's calls over every worker made them fight over each connection's
        // lock (C client through the ABI, 64 calls in flight: 0.82x the Rust client's calls/s
        // with both workers picking up submissions, 0.9-1.2x with one).
        if self.idle.load(Ordering::SeqCst) == self.locals.len() {
            self.notify_one();
        }
    }

    /// Wakes one idle worker, if there is one.
    fn notify_one(&self) {
        if self.idle.load(Ordering::SeqCst) == 0 {
            return;
        }
        let waker = {
            let mut sleepers = lock(&self.sleepers);
            let waker = sleepers.pop().map(|(_, w)| w);
            self.idle.store(sleepers.len(), Ordering::SeqCst);
            waker
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Wakes worker `index` if it is idle.
    fn wake_worker(&self, index: usize) {
        let waker = {
            let mut sleepers = lock(&self.sleepers);
            let at = sleepers.iter().position(|(i, _)| *i == index);
            let waker = at.map(|at| sleepers.swap_remove(at).1);
            self.idle.store(sleepers.len(), Ordering::SeqCst);
            waker
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    fn nanos_since_epoch(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX - 1)
    }

    /// Takes a task from the global queue, moving a share of the rest into `into`; wakes another
    /// worker for what is left only if it is more work (at `avg_poll` nanoseconds a task) than a
    /// handoff is worth.
    fn pop_global(&self, into: &Mutex<VecDeque<Runnable>>, avg_poll: u64) -> Option<Runnable> {
        let mut global = lock(&self.global);
        let first = global.pop_front()?;
        let share = (global.len() / self.locals.len()).min(32);
        if share > 0 {
            let mut local = lock(into);
            local.extend(global.drain(..share));
        }
        let left = (global.len() as u64).saturating_mul(avg_poll);
        drop(global);
        if left >= STEAL_WORK_NANOS {
            self.notify_one();
        }
        Some(first)
    }

    /// Steals half of another worker's local queue into worker `me`'s and returns one task.
    fn steal(&self, me: usize) -> Option<Runnable> {
        let n = self.locals.len();
        let start = fastrand::usize(..n);
        for k in 0..n {
            let victim = (start + k) % n;
            if victim == me {
                continue;
            }
            let mut theirs = lock(&self.locals[victim]);
            let take = theirs.len().div_ceil(2);
            if take == 0 {
                continue;
            }
            let mut stolen: VecDeque<Runnable> = theirs.drain(..take).collect();
            drop(theirs);
            let first = stolen.pop_front();
            if !stolen.is_empty() {
                lock(&self.locals[me]).extend(stolen);
            }
            return first;
        }
        None
    }
}

impl WorkerContext {
    /// The next task to run, by priority: the local queue, the global queue, other workers'
    /// queues (the global queue first every [`GLOBAL_EVERY`] tasks). A spinning worker does
    /// not steal: it found the other queues short when it ran out of work, and only a backlog
    /// worth a handoff (which wakes a worker) should move.
    fn find_task(&self, tick: u32) -> Option<Runnable> {
        let shared = &self.shared;
        let local = &shared.locals[self.index];
        if tick % GLOBAL_EVERY == 0 {
            if let Some(task) = shared.pop_global(local, self.avg_poll.get()) {
                return Some(task);
            }
        }
        if let Some(task) = lock(local).pop_front() {
            return Some(task);
        }
        let global = shared.pop_global(local, self.avg_poll.get());
        if global.is_some() || self.spin_since.get() != 0 {
            return global;
        }
        shared.steal(self.index)
    }

    /// Whether this worker, out of work at `now`, should look again instead of sleeping: it
    /// is spinning and the spin time is not up, or it may begin a spin (spinning is on, no
    /// other worker spins, and it is not backing off).
    fn keep_spinning(&self, now: u64) -> bool {
        let shared = &self.shared;
        let since = self.spin_since.get();
        if since != 0 {
            if now.saturating_sub(since - 1) < shared.spin_nanos {
                return true;
            }
            // Nothing came: back off for longer after each such spin in a row.
            self.end_spin();
            let misses = (self.spin_misses.get() + 1).min(SPIN_BACKOFF_MAX);
            self.spin_misses.set(misses);
            self.spin_skip.set((1 << misses) - 1);
            return false;
        }
        if shared.spin_nanos == 0 {
            return false;
        }
        let skip = self.spin_skip.get();
        if skip > 0 {
            self.spin_skip.set(skip - 1);
            return false;
        }
        if shared.spinning.swap(true, Ordering::AcqRel) {
            return false;
        }
        #[cfg(test)]
        shared.spins.fetch_add(1, Ordering::Relaxed);
        self.spin_since.set(now + 1);
        true
    }

    /// This worker found a task: a spin it was in paid off.
    fn found_work(&self) {
        if self.spin_since.get() != 0 {
            self.end_spin();
            self.spin_misses.set(0);
        }
    }

    fn end_spin(&self) {
        self.spin_since.set(0);
        self.shared.spinning.store(false, Ordering::Release);
    }

    /// Puts this worker's waker among the sleepers.
    fn sleep(&self, waker: &Waker) {
        let mut sleepers = lock(&self.shared.sleepers);
        match sleepers.iter_mut().find(|(i, _)| *i == self.index) {
            Some((_, w)) => w.clone_from(waker),
            None => sleepers.push((self.index, waker.clone())),
        }
        self.shared.idle.store(sleepers.len(), Ordering::SeqCst);
        self.asleep.set(true);
        #[cfg(test)]
        self.shared.sleeps.fetch_add(1, Ordering::Relaxed);
    }

    /// Takes this worker off the sleepers (if a notifier has not already).
    fn wake(&self) {
        if !self.asleep.replace(false) {
            return;
        }
        let mut sleepers = lock(&self.shared.sleepers);
        sleepers.retain(|(i, _)| *i != self.index);
        self.shared.idle.store(sleepers.len(), Ordering::SeqCst);
    }
}

/// A worker's loop as a future, so that `async_io::block_on` drives the reactor whenever it
/// returns `Pending`.
struct WorkerLoop {
    worker: Rc<WorkerContext>,
    tick: u32,
}

impl Future for WorkerLoop {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        let worker = this.worker.clone();
        let awake = &worker.shared.awake_since[worker.index];
        // One clock read per task: each task's time runs from the end of the one before (the
        // search for it included), so the average costs a single read per poll.
        let mut last = worker.shared.nanos_since_epoch();
        if worker.asleep.get() || awake.load(Ordering::Relaxed) == 0 {
            awake.store(last + 1, Ordering::Relaxed);
        }
        worker.wake();
        for _ in 0..BATCH {
            if worker.shared.stopping.load(Ordering::Acquire) {
                return Poll::Ready(());
            }
            this.tick = this.tick.wrapping_add(1);
            let task = match worker.find_task(this.tick) {
                Some(task) => {
                    worker.found_work();
                    task
                }
                // Spinning: `block_on` sees the wake-up, polls the reactor without blocking
                // (if no other thread holds it) and polls this loop again. Each round yields
                // the core to any thread waiting for it: on 2 cores a spinning client worker
                // otherwise held off the C host thread it had just woken (C client, 1 call in
                // flight against a plexus server: 15.7k-16.3k calls/s without the yield,
                // 30.4k-33.6k with it; the Rust client's calls and ping-pong did not change).
                None if worker.keep_spinning(last) => {
                    awake.store(0, Ordering::Relaxed);
                    std::thread::yield_now();
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                None => {
                    // Idle: register, then look once more, so that a task queued between the
                    // search and the registration is not left waiting for another wake-up.
                    worker.sleep(cx.waker());
                    match worker.find_task(this.tick) {
                        Some(task) => {
                            worker.wake();
                            task
                        }
                        // Shutdown stores `stopping` before it wakes the sleepers under their
                        // lock: registered after that, this worker must see the flag here.
                        None if worker.shared.stopping.load(Ordering::SeqCst) => {
                            return Poll::Ready(());
                        }
                        None => {
                            awake.store(0, Ordering::Relaxed);
                            return Poll::Pending;
                        }
                    }
                }
            };
            task.run();
            let now = worker.shared.nanos_since_epoch();
            let took = now.saturating_sub(last);
            last = now;
            let avg = worker.avg_poll.get();
            worker.avg_poll.set(avg - avg / 8 + took / 8);
        }
        // A full batch: yield to the reactor, then carry on.
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

/// The monitor: wakes an idle worker when a worker has run for longer than [`STALL`] without
/// running out of work while tasks wait in its queue or the global one (it is saturated, or a
/// handler is doing blocking work), so those tasks are taken by another instead of waiting.
/// Checks every [`STALL`] while any worker is running, every [`IDLE_CHECK`] otherwise.
fn run_monitor(shared: &Shared) {
    let mut pause = IDLE_CHECK;
    while !shared.stopping.load(Ordering::Acquire) {
        std::thread::park_timeout(pause);
        let now = shared.nanos_since_epoch();
        let stall = u64::try_from(STALL.as_nanos()).unwrap_or(u64::MAX);
        let mut any_busy = false;
        for (index, awake) in shared.awake_since.iter().enumerate() {
            let since = awake.load(Ordering::Relaxed);
            if since == 0 {
                continue;
            }
            any_busy = true;
            if now.saturating_sub(since - 1) > stall
                && (!lock(&shared.locals[index]).is_empty() || !lock(&shared.global).is_empty())
            {
                shared.notify_one();
            }
        }
        pause = if any_busy { STALL } else { IDLE_CHECK };
    }
}

fn run_worker(shared: Arc<Shared>, index: usize) {
    let worker = Rc::new(WorkerContext {
        shared: shared.clone(),
        index,
        asleep: Cell::new(false),
        avg_poll: Cell::new(0),
        spin_since: Cell::new(0),
        spin_misses: Cell::new(0),
        spin_skip: Cell::new(0),
    });
    WORKER.with(|w| *w.borrow_mut() = Some(worker.clone()));
    while !shared.stopping.load(Ordering::Acquire) {
        // Tasks catch their own panics; this guards the loop itself.
        let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            async_io::block_on(WorkerLoop {
                worker: worker.clone(),
                tick: 0,
            })
        }));
        if run.is_ok() {
            break;
        }
        // A spin cut short by the panic must not keep the other workers from spinning.
        worker.found_work();
    }
    WORKER.with(|w| w.borrow_mut().take());
}

/// Runs `future` to completion on this thread, parking it between polls.
///
/// Unlike `async_io::block_on` (`smol::block_on`), it never drives the `async-io` reactor
/// itself: the pool's idle workers do. So the I/O event that completes a call wakes the
/// connection's task on the worker that saw it, which runs it there and wakes this thread
/// once, instead of this thread taking the event and handing the task to a worker (one thread
/// hop more per call). The way to make blocking calls on a plexus channel.
pub fn block_on<F: Future>(future: F) -> F::Output {
    /// Wakes the parked thread.
    struct Unpark(std::thread::Thread);
    impl std::task::Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
        fn wake_by_ref(self: &Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut future = std::pin::pin!(future);
    loop {
        if let Poll::Ready(out) = future.as_mut().poll(&mut cx) {
            return out;
        }
        // A wake-up since the poll left the token set: this returns at once.
        std::thread::park();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::sync::mpsc;

    const WAIT: Duration = Duration::from_secs(30);

    #[test]
    fn runs_every_task_across_workers() {
        let pool = ThreadPool::new(3, "pool-test").unwrap();
        let (tx, rx) = mpsc::channel();
        for i in 0..1_000 {
            let tx = tx.clone();
            let inner = pool.clone();
            pool.spawn_future(async move {
                // Half of them spawn a child from inside the pool.
                if i % 2 == 0 {
                    inner.spawn_future(async move {
                        let _ = tx.send(());
                    });
                } else {
                    let _ = tx.send(());
                }
            });
        }
        for _ in 0..1_000 {
            rx.recv_timeout(WAIT).expect("every task runs");
        }
        pool.shutdown();
    }

    #[test]
    fn a_task_woken_from_outside_runs() {
        let pool = ThreadPool::new(2, "pool-test").unwrap();
        let (tx, rx) = mpsc::channel();
        let (wake_tx, wake_rx) = async_channel::bounded::<u32>(1);
        pool.spawn_future(async move {
            let n = wake_rx.recv().await.unwrap();
            let _ = tx.send(n);
        });
        std::thread::sleep(Duration::from_millis(20));
        wake_tx.send_blocking(7).unwrap();
        assert_eq!(rx.recv_timeout(WAIT), Ok(7));
        pool.shutdown();
    }

    /// The point of the pool: a task that a worker's task wakes (or spawns) runs on that
    /// worker. A chain of 200 spawns, each from the task before, stays on one thread (when
    /// every spawn went through a shared queue, as in smol's executor, a good part moved).
    /// Not quite every hop is required: an idle worker woken for something else may steal.
    #[test]
    fn a_task_woken_on_a_worker_runs_on_that_worker() {
        fn hop(
            pool: ThreadPool,
            left: u32,
            from: std::thread::ThreadId,
            moved: Arc<AtomicUsize>,
            done: mpsc::Sender<()>,
        ) {
            let here = std::thread::current().id();
            if here != from {
                moved.fetch_add(1, Ordering::SeqCst);
            }
            if left == 0 {
                let _ = done.send(());
                return;
            }
            let next = pool.clone();
            pool.spawn_future(async move { hop(next, left - 1, here, moved, done) });
        }
        let pool = ThreadPool::new(2, "pool-test").unwrap();
        // Both workers asleep first, so the one woken for the chain's start runs it alone.
        std::thread::sleep(Duration::from_millis(200));
        let moved = Arc::new(AtomicUsize::new(0));
        let (tx, rx) = mpsc::channel();
        let (inner, counter) = (pool.clone(), moved.clone());
        pool.spawn_future(async move {
            let here = std::thread::current().id();
            hop(inner, 200, here, counter, tx);
        });
        rx.recv_timeout(WAIT).expect("the chain finishes");
        pool.shutdown();
        let moved = moved.load(Ordering::SeqCst);
        assert!(moved <= 20, "{moved} of 200 hops moved to another thread");
    }

    /// Keeps this thread busy (not asleep) for `time`, as a task doing real work would.
    fn busy(time: Duration) {
        let start = Instant::now();
        while start.elapsed() < time {
            std::hint::spin_loop();
        }
    }

    /// Runs `tasks` on `pool`, spawned together from inside one worker after `warm_up` tasks
    /// of the same length ran there one after another; returns on how many distinct threads
    /// the batch ran and how many of its tasks ran on the spawning thread.
    fn fan_out(pool: &ThreadPool, warm_up: usize, tasks: usize, each: Duration) -> (usize, usize) {
        let (tx, rx) = mpsc::channel();
        let inner = pool.clone();
        pool.spawn_future(async move {
            for _ in 0..warm_up {
                // Each a task of its own, so the worker times it.
                let (done_tx, done_rx) = async_channel::bounded::<()>(1);
                inner.spawn_future(async move {
                    busy(each);
                    let _ = done_tx.send(()).await;
                });
                let _ = done_rx.recv().await;
            }
            for _ in 0..tasks {
                let tx = tx.clone();
                inner.spawn_future(async move {
                    busy(each);
                    let _ = tx.send(std::thread::current().id());
                });
            }
            drop(tx);
        });
        let ran: Vec<_> = (0..tasks).map(|_| rx.recv_timeout(WAIT).unwrap()).collect();
        let mut threads = ran.clone();
        threads.sort_by_key(|t| format!("{t:?}"));
        threads.dedup();
        let most = threads
            .iter()
            .map(|t| ran.iter().filter(|r| *r == t).count())
            .max()
            .unwrap_or(0);
        (threads.len(), most)
    }

    /// Queued work worth a handoff is stolen at once: four 1 ms tasks spawned together (the
    /// worker having timed two before) run on both workers, within less time than the monitor
    /// needs to notice a saturated worker.
    #[test]
    fn slow_tasks_queued_together_spread_over_the_workers() {
        let pool = ThreadPool::new(2, "pool-test").unwrap();
        std::thread::sleep(Duration::from_millis(200));
        let (threads, _) = fan_out(&pool, 2, 4, Duration::from_millis(1));
        pool.shutdown();
        assert_eq!(threads, 2, "the batch of slow tasks stayed on one worker");
    }

    /// Short tasks stay where they were woken, even many at once: 64 tasks of 5 µs are less
    /// work than a handoff costs. (With the earlier rule, a backlog of 4 tasks, a woken worker
    /// stole 4 to 23 of them.)
    #[test]
    fn short_tasks_queued_together_stay_on_their_worker() {
        let pool = ThreadPool::new(2, "pool-test").unwrap();
        std::thread::sleep(Duration::from_millis(200));
        let (_, most) = fan_out(&pool, 8, 64, Duration::from_micros(5));
        pool.shutdown();
        assert!(
            most >= 62,
            "only {most} of 64 short tasks ran on the worker that queued them"
        );
    }

    /// Waits until `done` holds, failing after [`WAIT`].
    fn wait_until(what: &str, done: impl Fn() -> bool) {
        let start = Instant::now();
        while !done() {
            assert!(start.elapsed() < WAIT, "timed out waiting until {what}");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// A worker out of work spins instead of sleeping: a socket's data and a task from outside
    /// that arrive during its spin are taken without it ever going to sleep (with no spin it
    /// sleeps and is woken for each).
    #[test]
    fn a_spinning_worker_takes_io_and_outside_work_without_sleeping() {
        let pool = ThreadPool::with_spin(1, "pool-test", Duration::from_secs(10)).unwrap();
        let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        let ours = async_io::Async::new(ours).unwrap();
        let (tx, rx) = mpsc::channel();
        let read_tx = tx.clone();
        pool.spawn_future(async move {
            use smol::io::AsyncReadExt;
            let mut ours = ours;
            let mut byte = [0u8];
            while ours.read_exact(&mut byte).await.is_ok() {
                let _ = read_tx.send(byte[0]);
            }
        });
        let mut theirs = theirs;
        std::io::Write::write_all(&mut theirs, &[1]).unwrap();
        assert_eq!(rx.recv_timeout(WAIT), Ok(1));
        // The worker has run out of work and spins (a sleeping worker would be counted).
        std::thread::sleep(Duration::from_millis(50));
        let sleeps = pool.shared.sleeps.load(Ordering::Relaxed);
        std::io::Write::write_all(&mut theirs, &[2]).unwrap();
        assert_eq!(rx.recv_timeout(WAIT), Ok(2));
        std::thread::sleep(Duration::from_millis(20));
        pool.spawn_future(async move {
            let _ = tx.send(3);
        });
        assert_eq!(rx.recv_timeout(WAIT), Ok(3));
        let slept = pool.shared.sleeps.load(Ordering::Relaxed) - sleeps;
        pool.shutdown();
        assert_eq!(
            slept, 0,
            "the worker slept {slept} times while it should have spun"
        );
    }

    /// A spin ends: after its spin time a worker with nothing to do sleeps.
    #[test]
    fn a_spin_ends_in_sleep() {
        let pool = ThreadPool::with_spin(1, "pool-test", Duration::from_millis(1)).unwrap();
        let (tx, rx) = mpsc::channel();
        pool.spawn_future(async move {
            let _ = tx.send(());
        });
        rx.recv_timeout(WAIT).unwrap();
        let shared = pool.shared.clone();
        wait_until("the worker sleeps", || {
            shared.idle.load(Ordering::SeqCst) == 1
        });
        pool.shutdown();
    }

    /// Only one worker of a pool spins at a time: two workers that run out of work together
    /// leave one asleep.
    #[test]
    fn one_worker_spins_at_a_time() {
        let pool = ThreadPool::with_spin(2, "pool-test", Duration::from_secs(10)).unwrap();
        std::thread::sleep(Duration::from_millis(200));
        // Slow tasks queued together run on both workers.
        let (threads, _) = fan_out(&pool, 2, 4, Duration::from_millis(1));
        assert_eq!(threads, 2, "the batch ran on one worker");
        std::thread::sleep(Duration::from_millis(50));
        let idle = pool.shared.idle.load(Ordering::SeqCst);
        let spins = pool.shared.spins.load(Ordering::Relaxed);
        pool.shutdown();
        assert_eq!(idle, 1, "{idle} of 2 workers asleep");
        assert!(spins >= 1, "no worker spun");
    }

    /// Spins that end empty-handed back off: twelve tasks 5 ms apart (each idle gap longer
    /// than the 1 ms spin) start about 3 spins (after the 1st, 3rd and 7th), not twelve.
    #[test]
    fn spins_that_find_nothing_back_off() {
        let pool = ThreadPool::with_spin(1, "pool-test", Duration::from_millis(1)).unwrap();
        let (tx, rx) = mpsc::channel();
        let spins = || pool.shared.spins.load(Ordering::Relaxed);
        for _ in 0..12 {
            let tx = tx.clone();
            pool.spawn_future(async move {
                let _ = tx.send(());
            });
            rx.recv_timeout(WAIT).unwrap();
            std::thread::sleep(Duration::from_millis(5));
        }
        let missed = spins();
        assert!(
            (1..=6).contains(&missed),
            "{missed} spins for 12 tasks with long gaps"
        );
        pool.shutdown();
    }

    /// Work from outside the pool goes to a worker that is running rather than waking a
    /// sleeping one: 15 tasks spawned from a plain thread, one every 200 µs, while a chain of
    /// short tasks keeps one worker running for 4 ms (less than the monitor's limit), run on
    /// the worker running the chain. When each woke a sleeper, as before, most ran on the
    /// other worker.
    #[test]
    fn work_from_outside_goes_to_a_running_worker() {
        type Here = Arc<Mutex<Option<std::thread::ThreadId>>>;
        fn busy_chain(pool: ThreadPool, until: Instant, chain_on: Here) {
            *lock(&chain_on) = Some(std::thread::current().id());
            if Instant::now() < until {
                let next = pool.clone();
                busy(Duration::from_micros(5));
                pool.spawn_future(async move { busy_chain(next, until, chain_on) });
            }
        }
        let pool = ThreadPool::new(2, "pool-test").unwrap();
        std::thread::sleep(Duration::from_millis(200));
        let chain_on: Here = Arc::new(Mutex::new(None));
        let (inner, on) = (pool.clone(), chain_on.clone());
        let until = Instant::now() + Duration::from_millis(4);
        pool.spawn_future(async move { busy_chain(inner, until, on) });
        while lock(&chain_on).is_none() {
            std::hint::spin_loop();
        }
        let (tx, rx) = mpsc::channel();
        for _ in 0..15 {
            let (tx, on) = (tx.clone(), chain_on.clone());
            pool.spawn_future(async move {
                let with_chain = *lock(&on) == Some(std::thread::current().id());
                let _ = tx.send(with_chain);
            });
            std::thread::sleep(Duration::from_micros(200));
        }
        let with_chain = (0..15).filter(|_| rx.recv_timeout(WAIT).unwrap()).count();
        pool.shutdown();
        assert!(
            with_chain >= 13,
            "only {with_chain} of 15 tasks from outside ran on the worker running the chain"
        );
    }

    /// A task that blocks its worker does not hold up the tasks queued behind it while
    /// another worker is idle: the monitor has that worker steal them.
    #[test]
    fn a_blocked_worker_queue_is_stolen() {
        let pool = ThreadPool::new(2, "pool-test").unwrap();
        // Both workers asleep first, so neither finds the task by chance on its way to sleep.
        std::thread::sleep(Duration::from_millis(200));
        let (tx, rx) = mpsc::channel();
        let inner = pool.clone();
        pool.spawn_future(async move {
            // Queued on this worker, which then blocks for far longer than the stall limit.
            inner.spawn_future(async move {
                let _ = tx.send(());
            });
            std::thread::sleep(Duration::from_secs(3));
        });
        rx.recv_timeout(Duration::from_secs(2))
            .expect("the queued task ran while its worker was blocked");
        pool.shutdown();
    }

    #[test]
    fn a_panicking_task_leaves_its_worker_running() {
        let pool = ThreadPool::new(1, "pool-test").unwrap();
        pool.spawn_future(async { panic!("task panic (expected by the test)") });
        let (tx, rx) = mpsc::channel();
        pool.spawn_future(async move {
            let _ = tx.send(());
        });
        rx.recv_timeout(WAIT)
            .expect("the worker survived the panic");
        pool.shutdown();
    }

    #[test]
    fn shutdown_drops_waiting_tasks_and_refuses_new_ones() {
        struct Dropped(Arc<AtomicUsize>);
        impl Drop for Dropped {
            fn drop(&mut self) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let pool = ThreadPool::new(2, "pool-test").unwrap();
        let dropped = Arc::new(AtomicUsize::new(0));
        let (started_tx, started_rx) = mpsc::channel();
        for _ in 0..10 {
            let guard = Dropped(dropped.clone());
            let started = started_tx.clone();
            pool.spawn_future(async move {
                let _guard = guard;
                let _ = started.send(());
                std::future::pending::<()>().await;
            });
        }
        for _ in 0..10 {
            started_rx.recv_timeout(WAIT).unwrap();
        }
        pool.shutdown();
        assert_eq!(dropped.load(Ordering::SeqCst), 10);
        let late = Dropped(dropped.clone());
        pool.spawn_future(async move {
            let _late = late;
        });
        assert_eq!(dropped.load(Ordering::SeqCst), 11, "dropped unrun");
        assert!(lock(&pool.shared.active).is_empty());
    }
}
