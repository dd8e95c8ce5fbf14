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
//! or a handler is doing blocking work) with tasks queued, so those are not held up. While
//! every worker waits for work the monitor parks without a timeout (the first worker to start
//! running unparks it), so an idle process gets no wake-ups from the pool.
//!
//! Each worker thread blocks in `async_io::block_on`, so an idle worker drives the `async-io`
//! reactor: a socket that becomes readable wakes its task on the worker that polled the
//! reactor, which runs it next.
//!
//! A worker that runs out of work spins before it sleeps: for up to the pool's spin time
//! ([`RuntimeSettings::spin`]) it polls the reactor without blocking and looks at the queues,
//! so a reply or request that arrives meanwhile is taken at once instead of after a thread
//! wake-up (tens of µs on a virtual machine). Socket reads that would block just before a spin
//! are watched by the worker itself ([`ReadWatch`]): most rounds are then one `poll` on those
//! sockets instead of the reactor's five system calls, and a message is read as soon as it is
//! seen, with no reactor event to take and re-arm first. A spin only pays while the core it burns is
//! free: a worker does not begin one, and ends one, when the machine has more runnable threads
//! than the process has cores (`/proc/loadavg`, sampled at most every millisecond, and afresh
//! when the worker has just woken a thread blocked in [`block_on`], which needs a core now), or
//! when a round of the spin shows the worker was descheduled. It never yields its core with
//! `sched_yield`, which hands it to any other process for a time slice. One worker of a pool
//! spins at a time, and a worker whose spins keep ending empty-handed backs off (it skips the
//! next 1, 3, 7, ... up to 1023 chances), so a lightly loaded process does not burn a core.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::fs::File;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::task::{Context, Poll, Waker};
use std::thread::{JoinHandle, Thread};
use std::time::{Duration, Instant};

use async_task::{Runnable, ScheduleInfo, WithInfo};
use slab::Slab;

use super::executor::{BoxFuture, Executor, RuntimeSettings};
#[cfg(any(target_os = "linux", target_os = "android"))]
use super::read_watch::{ReadWatch, Watches};

/// Tasks a worker runs in one poll of its loop before it lets `block_on` look at the reactor
/// (so a busy worker still turns I/O readiness and timers into wake-ups).
const BATCH: usize = 64;
/// Work waiting in a worker's local queue (its length times the worker's average poll time)
/// from which an idle worker is woken to steal, in nanoseconds: 500 µs.
///
/// A handoff pays only when the queue would take longer than the other worker needs to wake
/// (tens of µs on these machines) and start. Short tasks of one connection are better run
/// where they are: a thief takes h2's connection lock too, and on a machine shared with the
/// peer it takes a core the peer was using. In the benchmark's ping-pong case (64 streams, 2
/// cores) each step from a fixed backlog of 4 tasks up to 500 µs of work raised throughput and
/// longer thresholds added nothing; unary calls did not change, and three clients with a
/// connection each still spread over both workers. Slow handlers (a poll of 250 µs or more)
/// are stolen from a backlog of two.
const STEAL_WORK_NANOS: u64 = 500_000;
/// A worker that has run this long without running out of work, with tasks queued, gets an
/// idle worker woken to steal them: it is saturated, or stuck in one long poll (a handler doing
/// blocking work).
const STALL: Duration = Duration::from_millis(5);
/// A worker whose spin ended with no work skips the next 2^n - 1 chances to spin after its n-th
/// such spin in a row, up to this n (1023 chances).
const SPIN_BACKOFF_MAX: u32 = 10;
/// A gap this long between two rounds of a spin (a round is one non-blocking reactor poll and
/// a look at the queues: a few µs) means the worker was descheduled: another thread wanted its
/// core, so the spin ends and counts as a miss.
const SPIN_PREEMPTED_NANOS: u64 = 50_000;
/// How old a sample of the machine's runnable threads may be before a worker deciding whether
/// to spin reads it again: reading `/proc/loadavg` costs a system call of a few µs, so it is
/// not read on every round.
const LOAD_SAMPLE_NANOS: u64 = 1_000_000;
/// Rounds of a spin on watched sockets ([`ReadWatch`]) between two polls of the reactor, which
/// a spin still needs for everything not watched (timers, listeners, other workers' sockets).
#[cfg(any(target_os = "linux", target_os = "android"))]
const WATCH_ROUNDS_PER_REACTOR_POLL: u32 = 16;
/// Every this many tasks a worker looks at the global queue first, so tasks woken from outside
/// the pool are not starved by busy local queues.
const GLOBAL_EVERY: u32 = 61;

/// plexus's work-stealing thread pool, the [`DefaultExecutor`](super::DefaultExecutor)'s (and
/// the C library's): runs spawned futures on its worker threads until they finish.
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

/// The pool's time in nanoseconds since it started: the monotonic clock, or in unit tests one
/// the test moves by hand, so scheduling rules that depend on time are tested without timing.
struct Clock {
    epoch: Instant,
    #[cfg(test)]
    manual: Option<Arc<AtomicU64>>,
}

impl Clock {
    fn now(&self) -> u64 {
        #[cfg(test)]
        if let Some(manual) = &self.manual {
            return manual.load(Ordering::SeqCst);
        }
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX - 1)
    }
}

/// Whether the machine has more runnable threads than the process has cores (another thread
/// is waiting for a core, so a spinning worker would take it from someone).
struct Load {
    /// `/proc/loadavg`, whose fourth field counts the runnable threads; `None` where there is
    /// none (then only descheduled spin rounds end spins).
    file: Option<File>,
    cores: usize,
    /// When `busy` was sampled (clock nanoseconds plus one; 0: never).
    sampled_at: AtomicU64,
    busy: AtomicBool,
    /// Unit tests set the answer.
    #[cfg(test)]
    forced: Option<Arc<AtomicBool>>,
}

impl Load {
    fn new() -> Load {
        Load {
            file: File::open("/proc/loadavg").ok(),
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            sampled_at: AtomicU64::new(0),
            busy: AtomicBool::new(false),
            #[cfg(test)]
            forced: None,
        }
    }

    /// Whether the machine is oversubscribed, from a sample no older than `max_age` at `now`.
    fn busy(&self, now: u64, max_age: u64) -> bool {
        #[cfg(test)]
        if let Some(forced) = &self.forced {
            return forced.load(Ordering::SeqCst);
        }
        let Some(file) = &self.file else {
            return false;
        };
        let at = self.sampled_at.load(Ordering::Relaxed);
        if at != 0 && now.saturating_sub(at - 1) <= max_age {
            return self.busy.load(Ordering::Relaxed);
        }
        let busy = runnable_threads(file).is_some_and(|n| n > self.cores);
        self.busy.store(busy, Ordering::Relaxed);
        self.sampled_at.store(now + 1, Ordering::Relaxed);
        busy
    }

    /// What the last sample said (no system call).
    #[cfg(any(target_os = "linux", target_os = "android"))]
    fn was_busy(&self) -> bool {
        #[cfg(test)]
        if let Some(forced) = &self.forced {
            return forced.load(Ordering::SeqCst);
        }
        self.busy.load(Ordering::Relaxed)
    }
}

/// The machine's runnable threads (the caller included), from `/proc/loadavg` ("0.50 0.40
/// 0.30 3/210 4242": 3).
#[cfg(unix)]
fn runnable_threads(file: &File) -> Option<usize> {
    use std::os::unix::fs::FileExt;
    let mut buf = [0u8; 128];
    let n = file.read_at(&mut buf, 0).ok()?;
    let text = std::str::from_utf8(&buf[..n]).ok()?;
    let field = text.split_ascii_whitespace().nth(3)?;
    field.split('/').next()?.parse().ok()
}

/// No `/proc/loadavg` to read here.
#[cfg(not(unix))]
fn runnable_threads(_file: &File) -> Option<usize> {
    None
}

struct Shared {
    /// Tasks woken or spawned outside the pool's threads.
    global: Mutex<VecDeque<Runnable>>,
    /// Set (under `global`'s lock) once shutdown has dropped every task: a task scheduled
    /// after that (spawned during shutdown, or the task that called shutdown) is dropped at
    /// once, since no one would empty a queue again and its future holds this pool.
    reaped: AtomicBool,
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
    /// Per worker: since when it has been running tasks without a pause for lack of work
    /// (clock nanoseconds plus one), or 0 while it spins or waits for work. The monitor reads
    /// it to find saturated workers (or one stuck in a long poll).
    awake_since: Box<[AtomicU64]>,
    /// The monitor thread, to unpark.
    monitor: OnceLock<Thread>,
    /// Whether the monitor is parked (or about to park) with no timeout, every worker being
    /// idle: the next worker to start running unparks it.
    monitor_parked: AtomicBool,
    /// How long a worker out of work spins before it sleeps, in nanoseconds (0: never).
    spin_nanos: u64,
    /// Whether a worker is spinning: one at a time, so the others' cores stay free.
    spinning: AtomicBool,
    /// Per worker: the socket reads it watches (see [`ReadWatch`]).
    #[cfg(any(target_os = "linux", target_os = "android"))]
    watches: Box<[Watches]>,
    clock: Clock,
    load: Load,
    /// What unit tests watch: counters and hooks.
    #[cfg(test)]
    probe: tests::Probe,
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
    /// When this worker began its current spin (clock nanoseconds plus one), or 0.
    spin_since: Cell<u64>,
    /// When the current spin's last round ran (clock nanoseconds).
    spin_round: Cell<u64>,
    /// Spins in a row that ended with no work.
    spin_misses: Cell<u32>,
    /// Chances to spin this worker still skips after those misses.
    spin_skip: Cell<u32>,
    /// Whether a task this worker ran woke a thread blocked in [`block_on`]: that thread
    /// needs a core now, so whether to spin is decided on a fresh sample of the load.
    woke_blocked: Cell<bool>,
    /// Whether reads that would block may be watched by this worker: not once it has decided
    /// to sleep and fired its watches, until it wakes.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    takes_watches: Cell<bool>,
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

impl Shared {
    fn new(threads: usize, spin: Duration, clock: Clock, load: Load) -> Shared {
        Shared {
            global: Mutex::new(VecDeque::new()),
            reaped: AtomicBool::new(false),
            locals: (0..threads).map(|_| Mutex::new(VecDeque::new())).collect(),
            sleepers: Mutex::new(Vec::with_capacity(threads)),
            idle: AtomicUsize::new(0),
            stopping: AtomicBool::new(false),
            threads: Mutex::new(Vec::with_capacity(threads)),
            active: Mutex::new(Slab::new()),
            awake_since: (0..threads).map(|_| AtomicU64::new(0)).collect(),
            monitor: OnceLock::new(),
            monitor_parked: AtomicBool::new(false),
            spin_nanos: u64::try_from(spin.as_nanos()).unwrap_or(u64::MAX),
            spinning: AtomicBool::new(false),
            #[cfg(any(target_os = "linux", target_os = "android"))]
            watches: (0..threads).map(|_| Watches::default()).collect(),
            clock,
            load,
            #[cfg(test)]
            probe: tests::Probe::default(),
        }
    }
}

impl ThreadPool {
    /// Starts a pool of `settings.threads` workers (at least one) named `<name>-0`,
    /// `<name>-1`, ... that spin for `settings.spin` before they sleep, and its monitor thread
    /// `<name>-monitor`. Fails only if not a single thread could be started.
    pub fn new(settings: &RuntimeSettings, name: &str) -> io::Result<ThreadPool> {
        let clock = Clock {
            epoch: Instant::now(),
            #[cfg(test)]
            manual: None,
        };
        ThreadPool::start(
            Shared::new(settings.threads.max(1), settings.spin, clock, Load::new()),
            name,
        )
    }

    fn start(shared: Shared, name: &str) -> io::Result<ThreadPool> {
        let shared = Arc::new(shared);
        let threads = shared.locals.len();
        let mut handles = Vec::with_capacity(threads + 1);
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
            let _ = shared.monitor.set(handle.thread().clone());
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
    /// (`None` on any other thread). For code that wakes another thread from a task (the C
    /// library's completion queue): with tasks still queued here, it can put the wake-up off
    /// until they have run, as one wake-up for several results.
    pub fn local_backlog(&self) -> Option<usize> {
        current_worker(&self.shared).map(|worker| lock(&self.shared.locals[worker.index]).len())
    }

    /// Runs `future` on the pool. After [`shutdown`](Self::shutdown) it is dropped unrun.
    pub fn spawn_future(&self, future: impl Future<Output = ()> + Send + 'static) {
        if self.shared.stopping.load(Ordering::Acquire) {
            return;
        }
        #[cfg(test)]
        self.shared.probe.before_spawn();
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
    /// waiting, is dropped unfinished, and so is any spawned or woken later (the calling
    /// task's own, if it is one of the pool's, once its poll returns). Spawning afterwards
    /// drops the future. Idempotent.
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
        // A watched read holds its task's waker; the tasks are dropped below.
        #[cfg(any(target_os = "linux", target_os = "android"))]
        for watches in shared.watches.iter() {
            watches.clear();
        }
        // Waking a waiting task queues it (the pool is stopping), and dropping a queued
        // Runnable drops its future, whose destructors may wake more: repeat until none is left.
        let waiting: Vec<Waker> = lock(&shared.active).drain().collect();
        for waker in waiting {
            waker.wake();
        }
        loop {
            let mut global = lock(&shared.global);
            let mut orphans: Vec<Runnable> = global.drain(..).collect();
            for local in shared.locals.iter() {
                orphans.extend(lock(local).drain(..));
            }
            if orphans.is_empty() {
                // Under the lock that `schedule` takes, so no task lands in a queue after this.
                shared.reaped.store(true, Ordering::SeqCst);
                break;
            }
            drop(global);
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
            let mut global = lock(&self.global);
            if !self.reaped.load(Ordering::SeqCst) {
                // Dropping it here could run the task's destructors inside a waker; park it
                // in the global queue, which shutdown empties.
                global.push_back(runnable);
                return;
            }
            // Shutdown has emptied the queues for the last time: only a task spawned during
            // it or the one that called it gets here, from `spawn_future` or the end of its
            // own poll, where running its destructors is safe.
            drop(global);
            drop(runnable);
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
        // lock: the C client through the ABI lost about a fifth of its calls with both workers
        // picking up submissions.
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
            #[cfg(test)]
            self.probe.notified.fetch_add(1, Ordering::SeqCst);
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
    fn new(shared: Arc<Shared>, index: usize) -> WorkerContext {
        WorkerContext {
            shared,
            index,
            asleep: Cell::new(false),
            avg_poll: Cell::new(0),
            spin_since: Cell::new(0),
            spin_round: Cell::new(0),
            spin_misses: Cell::new(0),
            spin_skip: Cell::new(0),
            woke_blocked: Cell::new(false),
            #[cfg(any(target_os = "linux", target_os = "android"))]
            takes_watches: Cell::new(true),
        }
    }

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
    /// is spinning, the spin time is not up, the machine has a core to spare and this round
    /// came right after the last; or it may begin a spin (spinning is on, the machine has a
    /// core to spare, no other worker spins, and it is not backing off).
    fn keep_spinning(&self, now: u64) -> bool {
        let shared = &self.shared;
        let since = self.spin_since.get();
        if since != 0 {
            #[cfg(test)]
            shared.probe.spin_rounds.fetch_add(1, Ordering::SeqCst);
            let descheduled = now.saturating_sub(self.spin_round.get()) >= SPIN_PREEMPTED_NANOS;
            self.spin_round.set(now);
            if !descheduled
                && now.saturating_sub(since - 1) < shared.spin_nanos
                && !shared.load.busy(now, LOAD_SAMPLE_NANOS)
            {
                return true;
            }
            // Nothing came, or the core is wanted: back off for longer after each such spin in
            // a row.
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
        // A thread this worker just woke from `block_on` is runnable now: if it waits for a
        // core, spinning would keep it waiting, so that sample must be fresh.
        let max_age = if self.woke_blocked.replace(false) {
            0
        } else {
            LOAD_SAMPLE_NANOS
        };
        if shared.load.busy(now, max_age) {
            return false;
        }
        if shared.spinning.swap(true, Ordering::AcqRel) {
            return false;
        }
        #[cfg(test)]
        shared.probe.spins.fetch_add(1, Ordering::SeqCst);
        self.spin_since.set(now + 1);
        self.spin_round.set(now);
        true
    }

    /// Whether this worker, once out of work, is likely to spin, by what it knows without a
    /// system call: spinning is on, it is not backing off, no other worker spins, and the last
    /// sample of the machine's load left a core to spare.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    fn may_spin(&self) -> bool {
        let shared = &self.shared;
        shared.spin_nanos != 0
            && self.spin_skip.get() == 0
            && !shared.spinning.load(Ordering::Relaxed)
            && !shared.load.was_busy()
    }

    /// This worker's watched reads.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    fn watches(&self) -> &Watches {
        &self.shared.watches[self.index]
    }

    /// This worker is going to sleep: it stops taking watches until it wakes, and fires those
    /// it has, so each read is tried again and waits on the reactor if it still would block.
    /// Whether any fired (their tasks are queued here then).
    #[cfg(any(target_os = "linux", target_os = "android"))]
    fn stop_watching(&self) -> bool {
        self.takes_watches.set(false);
        self.watches().fire_all()
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

    /// This worker runs a task at `now`: if it was idle, it is running from now on, and the
    /// monitor, if parked for want of running workers, must watch it.
    fn running(&self, now: u64) {
        let shared = &self.shared;
        let awake = &shared.awake_since[self.index];
        if awake.load(Ordering::Relaxed) != 0 {
            return;
        }
        // SeqCst on both sides: either the monitor sees this store before it parks, or this
        // thread sees its flag and unparks it.
        awake.store(now + 1, Ordering::SeqCst);
        if shared.monitor_parked.load(Ordering::SeqCst)
            && shared.monitor_parked.swap(false, Ordering::SeqCst)
        {
            if let Some(monitor) = shared.monitor.get() {
                monitor.unpark();
            }
        }
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
        self.shared.probe.sleeps.fetch_add(1, Ordering::SeqCst);
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
    /// Spin rounds on watched sockets since the reactor was last polled.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    watch_rounds: u32,
}

impl Future for WorkerLoop {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        let worker = this.worker.clone();
        let awake = &worker.shared.awake_since[worker.index];
        // One clock read per task: each task's time runs from the end of the one before (the
        // search for it included), so the average costs a single read per poll.
        let mut last = worker.shared.clock.now();
        worker.wake();
        #[cfg(any(target_os = "linux", target_os = "android"))]
        worker.takes_watches.set(true);
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
                // (if no other thread holds it) and polls this loop again. No `sched_yield`:
                // it would hand the core to any process for a time slice; a thread that
                // wants the core ends the spin through the load sample instead.
                None if worker.keep_spinning(last) => {
                    awake.store(0, Ordering::Relaxed);
                    // With reads watched, most rounds look only at those sockets: one `poll`
                    // instead of the reactor's five system calls.
                    #[cfg(any(target_os = "linux", target_os = "android"))]
                    if this.watch_rounds < WATCH_ROUNDS_PER_REACTOR_POLL
                        && !worker.watches().is_empty()
                    {
                        this.watch_rounds += 1;
                        worker.watches().check();
                        last = worker.shared.clock.now();
                        continue;
                    }
                    #[cfg(any(target_os = "linux", target_os = "android"))]
                    {
                        this.watch_rounds = 0;
                    }
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                // Going to sleep: watched reads go back to the reactor first.
                #[cfg(any(target_os = "linux", target_os = "android"))]
                None if worker.stop_watching() => continue,
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
            worker.running(last);
            task.run();
            let now = worker.shared.clock.now();
            let took = now.saturating_sub(last);
            last = now;
            let avg = worker.avg_poll.get();
            worker.avg_poll.set(avg - avg / 8 + took / 8);
        }
        // A full batch: yield to the reactor, then carry on; watched sockets are looked at as
        // often as the reactor is.
        #[cfg(any(target_os = "linux", target_os = "android"))]
        worker.watches().check();
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

/// Scans of the monitor in a row that find every worker idle before it parks without a
/// timeout: two (5 ms apart), so a busy process, whose workers are idle at many single scans,
/// does not pay an unpark each time, and a timer firing in an idle one costs the monitor two
/// wake-ups.
const IDLE_SCANS_BEFORE_PARK: u32 = 2;

/// The monitor: wakes an idle worker when a worker has run for longer than [`STALL`] without
/// running out of work while tasks wait in its queue or the global one (it is saturated, or a
/// handler is doing blocking work), so those tasks are taken by another instead of waiting.
/// Checks every [`STALL`]; once every worker has been idle for [`IDLE_SCANS_BEFORE_PARK`]
/// checks it parks until a worker starts running.
fn run_monitor(shared: &Shared) {
    let stall = u64::try_from(STALL.as_nanos()).unwrap_or(u64::MAX);
    let mut idle_scans = 0;
    while !shared.stopping.load(Ordering::Acquire) {
        let now = shared.clock.now();
        let mut any_busy = false;
        for (index, awake) in shared.awake_since.iter().enumerate() {
            let since = awake.load(Ordering::Relaxed);
            if since == 0 {
                continue;
            }
            any_busy = true;
            if now.saturating_sub(since - 1) <= stall {
                continue;
            }
            // Reads it watches would wait for it too: hand them to the others.
            #[cfg(any(target_os = "linux", target_os = "android"))]
            let fired = shared.watches[index].fire_all();
            #[cfg(not(any(target_os = "linux", target_os = "android")))]
            let fired = false;
            if fired || !lock(&shared.locals[index]).is_empty() || !lock(&shared.global).is_empty()
            {
                shared.notify_one();
            }
        }
        idle_scans = if any_busy { 0 } else { idle_scans + 1 };
        if idle_scans < IDLE_SCANS_BEFORE_PARK {
            std::thread::park_timeout(STALL);
            continue;
        }
        // SeqCst: see `WorkerContext::running`.
        shared.monitor_parked.store(true, Ordering::SeqCst);
        let all_idle = shared
            .awake_since
            .iter()
            .all(|awake| awake.load(Ordering::SeqCst) == 0);
        if all_idle && !shared.stopping.load(Ordering::SeqCst) {
            #[cfg(test)]
            shared.probe.monitor_parks.fetch_add(1, Ordering::SeqCst);
            std::thread::park();
        }
        shared.monitor_parked.store(false, Ordering::SeqCst);
        idle_scans = 0;
    }
}

fn run_worker(shared: Arc<Shared>, index: usize) {
    let worker = Rc::new(WorkerContext::new(shared.clone(), index));
    WORKER.with(|w| *w.borrow_mut() = Some(worker.clone()));
    while !shared.stopping.load(Ordering::Acquire) {
        // Tasks catch their own panics; this guards the loop itself.
        let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            async_io::block_on(WorkerLoop {
                worker: worker.clone(),
                tick: 0,
                #[cfg(any(target_os = "linux", target_os = "android"))]
                watch_rounds: 0,
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

/// Lets the calling thread's pool worker watch a socket read that would block (see
/// [`ReadWatch`]), if the thread is a worker that takes watches and is likely to spin next.
/// Whether it took it.
#[cfg(any(target_os = "linux", target_os = "android"))]
pub(crate) fn watch_readable(watch: &Arc<ReadWatch>) -> bool {
    WORKER
        .try_with(|w| {
            let Ok(w) = w.try_borrow() else {
                return false;
            };
            let Some(w) = w.as_ref() else {
                return false;
            };
            if !w.takes_watches.get() || !w.may_spin() {
                return false;
            }
            w.watches().push(watch.clone());
            true
        })
        .unwrap_or(false)
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
    impl Unpark {
        fn unpark(&self) {
            // A worker waking this thread should not spin while it waits for a core.
            let _ = WORKER.try_with(|w| {
                if let Ok(w) = w.try_borrow() {
                    if let Some(w) = w.as_ref() {
                        w.woke_blocked.set(true);
                    }
                }
            });
            self.0.unpark();
        }
    }
    impl std::task::Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.unpark();
        }
        fn wake_by_ref(self: &Arc<Self>) {
            self.unpark();
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
    use std::sync::mpsc;
    use std::sync::{Condvar, Mutex};

    const WAIT: Duration = Duration::from_secs(30);
    const MICROS: u64 = 1_000;
    const MILLIS: u64 = 1_000_000;

    /// Counters and hooks unit tests read and set.
    #[derive(Default)]
    pub(super) struct Probe {
        /// Times a worker went to sleep.
        pub(super) sleeps: AtomicUsize,
        /// Spins begun.
        pub(super) spins: AtomicUsize,
        /// Times the monitor parked without a timeout.
        pub(super) monitor_parks: AtomicUsize,
        /// Idle workers woken by `notify_one`.
        pub(super) notified: AtomicUsize,
        /// Rounds of spins after their first.
        pub(super) spin_rounds: AtomicUsize,
        /// Runs once, in `spawn_future` right after its check for shutdown.
        pub(super) on_spawn: Mutex<Option<Box<dyn FnOnce() + Send>>>,
    }

    impl Probe {
        pub(super) fn before_spawn(&self) {
            let hook = lock(&self.on_spawn).take();
            if let Some(hook) = hook {
                hook();
            }
        }
    }

    /// A pool on a clock that only the test moves, on a machine that is never busy.
    struct TestPool {
        pool: ThreadPool,
        clock: Arc<AtomicU64>,
    }

    impl TestPool {
        fn new(threads: usize, spin: Duration) -> TestPool {
            TestPool::with_load(threads, spin, false).0
        }

        /// A pool on a machine that starts `busy` or not, and the switch that changes it.
        fn with_load(threads: usize, spin: Duration, busy: bool) -> (TestPool, Arc<AtomicBool>) {
            let (shared, clock, load) = test_shared(threads, spin);
            load.store(busy, Ordering::SeqCst);
            let pool = ThreadPool::start(shared, "pool-test").unwrap();
            (TestPool { pool, clock }, load)
        }

        /// Waits until some worker watches a socket read.
        #[cfg(any(target_os = "linux", target_os = "android"))]
        fn wait_for_a_watch(&self) {
            wait_until("a worker watches the read", || {
                self.shared().watches.iter().any(|w| !w.is_empty())
            });
        }

        fn advance(&self, nanos: u64) {
            self.clock.fetch_add(nanos, Ordering::SeqCst);
        }

        fn shared(&self) -> &Shared {
            &self.pool.shared
        }

        /// Waits until every worker is asleep.
        fn wait_all_asleep(&self) {
            let n = self.pool.threads();
            wait_until("every worker sleeps", || {
                self.shared().idle.load(Ordering::SeqCst) == n
            });
        }
    }

    fn test_shared(threads: usize, spin: Duration) -> (Shared, Arc<AtomicU64>, Arc<AtomicBool>) {
        let clock = Arc::new(AtomicU64::new(0));
        let busy = Arc::new(AtomicBool::new(false));
        let mut load = Load::new();
        load.forced = Some(busy.clone());
        let clock_source = Clock {
            epoch: Instant::now(),
            manual: Some(clock.clone()),
        };
        (Shared::new(threads, spin, clock_source, load), clock, busy)
    }

    /// Waits until `done` holds (polling), failing after [`WAIT`]: waiting for a state, never
    /// judging what happened within a time.
    fn wait_until(what: &str, done: impl Fn() -> bool) {
        let start = Instant::now();
        while !done() {
            assert!(start.elapsed() < WAIT, "timed out waiting until {what}");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    // ---- Spinning rules, on worker contexts without threads ----

    /// Worker contexts of a pool with no threads, for the spin rules.
    fn workers(n: usize, spin: Duration) -> (Vec<WorkerContext>, Arc<AtomicBool>) {
        let (shared, _, busy) = test_shared(n, spin);
        let shared = Arc::new(shared);
        let workers = (0..n)
            .map(|i| WorkerContext::new(shared.clone(), i))
            .collect();
        (workers, busy)
    }

    /// Spins one idle episode from `start` in rounds 10 µs apart; returns when it ended.
    fn idle_episode(worker: &WorkerContext, start: u64) -> u64 {
        let mut now = start;
        while worker.keep_spinning(now) {
            now += 10 * MICROS;
            assert!(now - start < 10 * MILLIS, "the spin never ended");
        }
        now
    }

    #[test]
    fn a_spin_lasts_its_spin_time() {
        let (w, _) = workers(1, Duration::from_micros(100));
        let ended = idle_episode(&w[0], 0);
        assert_eq!(ended, 100 * MICROS);
        assert!(!w[0].shared.spinning.load(Ordering::SeqCst));
    }

    #[test]
    fn one_worker_spins_at_a_time() {
        let (w, _) = workers(2, Duration::from_micros(100));
        assert!(w[0].keep_spinning(0));
        assert!(!w[1].keep_spinning(0), "a second worker began to spin");
        assert!(!w[0].keep_spinning(200 * MICROS));
        assert!(
            w[1].keep_spinning(200 * MICROS),
            "the spin was not free again"
        );
    }

    /// Twelve idle episodes with no work: spins at the 1st, 3rd and 7th only; a spin that
    /// found work ends the backoff.
    #[test]
    fn spins_that_find_nothing_back_off() {
        let (w, _) = workers(1, Duration::from_micros(100));
        let mut now = 0;
        for _ in 0..12 {
            now = idle_episode(&w[0], now) + 5 * MILLIS;
        }
        let spins = || w[0].shared.probe.spins.load(Ordering::SeqCst);
        assert_eq!(spins(), 3, "spins in 12 idle episodes");
        // The 8th to 14th skip; the 15th spins, finds work, and the next spins again.
        for _ in 0..2 {
            now = idle_episode(&w[0], now) + 5 * MILLIS;
        }
        assert_eq!(spins(), 3);
        assert!(w[0].keep_spinning(now));
        w[0].found_work();
        assert!(w[0].keep_spinning(now + MILLIS));
        assert_eq!(spins(), 5);
    }

    #[test]
    fn a_busy_machine_gets_no_spin() {
        let (w, busy) = workers(1, Duration::from_millis(10));
        busy.store(true, Ordering::SeqCst);
        assert!(!w[0].keep_spinning(0), "spun while the machine was busy");
        busy.store(false, Ordering::SeqCst);
        assert!(w[0].keep_spinning(MICROS));
        assert!(w[0].keep_spinning(2 * MICROS));
        busy.store(true, Ordering::SeqCst);
        assert!(
            !w[0].keep_spinning(3 * MICROS),
            "kept spinning on a busy machine"
        );
    }

    #[test]
    fn a_descheduled_spin_round_ends_the_spin() {
        let (w, _) = workers(1, Duration::from_millis(10));
        assert!(w[0].keep_spinning(0));
        assert!(w[0].keep_spinning(10 * MICROS));
        let after_gap = 10 * MICROS + SPIN_PREEMPTED_NANOS;
        assert!(
            !w[0].keep_spinning(after_gap),
            "spun on after being descheduled"
        );
    }

    /// A `/proc/loadavg` stand-in: a file the test rewrites.
    fn loadavg(runnable: usize) -> std::path::PathBuf {
        let path = std::env::temp_dir().join(format!(
            "plexus-loadavg-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::write(&path, format!("0.50 0.40 0.30 {runnable}/210 4242\n")).unwrap();
        path
    }

    #[test]
    fn the_load_counts_runnable_threads_against_cores() {
        let path = loadavg(3);
        let load = |cores| Load {
            file: Some(File::open(&path).unwrap()),
            cores,
            sampled_at: AtomicU64::new(0),
            busy: AtomicBool::new(false),
            forced: None,
        };
        assert_eq!(runnable_threads(&File::open(&path).unwrap()), Some(3));
        assert!(load(2).busy(0, LOAD_SAMPLE_NANOS));
        assert!(!load(3).busy(0, LOAD_SAMPLE_NANOS));
        // A sample is kept for its age, then read again.
        let two = load(2);
        assert!(two.busy(0, LOAD_SAMPLE_NANOS));
        loadavg(1);
        assert!(two.busy(LOAD_SAMPLE_NANOS, LOAD_SAMPLE_NANOS));
        assert!(!two.busy(LOAD_SAMPLE_NANOS + 1, LOAD_SAMPLE_NANOS));
        let _ = std::fs::remove_file(&path);
    }

    /// After waking a thread blocked in `block_on`, a worker decides on a fresh sample: the
    /// thread it woke may be waiting for the core it would spin on.
    #[test]
    fn a_worker_that_woke_a_blocked_thread_samples_the_load_afresh() {
        let path = loadavg(1);
        let (shared, _, _) = test_shared(1, Duration::from_millis(1));
        let mut shared = shared;
        shared.load = Load {
            file: Some(File::open(&path).unwrap()),
            cores: 2,
            sampled_at: AtomicU64::new(0),
            busy: AtomicBool::new(false),
            forced: None,
        };
        let worker = WorkerContext::new(Arc::new(shared), 0);
        assert!(worker.keep_spinning(0));
        worker.found_work();
        loadavg(3);
        // The cached sample says idle; a fresh one says busy.
        assert!(
            worker.keep_spinning(10 * MICROS),
            "the cached sample was not used"
        );
        worker.found_work();
        worker.woke_blocked.set(true);
        assert!(!worker.keep_spinning(20 * MICROS), "spun on a stale sample");
        let _ = std::fs::remove_file(&path);
    }

    // ---- Scheduling, on pools with threads and a clock the test moves ----

    #[test]
    fn runs_every_task_across_workers() {
        let pool = ThreadPool::new(
            &RuntimeSettings {
                threads: 3,
                ..RuntimeSettings::default()
            },
            "pool-test",
        )
        .unwrap();
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
        let t = TestPool::new(2, Duration::ZERO);
        let (tx, rx) = mpsc::channel();
        let (wake_tx, wake_rx) = async_channel::bounded::<u32>(1);
        t.pool.spawn_future(async move {
            let n = wake_rx.recv().await.unwrap();
            let _ = tx.send(n);
        });
        wake_tx.send_blocking(7).unwrap();
        assert_eq!(rx.recv_timeout(WAIT), Ok(7));
        t.pool.shutdown();
    }

    /// The point of the pool: a task that a worker's task wakes (or spawns) runs on that
    /// worker. A chain of 200 spawns, each from the task before, stays on one thread (when
    /// every spawn went through a shared queue, as in smol's executor, a good part moved).
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
        let t = TestPool::new(2, Duration::ZERO);
        t.wait_all_asleep();
        let moved = Arc::new(AtomicUsize::new(0));
        let (tx, rx) = mpsc::channel();
        let (inner, counter) = (t.pool.clone(), moved.clone());
        let notified = Arc::new(AtomicUsize::new(usize::MAX));
        let at_start = notified.clone();
        t.pool.spawn_future(async move {
            let here = std::thread::current().id();
            let woken = inner.shared.probe.notified.load(Ordering::SeqCst);
            at_start.store(woken, Ordering::SeqCst);
            hop(inner, 200, here, counter, tx);
        });
        rx.recv_timeout(WAIT).expect("the chain finishes");
        let woken =
            t.shared().probe.notified.load(Ordering::SeqCst) - notified.load(Ordering::SeqCst);
        t.pool.shutdown();
        let moved = moved.load(Ordering::SeqCst);
        assert_eq!(moved, 0, "{moved} of 200 hops moved to another thread");
        assert_eq!(woken, 0, "the chain woke the idle worker {woken} times");
    }

    /// The threads tasks ran on, shared with the tasks so they can wait for a second one.
    #[derive(Default)]
    struct Seen {
        threads: Mutex<Vec<std::thread::ThreadId>>,
        changed: Condvar,
        /// Idle workers woken to steal while the batch ran.
        woken: AtomicUsize,
    }

    impl Seen {
        fn record(&self) {
            lock(&self.threads).push(std::thread::current().id());
            self.changed.notify_all();
        }

        fn distinct(&self) -> usize {
            let mut threads = lock(&self.threads).clone();
            threads.sort_by_key(|t| format!("{t:?}"));
            threads.dedup();
            threads.len()
        }

        /// Waits until tasks ran on two threads (at most [`WAIT`]).
        fn wait_for_two(&self) {
            let start = Instant::now();
            let mut threads = lock(&self.threads);
            loop {
                let mut distinct = threads.clone();
                distinct.sort_by_key(|t| format!("{t:?}"));
                distinct.dedup();
                if distinct.len() >= 2 || start.elapsed() > WAIT {
                    return;
                }
                threads = self
                    .changed
                    .wait_timeout(threads, Duration::from_millis(10))
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
        }
    }

    /// From inside one worker, runs `warm_up` tasks one after another, then spawns `tasks`
    /// together; each task takes `each` nanoseconds of the test clock (and, with
    /// `wait_for_two`, does not finish before some task ran on a second thread, as a long task
    /// would still be running then). Returns where the batch ran.
    fn fan_out(
        t: &TestPool,
        warm_up: usize,
        tasks: usize,
        each: u64,
        wait_for_two: bool,
    ) -> Arc<Seen> {
        let seen = Arc::new(Seen::default());
        let notified = t.shared().probe.notified.load(Ordering::SeqCst);
        let (tx, rx) = mpsc::channel();
        let (inner, clock) = (t.pool.clone(), t.clock.clone());
        let batch = seen.clone();
        t.pool.spawn_future(async move {
            for _ in 0..warm_up {
                // Each a task of its own, so the worker times it.
                let (done_tx, done_rx) = async_channel::bounded::<()>(1);
                let clock = clock.clone();
                inner.spawn_future(async move {
                    clock.fetch_add(each, Ordering::SeqCst);
                    let _ = done_tx.send(()).await;
                });
                let _ = done_rx.recv().await;
            }
            for _ in 0..tasks {
                let (tx, clock, seen) = (tx.clone(), clock.clone(), batch.clone());
                inner.spawn_future(async move {
                    clock.fetch_add(each, Ordering::SeqCst);
                    seen.record();
                    if wait_for_two {
                        seen.wait_for_two();
                    }
                    let _ = tx.send(());
                });
            }
        });
        for _ in 0..tasks {
            rx.recv_timeout(WAIT * 2).expect("the batch runs");
        }
        // The first spawn, from outside, woke one worker; any more is a worker woken to steal.
        let woken = t.shared().probe.notified.load(Ordering::SeqCst) - notified;
        seen.woken.store(woken.saturating_sub(1), Ordering::SeqCst);
        seen
    }

    /// Queued work worth a handoff is stolen at once: four tasks of 1 ms spawned together
    /// (the worker having timed two before) run on both workers, though the monitor (on a
    /// clock that does not move while they wait) never sees a stalled worker.
    #[test]
    fn slow_tasks_queued_together_spread_over_the_workers() {
        let t = TestPool::new(2, Duration::ZERO);
        t.wait_all_asleep();
        let seen = fan_out(&t, 2, 4, MILLIS, true);
        t.pool.shutdown();
        assert_eq!(
            seen.distinct(),
            2,
            "the batch of slow tasks stayed on one worker"
        );
    }

    /// Short tasks stay where they were woken, even many at once: 64 tasks of 5 µs are less
    /// work than a handoff costs.
    #[test]
    fn short_tasks_queued_together_stay_on_their_worker() {
        let t = TestPool::new(2, Duration::ZERO);
        t.wait_all_asleep();
        let seen = fan_out(&t, 8, 64, 5 * MICROS, false);
        t.pool.shutdown();
        assert_eq!(seen.distinct(), 1, "short tasks moved to another worker");
        let woken = seen.woken.load(Ordering::SeqCst);
        assert_eq!(
            woken, 0,
            "a worker was woken {woken} times to steal short tasks"
        );
    }

    /// A worker out of work spins instead of sleeping: a socket's data and a task from outside
    /// that arrive during its spin are taken without it ever going to sleep (with no spin it
    /// sleeps and is woken for each).
    #[test]
    fn a_spinning_worker_takes_io_and_outside_work_without_sleeping() {
        let t = TestPool::new(1, Duration::from_secs(10));
        let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        let ours = async_io::Async::new(ours).unwrap();
        let (tx, rx) = mpsc::channel();
        let read_tx = tx.clone();
        t.pool.spawn_future(async move {
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
        let spinning = || t.shared().spinning.load(Ordering::SeqCst);
        wait_until("the worker spins", spinning);
        let sleeps = t.shared().probe.sleeps.load(Ordering::SeqCst);
        std::io::Write::write_all(&mut theirs, &[2]).unwrap();
        assert_eq!(rx.recv_timeout(WAIT), Ok(2));
        wait_until("the worker spins again", spinning);
        t.pool.spawn_future(async move {
            let _ = tx.send(3);
        });
        assert_eq!(rx.recv_timeout(WAIT), Ok(3));
        let slept = t.shared().probe.sleeps.load(Ordering::SeqCst) - sleeps;
        t.pool.shutdown();
        assert_eq!(
            slept, 0,
            "the worker slept {slept} times while it should have spun"
        );
    }

    /// A spin ends: once its spin time has passed, a worker with nothing to do sleeps.
    #[test]
    fn a_spin_ends_in_sleep() {
        let t = TestPool::new(1, Duration::from_millis(1));
        wait_until("the worker spins", || {
            t.shared().spinning.load(Ordering::SeqCst)
        });
        // Steps shorter than a descheduled round's gap, each seen by a round of the spin, so
        // only the spin time can end it.
        let rounds = || t.shared().probe.spin_rounds.load(Ordering::SeqCst);
        for _ in 0..30 {
            let seen = rounds();
            t.advance(40 * MICROS);
            wait_until("the spin goes round", || {
                rounds() >= seen + 2 || !t.shared().spinning.load(Ordering::SeqCst)
            });
        }
        t.wait_all_asleep();
        t.pool.shutdown();
    }

    /// Work from outside the pool goes to a worker that is running rather than waking a
    /// sleeping one: 15 tasks spawned from a plain thread while one worker runs a task all run
    /// on that worker once it is free.
    #[test]
    fn work_from_outside_goes_to_a_running_worker() {
        let t = TestPool::new(2, Duration::ZERO);
        t.wait_all_asleep();
        let (release_tx, release_rx) = mpsc::channel::<()>();
        let (running_tx, running_rx) = mpsc::channel();
        t.pool.spawn_future(async move {
            let _ = running_tx.send(std::thread::current().id());
            let _ = release_rx.recv();
        });
        let busy_worker = running_rx.recv_timeout(WAIT).unwrap();
        let notified = t.shared().probe.notified.load(Ordering::SeqCst);
        let (tx, rx) = mpsc::channel();
        for _ in 0..15 {
            let tx = tx.clone();
            t.pool.spawn_future(async move {
                let _ = tx.send(std::thread::current().id());
            });
        }
        let woken = t.shared().probe.notified.load(Ordering::SeqCst) - notified;
        release_tx.send(()).unwrap();
        let on_it = (0..15)
            .filter(|_| rx.recv_timeout(WAIT).unwrap() == busy_worker)
            .count();
        t.pool.shutdown();
        assert_eq!(woken, 0, "tasks from outside woke the sleeping worker");
        assert_eq!(on_it, 15, "tasks from outside ran on the other worker");
    }

    /// While every worker is idle the monitor parks with no timeout, and a worker that starts
    /// running brings it back: it parks again after.
    #[test]
    fn the_monitor_parks_while_every_worker_is_idle() {
        let t = TestPool::new(2, Duration::ZERO);
        let parks = || t.shared().probe.monitor_parks.load(Ordering::SeqCst);
        wait_until("the monitor parks", || parks() >= 1);
        let before = parks();
        let (tx, rx) = mpsc::channel();
        t.pool.spawn_future(async move {
            let _ = tx.send(());
        });
        rx.recv_timeout(WAIT).unwrap();
        wait_until("the monitor parks again", || parks() > before);
        t.pool.shutdown();
    }

    /// A task that blocks its worker does not hold up the tasks queued behind it while
    /// another worker is idle: once the worker has been running for longer than the stall
    /// limit (on the test's clock), the monitor, parked until then, has the idle one steal.
    /// A task that reads bytes from `ours` through a plexus socket and sends each on `tx`.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    async fn byte_reader(ours: std::os::unix::net::UnixStream, tx: mpsc::Sender<u8>) {
        use smol::io::AsyncReadExt;
        let mut socket = crate::transport::Socket::new(async_io::Async::new(ours).unwrap());
        let mut byte = [0u8];
        while socket.read_exact(&mut byte).await.is_ok() {
            let _ = tx.send(byte[0]);
        }
    }

    /// A spinning worker watches the read that would block instead of registering it with
    /// the reactor, and sees the data: nothing else would wake the reader.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    #[test]
    fn a_spinning_worker_watches_a_read_and_sees_its_data() {
        let t = TestPool::new(1, Duration::from_secs(10));
        let (ours, mut theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        let (tx, rx) = mpsc::channel();
        t.pool.spawn_future(byte_reader(ours, tx));
        for byte in 1..=3 {
            t.wait_for_a_watch();
            std::io::Write::write_all(&mut theirs, &[byte]).unwrap();
            assert_eq!(rx.recv_timeout(WAIT), Ok(byte));
        }
        t.pool.shutdown();
        assert_eq!(t.shared().probe.sleeps.load(Ordering::SeqCst), 0);
    }

    /// A worker whose spin ends (here: the machine became busy) fires its watches before it
    /// sleeps; the read, tried again, then waits on the reactor, which wakes it.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    #[test]
    fn a_worker_that_stops_spinning_hands_its_watched_reads_to_the_reactor() {
        let (t, busy) = TestPool::with_load(1, Duration::from_secs(10), false);
        let (ours, mut theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        let (tx, rx) = mpsc::channel();
        t.pool.spawn_future(byte_reader(ours, tx));
        t.wait_for_a_watch();
        busy.store(true, Ordering::SeqCst);
        t.wait_all_asleep();
        assert!(
            t.shared().watches[0].is_empty(),
            "slept with a read watched"
        );
        std::io::Write::write_all(&mut theirs, &[7]).unwrap();
        assert_eq!(rx.recv_timeout(WAIT), Ok(7));
        t.pool.shutdown();
    }

    /// Reads watched by a worker stuck in a long poll are fired by the monitor, and another
    /// worker reads them.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    #[test]
    fn a_stuck_worker_s_watched_reads_are_handed_on_by_the_monitor() {
        // Busy from the start, so both workers sleep without ever spinning (a spin ended by the
        // load would make its worker skip the next chance, and take no watch).
        let (t, busy) = TestPool::with_load(2, Duration::from_secs(10), true);
        t.wait_all_asleep();
        busy.store(false, Ordering::SeqCst);
        let (ours, mut theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        let (tx, rx) = mpsc::channel();
        let (stuck_tx, stuck_rx) = mpsc::channel();
        let (release_tx, release_rx) = mpsc::channel::<()>();
        let inner = t.pool.clone();
        t.pool.spawn_future(async move {
            // Queued on this worker, which runs it once the read below waits, and is stuck.
            inner.spawn_future(async move {
                let _ = stuck_tx.send(());
                let _ = release_rx.recv();
            });
            byte_reader(ours, tx).await;
        });
        stuck_rx.recv_timeout(WAIT).unwrap();
        t.wait_for_a_watch();
        std::io::Write::write_all(&mut theirs, &[9]).unwrap();
        t.advance(u64::try_from(STALL.as_nanos()).unwrap() * 2);
        let read = rx.recv_timeout(WAIT);
        release_tx.send(()).unwrap();
        t.pool.shutdown();
        assert_eq!(read, Ok(9), "the read waited for its stuck worker");
    }

    #[test]
    fn a_blocked_worker_queue_is_stolen() {
        let t = TestPool::new(2, Duration::ZERO);
        t.wait_all_asleep();
        wait_until("the monitor parks", || {
            t.shared().probe.monitor_parks.load(Ordering::SeqCst) >= 1
        });
        let (tx, rx) = mpsc::channel();
        let (release_tx, release_rx) = mpsc::channel::<()>();
        let (queued_tx, queued_rx) = mpsc::channel();
        let inner = t.pool.clone();
        t.pool.spawn_future(async move {
            // Queued on this worker, which then blocks until the test lets it go.
            inner.spawn_future(async move {
                let _ = tx.send(());
            });
            let _ = queued_tx.send(());
            let _ = release_rx.recv();
        });
        queued_rx.recv_timeout(WAIT).unwrap();
        t.advance(u64::try_from(STALL.as_nanos()).unwrap() * 2);
        let ran = rx.recv_timeout(WAIT);
        release_tx.send(()).unwrap();
        t.pool.shutdown();
        ran.expect("the queued task ran while its worker was blocked");
    }

    #[test]
    fn a_panicking_task_leaves_its_worker_running() {
        let t = TestPool::new(1, Duration::ZERO);
        t.pool
            .spawn_future(async { panic!("task panic (expected by the test)") });
        let (tx, rx) = mpsc::channel();
        t.pool.spawn_future(async move {
            let _ = tx.send(());
        });
        rx.recv_timeout(WAIT)
            .expect("the worker survived the panic");
        t.pool.shutdown();
    }

    /// Counts its drops.
    struct Dropped(Arc<AtomicUsize>);

    impl Drop for Dropped {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn shutdown_drops_waiting_tasks_and_refuses_new_ones() {
        let t = TestPool::new(2, Duration::ZERO);
        let pool = &t.pool;
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

    /// A task spawned while shutdown runs (past the spawn's own check for it) is dropped, not
    /// left in a queue that no one empties (where it would keep the pool alive through its
    /// future: a reference cycle).
    #[test]
    fn a_task_spawned_during_shutdown_is_dropped() {
        let t = TestPool::new(2, Duration::ZERO);
        let pool = t.pool.clone();
        *lock(&t.shared().probe.on_spawn) = Some(Box::new(move || pool.shutdown()));
        let dropped = Arc::new(AtomicUsize::new(0));
        let guard = Dropped(dropped.clone());
        t.pool.spawn_future(async move {
            let _guard = guard;
            std::future::pending::<()>().await;
        });
        assert_eq!(dropped.load(Ordering::SeqCst), 1, "the late task was kept");
        assert!(lock(&t.shared().global).is_empty());
        assert!(lock(&t.shared().active).is_empty());
    }

    /// A task that shuts its own pool down is dropped when its poll returns, not left queued.
    #[test]
    fn the_task_that_calls_shutdown_is_dropped() {
        let t = TestPool::new(2, Duration::ZERO);
        let dropped = Arc::new(AtomicUsize::new(0));
        let guard = Dropped(dropped.clone());
        let (done_tx, done_rx) = mpsc::channel();
        let pool = t.pool.clone();
        t.pool.spawn_future(async move {
            // Dropped in reverse: the guard first, then the signal.
            let _done = DropSignal(done_tx);
            let _guard = guard;
            pool.shutdown();
            std::future::pending::<()>().await;
        });
        done_rx
            .recv_timeout(WAIT)
            .expect("the task that called shutdown was dropped");
        assert_eq!(dropped.load(Ordering::SeqCst), 1);
        wait_until("the task's registration is gone", || {
            lock(&t.shared().active).is_empty()
        });
        assert!(lock(&t.shared().global).is_empty());
    }

    /// Sends when dropped.
    struct DropSignal(mpsc::Sender<()>);

    impl Drop for DropSignal {
        fn drop(&mut self) {
            let _ = self.0.send(());
        }
    }
}
