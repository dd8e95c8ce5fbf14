//! Generates the `grpc.testing` messages, the TestService and BenchmarkService servers and
//! every service's client from `interop/proto` (no protoc: plexus-build parses them itself),
//! and the descriptor set `interop` that interop-server's reflection answers from.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    plexus_build::configure()
        // Payload bodies are `Bytes`: a received body is a slice of the frame it came in, and
        // a response body is shared, not copied, when the benchmark server clones a response.
        .bytes(["."])
        .file_descriptor_set_name("interop")
        .compile_protos(
            &[
                "proto/empty.proto",
                "proto/messages.proto",
                "proto/test.proto",
                "proto/benchmark_service.proto",
            ],
            &["proto"],
        )?;
    Ok(())
}
