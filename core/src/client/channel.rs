//! [`Channel`]: the handle clients keep. It resolves the target, balances calls over the
//! endpoints' connection pools, tracks connectivity, and closes idle connections.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use event_listener::Event;
use h2::SendStream;
use h2::client::ResponseFuture as H2ResponseFuture;
use http::{HeaderMap, Method, Request, Uri, Version};

use super::backoff::BackoffConfig;
use super::balance::{Balancer, LbPolicy};
use super::call::{self, CallShared, RawStreaming};
use super::options::{
    CallOptions, ConnConfig, DEFAULT_CONNECT_TIMEOUT, DEFAULT_IDLE_TIMEOUT,
    DEFAULT_MAX_CONNECTIONS_PER_ENDPOINT, DEFAULT_MAX_FRAME_SIZE, check_http2_settings,
};
use super::resolve::{DEFAULT_DNS_REFRESH_INTERVAL, Resolver, resolver_for};
use super::state::{ConnectivityState, StateCell};
use super::stats::{ChannelStats, Counters};
use super::subchannel::{Env, StreamSlot, Subchannel};
use super::target::Target;
use crate::codec::Compression;
use crate::codec::frame::{DEFAULT_MAX_RECV_MESSAGE_SIZE, DEFAULT_MAX_SEND_MESSAGE_SIZE, Framed};
use crate::proto::headers::{self, CONTENT_TYPE_GRPC};
use crate::proto::ping::{PingConfig, WindowConfig};
use crate::rt::{DefaultExecutor, Executor, with_deadline};
use crate::status::Status;
use crate::transport::{Address, Connector, SocketConnector};

/// A gRPC channel: cheap to clone (a pointer copy), usable from every thread. Clones share the
/// resolver, the balancer and every endpoint's pool of HTTP/2 connections; nothing connects
/// until the first call or [`Channel::connect`].
#[derive(Clone)]
pub struct Channel {
    inner: Arc<ChannelInner>,
}

struct ChannelInner {
    target: Target,
    config: ChannelConfig,
    env: Arc<Env>,
    resolver: Arc<dyn Resolver>,
    balancer: Balancer,
    endpoints: Mutex<Endpoints>,
    resolved: Event,
    state: StateCell,
    counters: Arc<Counters>,
    created: Instant,
    /// Milliseconds after `created` of the last call start (for the idle timeout).
    last_call: AtomicU64,
    idle_watch: AtomicBool,
    refresh_watch: AtomicBool,
    /// Held while the channel's state is recomputed and set, so that a recomputation that
    /// read older endpoint states cannot land after a newer one.
    state_update: Mutex<()>,
}

#[derive(Default)]
struct Endpoints {
    list: Arc<Vec<Arc<Subchannel>>>,
    resolved_at: Option<Instant>,
    resolving: bool,
    error: Option<Status>,
    shut_down: bool,
}

#[derive(Debug, Clone)]
pub(crate) struct ChannelConfig {
    pub(crate) max_recv_message_size: usize,
    pub(crate) max_send_message_size: usize,
    /// Compression of request messages unless a call says otherwise.
    pub(crate) compression: Compression,
    user_agent: String,
    idle_timeout: Duration,
    resolve_interval: Duration,
    conn: ConnConfig,
    lb_policy: LbPolicy,
    /// Windows as the user set them; resolved with `adaptive_window` in `build`.
    stream_window: Option<u32>,
    connection_window: Option<u32>,
    adaptive_window: Option<bool>,
}

/// Builds a [`Channel`] with non-default settings.
pub struct ChannelBuilder {
    target: String,
    config: ChannelConfig,
    connector: Option<Arc<dyn Connector>>,
    executor: Option<Arc<dyn Executor>>,
    resolver: Option<Arc<dyn Resolver>>,
    #[cfg(feature = "tls")]
    tls: Option<crate::transport::tls::ClientTlsConfig>,
}

impl fmt::Debug for ChannelBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChannelBuilder")
            .field("target", &self.target)
            .field("config", &self.config)
            .finish()
    }
}

impl ChannelBuilder {
    /// Max size of a received message (default 4 MiB).
    pub fn max_receive_message_size(mut self, bytes: usize) -> Self {
        self.config.max_recv_message_size = bytes;
        self
    }

    /// Max size of a sent message (default unlimited).
    pub fn max_send_message_size(mut self, bytes: usize) -> Self {
        self.config.max_send_message_size = bytes;
        self
    }

    /// Compresses request messages with `compression` on every call that does not set its own
    /// ([`CallOptions::compression`]); default [`Compression::Identity`] (none), as the gRPC
    /// compression spec asks. Responses are inflated whatever this says: every request
    /// advertises `grpc-accept-encoding: identity, deflate, gzip`.
    pub fn compression(mut self, compression: Compression) -> Self {
        self.config.compression = compression;
        self
    }

    /// Initial HTTP/2 stream window. Windows adapt to the measured bandwidth-delay product
    /// by default (starting at 64 KiB); setting a window pins both, as in grpc-go (the other
    /// keeps [`DEFAULT_STREAM_WINDOW`](crate::client::DEFAULT_STREAM_WINDOW) or
    /// [`DEFAULT_CONNECTION_WINDOW`](crate::client::DEFAULT_CONNECTION_WINDOW)).
    pub fn initial_stream_window_size(mut self, bytes: u32) -> Self {
        self.config.stream_window = Some(bytes);
        self
    }

    /// Initial HTTP/2 connection window; pins the windows like
    /// [`initial_stream_window_size`](Self::initial_stream_window_size).
    pub fn initial_connection_window_size(mut self, bytes: u32) -> Self {
        self.config.connection_window = Some(bytes);
        self
    }

    /// Whether windows grow from bandwidth-delay-product estimates, as grpc-go's do (default:
    /// yes unless a window size is set; `true` with sizes set grows from them).
    pub fn adaptive_window(mut self, adaptive: bool) -> Self {
        self.config.adaptive_window = Some(adaptive);
        self
    }

    /// Sends a keepalive PING after this long without a frame from the server (default:
    /// off, as in gRPC); a server that does not answer within the keepalive timeout is
    /// declared dead and its calls fail with UNAVAILABLE.
    pub fn keepalive_time(mut self, time: Duration) -> Self {
        self.config.conn.ping.keepalive_time = Some(time);
        self
    }

    /// How long a keepalive PING may go unanswered (default 20 s).
    pub fn keepalive_timeout(mut self, timeout: Duration) -> Self {
        self.config.conn.ping.keepalive_timeout = timeout;
        self
    }

    /// Whether keepalive PINGs go out while no call is open (default false).
    pub fn keepalive_permit_without_calls(mut self, permit: bool) -> Self {
        self.config.conn.ping.keepalive_permit_without_calls = permit;
        self
    }

    /// Largest HTTP/2 frame we accept (default 16 KiB).
    pub fn max_frame_size(mut self, bytes: u32) -> Self {
        self.config.conn.max_frame_size = bytes;
        self
    }

    /// Time allowed to establish a connection (default 20 s, the backoff spec's
    /// MIN_CONNECT_TIMEOUT).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.config.conn.connect_timeout = timeout;
        self
    }

    /// Whether to open another connection to an endpoint when every connection has reached
    /// the server's MAX_CONCURRENT_STREAMS (default true). Off, calls queue for a free stream.
    pub fn multiple_connections(mut self, enabled: bool) -> Self {
        self.config.conn.multi_connection = enabled;
        self
    }

    /// Cap on connections per endpoint when [`multiple_connections`](Self::multiple_connections)
    /// is on (default 16); at the cap calls queue for a free stream.
    pub fn max_connections_per_endpoint(mut self, connections: usize) -> Self {
        self.config.conn.max_connections_per_endpoint = connections;
        self
    }

    /// Reconnect backoff (default: gRPC's 1 s initial, ×1.6, ±20 % jitter, 120 s max).
    pub fn backoff(mut self, backoff: BackoffConfig) -> Self {
        self.config.conn.backoff = backoff;
        self
    }

    /// Closes connections after this long without calls (default 30 min); the next call
    /// reconnects.
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.config.idle_timeout = timeout;
        self
    }

    /// How often the target is resolved again while the channel has connections (default
    /// [`DEFAULT_DNS_REFRESH_INTERVAL`](crate::client::DEFAULT_DNS_REFRESH_INTERVAL), 30 s).
    /// An idle channel does not resolve; a failing endpoint also triggers a resolution, at
    /// most once per interval.
    pub fn resolve_interval(mut self, interval: Duration) -> Self {
        self.config.resolve_interval = interval;
        self
    }

    /// The load-balancing policy (default pick_first).
    pub fn lb_policy(mut self, policy: LbPolicy) -> Self {
        self.config.lb_policy = policy;
        self
    }

    /// Prepends an application name to the `user-agent` header.
    pub fn user_agent(mut self, prefix: &str) -> Self {
        self.config.user_agent = format!("{prefix} {}", headers::USER_AGENT);
        self
    }

    /// Runs background work (connection drivers, reconnects, DNS refresh) on `executor`
    /// (default: [`DefaultExecutor`]).
    pub fn executor(mut self, executor: impl Executor) -> Self {
        self.executor = Some(Arc::new(executor));
        self
    }

    /// Opens connections with `connector` (default: [`SocketConnector`], TCP and Unix sockets).
    pub fn connector(mut self, connector: impl Connector) -> Self {
        self.connector = Some(Arc::new(connector));
        self
    }

    /// Takes the endpoint list from `resolver` instead of resolving the target ("lookaside").
    pub fn resolver(mut self, resolver: impl Resolver) -> Self {
        self.resolver = Some(Arc::new(resolver));
        self
    }

    /// Connects over TLS with these settings, whatever the target form (an `http://` target
    /// is refused at build). `https://` targets use TLS without this, trusting the system's
    /// root certificates. TLS runs over the [connector](Self::connector)'s streams.
    #[cfg(feature = "tls")]
    pub fn tls(mut self, config: crate::transport::tls::ClientTlsConfig) -> Self {
        self.tls = Some(config);
        self
    }

    /// Validates the target and settings and builds the channel; nothing connects yet.
    pub fn build(mut self) -> Result<Channel, Status> {
        #[cfg_attr(not(feature = "tls"), expect(unused_mut, reason = "TLS may adjust it"))]
        let mut target = Target::parse(&self.target)?;
        let c = &mut self.config;
        c.conn.ping.windows =
            WindowConfig::resolve(c.stream_window, c.connection_window, c.adaptive_window);
        let windows = c.conn.ping.windows;
        check_http2_settings(windows.stream, windows.connection, c.conn.max_frame_size)?;
        if c.conn.ping.keepalive_time.is_some_and(|t| t.is_zero())
            || c.conn.ping.keepalive_timeout.is_zero()
        {
            return Err(Status::invalid_argument(
                "keepalive time and timeout must be above zero",
            ));
        }
        let c = &self.config;
        c.conn.backoff.check()?;
        if c.conn.max_connections_per_endpoint == 0 {
            return Err(Status::invalid_argument(
                "max connections per endpoint must be at least 1",
            ));
        }
        if http::HeaderValue::from_str(&c.user_agent).is_err() {
            return Err(Status::invalid_argument(
                "user agent must be printable ASCII",
            ));
        }
        let resolver = self.resolver.unwrap_or_else(|| resolver_for(&target));
        let connector = self.connector.unwrap_or_else(|| Arc::new(SocketConnector));
        #[cfg(feature = "tls")]
        let connector =
            crate::transport::tls::secure_channel(&mut target, self.tls.as_ref(), connector)?;
        let executor = self.executor.unwrap_or_else(|| Arc::new(DefaultExecutor));
        let inner = Arc::new_cyclic(|weak: &Weak<ChannelInner>| {
            let weak = weak.clone();
            let env = Arc::new(Env {
                config: self.config.conn.clone(),
                connector,
                executor,
                on_state_change: Box::new(move || {
                    if let Some(inner) = weak.upgrade() {
                        inner.endpoint_state_changed();
                    }
                }),
            });
            ChannelInner {
                target,
                balancer: Balancer::new(self.config.lb_policy.clone()),
                config: self.config,
                env,
                resolver,
                endpoints: Mutex::new(Endpoints::default()),
                resolved: Event::new(),
                state: StateCell::new(ConnectivityState::Idle),
                counters: Arc::new(Counters::default()),
                created: Instant::now(),
                last_call: AtomicU64::new(0),
                idle_watch: AtomicBool::new(false),
                refresh_watch: AtomicBool::new(false),
                state_update: Mutex::new(()),
            }
        });
        Ok(Channel { inner })
    }
}

impl fmt::Debug for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Channel")
            .field("target", &self.inner.target.authority)
            .finish_non_exhaustive()
    }
}

impl ChannelInner {
    fn endpoints(&self) -> MutexGuard<'_, Endpoints> {
        self.endpoints.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Recomputes the channel's state from its endpoints': READY if any is, else CONNECTING,
    /// else TRANSIENT_FAILURE, else IDLE.
    fn endpoint_state_changed(self: &Arc<Self>) {
        let _update = self.state_update.lock().unwrap_or_else(|e| e.into_inner());
        let (list, shut_down) = {
            let eps = self.endpoints();
            (eps.list.clone(), eps.shut_down)
        };
        if shut_down {
            return;
        }
        let states: Vec<_> = list.iter().map(|s| s.state()).collect();
        let state = aggregate(&states);
        if state == ConnectivityState::TransientFailure {
            // An endpoint failing may mean the addresses changed: refresh them (rate-limited).
            let stale = self
                .endpoints()
                .resolved_at
                .is_some_and(|at| at.elapsed() >= self.config.resolve_interval);
            if stale {
                self.start_resolution();
            }
        }
        if state == ConnectivityState::Ready {
            self.watch_idle();
            self.watch_resolution();
        }
        self.state.set(state);
    }

    fn start_resolution(self: &Arc<Self>) {
        {
            let mut eps = self.endpoints();
            if eps.resolving || eps.shut_down {
                return;
            }
            eps.resolving = true;
        }
        let weak = Arc::downgrade(self);
        let resolve = self.resolver.resolve();
        self.env.executor.spawn(Box::pin(async move {
            let result = resolve.await;
            if let Some(inner) = weak.upgrade() {
                inner.resolution_done(result);
            }
        }));
    }

    fn resolution_done(self: &Arc<Self>, result: Result<Vec<Address>, Status>) {
        let mut eps = self.endpoints();
        eps.resolving = false;
        eps.resolved_at = Some(Instant::now());
        let mut gone = Vec::new();
        match result {
            Ok(addresses) if !addresses.is_empty() => {
                eps.error = None;
                let old = eps.list.clone();
                let list: Vec<_> = addresses
                    .into_iter()
                    .map(|a| {
                        old.iter()
                            .find(|s| *s.address() == a)
                            .cloned()
                            .unwrap_or_else(|| Subchannel::new(a, self.env.clone()))
                    })
                    .collect();
                gone = old
                    .iter()
                    .filter(|s| !list.iter().any(|n| Arc::ptr_eq(n, s)))
                    .cloned()
                    .collect();
                eps.list = Arc::new(list);
            }
            Ok(_) => {
                eps.error = Some(Status::unavailable(format!(
                    "{} resolved to no addresses",
                    self.target.authority
                )))
            }
            Err(status) => eps.error = Some(status),
        }
        if eps.error.is_some() && eps.list.is_empty() {
            // Nothing to use: the next call tries again rather than waiting out the refresh.
            eps.resolved_at = None;
        }
        drop(eps);
        // Endpoints no longer resolved: their calls finish, then their connections close.
        for sub in gone {
            sub.shutdown();
        }
        self.resolved.notify(usize::MAX);
        self.endpoint_state_changed();
    }

    /// The current endpoints, resolving first if there are none yet (and refreshing them in
    /// the background when they are older than the DNS refresh interval).
    async fn resolved_endpoints(self: &Arc<Self>) -> Result<Arc<Vec<Arc<Subchannel>>>, Status> {
        let mut waited = false;
        loop {
            let listener = self.resolved.listen();
            let (list, error, stale, shut_down) = {
                let eps = self.endpoints();
                let stale = eps
                    .resolved_at
                    .is_none_or(|at| at.elapsed() >= self.config.resolve_interval);
                (eps.list.clone(), eps.error.clone(), stale, eps.shut_down)
            };
            if shut_down {
                return Err(Status::unavailable("channel is shut down"));
            }
            if stale {
                self.start_resolution();
            }
            if !list.is_empty() {
                return Ok(list);
            }
            if let (true, Some(error)) = (waited, error) {
                return Err(error);
            }
            listener.await;
            waited = true;
        }
    }

    /// Picks an endpoint and takes a stream slot on it. An endpoint that cannot be reached
    /// is passed over for the next one the policy picks (no stream was started), until every
    /// endpoint was tried.
    async fn pick(self: &Arc<Self>, wait_for_ready: bool) -> Result<StreamSlot, Status> {
        let list = self.resolved_endpoints().await?;
        if self.balancer.connect_all() {
            for sub in list.iter().filter(|s| s.state() == ConnectivityState::Idle) {
                sub.request_connection();
            }
        }
        let mut tried = 0;
        loop {
            let Some(index) = self.balancer.pick(&list) else {
                return Err(Status::unavailable("the load balancer picked no endpoint"));
            };
            tried += 1;
            match list[index].acquire(wait_for_ready).await {
                Err(status) if tried < list.len() && status.code() == crate::Code::Unavailable => {
                    continue;
                }
                result => return result,
            }
        }
    }

    /// Starts the idle watch if it is not running.
    fn watch_idle(self: &Arc<Self>) {
        if self.idle_watch.swap(true, Ordering::AcqRel) {
            return;
        }
        let weak = Arc::downgrade(self);
        let timeout = self.config.idle_timeout;
        self.env.executor.spawn(Box::pin(async move {
            let mut wait = timeout;
            loop {
                async_io::Timer::after(wait).await;
                let Some(inner) = weak.upgrade() else { return };
                let list = inner.endpoints().list.clone();
                let busy = list.iter().any(|s| s.active_streams() > 0);
                let since = inner.since_last_call();
                if !busy && since >= timeout {
                    inner.idle_watch.store(false, Ordering::Release);
                    for sub in list.iter() {
                        sub.go_idle();
                    }
                    return;
                }
                wait = if busy { timeout } else { timeout - since };
            }
        }));
    }

    /// Starts the periodic re-resolution if it is not running. It runs until the channel has
    /// had no call for its idle timeout (an idle channel sends no DNS queries), is shut down,
    /// or is dropped.
    fn watch_resolution(self: &Arc<Self>) {
        if self.refresh_watch.swap(true, Ordering::AcqRel) {
            return;
        }
        let weak = Arc::downgrade(self);
        let interval = self.config.resolve_interval;
        self.env.executor.spawn(Box::pin(async move {
            loop {
                async_io::Timer::after(interval).await;
                let Some(inner) = weak.upgrade() else { return };
                let (busy, shut_down, due) = {
                    let eps = inner.endpoints();
                    let busy = eps.list.iter().any(|s| s.active_streams() > 0);
                    let due = eps.resolved_at.is_none_or(|at| at.elapsed() >= interval);
                    (busy, eps.shut_down, due)
                };
                let idle = !busy && inner.since_last_call() >= inner.config.idle_timeout;
                if idle || shut_down {
                    inner.refresh_watch.store(false, Ordering::Release);
                    return;
                }
                if due {
                    inner.start_resolution();
                }
            }
        }));
    }

    fn since_last_call(&self) -> Duration {
        let now = self.created.elapsed().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(self.last_call.load(Ordering::Relaxed)))
    }

    fn touch(&self) {
        self.last_call
            .store(self.created.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
}

fn aggregate(states: &[ConnectivityState]) -> ConnectivityState {
    use ConnectivityState::*;
    for wanted in [Ready, Connecting, TransientFailure, Idle] {
        if states.contains(&wanted) {
            return wanted;
        }
    }
    if states.is_empty() { Idle } else { Shutdown }
}

impl Channel {
    /// A channel with default settings; fails on a malformed target.
    pub fn new(target: &str) -> Result<Channel, Status> {
        Channel::builder(target).build()
    }

    /// A builder for a channel to `target`: `http://host:port`, `https://host:port` (TLS),
    /// `host:port`, `dns:///host:port`, `ipv4:a:p,b:p`, `ipv6:[a]:p`, `unix:path`,
    /// `unix:///path`, `unix-abstract:name`.
    pub fn builder(target: &str) -> ChannelBuilder {
        ChannelBuilder {
            target: target.to_string(),
            config: ChannelConfig {
                max_recv_message_size: DEFAULT_MAX_RECV_MESSAGE_SIZE,
                max_send_message_size: DEFAULT_MAX_SEND_MESSAGE_SIZE,
                compression: Compression::Identity,
                user_agent: headers::USER_AGENT.to_string(),
                idle_timeout: DEFAULT_IDLE_TIMEOUT,
                resolve_interval: DEFAULT_DNS_REFRESH_INTERVAL,
                lb_policy: LbPolicy::default(),
                stream_window: None,
                connection_window: None,
                adaptive_window: None,
                conn: ConnConfig {
                    ping: PingConfig::client(),
                    max_frame_size: DEFAULT_MAX_FRAME_SIZE,
                    connect_timeout: DEFAULT_CONNECT_TIMEOUT,
                    multi_connection: true,
                    max_connections_per_endpoint: DEFAULT_MAX_CONNECTIONS_PER_ENDPOINT,
                    backoff: BackoffConfig::default(),
                },
            },
            connector: None,
            executor: None,
            resolver: None,
            #[cfg(feature = "tls")]
            tls: None,
        }
    }

    /// Connects now instead of on the first call: resolves the target, starts connecting
    /// (every endpoint under round_robin) and waits for READY. Fails with the connection
    /// error if the channel goes to TRANSIENT_FAILURE first.
    pub async fn connect(&self) -> Result<(), Status> {
        let inner = &self.inner;
        let list = inner.resolved_endpoints().await?;
        if inner.balancer.connect_all() {
            list.iter().for_each(|s| s.request_connection());
        } else if let Some(i) = inner.balancer.pick(&list) {
            list[i].request_connection();
        }
        loop {
            match inner.state.get() {
                ConnectivityState::Ready => return Ok(()),
                ConnectivityState::Shutdown => {
                    return Err(Status::unavailable("channel is shut down"));
                }
                ConnectivityState::TransientFailure => {
                    let why = list
                        .iter()
                        .map(|s| s.address().to_string())
                        .collect::<Vec<_>>()
                        .join(", ");
                    return Err(Status::unavailable(format!("could not connect to {why}")));
                }
                from => {
                    inner.state.changed_from(from).await;
                }
            }
        }
    }

    /// The channel's connectivity state now.
    pub fn state(&self) -> ConnectivityState {
        self.inner.state.get()
    }

    /// Waits until the state differs from `from` and returns the new state.
    pub async fn wait_for_state_change(&self, from: ConnectivityState) -> ConnectivityState {
        self.inner.state.changed_from(from).await
    }

    /// A snapshot of the channel's statistics (cheap: a few atomics and one lock per
    /// endpoint).
    pub fn stats(&self) -> ChannelStats {
        let (started, succeeded, failed) = self.inner.counters.read();
        let list = self.inner.endpoints().list.clone();
        let endpoints: Vec<_> = list.iter().map(|s| s.stats()).collect();
        ChannelStats {
            calls_started: started,
            calls_succeeded: succeeded,
            calls_failed: failed,
            active_streams: endpoints.iter().map(|e| e.active_streams).sum(),
            state: self.inner.state.get(),
            endpoints,
        }
    }

    /// Shuts the channel down: waiting calls fail, connections close once their calls end,
    /// and new calls fail with UNAVAILABLE. Every clone is affected.
    pub fn shutdown(&self) {
        let list = {
            let mut eps = self.inner.endpoints();
            eps.shut_down = true;
            std::mem::take(&mut eps.list)
        };
        for sub in list.iter() {
            sub.shutdown();
        }
        let _update = self
            .inner
            .state_update
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        self.inner.state.set(ConnectivityState::Shutdown);
        self.inner.resolved.notify(usize::MAX);
    }

    pub(crate) fn config(&self) -> &ChannelConfig {
        &self.inner.config
    }

    /// Starts a call: opens a stream, sends `first` (and ends the request when `end`). The
    /// call keeps `options` and what it sends until the response headers arrive, so a stream
    /// the server never processed can be retried once, transparently.
    pub(crate) async fn start(
        &self,
        path: &str,
        options: CallOptions,
        first: Option<Framed>,
        end: bool,
    ) -> Result<(Arc<CallShared>, RawStreaming), Status> {
        let inner = &self.inner;
        inner.counters.call_started();
        inner.touch();
        let (slot, response, stream) = match self
            .open_stream(path, &options, end && first.is_none())
            .await
        {
            Ok(opened) => opened,
            Err(status) => {
                inner.counters.call_ended(false);
                return Err(status);
            }
        };
        let config = &inner.config;
        let limits = call::Limits {
            deadline: options.deadline,
            max_recv: options
                .max_recv_message_size
                .unwrap_or(config.max_recv_message_size),
            max_send: options
                .max_send_message_size
                .unwrap_or(config.max_send_message_size),
        };
        let tracker = call::Tracker::new(slot, inner.counters.clone());
        let retry = call::RetryPlan {
            channel: self.clone(),
            path: path.into(),
            options,
        };
        Ok(call::open(
            response, stream, first, end, limits, tracker, retry,
        ))
    }

    /// Picks a connection and opens a stream on it (request headers sent, ending the request
    /// when `end`), passing over connections that turn out to be going away.
    pub(crate) async fn open_stream(
        &self,
        path: &str,
        options: &CallOptions,
        end: bool,
    ) -> Result<(StreamSlot, H2ResponseFuture, SendStream<Bytes>), Status> {
        let deadline = options.deadline;
        let mut request = Some(self.request(path, options)?);
        if deadline.is_some_and(|d| d <= Instant::now()) {
            return Err(Status::deadline_exceeded(
                "deadline exceeded before the call started",
            ));
        }
        // A connection that is going away never started our stream: try another one.
        let mut attempts = 0;
        loop {
            attempts += 1;
            let slot = with_deadline(deadline, self.inner.pick(options.wait_for_ready)).await??;
            let ready = with_deadline(deadline, slot.sender().ready()).await?;
            let mut send = match ready {
                Ok(send) => send,
                Err(err) => {
                    slot.connection_failed();
                    if attempts < MAX_UNSTARTED_ATTEMPTS {
                        continue;
                    }
                    return Err(Status::from_h2(err));
                }
            };
            let req = match request.take() {
                Some(req) => req,
                None => self.request(path, options)?,
            };
            match send.send_request(req, end) {
                Ok((response, stream)) => return Ok((slot, response, stream)),
                Err(err) => {
                    slot.connection_failed();
                    if attempts >= MAX_UNSTARTED_ATTEMPTS {
                        return Err(Status::from_h2(err));
                    }
                }
            }
        }
    }

    fn request(&self, path: &str, options: &CallOptions) -> Result<Request<()>, Status> {
        let target = &self.inner.target;
        if !path.starts_with('/') {
            return Err(Status::internal(format!(
                "invalid method path {path:?}: must start with '/'"
            )));
        }
        let uri = Uri::builder()
            .scheme(target.scheme.clone())
            .authority(target.authority.clone())
            .path_and_query(path)
            .build()
            .map_err(|e| Status::internal(format!("invalid method path {path:?}: {e}")))?;
        let mut headers = HeaderMap::with_capacity(4 + options.metadata.len());
        headers.insert(http::header::CONTENT_TYPE, CONTENT_TYPE_GRPC);
        headers.insert(http::header::TE, http::HeaderValue::from_static("trailers"));
        headers.insert(
            http::header::USER_AGENT,
            http::HeaderValue::from_str(&self.inner.config.user_agent).expect("checked in build"),
        );
        if let Some(deadline) = options.deadline {
            let left = deadline.saturating_duration_since(Instant::now());
            headers.insert(headers::GRPC_TIMEOUT, headers::encode_timeout(left));
        }
        let compression = options.compression.unwrap_or(self.inner.config.compression);
        headers::write_encoding(compression, &mut headers);
        options.metadata.write_to(&mut headers);
        let mut request = Request::new(());
        *request.method_mut() = Method::POST;
        *request.uri_mut() = uri;
        *request.version_mut() = Version::HTTP_2;
        *request.headers_mut() = headers;
        Ok(request)
    }

    /// A unary call with raw bytes.
    pub async fn unary(
        &self,
        path: &str,
        message: Bytes,
        options: CallOptions,
    ) -> Result<crate::Response<Bytes>, Status> {
        self.typed(crate::codec::BytesCodec)
            .unary(path, &message, options)
            .await
    }

    /// A server-streaming call with raw bytes.
    pub async fn server_streaming(
        &self,
        path: &str,
        message: Bytes,
        options: CallOptions,
    ) -> Result<super::Streaming<Bytes>, Status> {
        self.typed(crate::codec::BytesCodec)
            .server_streaming(path, &message, options)
            .await
    }

    /// A client-streaming call with raw bytes: feed the sender, then await the response.
    pub async fn client_streaming(
        &self,
        path: &str,
        options: CallOptions,
    ) -> Result<(super::Sender<Bytes>, super::ResponseFuture<Bytes>), Status> {
        self.typed(crate::codec::BytesCodec)
            .client_streaming(path, options)
            .await
    }

    /// A bidirectional-streaming call with raw bytes.
    pub async fn bidi_streaming(
        &self,
        path: &str,
        options: CallOptions,
    ) -> Result<(super::Sender<Bytes>, super::Streaming<Bytes>), Status> {
        self.typed(crate::codec::BytesCodec)
            .bidi_streaming(path, options)
            .await
    }

    /// A typed client over this channel that encodes and decodes with `codec`.
    pub fn typed<C: crate::Codec>(&self, codec: C) -> super::Client<C> {
        super::Client::new(self.clone(), codec)
    }
}

/// Connections tried for one call when each turns out to be going away before the stream
/// starts (the stream never reached a server, so trying again is safe).
const MAX_UNSTARTED_ATTEMPTS: usize = 3;
