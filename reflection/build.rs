//! Generates the `grpc.reflection.v1` and `grpc.reflection.v1alpha` messages, servers and
//! clients, and two descriptor sets: `reflection` (the two protocol files, so the reflection
//! services can describe themselves) and `well_known_types` (google/protobuf/*.proto, for
//! hand-registered files that import them without registering them).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    plexus_build::configure()
        // Encoded files are handed out as shared `Bytes`, not copied per response.
        .bytes(["."])
        .file_descriptor_set_name("reflection")
        .compile_protos(
            &[
                "proto/grpc/reflection/v1/reflection.proto",
                "proto/grpc/reflection/v1alpha/reflection.proto",
            ],
            &["proto"],
        )?;
    plexus_build::configure()
        .build_client(false)
        .build_server(false)
        .file_descriptor_set_name("well_known_types")
        .compile_protos(&["proto/well_known_types.proto"], &["proto"])?;
    Ok(())
}
