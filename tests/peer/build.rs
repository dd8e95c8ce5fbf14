//! Generates the echo service's messages, client and server trait from tests/peer/proto, the
//! same file grpcio's side compiles, so both peers speak from one definition.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Payloads are handed on without a copy (bytes::Bytes, as the untyped API speaks).
    plexus_build::configure()
        .bytes(["."])
        .compile_protos(&["proto/echo.proto"], &["proto"])?;
    Ok(())
}
