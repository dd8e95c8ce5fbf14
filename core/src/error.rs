//! [`Error`]: what fails outside a call — configuration, serving a listener or a connection,
//! the transport under them. A call's outcome is a [`Status`] instead; `Error` converts into
//! one (`?` works in code that returns `Status`), and the codes it gets are decided in
//! `status.rs`, the one place that maps I/O and HTTP/2 errors to gRPC codes.

use std::error::Error as StdError;
use std::fmt;
use std::io;

use crate::status::Status;

/// The cause an [`Error`] keeps for [`source`](StdError::source).
type Source = Box<dyn StdError + Send + Sync>;

/// An error from configuring or serving, with what kind of failure it was and the error
/// that caused it.
///
/// Its `Display` is a whole sentence that already names the cause, because the same text
/// becomes a gRPC status message, which is all the C ABI and the wire carry; `source()` gives
/// the cause itself (an `io::Error`, an `h2::Error`, a [`Status`]) for code that inspects it.
pub struct Error {
    /// Boxed so `Result<(), Error>` stays one pointer wide.
    inner: Box<Inner>,
}

struct Inner {
    kind: Kind,
    message: String,
    source: Option<Source>,
}

/// What kind of failure an [`Error`] is; private so kinds can be split or added later.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A setting or an argument is invalid.
    Config,
    /// The socket failed: accept, read, write, or the peer went away.
    Io,
    /// The TLS handshake failed.
    Tls,
    /// The peer broke HTTP/2's or gRPC's rules (a protocol error, pinging too often).
    Protocol,
    /// Something did not happen in time: a handshake, a keepalive PING's answer.
    Timeout,
}

impl Error {
    /// An error of `kind` that says `message` and was caused by `source`.
    pub(crate) fn new(kind: Kind, message: impl Into<String>, source: Option<Source>) -> Error {
        Error {
            inner: Box::new(Inner {
                kind,
                message: message.into(),
                source,
            }),
        }
    }

    /// An invalid setting or argument.
    #[cfg_attr(
        not(test),
        expect(
            dead_code,
            reason = "ServerBuilder::build and ChannelBuilder::build still fail with a Status"
        )
    )]
    pub(crate) fn config(message: impl Into<String>) -> Error {
        Error::new(Kind::Config, message, None)
    }

    /// Something that did not happen in time.
    pub(crate) fn timeout(message: impl Into<String>) -> Error {
        Error::new(Kind::Timeout, message, None)
    }

    /// An error of `kind` whose whole story is `status` (a failed TLS handshake, a keepalive
    /// timeout): it says the status's message and converts back into that status.
    pub(crate) fn from_status(kind: Kind, status: Status) -> Error {
        Error::new(kind, status.message().to_string(), Some(Box::new(status)))
    }

    /// An error from h2: I/O errors keep the `io::Error` itself as the source, the rest the
    /// `h2::Error`.
    pub(crate) fn from_h2(err: h2::Error) -> Error {
        if err.is_io() {
            let io = err.into_io().expect("is_io was checked");
            return Error::from(io);
        }
        Error::new(
            Kind::Protocol,
            format!("HTTP/2 error: {err}"),
            Some(Box::new(err)),
        )
    }

    /// The kind, for the conversion into a [`Status`].
    pub(crate) fn kind(&self) -> Kind {
        self.inner.kind
    }

    /// Splits the error into its message and source, for the conversion into a [`Status`].
    pub(crate) fn into_parts(self) -> (String, Option<Source>) {
        let inner = *self.inner;
        (inner.message, inner.source)
    }

    /// Whether a setting or an argument was invalid.
    pub fn is_config(&self) -> bool {
        self.inner.kind == Kind::Config
    }

    /// Whether the socket failed (the source is then the `io::Error`).
    pub fn is_io(&self) -> bool {
        self.inner.kind == Kind::Io
    }

    /// Whether the TLS handshake failed.
    pub fn is_tls(&self) -> bool {
        self.inner.kind == Kind::Tls
    }

    /// Whether the peer broke HTTP/2's or gRPC's rules.
    pub fn is_protocol(&self) -> bool {
        self.inner.kind == Kind::Protocol
    }

    /// Whether something did not happen in time (a handshake, a keepalive PING's answer).
    pub fn is_timeout(&self) -> bool {
        self.inner.kind == Kind::Timeout
    }
}

impl From<io::Error> for Error {
    fn from(err: io::Error) -> Error {
        Error::new(Kind::Io, err.to_string(), Some(Box::new(err)))
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Error");
        d.field("kind", &self.inner.kind)
            .field("message", &self.inner.message);
        if let Some(source) = &self.inner.source {
            d.field("source", source);
        }
        d.finish()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.inner.message)
    }
}

impl StdError for Error {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.inner.source.as_ref().map(|s| &**s as _)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::Code;

    #[test]
    fn io_errors_keep_their_cause() {
        let err = Error::from(io::Error::new(io::ErrorKind::AddrInUse, "port taken"));
        assert!(err.is_io());
        assert!(!err.is_config() && !err.is_tls() && !err.is_protocol() && !err.is_timeout());
        assert_eq!(err.to_string(), "port taken");
        let source = err.source().expect("an io error keeps its cause");
        let io = source
            .downcast_ref::<io::Error>()
            .expect("the cause is the io::Error");
        assert_eq!(io.kind(), io::ErrorKind::AddrInUse);
    }

    #[test]
    fn kinds_are_told_apart() {
        assert!(Error::config("bad window").is_config());
        assert!(Error::timeout("no preface").is_timeout());
        let tls = Error::from_status(Kind::Tls, Status::unavailable("TLS handshake failed"));
        assert!(tls.is_tls());
        assert_eq!(tls.to_string(), "TLS handshake failed");
        let h2 = Error::from_h2(h2::Error::from(h2::Reason::PROTOCOL_ERROR));
        assert!(h2.is_protocol());
        assert!(h2.source().unwrap().downcast_ref::<h2::Error>().is_some());
        let io = Error::from_h2(crate::status::tests::h2_io_error());
        assert!(io.is_io());
        let cause = io.source().unwrap().downcast_ref::<io::Error>().unwrap();
        assert_eq!(cause.kind(), io::ErrorKind::ConnectionReset);
    }

    #[test]
    fn converts_into_a_status_keeping_the_cause() {
        let status = Status::from(Error::config("keepalive time must be greater than zero"));
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(status.message(), "keepalive time must be greater than zero");

        let status = Status::from(Error::from(io::Error::from(io::ErrorKind::BrokenPipe)));
        assert_eq!(status.code(), Code::Unavailable);
        let cause = StdError::source(&status).expect("the status keeps the io::Error");
        assert!(cause.downcast_ref::<io::Error>().is_some());

        let pings = Status::resource_exhausted("too_many_pings");
        let err = Error::from_status(Kind::Protocol, pings.clone());
        assert!(err.source().unwrap().downcast_ref::<Status>().is_some());
        assert_eq!(Status::from(err), pings);

        let h2 = Status::from(Error::from_h2(h2::Error::from(h2::Reason::REFUSED_STREAM)));
        assert_eq!(h2.code(), Code::Unavailable);
        assert!(StdError::source(&h2).unwrap().is::<h2::Error>());
    }

    #[test]
    fn errors_cross_threads_and_box_into_std_errors() {
        fn send_sync<T: Send + Sync + 'static>() {}
        send_sync::<Error>();
        send_sync::<Status>();
        let boxed: Box<dyn StdError + Send + Sync> = Box::new(Error::timeout("late"));
        assert_eq!(boxed.to_string(), "late");
    }

    #[test]
    fn result_stays_one_pointer_wide() {
        assert_eq!(
            std::mem::size_of::<Result<(), Error>>(),
            std::mem::size_of::<usize>()
        );
    }
}
