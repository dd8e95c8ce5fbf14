//! [`ChannelSettings`]: every setting of a channel, as one value.
//!
//! The Rust [`ChannelBuilder`](super::ChannelBuilder) wraps one, the C ABI's channel options
//! box one (their setters write its fields), and the Python package's grpcio-style options map
//! onto those setters. Adding a setting means a field here, its check in
//! [`ChannelSettings::check_values`] if it has one, and a setter per surface.

use std::hash::{Hash, Hasher};
use std::time::Duration;

use super::backoff::BackoffConfig;
use super::balance::LbPolicy;
use super::options::{
    DEFAULT_CONNECT_TIMEOUT, DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_CONNECTIONS_PER_ENDPOINT,
};
use super::resolve::DEFAULT_DNS_REFRESH_INTERVAL;
use super::service_config::ServiceConfig;
use crate::codec::Compression;
use crate::codec::frame::{DEFAULT_MAX_RECV_MESSAGE_SIZE, DEFAULT_MAX_SEND_MESSAGE_SIZE};
use crate::proto::headers;
use crate::proto::http2::{Http2Settings, check_positive};
use crate::proto::ping::DEFAULT_KEEPALIVE_TIMEOUT;
use crate::status::Status;

/// Default request bytes one call keeps for retries: C-core's and grpc-go's 256 KiB.
pub const DEFAULT_PER_CALL_RETRY_BUFFER_SIZE: usize = 256 * 1024;

/// Default request bytes a channel keeps for retries over all its calls: grpc-java's 16 MiB.
pub const DEFAULT_RETRY_BUFFER_SIZE: usize = 16 * 1024 * 1024;

/// Every setting of a channel, as one comparable value. Start from
/// [`ChannelSettings::default`], set fields, and hand it to
/// [`ChannelBuilder::settings`](super::ChannelBuilder::settings); checked when the channel is
/// built. Two channels with equal settings and targets may share connections (the C ABI does).
///
/// Objects that are not settings (the executor, connector and resolver) stay on the builder.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct ChannelSettings {
    /// Largest message a call accepts, in bytes (default 4 MiB); larger ones fail the call with
    /// RESOURCE_EXHAUSTED.
    pub max_receive_message_size: usize,
    /// Largest message a call sends, in bytes (default unlimited).
    pub max_send_message_size: usize,
    /// Compression of request messages on calls that do not set their own (default none).
    pub compression: Compression,
    /// HTTP/2 flow-control windows and frame size.
    pub http2: Http2Settings,
    /// Keepalive PING after this long without a frame from the server (default off).
    pub keepalive_time: Option<Duration>,
    /// How long a keepalive PING may go unanswered (default 20 s).
    pub keepalive_timeout: Duration,
    /// Whether keepalive PINGs go out while no call is open (default false).
    pub keepalive_permit_without_calls: bool,
    /// Time allowed to connect and finish the HTTP/2 handshake (default 20 s).
    pub connect_timeout: Duration,
    /// Open another connection when every one is at the server's MAX_CONCURRENT_STREAMS
    /// (default true); off, calls queue for a free stream.
    pub multiple_connections: bool,
    /// Cap on connections per endpoint (default 16).
    pub max_connections_per_endpoint: usize,
    /// Reconnect backoff (default gRPC's).
    pub backoff: BackoffConfig,
    /// Connections close after this long without calls (default 30 min).
    pub idle_timeout: Duration,
    /// How often the target is resolved again while the channel has connections (default
    /// 30 s).
    pub resolve_interval: Duration,
    /// The least time between a resolution and one asked for by a failing endpoint or a
    /// server's GOAWAY (default 30 s, C-core's `grpc.dns_min_time_between_resolutions_ms`).
    pub min_resolve_interval: Duration,
    /// The load-balancing policy (default pick_first). Left at pick_first, the service config's
    /// `loadBalancingConfig` decides, if it names one.
    pub lb_policy: LbPolicy,
    /// The default service config, in gRPC's JSON form: per-method `timeout`, `waitForReady`,
    /// message size limits, `retryPolicy` or `hedgingPolicy`, and `retryThrottling` and
    /// `loadBalancingConfig` (default none). Checked when set: a malformed one is
    /// INVALID_ARGUMENT naming the field.
    pub service_config: Option<String>,
    /// Whether the service config's retry and hedging policies apply (default true, as in
    /// grpcio); transparent retries of streams the server never saw happen either way.
    pub enable_retries: bool,
    /// Whether the service config's `healthCheckConfig` turns on client-side health checking
    /// (default true; false is C-core's `grpc.inhibit_health_checking`).
    pub health_checking: bool,
    /// Request bytes one call keeps for retries until it commits (default 256 KiB); a call
    /// that sends more commits to its current attempt.
    pub per_call_retry_buffer_size: usize,
    /// Request bytes all of the channel's calls keep for retries together (default 16 MiB);
    /// a call that would go past it commits instead.
    pub retry_buffer_size: usize,
    /// An application name put before plexus's own in the `user-agent` header.
    pub user_agent: Option<String>,
    /// The `:authority` of every call instead of the target's (grpcio's
    /// `grpc.default_authority`); with TLS, also the name the server's certificate is checked
    /// against unless the TLS config names one.
    pub authority: Option<String>,
    /// TLS settings; `None` uses TLS only for `https://` targets.
    #[cfg(feature = "tls")]
    pub tls: Option<crate::transport::tls::ClientTlsConfig>,
}

impl Default for ChannelSettings {
    fn default() -> ChannelSettings {
        ChannelSettings {
            max_receive_message_size: DEFAULT_MAX_RECV_MESSAGE_SIZE,
            max_send_message_size: DEFAULT_MAX_SEND_MESSAGE_SIZE,
            compression: Compression::Identity,
            http2: Http2Settings::default(),
            keepalive_time: None,
            keepalive_timeout: DEFAULT_KEEPALIVE_TIMEOUT,
            keepalive_permit_without_calls: false,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            multiple_connections: true,
            max_connections_per_endpoint: DEFAULT_MAX_CONNECTIONS_PER_ENDPOINT,
            backoff: BackoffConfig::default(),
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            resolve_interval: DEFAULT_DNS_REFRESH_INTERVAL,
            min_resolve_interval: DEFAULT_DNS_REFRESH_INTERVAL,
            lb_policy: LbPolicy::default(),
            service_config: None,
            enable_retries: true,
            health_checking: true,
            per_call_retry_buffer_size: DEFAULT_PER_CALL_RETRY_BUFFER_SIZE,
            retry_buffer_size: DEFAULT_RETRY_BUFFER_SIZE,
            user_agent: None,
            authority: None,
            #[cfg(feature = "tls")]
            tls: None,
        }
    }
}

impl ChannelSettings {
    /// Checks every field on its own (ranges, non-zero durations, a printable user agent):
    /// INVALID_ARGUMENT naming the first field out of range. The C ABI runs it in each setter,
    /// so a bad value fails where it is set.
    pub fn check_values(&self) -> Result<(), Status> {
        self.http2.check_values()?;
        check_positive(&[
            (
                "keepalive time",
                self.keepalive_time.unwrap_or(Duration::MAX),
            ),
            ("keepalive timeout", self.keepalive_timeout),
            ("connect timeout", self.connect_timeout),
            ("idle timeout", self.idle_timeout),
            ("resolve interval", self.resolve_interval),
            ("min resolve interval", self.min_resolve_interval),
        ])?;
        if self.max_connections_per_endpoint == 0 {
            return Err(Status::invalid_argument(
                "max connections per endpoint must be at least 1",
            ));
        }
        self.backoff.check()?;
        if let Some(json) = &self.service_config {
            ServiceConfig::parse(json)?;
        }
        let printable = |s: &str| s.bytes().all(|b| (0x20..=0x7e).contains(&b));
        if !self.user_agent.as_deref().is_none_or(printable) {
            return Err(Status::invalid_argument(
                "user agent must be printable ASCII",
            ));
        }
        Ok(())
    }

    /// Checks the settings as a whole: [`check_values`](Self::check_values), then the rules
    /// between fields (the connection window is at least the stream window).
    pub fn check(&self) -> Result<(), Status> {
        self.check_values()?;
        self.http2.check()
    }

    /// The whole `user-agent` header value.
    pub(crate) fn user_agent_header(&self) -> String {
        match &self.user_agent {
            Some(prefix) => format!("{prefix} {}", headers::USER_AGENT),
            None => headers::USER_AGENT.to_string(),
        }
    }
}

impl PartialEq for BackoffConfig {
    /// Compares the multiplier and jitter bit for bit, so that equality is an equivalence
    /// (settings are compared and hashed to share connections).
    fn eq(&self, other: &BackoffConfig) -> bool {
        self.initial == other.initial
            && self.max == other.max
            && self.multiplier.to_bits() == other.multiplier.to_bits()
            && self.jitter.to_bits() == other.jitter.to_bits()
    }
}

impl Eq for BackoffConfig {}

impl Hash for BackoffConfig {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.initial.hash(state);
        self.max.hash(state);
        self.multiplier.to_bits().hash(state);
        self.jitter.to_bits().hash(state);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::hash_map::DefaultHasher;

    fn hash(settings: &ChannelSettings) -> u64 {
        let mut h = DefaultHasher::new();
        settings.hash(&mut h);
        h.finish()
    }

    #[test]
    fn equal_settings_hash_alike_and_a_changed_field_differs() {
        let a = ChannelSettings::default();
        let mut b = ChannelSettings::default();
        assert_eq!(a, b);
        assert_eq!(hash(&a), hash(&b));
        b.backoff.jitter = 0.1;
        assert_ne!(a, b);
        let c = ChannelSettings {
            lb_policy: LbPolicy::RoundRobin,
            ..ChannelSettings::default()
        };
        assert_ne!(a, c);
    }

    #[test]
    fn checks_name_the_field() {
        type Change = fn(&mut ChannelSettings);
        let cases: [(Change, &str); 7] = [
            (|s| s.http2.max_frame_size = 1000, "max frame size"),
            (
                |s| s.http2.initial_stream_window_size = Some(0),
                "initial stream window",
            ),
            (
                |s| s.keepalive_timeout = Duration::ZERO,
                "keepalive timeout",
            ),
            (|s| s.connect_timeout = Duration::ZERO, "connect timeout"),
            (|s| s.max_connections_per_endpoint = 0, "max connections"),
            (|s| s.backoff.multiplier = 0.5, "backoff"),
            (|s| s.user_agent = Some("tab\there".into()), "user agent"),
        ];
        for (change, name) in cases {
            let mut settings = ChannelSettings::default();
            change(&mut settings);
            let err = settings.check_values().unwrap_err();
            assert!(err.message().contains(name), "{name}: {err:?}");
        }
        assert!(ChannelSettings::default().check().is_ok());
    }

    #[test]
    fn windows_are_checked_together_only_as_a_whole() {
        let settings = ChannelSettings {
            http2: Http2Settings {
                initial_stream_window_size: Some(1 << 20),
                initial_connection_window_size: Some(1 << 16),
                ..Http2Settings::default()
            },
            ..ChannelSettings::default()
        };
        assert!(settings.check_values().is_ok());
        let err = settings.check().unwrap_err();
        assert!(err.message().contains("connection window"), "{err:?}");
    }
}
