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
use super::health::HealthCheck;
use super::options::ConnConfig;
use super::resolve::{Resolver, resolver_for};
use super::retry::RetryBudget;
use super::service_config::ServiceConfig;
use super::settings::ChannelSettings;
use super::state::{ConnectivityState, StateCell};
use super::stats::Counters;
use super::subchannel::Env;
use super::target::Target;
use crate::codec::Compression;
use crate::error::{Error, Kind};
use crate::intercept::{Chain, ClientInterceptor};
use crate::metrics::Metrics;
use crate::proto::ping::PingConfig;
use crate::rt::{DefaultExecutor, Executor};
use crate::status::Status;
use crate::transport::{Connector, SocketConnector};

/// A channel's settings resolved for use: what its calls, connections and watches read.
#[derive(Debug, Clone)]
pub(crate) struct ChannelConfig {
    pub(crate) max_recv_message_size: usize,
    pub(crate) max_send_message_size: usize,
    /// Compression of request messages unless a call says otherwise.
    pub(crate) compression: Compression,
    /// The whole `user-agent` header.
    pub(crate) user_agent: http::HeaderValue,
    pub(crate) idle_timeout: Duration,
    pub(crate) resolve_interval: Duration,
    pub(crate) min_resolve_interval: Duration,
    pub(crate) conn: ConnConfig,
    pub(crate) lb_policy: LbPolicy,
    /// Shuffle each resolved address list (pick_first's `shuffleAddressList`).
    pub(crate) shuffle_addresses: bool,
    /// The parsed default service config.
    pub(crate) service_config: Option<Arc<ServiceConfig>>,
    /// Whether retry and hedging policies apply.
    pub(crate) retries: bool,
    /// Whether `healthCheckConfig` turns on client-side health checking.
    pub(crate) health_checking: bool,
    pub(crate) per_call_retry_buffer: usize,
    pub(crate) retry_buffer: usize,
}

impl ChannelConfig {
    /// Checks `settings` and resolves them (windows, the user-agent header).
    fn new(settings: &ChannelSettings) -> Result<ChannelConfig, Status> {
        settings.check()?;
        let user_agent = http::HeaderValue::from_str(&settings.user_agent_header())
            .map_err(|_| Status::invalid_argument("user agent must be printable ASCII"))?;
        let service_config = settings
            .service_config
            .as_deref()
            .map(ServiceConfig::parse)
            .transpose()?
            .map(Arc::new);
        // An explicit policy other than the default wins over the service config's.
        let lb_policy = match (&settings.lb_policy, &service_config) {
            (LbPolicy::PickFirst, Some(config)) => config
                .lb_policy
                .clone()
                .unwrap_or_else(|| settings.lb_policy.clone()),
            (policy, _) => policy.clone(),
        };
        let shuffle_addresses = lb_policy == LbPolicy::PickFirst
            && service_config
                .as_ref()
                .is_some_and(|config| config.shuffle_address_list);
        Ok(ChannelConfig {
            max_recv_message_size: settings.max_receive_message_size,
            max_send_message_size: settings.max_send_message_size,
            compression: settings.compression,
            user_agent,
            idle_timeout: settings.idle_timeout,
            resolve_interval: settings.resolve_interval,
            min_resolve_interval: settings.min_resolve_interval,
            lb_policy,
            shuffle_addresses,
            service_config,
            retries: settings.enable_retries,
            health_checking: settings.health_checking,
            per_call_retry_buffer: settings.per_call_retry_buffer_size,
            retry_buffer: settings.retry_buffer_size,
            conn: ConnConfig {
                ping: PingConfig {
                    keepalive_time: settings.keepalive_time,
                    keepalive_timeout: settings.keepalive_timeout,
                    keepalive_permit_without_calls: settings.keepalive_permit_without_calls,
                    windows: settings.http2.windows(),
                    policy: None,
                },
                max_frame_size: settings.http2.max_frame_size,
                connect_timeout: settings.connect_timeout,
                multi_connection: settings.multiple_connections,
                max_connections_per_endpoint: settings.max_connections_per_endpoint,
                backoff: settings.backoff,
            },
        })
    }
}

/// Builds a [`Channel`] with non-default settings.
pub struct ChannelBuilder {
    target: String,
    settings: ChannelSettings,
    connector: Option<Arc<dyn Connector>>,
    executor: Option<Arc<dyn Executor>>,
    resolver: Option<Arc<dyn Resolver>>,
    interceptors: Vec<Arc<dyn ClientInterceptor>>,
    metrics: Option<Arc<dyn Metrics>>,
}

impl fmt::Debug for ChannelBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChannelBuilder")
            .field("target", &self.target)
            .field("settings", &self.settings)
            .finish()
    }
}

impl ChannelBuilder {
    /// A builder for `target` with every setting at its default.
    pub(super) fn new(target: &str) -> ChannelBuilder {
        ChannelBuilder {
            target: target.to_string(),
            settings: ChannelSettings::default(),
            connector: None,
            executor: None,
            resolver: None,
            interceptors: Vec::new(),
            metrics: None,
        }
    }

    /// Replaces every setting with `settings` (objects set with
    /// [`executor`](Self::executor), [`connector`](Self::connector) and
    /// [`resolver`](Self::resolver) stay).
    pub fn settings(mut self, settings: ChannelSettings) -> Self {
        self.settings = settings;
        self
    }

    /// The settings so far.
    pub fn current_settings(&self) -> &ChannelSettings {
        &self.settings
    }

    /// Max size of a received message (default 4 MiB).
    pub fn max_receive_message_size(mut self, bytes: usize) -> Self {
        self.settings.max_receive_message_size = bytes;
        self
    }

    /// Max size of a sent message (default unlimited).
    pub fn max_send_message_size(mut self, bytes: usize) -> Self {
        self.settings.max_send_message_size = bytes;
        self
    }

    /// Compresses request messages with `compression` on every call that does not set its own
    /// ([`CallOptions::compression`](crate::CallOptions::compression)); default [`Compression::Identity`] (none), as the gRPC
    /// compression spec asks. Responses are inflated whatever this says: every request
    /// advertises `grpc-accept-encoding: identity, deflate, gzip`.
    pub fn compression(mut self, compression: Compression) -> Self {
        self.settings.compression = compression;
        self
    }

    /// Initial HTTP/2 stream window. Windows adapt to the measured bandwidth-delay product
    /// by default (starting at 64 KiB); setting a window pins both, as in grpc-go (the other
    /// keeps [`DEFAULT_STREAM_WINDOW`](crate::client::DEFAULT_STREAM_WINDOW) or
    /// [`DEFAULT_CONNECTION_WINDOW`](crate::client::DEFAULT_CONNECTION_WINDOW)).
    pub fn initial_stream_window_size(mut self, bytes: u32) -> Self {
        self.settings.http2.initial_stream_window_size = Some(bytes);
        self
    }

    /// Initial HTTP/2 connection window; pins the windows like
    /// [`initial_stream_window_size`](Self::initial_stream_window_size).
    pub fn initial_connection_window_size(mut self, bytes: u32) -> Self {
        self.settings.http2.initial_connection_window_size = Some(bytes);
        self
    }

    /// Whether windows grow from bandwidth-delay-product estimates, as grpc-go's do (default:
    /// yes unless a window size is set; `true` with sizes set grows from them).
    pub fn adaptive_window(mut self, adaptive: bool) -> Self {
        self.settings.http2.adaptive_window = Some(adaptive);
        self
    }

    /// Sends a keepalive PING after this long without a frame from the server (default:
    /// off, as in gRPC); a server that does not answer within the keepalive timeout is
    /// declared dead and its calls fail with UNAVAILABLE.
    pub fn keepalive_time(mut self, time: Duration) -> Self {
        self.settings.keepalive_time = Some(time);
        self
    }

    /// How long a keepalive PING may go unanswered (default 20 s).
    pub fn keepalive_timeout(mut self, timeout: Duration) -> Self {
        self.settings.keepalive_timeout = timeout;
        self
    }

    /// Whether keepalive PINGs go out while no call is open (default false).
    pub fn keepalive_permit_without_calls(mut self, permit: bool) -> Self {
        self.settings.keepalive_permit_without_calls = permit;
        self
    }

    /// Largest HTTP/2 frame we accept (default 16 KiB).
    pub fn max_frame_size(mut self, bytes: u32) -> Self {
        self.settings.http2.max_frame_size = bytes;
        self
    }

    /// Time allowed to establish a connection (default 20 s, the backoff spec's
    /// MIN_CONNECT_TIMEOUT).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.settings.connect_timeout = timeout;
        self
    }

    /// Whether to open another connection to an endpoint when every connection has reached
    /// the server's MAX_CONCURRENT_STREAMS (default true). Off, calls queue for a free stream.
    pub fn multiple_connections(mut self, enabled: bool) -> Self {
        self.settings.multiple_connections = enabled;
        self
    }

    /// Cap on connections per endpoint when [`multiple_connections`](Self::multiple_connections)
    /// is on (default 16); at the cap calls queue for a free stream.
    pub fn max_connections_per_endpoint(mut self, connections: usize) -> Self {
        self.settings.max_connections_per_endpoint = connections;
        self
    }

    /// Reconnect backoff (default: gRPC's 1 s initial, ×1.6, ±20 % jitter, 120 s max).
    pub fn backoff(mut self, backoff: BackoffConfig) -> Self {
        self.settings.backoff = backoff;
        self
    }

    /// Closes connections after this long without calls (default 30 min); the next call
    /// reconnects.
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.settings.idle_timeout = timeout;
        self
    }

    /// How often the target is resolved again while the channel has connections (default
    /// [`DEFAULT_DNS_REFRESH_INTERVAL`](crate::client::DEFAULT_DNS_REFRESH_INTERVAL), 30 s).
    /// An idle channel does not resolve. A failing endpoint and a server's GOAWAY also ask
    /// for a resolution, rate-limited by [`min_resolve_interval`](Self::min_resolve_interval).
    pub fn resolve_interval(mut self, interval: Duration) -> Self {
        self.settings.resolve_interval = interval;
        self
    }

    /// The least time between a resolution and the next one asked for by a failing endpoint
    /// or a server's GOAWAY (default 30 s, as C-core's
    /// `grpc.dns_min_time_between_resolutions_ms`): one asked for sooner waits until then.
    pub fn min_resolve_interval(mut self, interval: Duration) -> Self {
        self.settings.min_resolve_interval = interval;
        self
    }

    /// The load-balancing policy (default pick_first; left there, the service config's
    /// `loadBalancingConfig` decides if it names one).
    pub fn lb_policy(mut self, policy: LbPolicy) -> Self {
        self.settings.lb_policy = policy;
        self
    }

    /// The default service config, in gRPC's JSON form (see [`ChannelSettings::service_config`]):
    /// per-method timeouts, wait-for-ready, size limits, retry and hedging policies, retry
    /// throttling and the balancing policy. What a call's options set wins over it. A
    /// malformed config fails [`build`](Self::build) with an error naming the field.
    pub fn default_service_config(mut self, json: &str) -> Self {
        self.settings.service_config = Some(json.to_string());
        self
    }

    /// Whether the service config's retry and hedging policies apply (default true).
    pub fn enable_retries(mut self, enable: bool) -> Self {
        self.settings.enable_retries = enable;
        self
    }

    /// Whether the service config's `healthCheckConfig` turns on client-side health checking
    /// under round_robin (default true; gRFC A17's channel setting to turn it off whatever the
    /// service config says).
    pub fn health_checking(mut self, enable: bool) -> Self {
        self.settings.health_checking = enable;
        self
    }

    /// Request bytes kept for retries: per call (default 256 KiB) and for the whole channel
    /// (default 16 MiB). A call that would keep more commits to its current attempt.
    pub fn retry_buffer_sizes(mut self, per_call: usize, per_channel: usize) -> Self {
        self.settings.per_call_retry_buffer_size = per_call;
        self.settings.retry_buffer_size = per_channel;
        self
    }

    /// Prepends an application name to the `user-agent` header.
    pub fn user_agent(mut self, prefix: &str) -> Self {
        self.settings.user_agent = Some(prefix.to_string());
        self
    }

    /// Sends `authority` as every call's `:authority` instead of the target's, as grpcio's
    /// `grpc.default_authority` (to reach a virtual host through an IP address or a proxy).
    /// With TLS the server's certificate is checked against it too, unless the TLS config
    /// names a server. A malformed authority fails [`build`](Self::build) with
    /// INVALID_ARGUMENT.
    pub fn authority(mut self, authority: &str) -> Self {
        self.settings.authority = Some(authority.to_string());
        self
    }

    /// Reports every call's and attempt's measurements to `metrics` (see
    /// [`crate::metrics`]).
    pub fn metrics(mut self, metrics: impl Metrics) -> Self {
        self.metrics = Some(Arc::new(metrics));
        self
    }

    /// Adds an interceptor to every call of the channel, after those added before (see
    /// [`crate::intercept`]).
    pub fn interceptor(mut self, interceptor: impl ClientInterceptor) -> Self {
        self.interceptors.push(Arc::new(interceptor));
        self
    }

    /// Runs background work (connection drivers, reconnects, DNS refreshes) on `executor`
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
        self.settings.tls = Some(config);
        self
    }

    /// Validates the target and settings and builds the channel; nothing connects yet. A bad
    /// target or setting is a configuration error ([`Error::is_config`]) whose source is the
    /// INVALID_ARGUMENT status naming it.
    pub fn build(self) -> Result<Channel, Error> {
        self.try_build()
            .map_err(|status| Error::from_status(Kind::Config, status))
    }

    fn try_build(self) -> Result<Channel, Status> {
        let mut target = Target::parse(&self.target)?;
        let authority = self
            .settings
            .authority
            .as_deref()
            .map(|a| {
                a.parse::<http::uri::Authority>().map_err(|_| {
                    Status::invalid_argument(format!(
                        "invalid authority {a:?}: expected host[:port]"
                    ))
                })
            })
            .transpose()?;
        if let Some(authority) = &authority {
            target.authority = authority.clone();
        }
        let config = ChannelConfig::new(&self.settings)?;
        let resolver = self.resolver.unwrap_or_else(|| resolver_for(&target));
        let connector = self.connector.unwrap_or_else(|| Arc::new(SocketConnector));
        #[cfg(feature = "tls")]
        let connector = crate::transport::tls::secure_channel(
            &self.target,
            &mut target,
            self.settings.tls.as_ref(),
            connector,
        )?;
        // The given authority wins over a TLS server name's for `:authority`.
        if let Some(authority) = authority {
            target.authority = authority;
        }
        let executor = self.executor.unwrap_or_else(|| Arc::new(DefaultExecutor));
        let throttling = config.service_config.as_ref().and_then(|sc| sc.throttling);
        let retry_budget = Arc::new(RetryBudget::new(
            config.per_call_retry_buffer,
            config.retry_buffer,
            throttling.filter(|_| config.retries),
        ));
        let health = health_check(&config, &target)?;
        let inner = Arc::new_cyclic(|weak: &Weak<ChannelInner>| {
            let (weak, goaway_weak) = (weak.clone(), weak.clone());
            let env = Arc::new(Env {
                config: config.conn.clone(),
                connector,
                executor,
                on_state_change: Box::new(move || {
                    if let Some(inner) = weak.upgrade() {
                        inner.endpoint_state_changed();
                    }
                }),
                on_goaway: Box::new(move || {
                    if let Some(inner) = goaway_weak.upgrade() {
                        inner.request_resolution();
                    }
                }),
                health,
            });
            ChannelInner {
                target,
                balancer: Balancer::new(config.lb_policy.clone()),
                config,
                env,
                resolver,
                endpoints: Mutex::new(Endpoints::default()),
                resolved: Event::new(),
                state: StateCell::new(ConnectivityState::Idle),
                counters: Arc::new(Counters::default()),
                retry_budget,
                interceptors: Chain::new(self.interceptors),
                metrics: self.metrics,
                target_text: self.target.as_str().into(),
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

/// The health check the channel's subchannels run: the service config's
/// `healthCheckConfig.serviceName`, under `round_robin` only (gRFC A17: `pick_first` does not
/// health-check; a custom picker sees the endpoints' connection states).
fn health_check(
    config: &ChannelConfig,
    target: &Target,
) -> Result<Option<Arc<HealthCheck>>, Status> {
    let service = config
        .service_config
        .as_ref()
        .filter(|_| config.health_checking)
        .and_then(|sc| sc.health_check_service.as_deref());
    match (service, &config.lb_policy) {
        (Some(service), LbPolicy::RoundRobin) => {
            let check = HealthCheck::new(
                service,
                target,
                config.user_agent.clone(),
                config.conn.backoff,
            )?;
            Ok(Some(Arc::new(check)))
        }
        _ => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(settings: &ChannelSettings) -> String {
        format!("{:?}", ChannelConfig::new(settings).unwrap().lb_policy)
    }

    #[test]
    fn the_service_config_chooses_the_policy_unless_the_settings_did() {
        let config = r#"{"loadBalancingConfig": [{"round_robin": {}}]}"#;
        let mut settings = ChannelSettings {
            service_config: Some(config.to_string()),
            ..ChannelSettings::default()
        };
        assert_eq!(policy(&settings), format!("{:?}", LbPolicy::RoundRobin));
        settings.service_config = Some(r#"{"loadBalancingPolicy": "pick_first"}"#.into());
        settings.lb_policy = LbPolicy::RoundRobin;
        assert_eq!(policy(&settings), format!("{:?}", LbPolicy::RoundRobin));
        settings.lb_policy = LbPolicy::PickFirst;
        assert_eq!(policy(&settings), format!("{:?}", LbPolicy::PickFirst));
    }
}
