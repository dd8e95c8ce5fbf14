//! Per-call options and the channel builder's settings.

use std::time::{Duration, Instant};

use crate::codec::Compression;
use crate::metadata::Metadata;

/// Options for one call: deadline, metadata, message size limits and compression.
#[derive(Debug, Clone, Default)]
pub struct CallOptions {
    pub(crate) deadline: Option<Instant>,
    pub(crate) compression: Option<Compression>,
    pub(crate) metadata: Metadata,
    pub(crate) max_recv_message_size: Option<usize>,
    pub(crate) max_send_message_size: Option<usize>,
    pub(crate) wait_for_ready: bool,
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
        self.wait_for_ready = wait;
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
