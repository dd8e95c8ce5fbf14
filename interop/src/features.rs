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
//!
//! TLS is plexus's own too (rustls). The standard interop binaries use grpc's bundled test
//! certificates; ours are generated at test time instead (`plexus-peer certs --out DIR` writes
//! `ca.pem`, and `server.pem`/`server.key` for `localhost` and `*.test.google.fr`), and the
//! binaries find them by flag or through [`CERTS_ENV`]:
//!
//! - `interop-server --use_tls=true` presents `--tls_cert_file`/`--tls_key_file`, by default
//!   `$PLEXUS_INTEROP_CERTS/server.pem` and `server.key` ([`server_tls`]).
//! - `interop-client --use_tls=true` trusts the system roots, or with `--use_test_ca=true` only
//!   `--ca_file`, by default `$PLEXUS_INTEROP_CERTS/ca.pem`; `--server_host_override` is the
//!   name verified, sent as SNI and used as `:authority` ([`client_tls`]).

use std::path::{Path, PathBuf};

use plexus::{
    CallContext, CallOptions, Certificate, ClientTlsConfig, Compression, Identity, ResponseSink,
    SendOptions, Sender, ServerTlsConfig, Status,
};

/// The environment variable naming the directory of test certificates (the layout
/// `plexus-peer certs --out DIR` writes) that `--use_tls=true` falls back on when no file
/// flag is given.
pub const CERTS_ENV: &str = "PLEXUS_INTEROP_CERTS";

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

/// The server's TLS settings for `--use_tls=true`: the certificate chain and key in
/// `cert_file` and `key_file`, each defaulting to its file in [`CERTS_ENV`]'s directory.
/// The error says which file is missing or unreadable.
pub fn server_tls(
    cert_file: Option<&Path>,
    key_file: Option<&Path>,
) -> Result<ServerTlsConfig, String> {
    let cert = file_or_default(cert_file, "--use_tls=true", "--tls_cert_file", "server.pem")?;
    let key = file_or_default(key_file, "--use_tls=true", "--tls_key_file", "server.key")?;
    let identity = Identity::from_pem_files(&cert, &key).map_err(|e| e.to_string())?;
    Ok(ServerTlsConfig::new(identity))
}

/// `given`, else the file `name` in [`CERTS_ENV`]'s directory; an error saying that `option`
/// needs `flag` when neither is there.
fn file_or_default(
    given: Option<&Path>,
    option: &str,
    flag: &str,
    name: &str,
) -> Result<PathBuf, String> {
    if let Some(path) = given {
        return Ok(path.to_path_buf());
    }
    match std::env::var_os(CERTS_ENV) {
        Some(dir) if !dir.is_empty() => Ok(Path::new(&dir).join(name)),
        _ => Err(format!(
            "{option} needs {flag}, or {CERTS_ENV} naming a directory with {name} \
             (`plexus-peer certs --out DIR` writes one)"
        )),
    }
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

/// The channel's TLS settings for `--use_tls=true`: with `use_test_ca`, trust only the CA in
/// `ca_file` (default: `ca.pem` in [`CERTS_ENV`]'s directory), else the system roots; verify
/// `server_host_override` (when given) instead of the server host, send it as SNI and use it
/// as `:authority`.
pub fn client_tls(
    use_test_ca: bool,
    ca_file: Option<&Path>,
    server_host_override: Option<&str>,
) -> Result<ClientTlsConfig, String> {
    let mut tls = ClientTlsConfig::new();
    if use_test_ca {
        let ca = file_or_default(ca_file, "--use_test_ca=true", "--ca_file", "ca.pem")?;
        tls = tls.ca_certificate(Certificate::from_pem_file(&ca).map_err(|e| e.to_string())?);
    }
    if let Some(name) = server_host_override {
        tls = tls.server_name(name);
    }
    Ok(tls)
}
