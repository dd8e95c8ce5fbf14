//! Everything the interop binaries need from compression and TLS, in one place.
//!
//! Compression is plexus's own (gzip here, as every implementation's interop cases use):
//!
//! - CompressedRequest: handlers read each request message's Compressed-Flag
//!   (`Request::compressed`, `RequestStream::last_message_compressed`) and the server answers
//!   INVALID_ARGUMENT when `expect_compressed` is set on a message that arrived uncompressed.
//! - CompressedResponse: a unary call's response is compressed when `response_compressed` is
//!   true ([`unary_response_compression`]); a streaming call compresses (gzip) and each message
//!   opts out unless its `ResponseParameters.compressed` is true ([`send_response`]).
//! - The client compresses a call with [`compressed_call`], sends one streamed message
//!   uncompressed on such a call with [`send_uncompressed`], and sees each response's flag
//!   (`Response::compressed`, `Streaming::last_message_compressed`).
//! - `--use_tls=true` fails at start-up with [`NOT_YET`], in both binaries.

use plexus::{CallContext, CallOptions, Compression, ResponseSink, SendOptions, Sender, Status};

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

/// The algorithm the interop cases compress with.
pub const ALGORITHM: Compression = Compression::Gzip;

/// CompressedResponse for a unary call: compress the response when `compressed` is true, not
/// when it is false (unset leaves the server's default).
pub fn unary_response_compression(ctx: &CallContext, compressed: Option<bool>) {
    match compressed {
        Some(true) => ctx.set_response_compression(ALGORITHM),
        Some(false) => ctx.set_response_compression(Compression::Identity),
        None => {}
    }
}

/// Makes a streaming call compress its responses; call before the first response or the
/// initial metadata. Each message then goes through [`send_response`].
pub fn compress_stream(ctx: &CallContext) {
    ctx.set_response_compression(ALGORITHM);
}

/// Sends one streamed response, compressed only when the client asked for it.
pub async fn send_response<T>(
    sink: &ResponseSink<T>,
    message: T,
    compressed: Option<bool>,
) -> Result<(), Status> {
    let options = SendOptions::new().compress(compressed == Some(true));
    sink.send_with(message, options).await
}

/// Refuses `--use_tls=true` on the server.
pub fn server_tls() -> Result<(), Unsupported> {
    Err(Unsupported::new("TLS (--use_tls=true)"))
}

// ---- client ----

/// Call options that compress the request messages (gzip) of a call.
pub fn compressed_call(options: CallOptions) -> CallOptions {
    options.compression(ALGORITHM)
}

/// Sends one request message of a compressing call uncompressed.
pub async fn send_uncompressed<T>(sender: &Sender<T>, message: T) -> Result<(), Status> {
    sender
        .send_with(message, SendOptions::new().compress(false))
        .await
}

/// TLS settings for the client channel: `--use_test_ca` and `--server_host_override`.
pub fn client_tls(
    _use_test_ca: bool,
    _server_host_override: Option<&str>,
) -> Result<(), Unsupported> {
    Err(Unsupported::new("TLS (--use_tls=true)"))
}
