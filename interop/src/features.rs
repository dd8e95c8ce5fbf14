//! Everything the interop binaries need from compression and TLS, in one place.
//!
//! This build of plexus has neither message compression nor TLS. Each function here is the
//! single point where the server, the client cases or the binaries touch those features; today
//! they answer "no" (or fail with [`NOT_YET`]) and, once core has the API, only this file
//! changes. What is true today, and why:
//!
//! - No request message reaching a handler is compressed: the server answers a call whose
//!   `grpc-encoding` is anything but `identity` with UNIMPLEMENTED before any handler runs,
//!   and rejects a message with the compressed flag set on an identity stream. So
//!   [`request_was_compressed`] is `false` and the CompressedRequest feature (INVALID_ARGUMENT
//!   for an uncompressed request with `expect_compressed` set) already works.
//! - The server cannot compress a response: `response_compressed: true` fails the call with
//!   UNIMPLEMENTED saying so.
//! - The client cannot compress requests nor see whether a response message was compressed:
//!   the four compression cases fail with [`NOT_YET`] at the first step that needs it.
//! - `--use_tls=true` fails at start-up with [`NOT_YET`], in both binaries.

use plexus::{CallContext, CallOptions, ResponseSink, Sender, Status};

/// What a case or flag that needs a missing feature fails with.
pub const NOT_YET: &str = "not supported by this build yet";

/// A case or option this build cannot run; the client exits with its own code for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsupported(pub String);

impl Unsupported {
    fn new(what: &str) -> Unsupported {
        Unsupported(format!("{what} is {NOT_YET}"))
    }
}

impl std::fmt::Display for Unsupported {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

// ---- server ----

/// Whether the request message just read arrived compressed (CompressedRequest feature).
pub fn request_was_compressed(_ctx: &CallContext) -> bool {
    // See the module docs: the server refuses every compressed request before a handler runs.
    false
}

/// The status for a response the client asked to be compressed (CompressedResponse feature).
pub fn check_response_compression(compressed: Option<bool>) -> Result<(), Status> {
    match compressed {
        Some(true) => Err(Status::unimplemented(format!(
            "response compression (response_compressed / ResponseParameters.compressed) is \
             {NOT_YET}"
        ))),
        _ => Ok(()),
    }
}

/// Sends one streamed response, compressed or not as the client asked.
pub async fn send_response<T>(
    sink: &ResponseSink<T>,
    message: T,
    compressed: Option<bool>,
) -> Result<(), Status> {
    check_response_compression(compressed)?;
    sink.send(message).await
}

/// Refuses `--use_tls=true` on the server.
pub fn server_tls() -> Result<(), Unsupported> {
    Err(Unsupported::new("TLS (--use_tls=true)"))
}

// ---- client ----

/// Call options that compress the request messages (gzip) of a call.
pub fn compressed_call(_options: CallOptions) -> Result<CallOptions, Unsupported> {
    Err(Unsupported::new("request compression"))
}

/// Sends one request message of a streaming call compressed, when the call compresses.
pub async fn send_compressed<T>(_sender: &Sender<T>, _message: T) -> Result<(), Unsupported> {
    Err(Unsupported::new("per-message request compression"))
}

/// Checks that the client can tell whether a response message arrived compressed, which the
/// server_compressed_* cases assert.
pub fn response_compression_visible() -> Result<(), Unsupported> {
    Err(Unsupported::new(
        "telling whether a response message was compressed",
    ))
}

/// TLS settings for the client channel: `--use_test_ca` and `--server_host_override`.
pub fn client_tls(
    _use_test_ca: bool,
    _server_host_override: Option<&str>,
) -> Result<(), Unsupported> {
    Err(Unsupported::new("TLS (--use_tls=true)"))
}
