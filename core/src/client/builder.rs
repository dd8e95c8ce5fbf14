//! [`ChannelBuilder`]: a channel's settings, checked and turned into a [`Channel`].

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use event_listener::Event;

use super::backoff::BackoffConfig;
use super::balance::{Balancer, LbPolicy};
use super::channel::{Channel, ChannelInner};
use super::endpoints::Endpoints;
use super::options::{
    ConnConfig, DEFAULT_CONNECT_TIMEOUT, DEFAULT_IDLE_TIMEOUT,
    DEFAULT_MAX_CONNECTIONS_PER_ENDPOINT, DEFAULT_MAX_FRAME_SIZE, check_http2_settings,
};
use super::resolve::{DEFAULT_DNS_REFRESH_INTERVAL, Resolver, resolver_for};
use super::state::{ConnectivityState, StateCell};
use super::stats::Counters;
use super::subchannel::Env;
use super::target::Target;
use crate::codec::Compression;
use crate::codec::frame::{DEFAULT_MAX_RECV_MESSAGE_SIZE, DEFAULT_MAX_SEND_MESSAGE_SIZE};
use crate::proto::headers::{self};
use crate::proto::ping::{PingConfig, WindowConfig};
use crate::rt::{DefaultExecutor, Executor};
use crate::status::Status;
use crate::transport::{Connector, SocketConnector};

#[derive(Debug, Clone)]
/// A channel's settings as its builder collected them.
pub(crate) struct ChannelConfig {
    pub(crate) max_recv_message_size: usize,
    pub(crate) max_send_message_size: usize,
    /// Compression of request messages unless a call says otherwise.
    pub(crate) compression: Compression,
    pub(crate) user_agent: String,
    pub(crate) idle_timeout: Duration,
    pub(crate) resolve_interval: Duration,
    pub(crate) conn: ConnConfig,
    pub(crate) lb_policy: LbPolicy,
    /// Windows as the user set them; resolved with `adaptive_window` in `build`.
    pub(crate) stream_window: Option<u32>,
    pub(crate) connection_window: Option<u32>,
    pub(crate) adaptive_window: Option<bool>,
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
    /// A builder for `target` with every setting at its default.
    pub(super) fn new(target: &str) -> ChannelBuilder {
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
