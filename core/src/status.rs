//! The outcome of a call: a gRPC status code, a message and optional details.
//!
//! Every mapping from transport failures (h2 errors, I/O errors, HTTP statuses, RST_STREAM
//! reasons) to gRPC codes lives in this file, so the rest of the crate never guesses a code.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;

use crate::error::{Error, Kind};
use crate::metadata::Metadata;

/// A gRPC status code, as listed in the gRPC spec (`doc/statuscodes.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(i32)]
pub enum Code {
    /// Not an error; returned on success.
    Ok = 0,
    /// The operation was cancelled, typically by the caller.
    Cancelled = 1,
    /// Unknown error.
    Unknown = 2,
    /// The client specified an invalid argument.
    InvalidArgument = 3,
    /// The deadline expired before the operation could complete.
    DeadlineExceeded = 4,
    /// Some requested entity was not found.
    NotFound = 5,
    /// The entity that a client attempted to create already exists.
    AlreadyExists = 6,
    /// The caller does not have permission to execute the operation.
    PermissionDenied = 7,
    /// Some resource has been exhausted (quota, message size, ...).
    ResourceExhausted = 8,
    /// The system is not in a state required for the operation.
    FailedPrecondition = 9,
    /// The operation was aborted, typically due to a concurrency issue.
    Aborted = 10,
    /// The operation was attempted past the valid range.
    OutOfRange = 11,
    /// The operation is not implemented or not supported.
    Unimplemented = 12,
    /// An internal invariant was broken.
    Internal = 13,
    /// The service is currently unavailable; retrying may help.
    Unavailable = 14,
    /// Unrecoverable data loss or corruption.
    DataLoss = 15,
    /// The request does not have valid authentication credentials.
    Unauthenticated = 16,
}

impl Code {
    /// The code for a numeric value; values outside 0..=16 become `Unknown`, as the spec says.
    pub fn from_i32(value: i32) -> Code {
        match value {
            0 => Code::Ok,
            1 => Code::Cancelled,
            2 => Code::Unknown,
            3 => Code::InvalidArgument,
            4 => Code::DeadlineExceeded,
            5 => Code::NotFound,
            6 => Code::AlreadyExists,
            7 => Code::PermissionDenied,
            8 => Code::ResourceExhausted,
            9 => Code::FailedPrecondition,
            10 => Code::Aborted,
            11 => Code::OutOfRange,
            12 => Code::Unimplemented,
            13 => Code::Internal,
            14 => Code::Unavailable,
            15 => Code::DataLoss,
            16 => Code::Unauthenticated,
            _ => Code::Unknown,
        }
    }

    /// The numeric value sent on the wire in `grpc-status`.
    pub fn as_i32(self) -> i32 {
        self as i32
    }

    /// The spec's upper-snake-case name, e.g. `DEADLINE_EXCEEDED`.
    pub fn name(self) -> &'static str {
        match self {
            Code::Ok => "OK",
            Code::Cancelled => "CANCELLED",
            Code::Unknown => "UNKNOWN",
            Code::InvalidArgument => "INVALID_ARGUMENT",
            Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
            Code::NotFound => "NOT_FOUND",
            Code::AlreadyExists => "ALREADY_EXISTS",
            Code::PermissionDenied => "PERMISSION_DENIED",
            Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
            Code::FailedPrecondition => "FAILED_PRECONDITION",
            Code::Aborted => "ABORTED",
            Code::OutOfRange => "OUT_OF_RANGE",
            Code::Unimplemented => "UNIMPLEMENTED",
            Code::Internal => "INTERNAL",
            Code::Unavailable => "UNAVAILABLE",
            Code::DataLoss => "DATA_LOSS",
            Code::Unauthenticated => "UNAUTHENTICATED",
        }
    }

    /// Parses the ASCII decimal value of a `grpc-status` header.
    pub(crate) fn from_header(value: &[u8]) -> Option<Code> {
        if value.is_empty() || value.len() > 3 || !value.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let n = value.iter().fold(0i32, |n, d| n * 10 + i32::from(d - b'0'));
        Some(Code::from_i32(n))
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The status a call ended with: code, human-readable message, binary details and trailers.
///
/// A status made from a local failure (an I/O or HTTP/2 error) keeps that error as its
/// [`source`](std::error::Error::source). Equality compares code, message, details and
/// metadata, not the source.
#[derive(Clone)]
pub struct Status {
    code: Code,
    message: String,
    /// Details, metadata and the source are rare and large; boxing them keeps
    /// `Result<T, Status>` small.
    extra: Option<Box<Extra>>,
}

#[derive(Clone, Default)]
struct Extra {
    details: Bytes,
    metadata: Metadata,
    /// Shared so `Status` stays `Clone` (h2's and io's errors are not).
    source: Option<Arc<dyn std::error::Error + Send + Sync>>,
}

/// What `metadata()` returns for a status without any.
static NO_METADATA: std::sync::LazyLock<Metadata> = std::sync::LazyLock::new(Metadata::new);

impl Status {
    /// A status with a code and a message.
    pub fn new(code: Code, message: impl Into<String>) -> Status {
        Status {
            code,
            message: message.into(),
            extra: None,
        }
    }

    /// The OK status.
    pub fn ok() -> Status {
        Status::new(Code::Ok, "")
    }

    /// Attaches binary details, sent as `grpc-status-details-bin` (usually a `google.rpc.Status`).
    pub fn with_details(mut self, details: impl Into<Bytes>) -> Status {
        self.extra.get_or_insert_with(Box::default).details = details.into();
        self
    }

    /// Attaches metadata: trailing metadata when received, or sent with the trailers.
    pub fn with_metadata(mut self, metadata: Metadata) -> Status {
        if metadata.is_empty() && self.extra.is_none() {
            // Nothing to replace: no boxed extras for a status that has none.
            return self;
        }
        *self.metadata_mut() = metadata;
        self
    }

    /// The status code.
    pub fn code(&self) -> Code {
        self.code
    }

    /// The message, already percent-decoded.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The raw `grpc-status-details-bin` bytes (empty when none were sent).
    pub fn details(&self) -> &Bytes {
        static NONE: Bytes = Bytes::new();
        self.extra.as_ref().map_or(&NONE, |e| &e.details)
    }

    /// Trailing metadata that came with (or goes with) this status.
    pub fn metadata(&self) -> &Metadata {
        self.extra.as_ref().map_or(&NO_METADATA, |e| &e.metadata)
    }

    /// Mutable access to the trailing metadata.
    pub fn metadata_mut(&mut self) -> &mut Metadata {
        &mut self.extra.get_or_insert_with(Box::default).metadata
    }

    /// Whether the code is OK.
    pub fn is_ok(&self) -> bool {
        self.code == Code::Ok
    }

    /// Shorthand for `Status::new(Code::Cancelled, message)`.
    pub fn cancelled(message: impl Into<String>) -> Status {
        Status::new(Code::Cancelled, message)
    }

    /// Shorthand for `Status::new(Code::InvalidArgument, message)`.
    pub fn invalid_argument(message: impl Into<String>) -> Status {
        Status::new(Code::InvalidArgument, message)
    }

    /// Shorthand for `Status::new(Code::DeadlineExceeded, message)`.
    pub fn deadline_exceeded(message: impl Into<String>) -> Status {
        Status::new(Code::DeadlineExceeded, message)
    }

    /// Shorthand for `Status::new(Code::NotFound, message)`.
    pub fn not_found(message: impl Into<String>) -> Status {
        Status::new(Code::NotFound, message)
    }

    /// Shorthand for `Status::new(Code::ResourceExhausted, message)`.
    pub fn resource_exhausted(message: impl Into<String>) -> Status {
        Status::new(Code::ResourceExhausted, message)
    }

    /// Shorthand for `Status::new(Code::Unimplemented, message)`.
    pub fn unimplemented(message: impl Into<String>) -> Status {
        Status::new(Code::Unimplemented, message)
    }

    /// Shorthand for `Status::new(Code::Internal, message)`.
    pub fn internal(message: impl Into<String>) -> Status {
        Status::new(Code::Internal, message)
    }

    /// Shorthand for `Status::new(Code::Unavailable, message)`.
    pub fn unavailable(message: impl Into<String>) -> Status {
        Status::new(Code::Unavailable, message)
    }

    /// The status for a message over a size limit; names both sizes, as grpc-go and C-core do.
    pub(crate) fn message_too_large(direction: &str, size: usize, limit: usize) -> Status {
        Status::resource_exhausted(format!(
            "{direction} message larger than max ({size} vs. {limit} bytes)"
        ))
    }

    /// Maps an HTTP status of a response that carried no `grpc-status`, per the spec's
    /// `doc/http-grpc-status-mapping.md`.
    pub(crate) fn from_http_status(status: http::StatusCode) -> Status {
        let code = match status.as_u16() {
            400 => Code::Internal,
            401 => Code::Unauthenticated,
            403 => Code::PermissionDenied,
            404 => Code::Unimplemented,
            429 | 502 | 503 | 504 => Code::Unavailable,
            _ => Code::Unknown,
        };
        Status::new(
            code,
            format!("unexpected HTTP status code {}", status.as_u16()),
        )
    }

    /// Maps an RST_STREAM or GOAWAY error code, per the spec's `doc/PROTOCOL-HTTP2.md`.
    pub(crate) fn from_reason(reason: h2::Reason, what: &str) -> Status {
        let code = match reason {
            h2::Reason::REFUSED_STREAM => Code::Unavailable,
            h2::Reason::CANCEL => Code::Cancelled,
            h2::Reason::ENHANCE_YOUR_CALM => Code::ResourceExhausted,
            h2::Reason::INADEQUATE_SECURITY => Code::PermissionDenied,
            _ => Code::Internal,
        };
        Status::new(code, format!("{what}: {reason:?}"))
    }

    /// Maps an error from h2 to the status the caller sees, keeping the error as the source
    /// (the `io::Error` itself when h2 failed on the socket).
    pub(crate) fn from_h2(err: h2::Error) -> Status {
        if err.is_io() {
            let io = err.into_io().expect("is_io was checked");
            return Status::from_io(io);
        }
        let (code, message) = h2_code(&err);
        Status::new(code, message).with_source(err)
    }

    /// The status for calls on a connection the peer closed with GOAWAY carrying debug data
    /// (such as gRPC's `too_many_pings`), which says more than h2's error does.
    pub(crate) fn from_goaway(reason: h2::Reason, debug_data: &[u8]) -> Status {
        Status::unavailable(format!(
            "connection closed by GOAWAY ({reason:?}): {}",
            String::from_utf8_lossy(debug_data)
        ))
    }

    /// Maps an I/O error on the connection: the peer is gone or unreachable. The error stays
    /// as the source.
    pub(crate) fn from_io(err: std::io::Error) -> Status {
        Status::unavailable(format!("transport error: {err}")).with_source(err)
    }

    /// Keeps `err` as the error behind this status: the `io::Error` itself when h2 failed on
    /// the socket, else the `h2::Error`.
    pub(crate) fn with_h2_source(self, err: h2::Error) -> Status {
        match err.is_io() {
            true => self.with_source(err.into_io().expect("is_io was checked")),
            false => self.with_source(err),
        }
    }

    /// Keeps `source` as the error behind this status.
    pub(crate) fn with_source(
        mut self,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Status {
        self.extra.get_or_insert_with(Box::default).source = Some(Arc::new(source));
        self
    }
}

/// The code and message for an h2 error that is not an I/O error.
fn h2_code(err: &h2::Error) -> (Code, String) {
    if err.is_go_away() {
        // A GOAWAY that ended this stream: the connection is going away, so retrying on a
        // new one may succeed.
        let reason = err.reason().unwrap_or(h2::Reason::NO_ERROR);
        return (
            Code::Unavailable,
            format!("connection closed by GOAWAY ({reason:?})"),
        );
    }
    if let Some(reason) = err.reason() {
        let what = if err.is_reset() || err.is_remote() {
            "stream reset by peer"
        } else {
            "HTTP/2 error"
        };
        let status = Status::from_reason(reason, what);
        return (status.code, status.message);
    }
    (Code::Internal, format!("HTTP/2 error: {err}"))
}

/// An [`Error`] becomes the status a caller sees: a status it wraps comes back as it was; an
/// h2 error is mapped as `Status::from_h2` maps it; otherwise invalid settings are
/// INVALID_ARGUMENT and every transport failure is UNAVAILABLE. The cause stays the source.
impl From<Error> for Status {
    fn from(err: Error) -> Status {
        let kind = err.kind();
        let (message, source) = err.into_parts();
        let Some(source) = source else {
            return Status::new(code_for(kind), message);
        };
        let source = match source.downcast::<Status>() {
            Ok(status) => return *status,
            Err(source) => source,
        };
        let code = match source.downcast_ref::<h2::Error>() {
            Some(h2) => h2_code(h2).0,
            None => code_for(kind),
        };
        let mut status = Status::new(code, message);
        status.extra.get_or_insert_with(Box::default).source = Some(Arc::from(source));
        status
    }
}

/// The code for an [`Error`] of `kind` whose cause has no code of its own.
fn code_for(kind: Kind) -> Code {
    match kind {
        Kind::Config => Code::InvalidArgument,
        Kind::Io | Kind::Tls | Kind::Protocol | Kind::Timeout => Code::Unavailable,
    }
}

impl PartialEq for Status {
    fn eq(&self, other: &Status) -> bool {
        self.code == other.code
            && self.message == other.message
            && self.details() == other.details()
            && self.metadata() == other.metadata()
    }
}

impl Eq for Status {}

impl fmt::Debug for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Status");
        d.field("code", &self.code).field("message", &self.message);
        if !self.details().is_empty() {
            d.field("details", self.details());
        }
        if !self.metadata().is_empty() {
            d.field("metadata", self.metadata());
        }
        if let Some(source) = self.extra.as_ref().and_then(|e| e.source.as_ref()) {
            d.field("source", source);
        }
        d.finish()
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.message.is_empty() {
            write!(f, "{}", self.code)
        } else {
            write!(f, "{}: {}", self.code, self.message)
        }
    }
}

impl std::error::Error for Status {
    /// The local error this status was made from (an `io::Error`, an `h2::Error`), if any.
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        let source = self.extra.as_ref()?.source.as_ref()?;
        Some(&**source)
    }
}

/// Percent-encodes a status message for `grpc-message`: bytes outside 0x20..=0x7E, and `%`
/// itself, become `%XX` (spec: `doc/PROTOCOL-HTTP2.md`, "Status-Message").
pub(crate) fn percent_encode(message: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(message.len());
    for &b in message.as_bytes() {
        if (0x20..=0x7E).contains(&b) && b != b'%' {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xF)]));
        }
    }
    out
}

/// Decodes a received `grpc-message`. Malformed `%` sequences are kept as they are and bytes
/// that are not UTF-8 become U+FFFD, so a broken message from a peer still yields a status.
pub(crate) fn percent_decode(raw: &[u8]) -> String {
    fn hex(b: u8) -> Option<u8> {
        match b {
            b'0'..=b'9' => Some(b - b'0'),
            b'a'..=b'f' => Some(b - b'a' + 10),
            b'A'..=b'F' => Some(b - b'A' + 10),
            _ => None,
        }
    }
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        if raw[i] == b'%' && i + 2 < raw.len() {
            if let (Some(h), Some(l)) = (hex(raw[i + 1]), hex(raw[i + 2])) {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
        }
        out.push(raw[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
pub(crate) mod tests {
    use std::error::Error as _;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use super::*;

    /// A socket whose writes succeed and whose reads fail with "reset by test".
    struct ResetOnRead;

    impl futures_io::AsyncRead for ResetOnRead {
        fn poll_read(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            _: &mut [u8],
        ) -> Poll<std::io::Result<usize>> {
            let err = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset by test");
            Poll::Ready(Err(err))
        }
    }

    impl futures_io::AsyncWrite for ResetOnRead {
        fn poll_write(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<std::io::Result<usize>> {
            Poll::Ready(Ok(buf.len()))
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    /// An h2 error caused by the socket (h2 makes those only itself): a client connection
    /// whose first read fails.
    pub(crate) fn h2_io_error() -> h2::Error {
        smol::block_on(async {
            let (_send, conn) = h2::client::handshake(crate::rt::Compat::new(ResetOnRead))
                .await
                .expect("the handshake only writes");
            conn.await.expect_err("the read fails")
        })
    }

    #[test]
    fn io_errors_stay_the_source() {
        let status = Status::from_io(std::io::Error::new(
            std::io::ErrorKind::BrokenPipe,
            "peer left",
        ));
        assert_eq!(status.code(), Code::Unavailable);
        assert_eq!(status.message(), "transport error: peer left");
        let io = status.source().unwrap().downcast_ref::<std::io::Error>();
        assert_eq!(io.unwrap().kind(), std::io::ErrorKind::BrokenPipe);
    }

    #[test]
    fn h2_errors_stay_the_source() {
        let err = h2_io_error();
        assert!(err.is_io());
        let status = Status::from_h2(err);
        assert_eq!(status.code(), Code::Unavailable);
        assert!(status.message().contains("reset by test"), "{status}");
        let io = status.source().unwrap().downcast_ref::<std::io::Error>();
        assert_eq!(io.unwrap().kind(), std::io::ErrorKind::ConnectionReset);

        let status = Status::from_h2(h2::Error::from(h2::Reason::ENHANCE_YOUR_CALM));
        assert_eq!(status.code(), Code::ResourceExhausted);
        let h2 = status.source().unwrap().downcast_ref::<h2::Error>();
        assert_eq!(h2.unwrap().reason(), Some(h2::Reason::ENHANCE_YOUR_CALM));
    }

    #[test]
    fn a_source_changes_neither_equality_nor_clone() {
        let plain = Status::unavailable("transport error: peer left");
        let sourced = Status::from_io(std::io::Error::other("peer left"));
        assert_eq!(plain, sourced);
        assert!(sourced.clone().source().is_some());
        assert!(plain.source().is_none());
        assert!(format!("{sourced:?}").contains("source"));
        assert_eq!(
            plain.with_details(Bytes::new()),
            Status::new(Code::Unavailable, "transport error: peer left")
        );
    }

    #[test]
    fn a_status_stays_small() {
        // Code, message and one pointer: the rare fields, the source among them, are boxed.
        assert!(std::mem::size_of::<Status>() <= 5 * std::mem::size_of::<usize>());
    }

    #[test]
    fn percent_round_trip() {
        let msg = "café ☃ 100% done\n";
        let enc = percent_encode(msg);
        assert!(enc.bytes().all(|b| (0x20..=0x7E).contains(&b)));
        assert_eq!(enc, "caf%C3%A9 %E2%98%83 100%25 done%0A");
        assert_eq!(percent_decode(enc.as_bytes()), msg);
    }

    #[test]
    fn percent_decode_tolerates_garbage() {
        assert_eq!(percent_decode(b"100%"), "100%");
        assert_eq!(percent_decode(b"%zz%4"), "%zz%4");
        assert_eq!(percent_decode(b"%FF ok"), "\u{FFFD} ok");
        assert_eq!(percent_decode(&[0xC3, 0x28]), "\u{FFFD}(");
    }

    #[test]
    fn code_parsing() {
        assert_eq!(Code::from_header(b"0"), Some(Code::Ok));
        assert_eq!(Code::from_header(b"16"), Some(Code::Unauthenticated));
        assert_eq!(Code::from_header(b"99"), Some(Code::Unknown));
        assert_eq!(Code::from_header(b""), None);
        assert_eq!(Code::from_header(b"1x"), None);
        assert_eq!(Code::from_header(b"-1"), None);
    }

    #[test]
    fn http_mapping_follows_spec() {
        let map = |s: u16| Status::from_http_status(http::StatusCode::from_u16(s).unwrap()).code();
        assert_eq!(map(400), Code::Internal);
        assert_eq!(map(401), Code::Unauthenticated);
        assert_eq!(map(403), Code::PermissionDenied);
        assert_eq!(map(404), Code::Unimplemented);
        for s in [429, 502, 503, 504] {
            assert_eq!(map(s), Code::Unavailable);
        }
        assert_eq!(map(500), Code::Unknown);
    }

    #[test]
    fn reset_mapping_follows_spec() {
        let map = |r| Status::from_reason(r, "x").code();
        assert_eq!(map(h2::Reason::NO_ERROR), Code::Internal);
        assert_eq!(map(h2::Reason::PROTOCOL_ERROR), Code::Internal);
        assert_eq!(map(h2::Reason::REFUSED_STREAM), Code::Unavailable);
        assert_eq!(map(h2::Reason::CANCEL), Code::Cancelled);
        assert_eq!(map(h2::Reason::ENHANCE_YOUR_CALM), Code::ResourceExhausted);
        assert_eq!(map(h2::Reason::INADEQUATE_SECURITY), Code::PermissionDenied);
    }
}
