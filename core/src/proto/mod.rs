//! Pieces of the gRPC-over-HTTP/2 protocol shared by client and server.

pub(crate) mod headers;
pub(crate) mod ping;
pub(crate) mod recv;
pub(crate) mod send;
