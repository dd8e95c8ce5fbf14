//! Generates the clock service from proto/ with plexus-build: no protoc, no PROTOC.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    plexus_build::compile_protos(&["clock/v1/clock.proto"], &["proto"])?;
    Ok(())
}
