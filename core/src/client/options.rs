//! Per-call options and the channel builder's settings.

use std::time::{Duration, Instant};

use std::sync::Arc;

use super::service_config::MethodConfig;
use crate::codec::Compression;
use crate::metadata::Metadata;
use crate::server::CallContext;

/// Options for one call: deadline, metadata, message size limits and compression.
#[derive(Debug, Clone, Default)]
pub struct CallOptions {
    pub(crate) deadline: Option<Instant>,
    pub(crate) compression: Option<Compression>,
    pub(crate) metadata: Metadata,
    pub(crate) max_recv_message_size: Option<usize>,
    pub(crate) max_send_message_size: Option<usize>,
    /// Unset: fail fast (unless a client's defaults say otherwise).
    pub(crate) wait_for_ready: Option<bool>,
    /// The server call this one was made for: cancelling it cancels this call.
    pub(crate) parent: Option<CallContext>,
    /// The service config's method config, once the channel has looked it up for this call
    /// (`Some(None)`: looked up, none applies), so the retry plan need not look again.
    pub(crate) method_config: Option<Option<Arc<MethodConfig>>>,
}

impl CallOptions {
    /// Default options: no deadline, no metadata, the channel's size limits.
    pub fn new() -> CallOptions {
        CallOptions::default()
    }

    /// Sets the deadline to now + `timeout` (the earlier one wins if a deadline is already set).
    pub fn timeout(self, timeout: Duration) -> CallOptions {
        let at = Instant::now().checked_add(timeout);
        match at {
            Some(at) => self.deadline(at),
            None => self,
        }
    }

    /// Sets an absolute deadline (the earlier one wins if a deadline is already set).
    pub fn deadline(mut self, at: Instant) -> CallOptions {
        self.deadline = Some(self.deadline.map_or(at, |d| d.min(at)));
        self
    }

    /// Makes this a call on behalf of the server call `parent` (deadline propagation): it
    /// gets the parent's deadline, if earlier than its own (the time the parent already
    /// spent is gone from it), and it is cancelled with CANCELLED when the parent is
    /// cancelled (its client gave up, its deadline passed, its connection went away).
    pub fn child_of(mut self, parent: &CallContext) -> CallOptions {
        if let Some(at) = parent.deadline() {
            self = self.deadline(at);
        }
        self.parent = Some(parent.clone());
        self
    }

    /// Sets the request metadata.
    pub fn metadata(mut self, metadata: Metadata) -> CallOptions {
        self.metadata = metadata;
        self
    }

    /// Mutable access to the request metadata.
    pub fn metadata_mut(&mut self) -> &mut Metadata {
        &mut self.metadata
    }

    /// Overrides the channel's max received message size for this call.
    pub fn max_receive_message_size(mut self, bytes: usize) -> CallOptions {
        self.max_recv_message_size = Some(bytes);
        self
    }

    /// Overrides the channel's max sent message size for this call.
    pub fn max_send_message_size(mut self, bytes: usize) -> CallOptions {
        self.max_send_message_size = Some(bytes);
        self
    }

    /// Waits for the channel to become READY (up to the deadline) instead of failing fast with
    /// UNAVAILABLE while it is in TRANSIENT_FAILURE.
    pub fn wait_for_ready(mut self, wait: bool) -> CallOptions {
        self.wait_for_ready = Some(wait);
        self
    }

    /// Compresses this call's request messages with `compression`, overriding the channel's
    /// [`compression`](crate::ChannelBuilder::compression) (`Compression::Identity` turns it
    /// off). The request carries `grpc-encoding` and every message goes out compressed, except
    /// those sent with [`SendOptions::compress(false)`](crate::SendOptions::compress).
    /// The server may answer compressed or not, whatever this says; responses are inflated
    /// as they arrive.
    pub fn compression(mut self, compression: Compression) -> CallOptions {
        self.compression = Some(compression);
        self
    }

    /// The compression set for this call, if any (else the channel's applies).
    pub fn get_compression(&self) -> Option<Compression> {
        self.compression
    }

    /// The call's deadline, if any.
    pub fn get_deadline(&self) -> Option<Instant> {
        self.deadline
    }
}

/// Defaults for every call a client makes, under what each call's [`CallOptions`] set: a
/// generated client (`FooClient::with_defaults`) or a [`Client`](crate::Client) holds them.
/// Anything a call sets itself wins; what neither sets comes from the channel.
#[derive(Debug, Clone, Default)]
pub struct CallDefaults {
    timeout: Option<Duration>,
    compression: Option<Compression>,
    metadata: Metadata,
    max_recv_message_size: Option<usize>,
    max_send_message_size: Option<usize>,
    wait_for_ready: Option<bool>,
}

impl CallDefaults {
    /// No defaults: calls get only what their options and the channel say.
    pub fn new() -> CallDefaults {
        CallDefaults::default()
    }

    /// Whether nothing is set (then [`apply`](Self::apply) changes nothing).
    pub fn is_empty(&self) -> bool {
        self.timeout.is_none()
            && self.compression.is_none()
            && self.metadata.is_empty()
            && self.max_recv_message_size.is_none()
            && self.max_send_message_size.is_none()
            && self.wait_for_ready.is_none()
    }

    /// Gives every call without a deadline one of now + `timeout` when it starts.
    pub fn timeout(mut self, timeout: Duration) -> CallDefaults {
        self.timeout = Some(timeout);
        self
    }

    /// Compresses requests with `compression` unless the call says otherwise.
    pub fn compression(mut self, compression: Compression) -> CallDefaults {
        self.compression = Some(compression);
        self
    }

    /// Sends these entries with every call, except keys the call's own metadata has.
    pub fn metadata(mut self, metadata: Metadata) -> CallDefaults {
        self.metadata = metadata;
        self
    }

    /// The max received message size for calls that do not set one.
    pub fn max_receive_message_size(mut self, bytes: usize) -> CallDefaults {
        self.max_recv_message_size = Some(bytes);
        self
    }

    /// The max sent message size for calls that do not set one.
    pub fn max_send_message_size(mut self, bytes: usize) -> CallDefaults {
        self.max_send_message_size = Some(bytes);
        self
    }

    /// Whether calls wait for the channel to become READY, unless a call sets it.
    pub fn wait_for_ready(mut self, wait: bool) -> CallDefaults {
        self.wait_for_ready = Some(wait);
        self
    }

    /// `options` with every field it leaves unset filled from these defaults.
    pub fn apply(&self, mut options: CallOptions) -> CallOptions {
        if self.is_empty() {
            return options;
        }
        if let (None, Some(timeout)) = (options.deadline, self.timeout) {
            options = options.timeout(timeout);
        }
        options.compression = options.compression.or(self.compression);
        options.max_recv_message_size =
            options.max_recv_message_size.or(self.max_recv_message_size);
        options.max_send_message_size =
            options.max_send_message_size.or(self.max_send_message_size);
        options.wait_for_ready = options.wait_for_ready.or(self.wait_for_ready);
        options.metadata.fill_from(&self.metadata);
        options
    }
}

/// Default time to establish a connection: the gRPC connection-backoff spec's
/// MIN_CONNECT_TIMEOUT.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(20);

/// Default HTTP/2 stream window: 1 MiB. h2's 64 KiB default throttles large messages on any
/// link with latency; grpc-go and C-core both start well above it.
pub const DEFAULT_STREAM_WINDOW: u32 = 1024 * 1024;

/// Default HTTP/2 connection window: 16 streams' worth of the stream window.
pub const DEFAULT_CONNECTION_WINDOW: u32 = 16 * DEFAULT_STREAM_WINDOW;

/// Default max HTTP/2 frame size: 16 KiB, the RFC 9113 initial value.
pub const DEFAULT_MAX_FRAME_SIZE: u32 = 16 * 1024;

/// Default cap on connections per endpoint when calls outgrow the server's
/// MAX_CONCURRENT_STREAMS: enough for 16× the usual 100-stream limit.
pub const DEFAULT_MAX_CONNECTIONS_PER_ENDPOINT: usize = 16;

/// Default idle timeout: 30 minutes, gRPC's `GRPC_ARG_CLIENT_IDLE_TIMEOUT_MS` default.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// How a channel opens and pools connections to one endpoint.
#[derive(Debug, Clone)]
pub(crate) struct ConnConfig {
    /// Keepalive and windows (resolved: adaptive or pinned).
    pub(crate) ping: crate::proto::ping::PingConfig,
    pub(crate) max_frame_size: u32,
    pub(crate) connect_timeout: Duration,
    /// Open another connection when every one is at the peer's stream limit.
    pub(crate) multi_connection: bool,
    pub(crate) max_connections_per_endpoint: usize,
    pub(crate) backoff: super::backoff::BackoffConfig,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_fill_only_what_the_call_leaves_unset() {
        let mut md = Metadata::new();
        md.append("x-tenant", "default").unwrap();
        md.append("x-team", "core").unwrap();
        let defaults = CallDefaults::new()
            .timeout(Duration::from_secs(60))
            .compression(Compression::Gzip)
            .max_receive_message_size(10)
            .max_send_message_size(20)
            .wait_for_ready(true)
            .metadata(md);

        let empty = defaults.apply(CallOptions::new());
        assert!(empty.deadline.is_some());
        assert_eq!(empty.compression, Some(Compression::Gzip));
        assert_eq!(empty.max_recv_message_size, Some(10));
        assert_eq!(empty.max_send_message_size, Some(20));
        assert_eq!(empty.wait_for_ready, Some(true));
        assert_eq!(empty.metadata.get("x-tenant"), Some("default"));

        let soon = Instant::now() + Duration::from_secs(1);
        let mut own = Metadata::new();
        own.append("x-tenant", "mine").unwrap();
        let set = defaults.apply(
            CallOptions::new()
                .deadline(soon)
                .compression(Compression::Identity)
                .max_receive_message_size(1)
                .max_send_message_size(2)
                .wait_for_ready(false)
                .metadata(own),
        );
        assert_eq!(set.deadline, Some(soon));
        assert_eq!(set.compression, Some(Compression::Identity));
        assert_eq!(
            (set.max_recv_message_size, set.max_send_message_size),
            (Some(1), Some(2))
        );
        assert_eq!(set.wait_for_ready, Some(false));
        assert_eq!(set.metadata.get_all("x-tenant"), vec!["mine"]);
        assert_eq!(set.metadata.get("x-team"), Some("core"));
    }
}
