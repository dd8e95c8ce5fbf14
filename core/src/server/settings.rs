//! [`ServerSettings`]: every setting of a server, as one value.
//!
//! The Rust [`ServerBuilder`](super::ServerBuilder) wraps one, and the C ABI's server options
//! will box one the same way the channel options box [`ChannelSettings`](crate::ChannelSettings).

use std::time::Duration;

use super::{
    DEFAULT_HANDSHAKE_TIMEOUT, DEFAULT_MAX_CONCURRENT_STREAMS, DEFAULT_MAX_HEADER_LIST_SIZE,
};
use crate::codec::Compression;
use crate::codec::frame::{DEFAULT_MAX_RECV_MESSAGE_SIZE, DEFAULT_MAX_SEND_MESSAGE_SIZE};
use crate::proto::http2::{Http2Settings, check_positive};
use crate::proto::ping::{
    DEFAULT_KEEPALIVE_TIMEOUT, DEFAULT_MIN_PING_INTERVAL, DEFAULT_SERVER_KEEPALIVE_TIME,
};
use crate::status::Status;

/// Every setting of a server, as one comparable value. Start from
/// [`ServerSettings::default`], set fields, and hand it to
/// [`ServerBuilder::settings`](super::ServerBuilder::settings); checked when the server is
/// built. Routes and the executor stay on the builder.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct ServerSettings {
    /// SETTINGS_MAX_CONCURRENT_STREAMS per connection (default 100).
    pub max_concurrent_streams: u32,
    /// HTTP/2 flow-control windows and frame size.
    pub http2: Http2Settings,
    /// Largest request message accepted, in bytes (default 4 MiB).
    pub max_receive_message_size: usize,
    /// Largest response message sent, in bytes (default unlimited).
    pub max_send_message_size: usize,
    /// Compression of responses on calls whose client accepts it (default none).
    pub response_compression: Compression,
    /// Keepalive PING after this long without a frame from a client (default 2 h);
    /// `Duration::MAX` turns it off.
    pub keepalive_time: Duration,
    /// How long a keepalive PING may go unanswered (default 20 s).
    pub keepalive_timeout: Duration,
    /// Shortest interval allowed between a client's PINGs while calls are active (default
    /// 5 min).
    pub keepalive_min_ping_interval: Duration,
    /// Whether clients may ping at that interval while no call is active (default false).
    pub keepalive_permit_without_calls: bool,
    /// Time a new connection has to finish its TLS handshake and HTTP/2 preface (default
    /// 20 s).
    pub handshake_timeout: Duration,
    /// SETTINGS_MAX_HEADER_LIST_SIZE (default 16 KiB).
    pub max_header_list_size: u32,
    /// A connection with no call for this long is sent GOAWAY and closed (gRFC A9's
    /// MAX_CONNECTION_IDLE; default `Duration::MAX`, never).
    pub max_connection_idle: Duration,
    /// A connection this old, ±10 % jitter, is sent GOAWAY: new calls go to a new connection
    /// (re-resolving, so clients rebalance over the servers), calls in flight finish (gRFC
    /// A9's MAX_CONNECTION_AGE; default `Duration::MAX`, never).
    pub max_connection_age: Duration,
    /// How long calls in flight have after that GOAWAY before the connection is closed
    /// under them (MAX_CONNECTION_AGE_GRACE; default `Duration::MAX`, as long as they take).
    pub max_connection_age_grace: Duration,
    /// Calls open at once over the whole server, every connection together; a call beyond
    /// it is answered RESOURCE_EXHAUSTED without reaching a handler (grpcio's
    /// `maximum_concurrent_rpcs`; default `None`, no limit).
    pub max_concurrent_calls: Option<u32>,
    /// TLS settings; `None` serves plaintext.
    #[cfg(feature = "tls")]
    pub tls: Option<crate::transport::tls::ServerTlsConfig>,
}

impl Default for ServerSettings {
    fn default() -> ServerSettings {
        ServerSettings {
            max_concurrent_streams: DEFAULT_MAX_CONCURRENT_STREAMS,
            http2: Http2Settings::default(),
            max_receive_message_size: DEFAULT_MAX_RECV_MESSAGE_SIZE,
            max_send_message_size: DEFAULT_MAX_SEND_MESSAGE_SIZE,
            response_compression: Compression::Identity,
            keepalive_time: DEFAULT_SERVER_KEEPALIVE_TIME,
            keepalive_timeout: DEFAULT_KEEPALIVE_TIMEOUT,
            keepalive_min_ping_interval: DEFAULT_MIN_PING_INTERVAL,
            keepalive_permit_without_calls: false,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            max_header_list_size: DEFAULT_MAX_HEADER_LIST_SIZE,
            max_connection_idle: Duration::MAX,
            max_connection_age: Duration::MAX,
            max_connection_age_grace: Duration::MAX,
            max_concurrent_calls: None,
            #[cfg(feature = "tls")]
            tls: None,
        }
    }
}

impl ServerSettings {
    /// Checks every field on its own: INVALID_ARGUMENT naming the first out of range.
    pub fn check_values(&self) -> Result<(), Status> {
        self.http2.check_values()?;
        check_positive(&[
            ("keepalive time", self.keepalive_time),
            ("keepalive timeout", self.keepalive_timeout),
            ("handshake timeout", self.handshake_timeout),
            ("max connection idle", self.max_connection_idle),
            ("max connection age", self.max_connection_age),
            ("max connection age grace", self.max_connection_age_grace),
        ])
    }

    /// Checks the settings as a whole: [`check_values`](Self::check_values), then the rules
    /// between fields (the connection window is at least the stream window).
    pub fn check(&self) -> Result<(), Status> {
        self.check_values()?;
        self.http2.check()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_name_the_field() {
        let bad = [
            (
                ServerSettings {
                    http2: Http2Settings {
                        max_frame_size: 10,
                        ..Http2Settings::default()
                    },
                    ..ServerSettings::default()
                },
                "max frame size",
            ),
            (
                ServerSettings {
                    handshake_timeout: Duration::ZERO,
                    ..ServerSettings::default()
                },
                "handshake timeout",
            ),
            (
                ServerSettings {
                    http2: Http2Settings {
                        initial_stream_window_size: Some(1 << 20),
                        initial_connection_window_size: Some(1 << 16),
                        ..Http2Settings::default()
                    },
                    ..ServerSettings::default()
                },
                "connection window",
            ),
        ];
        for (settings, name) in bad {
            let err = settings.check().unwrap_err();
            assert!(err.message().contains(name), "{name}: {err:?}");
        }
        assert!(ServerSettings::default().check().is_ok());
    }
}
