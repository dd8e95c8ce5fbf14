//! The standard gRPC interop test service and benchmark service on plexus.
//!
//! `interop-server --port=N` serves `grpc.testing.TestService` and
//! `grpc.testing.BenchmarkService`; `interop-client --server_host=H --server_port=N
//! --test_case=NAME` runs one of the interop cases against any gRPC server of those services.
//! Both take the flags of the public interop test description. The .proto files are in
//! `interop/proto`; build.rs generates [`grpc::testing`] from them with plexus-build (messages,
//! clients, server traits), and [`payload`] holds the helpers for their payloads.
//!
//! `--use_tls=true` runs either binary over TLS with test certificates generated at test time;
//! [`features`] is where the binaries use plexus's compression and TLS APIs, and says which
//! files and flags the TLS options read.

pub mod client;
pub mod features;
pub mod flags;
pub mod payload;
pub mod reflection;
pub mod server;

/// The generated code of `interop/proto`, nested as its package `grpc.testing` is.
pub mod grpc {
    /// The `grpc.testing` messages, `TestService`, `UnimplementedService` and
    /// `BenchmarkService` (clients in `*_client`, server traits in `*_server`).
    // Fields and messages without a comment in the .proto files get no doc comment.
    #[allow(missing_docs)]
    pub mod testing {
        plexus::include_proto!("grpc.testing");
    }
}
