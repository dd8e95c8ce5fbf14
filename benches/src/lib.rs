//! The plexus benchmark harness: a load generator and servers for the standard
//! `grpc.testing.BenchmarkService`, for plexus and for tonic, and the matrix runner that puts
//! them beside grpcio (Python) in one run.
//!
//! ```text
//!  plexus-bench matrix ──spawns──► servers: plexus-bench server --impl plexus|tonic
//!        │                                  [--executor smol],
//!        │                                  python benches/python/bench_peer.py server
//!        ├──per cell──► --load N CPU hogs: plexus-bench spin (killed after the cell)
//!        └──per cell──► clients: plexus-bench client --impl plexus|tonic [--executor smol]
//!                                 --json, python bench_peer.py client --impl grpcio|plexus --json,
//!                                 the C client (benches/c) once the C ABI is merged
//!        reads each client's one-line JSON report; medians of the rounds go to
//!        benches/results/latest.{json,md,svg} (latest-loadN.* under --load N)
//! ```
//!
//! Every client and server runs in its own process, so no two runtimes share threads, and
//! every figure is a ratio against a peer measured in the same run on the same machine.
//! The criterion micro-benchmarks of the codec are in `benches/benches/codec.rs`; the memory
//! probe is `plexus-bench memory`; the hedging tail-latency benchmark is `plexus-bench hedge`.

pub mod args;
pub mod chart;
pub mod hedge;
pub mod hogs;
pub mod load;
pub mod matrix;
pub mod memory;
pub mod plexus_peer;
pub mod sys;
pub mod tonic_peer;

use plexus_interop::grpc::testing::benchmark_service_server::{STREAMING_CALL, UNARY_CALL};
use plexus_interop::grpc::testing::{SimpleRequest, SimpleResponse};
use plexus_interop::payload::{body_len, zeros};

/// Path of `BenchmarkService/UnaryCall`, for tonic's hand-written glue.
pub const UNARY_PATH: &str = UNARY_CALL.path;
/// Path of `BenchmarkService/StreamingCall` (ping-pong: one response per request), for tonic's
/// hand-written glue.
pub const STREAMING_PATH: &str = STREAMING_CALL.path;

/// The request every client sends: `payload` zero bytes, and the same size asked back.
pub fn bench_request(payload: usize) -> SimpleRequest {
    let size = i32::try_from(payload).unwrap_or(i32::MAX);
    SimpleRequest {
        response_size: size,
        payload: Some(zeros(size)),
        ..Default::default()
    }
}

/// Checks that a response carries the payload size asked for, so a server that answers
/// quickly with the wrong thing cannot win.
pub fn check_response(response: &SimpleResponse, payload: usize) -> Result<(), String> {
    let got = body_len(&response.payload);
    if got != payload {
        return Err(format!(
            "response payload is {got} bytes, asked for {payload}"
        ));
    }
    Ok(())
}
