//! plexus: a gRPC core that runs on any async executor.
//!
//! ```text
//!  Channel ──pick──► Subchannel (one endpoint) ──► pool of HTTP/2 connections ──► h2 stream
//!     │                   │                           │
//!  Resolver            state, backoff,            futures-io socket (TCP, Unix, memory, yours
//!  Balancer            FIFO queue of calls        via Connector; TLS over any of them), a
//!  (pick_first,                                   frame tap for keepalive, driven by a task
//!   round_robin, yours)                           on the Executor
//!
//!  Server ──► Listener / any Io ──► h2 server connection ──► router ──► handler (4 kinds)
//! ```
//!
//! - [`Channel`] is `Clone + Send + Sync`; clones share the resolver, the balancer and every
//!   endpoint's connection pool. A connection takes calls up to the server's
//!   MAX_CONCURRENT_STREAMS; then another one opens (or calls queue). Calls come in the four
//!   gRPC kinds, untyped (`bytes::Bytes`) on the channel itself or typed through a [`Codec`]
//!   ([`ProstCodec`] for prost messages) with [`Client`].
//! - [`Server`] routes `/package.Service/Method` to handlers and serves TCP, Unix sockets or
//!   any byte stream, with keepalive, ping policing and graceful shutdown.
//! - TLS (the default `tls` feature: rustls with the `ring` provider): `https://` targets,
//!   [`ClientTlsConfig`] on a channel (custom CAs or system roots, a server-name override,
//!   client certificates) and [`ServerTlsConfig`] on a server (optionally requiring client
//!   certificates, which handlers read from [`CallContext::peer_certificates`]); HTTP/2 is
//!   negotiated by ALPN. See [`transport::tls`].
//!
//! # Generated code
//! The `plexus-build` crate turns `.proto` files into typed code from `build.rs`, with no
//! `protoc`: for each `service Foo`, a `FooClient` with one `async fn` per rpc over [`Client`]
//! (per-client [`CallDefaults`]), a `Foo` trait to implement with `async fn`s, and a
//! `FooServer` that [`ServerBuilder::add_service`] registers (a [`Service`], with one
//! [`MethodDescriptor`] per rpc). [`include_proto!`] includes the code; generated messages
//! derive through the re-exported [`prost`], and well-known types are [`prost_types`].
//!
//! # Compression
//! Messages may be compressed with `gzip` or `deflate` ([`Compression`]), per gRPC's
//! compression spec. A client compresses its requests per channel
//! ([`ChannelBuilder::compression`]) or per call ([`CallOptions::compression`]), and single
//! streamed messages opt out with [`Sender::send_with`]. A server compresses responses when the
//! server ([`ServerBuilder::response_compression`]) or the handler
//! ([`CallContext::set_response_compression`]) asks for it and the client accepts it, again
//! with a per-message opt-out ([`ResponseSink::send_with`]). Both sides always inflate what
//! they receive, advertise `grpc-accept-encoding: identity, deflate, gzip`, and tell which
//! messages arrived compressed ([`Response::compressed`], [`Streaming::last_message_compressed`],
//! [`Request::compressed`], [`RequestStream::last_message_compressed`]). An unknown request
//! encoding is UNIMPLEMENTED. The max receive size bounds every message after inflation too,
//! and inflating stops as soon as it is passed, so a zip bomb fails early with
//! RESOURCE_EXHAUSTED.
//!
//! # Errors
//! A call ends with a [`Status`]: a gRPC code, a message, details and trailing metadata. A
//! status made from a local failure keeps that failure (an `io::Error`, an `h2::Error`) as its
//! [`source`](std::error::Error::source). Serving ([`Server::serve`],
//! [`Server::serve_connection`]) fails with an [`Error`] instead, which says what kind of
//! failure it was (`is_io`, `is_tls`, `is_protocol`, `is_timeout`, `is_config`) and keeps its
//! cause; it converts into a `Status`, so `?` works in code that returns one. Which gRPC code
//! an I/O or HTTP/2 error becomes is decided in one place, next to `Status`.
//!
//! # Threads
//! plexus never starts a tokio runtime. Background work (connection drivers, server
//! connections and calls, reconnects, DNS refreshes, idle checks) goes to an [`Executor`]:
//! by default [`DefaultExecutor`], a work-stealing [`rt::ThreadPool`] of `PLEXUS_THREADS`
//! (default: one per core) `plexus-worker-N` threads and a `plexus-worker-monitor` thread,
//! started on first use, where a task woken by another runs next on the same thread
//! ([`SmolExecutor`] runs on smol's instead). A worker out of work spins for
//! `PLEXUS_SPIN_MICROS` (default 100) before it sleeps, unless the machine has more runnable
//! threads than cores; the monitor parks while every worker is idle, so an idle process gets
//! no wake-ups from the pool. [`rt::RuntimeSettings`] is the one type that tunes the pool.
//! Sockets and timers use `async-io`, whose reactor is driven by whichever thread is blocked on
//! it (an idle worker), or by its own `async-io` thread. Host-name resolution runs on
//! `blocking`'s thread pool.
//!
//! # Example
//! ```no_run
//! use bytes::Bytes;
//! use plexus::{BytesCodec, CallOptions, Channel, Listener, Response, Server};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! smol::block_on(async {
//!     let server = Server::builder()
//!         .unary("/echo.Echo/Say", BytesCodec, |req: plexus::Request<Bytes>| async move {
//!             Ok(Response::new(req.into_message()))
//!         })
//!         .build()?;
//!     let listener = Listener::bind_tcp("127.0.0.1:0")?;
//!     let addr = listener.local_addr().unwrap();
//!     smol::spawn({ let s = server.clone(); async move { s.serve(listener).await } }).detach();
//!
//!     let channel = Channel::new(&format!("http://{addr}"))?;
//!     let reply = channel.unary("/echo.Echo/Say", Bytes::from("hi"), CallOptions::new()).await?;
//!     assert_eq!(reply.message().as_ref(), b"hi");
//!     Ok(())
//! })
//! # }
//! ```

pub mod client;
pub mod codec;
mod error;
pub mod intercept;
pub mod metadata;
pub mod method;
pub mod metrics;
#[cfg(test)]
mod proptests;
mod proto;
mod response;
pub mod rt;
pub mod server;
mod status;
#[cfg(test)]
mod test_util;
pub mod transport;

pub use client::{
    BackoffConfig, CallDefaults, CallOptions, Channel, ChannelBuilder, ChannelSettings,
    ChannelStats, Client, ConnectivityState, EndpointStats, LbPolicy, Picker, Resolver,
    ResponseFuture, Sender, StaticResolver, Streaming,
};
pub use codec::frame::{DEFAULT_MAX_RECV_MESSAGE_SIZE, DEFAULT_MAX_SEND_MESSAGE_SIZE};
pub use codec::{BytesCodec, Codec, Compression, ProstCodec, SendOptions};
pub use error::Error;
pub use intercept::{ClientInterceptor, ServerInterceptor};
pub use metadata::{Metadata, MetadataValue};
pub use method::{MethodDescriptor, MethodKind};
pub use metrics::Metrics;
pub use proto::http2::Http2Settings;
pub use response::Response;
pub use rt::{DefaultExecutor, Executor, SmolExecutor};
pub use server::{
    CallContext, Listener, Request, RequestStream, ResponseSink, Server, ServerBuilder,
    ServerSettings, Service,
};
pub use status::{Code, Status};

/// prost, re-exported so code from `plexus-build` needs no dependency but plexus.
pub use prost;
/// prost's well-known types (`google.protobuf.Timestamp`, ...), which `plexus-build` maps
/// imports of `google/protobuf/*.proto` to.
pub use prost_types;

/// Includes the Rust code `plexus-build` generated for a protobuf package (`"routeguide"`,
/// `"grpc.testing"`; `"_"` for files without a package) from `OUT_DIR`.
#[macro_export]
macro_rules! include_proto {
    ($package:tt) => {
        include!(concat!(env!("OUT_DIR"), "/", $package, ".rs"));
    };
}

/// The bytes of a file descriptor set that `plexus-build` wrote to `OUT_DIR` with
/// `file_descriptor_set_name(name)` (an encoded `google.protobuf.FileDescriptorSet`, for
/// server reflection).
#[macro_export]
macro_rules! include_file_descriptor_set {
    ($name:tt) => {
        include_bytes!(concat!(env!("OUT_DIR"), "/", $name, ".bin"))
    };
}
#[cfg(feature = "tls")]
pub use transport::tls::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};
