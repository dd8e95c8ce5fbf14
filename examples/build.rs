//! Generates the examples' clients, servers and messages from `proto/` into `OUT_DIR`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    plexus_build::compile_protos(
        &["proto/route_guide.proto", "proto/quickstart.proto"],
        &["proto"],
    )?;
    Ok(())
}
