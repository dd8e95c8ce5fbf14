//! Pieces of the gRPC-over-HTTP/2 protocol shared by client and server.

pub(crate) mod headers;
pub(crate) mod http2;
pub(crate) mod ping;
pub(crate) mod recv;
pub(crate) mod send;
pub(crate) mod tap;

/// h2's budget for the per-frame overhead of received small DATA frames still buffered unread
/// (it counts 256 bytes minus the payload per frame under 256 bytes, and closes the connection
/// with ENHANCE_YOUR_CALM when the budget runs out). h2's default follows the connection
/// window from a 64 KiB floor, about 130 unread tiny gRPC messages, which a slow reader of a
/// stream of small messages reaches in normal use. 16 MiB, the largest connection window
/// plexus uses ([`BDP_LIMIT`](crate::server::BDP_LIMIT)), lets about 65,000 tiny messages wait
/// while still bounding what a small-frame flood can make a connection hold.
pub(crate) const DATA_FRAME_BUDGET: usize = 16 * 1024 * 1024;
