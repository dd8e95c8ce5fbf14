//! Generates the `grpc.health.v1` messages, `HealthClient` and the `Health` server trait from
//! proto/grpc/health/v1/health.proto (no protoc: plexus-build parses it itself).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The descriptor set too, so servers can describe Health through reflection.
    plexus_build::configure()
        .file_descriptor_set_name("health")
        .compile_protos(&["proto/grpc/health/v1/health.proto"], &["proto"])?;
    Ok(())
}
