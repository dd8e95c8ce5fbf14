//! A subchannel: one endpoint's connection pool, its connectivity state, and the
//! FIFO queue of calls waiting for a stream.
//!
//! Calls take a [`StreamSlot`] on the first connection with room under the peer's
//! SETTINGS_MAX_CONCURRENT_STREAMS (read live, so a SETTINGS change is honoured). When every
//! connection is full, another one is opened (up to the configured cap); otherwise calls wait
//! in order and each freed stream goes to the oldest waiter.

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use bytes::Bytes;
use event_listener::Event;
use futures_util::future::{Either, select};
use h2::client::SendRequest;

use super::backoff::Backoff;
use super::connection::{self, Connection};
use super::health::{self, Health, HealthCell, HealthCheck, Stop};
use super::options::ConnConfig;
use super::state::{ConnectivityState, StateCell};
use super::stats::EndpointStats;
use crate::proto::ping::PingConfig;
use crate::rt::Executor;
use crate::status::Status;
use crate::transport::{Address, Connector};

/// What a subchannel needs from its channel.
pub(crate) struct Env {
    pub(crate) config: ConnConfig,
    pub(crate) connector: Arc<dyn Connector>,
    pub(crate) executor: Arc<dyn Executor>,
    /// Called whenever an endpoint's state changes, so the channel can recompute its own.
    pub(crate) on_state_change: Box<dyn Fn() + Send + Sync>,
    /// Called when a server sends GOAWAY: the cue to resolve the target again (gRFC A9),
    /// since the server may be leaving or the endpoints rebalancing.
    pub(crate) on_goaway: Box<dyn Fn() + Send + Sync>,
    /// Client-side health checking (gRFC A17), when the service config asks for it and the
    /// policy uses it.
    pub(crate) health: Option<Arc<HealthCheck>>,
}

/// One endpoint and its connections.
pub(crate) struct Subchannel {
    address: Address,
    env: Arc<Env>,
    set: Mutex<Connections>,
    /// The state of the connections; [`Subchannel::state`] folds the health check in.
    state: StateCell,
    /// What the health check said last (read only when the channel checks health).
    health: HealthCell,
}

/// The endpoint's connection pool and the calls waiting on it, under one lock.
struct Connections {
    conns: Vec<Conn>,
    /// Connection attempts under way.
    connecting: usize,
    waiters: VecDeque<Arc<Waiter>>,
    backoff: Backoff,
    /// No attempt before this instant (the reconnect backoff).
    retry_at: Option<Instant>,
    retry_scheduled: bool,
    last_error: Option<Status>,
    /// Keep reconnecting after failures even with no call waiting (round_robin, `connect()`).
    wanted: bool,
    next_id: u64,
    shut_down: bool,
    /// Keepalive and window settings for new connections.
    ping: PingConfig,
    /// The health check's Watch task, while one runs.
    watch: Option<Watch>,
    /// Why the health check says unhealthy, for the error of a call that finds no endpoint.
    unhealthy_because: Option<String>,
}

/// A running Watch task: the connection its call is on, and how to stop it.
struct Watch {
    conn_id: Option<u64>,
    stop: Arc<Stop>,
}

/// A connection of the set, by id.
struct Conn {
    id: u64,
    connection: Connection,
    /// GOAWAY received or the connection failed: no new streams.
    draining: bool,
    /// The health check's Watch call is on it, taking one of its streams.
    watched: bool,
}

/// A call waiting for a stream.
struct Waiter {
    wait_for_ready: bool,
    result: Mutex<Option<Result<StreamSlot, Status>>>,
    ready: Event,
}

/// The right to open one stream on one connection; dropping it frees the stream.
pub(crate) struct StreamSlot {
    subchannel: Arc<Subchannel>,
    conn_id: u64,
    connection: Connection,
}

impl fmt::Debug for StreamSlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamSlot")
            .field("address", &self.subchannel.address)
            .field("conn", &self.conn_id)
            .finish()
    }
}

impl StreamSlot {
    /// Whether the server announced, by GOAWAY, that it never processed stream `id`.
    pub(crate) fn unprocessed(&self, id: u32) -> bool {
        self.connection.unprocessed(id)
    }

    /// The connection's request handle.
    pub(crate) fn sender(&self) -> SendRequest<Bytes> {
        self.connection.sender()
    }

    /// Marks the connection as going away: it takes no new streams.
    pub(crate) fn connection_failed(&self) {
        let mut set = self.subchannel.lock();
        if let Some(conn) = set.conns.iter_mut().find(|c| c.id == self.conn_id) {
            conn.draining = true;
        }
        let moved = self.subchannel.move_watch_off(&mut set, self.conn_id);
        self.subchannel.maybe_connect(&mut set);
        drop(set);
        if moved {
            (self.subchannel.env.on_state_change)();
        }
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let sub = &self.subchannel;
        let mut set = sub.lock();
        // Counted on the connection itself, which may have left the set meanwhile.
        self.connection.stream_closed();
        sub.dispatch(&mut set);
    }
}

impl Conn {
    fn active(&self) -> usize {
        self.connection.active_streams()
    }

    /// Streams open, the Watch call's included: what counts against the server's limit.
    fn busy(&self) -> usize {
        self.active() + usize::from(self.watched)
    }

    fn max_streams(&self) -> usize {
        self.connection.max_streams()
    }
}

impl Waiter {
    fn grant(&self, result: Result<StreamSlot, Status>) {
        *self.result.lock().unwrap_or_else(|e| e.into_inner()) = Some(result);
        self.ready.notify(usize::MAX);
    }

    fn take(&self) -> Option<Result<StreamSlot, Status>> {
        self.result.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    async fn wait(&self) -> Result<StreamSlot, Status> {
        loop {
            if let Some(result) = self.take() {
                return result;
            }
            let listener = self.ready.listen();
            if let Some(result) = self.take() {
                return result;
            }
            listener.await;
        }
    }
}

/// Removes a waiter from the queue if its call goes away, returning any stream it was granted.
struct Queued<'a> {
    subchannel: &'a Arc<Subchannel>,
    waiter: Arc<Waiter>,
}

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        let mut set = self.subchannel.lock();
        set.waiters.retain(|w| !Arc::ptr_eq(w, &self.waiter));
        drop(set);
        // A slot granted after the call stopped waiting goes back (and to the next waiter).
        drop(self.waiter.take());
    }
}

impl Drop for Subchannel {
    /// A channel dropped without [`shutdown`](Subchannel::shutdown) ends the Watch too,
    /// which would otherwise hold its connection open.
    fn drop(&mut self) {
        let set = self.set.get_mut().unwrap_or_else(|e| e.into_inner());
        if let Some(watch) = set.watch.take() {
            watch.stop.stop();
        }
    }
}

impl Subchannel {
    pub(crate) fn new(address: Address, env: Arc<Env>) -> Arc<Subchannel> {
        let backoff = Backoff::new(env.config.backoff);
        let ping = env.config.ping.clone();
        Arc::new(Subchannel {
            address,
            env,
            set: Mutex::new(Connections {
                conns: Vec::new(),
                connecting: 0,
                waiters: VecDeque::new(),
                backoff,
                retry_at: None,
                retry_scheduled: false,
                last_error: None,
                wanted: false,
                next_id: 0,
                shut_down: false,
                ping,
                watch: None,
                unhealthy_because: None,
            }),
            state: StateCell::new(ConnectivityState::Idle),
            health: HealthCell::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Connections> {
        self.set.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn address(&self) -> &Address {
        &self.address
    }

    /// The state for the picker: the connections' state, except that with health checking
    /// a connected endpoint is READY only while its health check says healthy (gRFC A17).
    pub(crate) fn state(&self) -> ConnectivityState {
        let state = self.state.get();
        match (&self.env.health, state) {
            (Some(_), ConnectivityState::Ready) => self.health.get().state(),
            _ => state,
        }
    }

    /// Whether a connection is up, whatever the health check says.
    pub(crate) fn connected(&self) -> bool {
        self.state.get() == ConnectivityState::Ready
    }

    /// Why the endpoint is not READY, for the error of a call that found no endpoint to use.
    pub(crate) fn why_not_ready(&self) -> String {
        let set = self.lock();
        match self.state() {
            ConnectivityState::Ready => format!("{} is ready", self.address),
            ConnectivityState::TransientFailure if self.state.get() == ConnectivityState::Ready => {
                let why = set.unhealthy_because.as_deref().unwrap_or("is unhealthy");
                format!("{} {why}", self.address)
            }
            ConnectivityState::TransientFailure => self.failure(&set).message().to_string(),
            ConnectivityState::Connecting if self.state.get() == ConnectivityState::Ready => {
                format!("{} has not answered its health check yet", self.address)
            }
            state => format!("{} is {state:?}", self.address),
        }
    }

    fn set_state(&self, state: ConnectivityState) {
        if self.state.get() != state {
            self.state.set(state);
            (self.env.on_state_change)();
        }
    }

    /// A stream slot, waiting for one in FIFO order. Fails fast with the last connection error
    /// in TRANSIENT_FAILURE unless `wait_for_ready`.
    pub(crate) async fn acquire(
        self: &Arc<Self>,
        wait_for_ready: bool,
    ) -> Result<StreamSlot, Status> {
        let waiter = {
            let mut set = self.lock();
            if set.shut_down {
                return Err(Status::unavailable("channel is shut down"));
            }
            if set.waiters.is_empty() {
                if let Some(slot) = self.take_slot(&mut set) {
                    return Ok(slot);
                }
            }
            if !wait_for_ready && self.failing_fast(&set) {
                return Err(self.failure(&set));
            }
            let waiter = Arc::new(Waiter {
                wait_for_ready,
                result: Mutex::new(None),
                ready: Event::new(),
            });
            set.waiters.push_back(waiter.clone());
            self.maybe_connect(&mut set);
            waiter
        };
        let queued = Queued {
            subchannel: self,
            waiter,
        };
        queued.waiter.wait().await
    }

    /// Starts connecting now, and keeps reconnecting after failures (backoff permitting).
    pub(crate) fn request_connection(self: &Arc<Self>) {
        let mut set = self.lock();
        set.wanted = true;
        self.maybe_connect(&mut set);
    }

    /// Closes every connection (idle timeout); the next call reconnects.
    pub(crate) fn go_idle(&self) {
        let mut set = self.lock();
        let stopped = self.stop_watch(&mut set);
        set.conns.clear();
        set.wanted = false;
        let connecting = set.connecting > 0;
        drop(set);
        if !connecting {
            self.set_state(ConnectivityState::Idle);
        }
        if stopped {
            (self.env.on_state_change)();
        }
    }

    /// Fails waiting calls and closes the connections for good.
    pub(crate) fn shutdown(&self) {
        let mut set = self.lock();
        set.shut_down = true;
        // SHUTDOWN follows, which the channel hears of.
        self.stop_watch(&mut set);
        set.conns.clear();
        let waiters = std::mem::take(&mut set.waiters);
        drop(set);
        for w in waiters {
            w.grant(Err(Status::unavailable("channel is shut down")));
        }
        self.set_state(ConnectivityState::Shutdown);
    }

    pub(crate) fn stats(&self) -> EndpointStats {
        let set = self.lock();
        EndpointStats {
            address: self.address.clone(),
            state: self.state(),
            connections: set.conns.len(),
            active_streams: set.conns.iter().map(|c| c.active()).sum(),
        }
    }

    /// Streams open on this endpoint.
    pub(crate) fn active_streams(&self) -> usize {
        self.lock().conns.iter().map(|c| c.active()).sum()
    }

    fn failing_fast(&self, set: &Connections) -> bool {
        set.conns.iter().all(|c| c.draining)
            && self.state.get() == ConnectivityState::TransientFailure
            && set.retry_at.is_some_and(|at| Instant::now() < at)
    }

    fn failure(&self, set: &Connections) -> Status {
        let why = set
            .last_error
            .as_ref()
            .map_or_else(|| "no connection".to_string(), |s| s.message().to_string());
        Status::unavailable(format!("{} is unreachable: {why}", self.address))
    }

    /// The first connection with room for a stream (packing streams onto few connections).
    fn take_slot(self: &Arc<Self>, set: &mut Connections) -> Option<StreamSlot> {
        let conn = set
            .conns
            .iter_mut()
            .find(|c| !c.draining && c.busy() < c.max_streams())?;
        conn.connection.stream_opened();
        Some(StreamSlot {
            subchannel: self.clone(),
            conn_id: conn.id,
            connection: conn.connection.clone(),
        })
    }

    /// Hands free streams to waiting calls, oldest first.
    fn dispatch(self: &Arc<Self>, set: &mut Connections) {
        while !set.waiters.is_empty() {
            let Some(slot) = self.take_slot(set) else {
                break;
            };
            let waiter = set.waiters.pop_front().expect("checked non-empty");
            waiter.grant(Ok(slot));
        }
        if !set.waiters.is_empty() {
            self.maybe_connect(set);
        }
    }

    /// Opens another connection if calls need one and the set and backoff allow it.
    fn maybe_connect(self: &Arc<Self>, set: &mut Connections) {
        if set.shut_down {
            return;
        }
        let usable: Vec<&Conn> = set.conns.iter().filter(|c| !c.draining).collect();
        let wanted = if usable.is_empty() {
            // The first connection alone: its SETTINGS tell how many streams one carries.
            usize::from((!set.waiters.is_empty() || set.wanted) && set.connecting == 0)
        } else {
            let config = &self.env.config;
            let per_connection = usable
                .iter()
                .map(|c| c.max_streams())
                .max()
                .unwrap_or(1)
                .max(1);
            let free: usize = usable
                .iter()
                .map(|c| c.max_streams().saturating_sub(c.busy()))
                .sum();
            // Enough connections for every waiting call, counting those being opened.
            let short = set.waiters.len().saturating_sub(free);
            let needed = short
                .div_ceil(per_connection)
                .saturating_sub(set.connecting);
            let room = config
                .max_connections_per_endpoint
                .saturating_sub(usable.len() + set.connecting);
            if config.multi_connection {
                needed.min(room)
            } else {
                0
            }
        };
        if wanted == 0 {
            return;
        }
        if let Some(at) = set.retry_at.filter(|at| Instant::now() < *at) {
            self.schedule_retry(set, at);
            return;
        }
        // After a failure the state stays TRANSIENT_FAILURE through the next attempts until
        // one succeeds (gRFC A62), so the channel does not flap.
        if usable.is_empty() && self.state.get() != ConnectivityState::TransientFailure {
            self.state.set(ConnectivityState::Connecting);
            (self.env.on_state_change)();
        }
        set.connecting += wanted;
        for _ in 0..wanted {
            let sub = self.clone();
            self.env
                .executor
                .spawn(Box::pin(async move { sub.connect().await }));
        }
    }

    fn schedule_retry(self: &Arc<Self>, set: &mut Connections, at: Instant) {
        if set.retry_scheduled {
            return;
        }
        set.retry_scheduled = true;
        let weak = Arc::downgrade(self);
        self.env.executor.spawn(Box::pin(async move {
            async_io::Timer::at(at).await;
            if let Some(sub) = weak.upgrade() {
                let mut set = sub.lock();
                set.retry_scheduled = false;
                sub.maybe_connect(&mut set);
            }
        }));
    }

    async fn connect(self: Arc<Self>) {
        let mut tries = 0;
        let (id, result) = loop {
            tries += 1;
            let (ping, id) = {
                let mut set = self.lock();
                set.next_id += 1;
                (set.ping.clone(), set.next_id)
            };
            let alive = Arc::new(AtomicBool::new(true));
            let ended = Arc::new(Mutex::new(None));
            let result = self.open(id, ping, alive.clone(), ended.clone()).await;
            // The driver may have ended already; `alive` is cleared before it reports that.
            let gone = !alive.load(Ordering::Acquire);
            if let Ok(connection) = &result {
                // A server that said GOAWAY as the connection opened never saw a call from
                // us: try once more straight away rather than as a failure.
                if gone && connection.peer_goaway().is_some() && tries < 2 {
                    continue;
                }
            }
            let result = result.and_then(|opened| match gone {
                false => Ok(opened),
                true => {
                    // The cause (a TLS alert from a server that refused our certificate, say).
                    let cause = ended
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .take()
                        .map_or_else(String::new, |s: Status| format!(": {}", s.message()));
                    Err(Status::unavailable(format!(
                        "connection to {} closed as it opened{cause}",
                        self.address
                    )))
                }
            });
            break (id, result);
        };
        let mut set = self.lock();
        set.connecting -= 1;
        match result {
            Ok(connection) => {
                set.conns.push(Conn {
                    id,
                    connection,
                    draining: false,
                    watched: false,
                });
                set.backoff.reset();
                set.retry_at = None;
                set.last_error = None;
                self.start_watch(&mut set);
                self.dispatch(&mut set);
                drop(set);
                self.set_state(ConnectivityState::Ready);
            }
            Err(status) => {
                let delay = set.backoff.next_delay();
                let at = Instant::now() + delay;
                set.retry_at = Some(at);
                set.last_error = Some(status);
                let usable = set.conns.iter().any(|c| !c.draining);
                if usable {
                    return;
                }
                // Calls that won't wait fail now; the others wait for the next attempt.
                let failure = self.failure(&set);
                let (stay, fail): (VecDeque<_>, VecDeque<_>) = std::mem::take(&mut set.waiters)
                    .into_iter()
                    .partition(|w| w.wait_for_ready);
                set.waiters = stay;
                if !set.waiters.is_empty() || set.wanted {
                    self.schedule_retry(&mut set, at);
                }
                drop(set);
                // The state first, so a call that moves on to another endpoint sees this one
                // failing.
                self.set_state(ConnectivityState::TransientFailure);
                for w in fail {
                    w.grant(Err(failure.clone()));
                }
            }
        }
    }

    /// Opens connection `id` ([`connection::open`]), spawns its driver and returns once the
    /// server's SETTINGS (its stream limit above all) are in force, so no call is sent over a
    /// limit we have not heard yet. The driver puts its error (if any) in `ended`, clears
    /// `alive` and reports to the subchannel when the connection ends.
    async fn open(
        self: &Arc<Self>,
        id: u64,
        ping: PingConfig,
        alive: Arc<AtomicBool>,
        ended: Arc<Mutex<Option<Status>>>,
    ) -> Result<Connection, Status> {
        let (env, address) = (&self.env, &self.address);
        let started = Instant::now();
        let (connection, driver) =
            connection::open(&*env.connector, address, &env.config, ping).await?;
        let weak = Arc::downgrade(self);
        let events = driver.events().clone();
        env.executor.spawn(Box::pin(async move {
            let mut driver = std::pin::pin!(driver);
            let goaway = std::pin::pin!(events.goaway_received());
            let (result, told) = match select(driver.as_mut(), goaway).await {
                Either::Left((result, _)) => (result, false),
                Either::Right(((), _)) => {
                    // The connection drains its streams; new calls go elsewhere meanwhile.
                    if let Some(sub) = weak.upgrade() {
                        sub.going_away(id);
                    }
                    (driver.await, true)
                }
            };
            if let Err(status) = result {
                *ended.lock().unwrap_or_else(|e| e.into_inner()) = Some(status);
            }
            alive.store(false, Ordering::Release);
            let too_many_pings = events.peer_goaway().is_some_and(|g| g.is_too_many_pings());
            if let Some(sub) = weak.upgrade() {
                if too_many_pings {
                    sub.slow_down_keepalive();
                }
                sub.connection_closed(id);
                // A GOAWAY on a connection with no streams may close it in the same poll.
                if !told && events.peer_goaway().is_some() {
                    (sub.env.on_goaway)();
                }
            }
        }));
        connection::wait_for_settings(&connection, address, started, env.config.connect_timeout)
            .await?;
        Ok(connection)
    }

    /// The server said our keepalive pings were too many: double the interval for new
    /// connections, as gRFC A8 asks.
    fn slow_down_keepalive(&self) {
        let mut set = self.lock();
        if let Some(time) = set.ping.keepalive_time {
            set.ping.keepalive_time = Some(time.saturating_mul(2));
        }
    }

    /// The server sent GOAWAY on connection `id`: it takes no new streams (a new connection
    /// opens if calls are waiting), the subchannel is IDLE if no other connection is usable,
    /// and the channel is told.
    fn going_away(self: &Arc<Self>, id: u64) {
        let mut set = self.lock();
        let Some(conn) = set.conns.iter_mut().find(|c| c.id == id) else {
            return;
        };
        conn.draining = true;
        // A17: the Watch ends with its connection's GOAWAY; another connection carries it.
        self.connection_lost(set, id);
        (self.env.on_goaway)();
    }

    fn connection_closed(self: &Arc<Self>, id: u64) {
        let mut set = self.lock();
        set.conns.retain(|c| c.id != id);
        self.connection_lost(set, id);
    }

    /// Connection `id` takes no more streams (draining or gone): the health Watch moves off
    /// it, a new connection opens if calls are waiting, and the subchannel is IDLE if no
    /// other connection is usable.
    fn connection_lost(self: &Arc<Self>, mut set: MutexGuard<'_, Connections>, id: u64) {
        let moved = self.move_watch_off(&mut set, id);
        let usable = set.conns.iter().any(|c| !c.draining);
        self.maybe_connect(&mut set);
        let connecting = set.connecting > 0;
        drop(set);
        if moved {
            (self.env.on_state_change)();
        }
        if !usable && !connecting && self.state.get() == ConnectivityState::Ready {
            self.set_state(ConnectivityState::Idle);
        }
    }

    /// Starts the health check's Watch task if the channel checks health, none runs, and a
    /// connection is usable.
    fn start_watch(self: &Arc<Self>, set: &mut Connections) {
        let Some(check) = &self.env.health else {
            return;
        };
        if set.watch.is_some() || set.shut_down || set.conns.iter().all(|c| c.draining) {
            return;
        }
        let stop = Arc::new(Stop::default());
        set.watch = Some(Watch {
            conn_id: None,
            stop: stop.clone(),
        });
        let task = health::watch(Arc::downgrade(self), check.clone(), stop);
        self.env.executor.spawn(Box::pin(task));
    }

    /// Ends the Watch task, if one runs; the next one starts from an unanswered check.
    /// Returns whether that changed the health, which the caller tells the channel once the
    /// lock is released.
    fn stop_watch(&self, set: &mut Connections) -> bool {
        let Some(watch) = set.watch.take() else {
            return false;
        };
        watch.stop.stop();
        for conn in set.conns.iter_mut() {
            conn.watched = false;
        }
        self.health.set(Health::Pending)
    }

    /// Connection `id` takes no more streams: a Watch on it ends, and one starts on another
    /// usable connection if there is one. Returns whether the health changed (as
    /// [`stop_watch`](Self::stop_watch)).
    fn move_watch_off(self: &Arc<Self>, set: &mut Connections, id: u64) -> bool {
        if set.watch.as_ref().is_none_or(|w| w.conn_id != Some(id)) {
            return false;
        }
        let changed = self.stop_watch(set);
        self.start_watch(set);
        changed
    }

    /// The connection for the next Watch call of the task `stop` belongs to, the subchannel
    /// CONNECTING meanwhile; `None` once the task should end.
    pub(super) fn health_attempt(self: &Arc<Self>, stop: &Arc<Stop>) -> Option<Connection> {
        let mut set = self.lock();
        let current = set
            .watch
            .as_ref()
            .is_some_and(|w| Arc::ptr_eq(&w.stop, stop));
        if !current {
            return None;
        }
        for conn in set.conns.iter_mut() {
            conn.watched = false;
        }
        let Some(conn) = set.conns.iter_mut().find(|c| !c.draining) else {
            set.watch = None;
            return None;
        };
        conn.watched = true;
        let (id, connection) = (conn.id, conn.connection.clone());
        if let Some(watch) = set.watch.as_mut() {
            watch.conn_id = Some(id);
        }
        // A stream the last attempt held may be free now.
        self.dispatch(&mut set);
        drop(set);
        if self.health.set(Health::Pending) {
            (self.env.on_state_change)();
        }
        Some(connection)
    }

    /// What the Watch of the task `stop` belongs to said (ignored once that task was
    /// stopped); `why` says what was unhealthy.
    pub(super) fn health_report(&self, stop: &Arc<Stop>, health: Health, why: Option<String>) {
        let mut set = self.lock();
        if !set
            .watch
            .as_ref()
            .is_some_and(|w| Arc::ptr_eq(&w.stop, stop))
        {
            return;
        }
        set.unhealthy_because = why;
        let changed = self.health.set(health);
        drop(set);
        if changed {
            (self.env.on_state_change)();
        }
    }
}
