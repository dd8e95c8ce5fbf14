//! The standard gRPC interop test service and benchmark service on plexus.
//!
//! `interop-server --port=N` serves `grpc.testing.TestService` and
//! `grpc.testing.BenchmarkService`; `interop-client --server_host=H --server_port=N
//! --test_case=NAME` runs one of the interop cases against any gRPC server of those services.
//! Both take the flags of the public interop test description. The .proto files are in
//! `interop/proto`; [`messages`] mirrors them as prost structs.
//!
//! Compression and TLS are not in this build of plexus yet: [`features`] is the one place that
//! says so, and the only file to change when they arrive.

pub mod client;
pub mod features;
pub mod flags;
pub mod messages;
pub mod server;
