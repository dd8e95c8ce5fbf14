//! Transports: how a channel reaches an address and what a server listens on.
//!
//! A [`Connector`] turns an [`Address`] into a byte stream. [`SocketConnector`] (the default)
//! speaks TCP, Unix domain sockets and (on Linux) abstract Unix sockets through `async-io`; [`memory`] gives in-process pipes for
//! tests and embedding; users may bring any other `futures-io` stream. [`tls`] (the default
//! `tls` feature) runs TLS over any of them.

pub mod memory;
mod socket;
#[cfg(feature = "tls")]
pub mod tls;

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

pub use rustls_pki_types::CertificateDer;
pub(crate) use socket::Socket;
pub use socket::SocketConnector;

use crate::rt::BoxFuture;

/// A byte stream that can carry an HTTP/2 connection.
pub trait Io: futures_io::AsyncRead + futures_io::AsyncWrite + Send + Unpin + 'static {}

impl<T: futures_io::AsyncRead + futures_io::AsyncWrite + Send + Unpin + 'static> Io for T {}

/// A boxed [`Io`], as returned by connectors.
pub type BoxedIo = Box<dyn Io>;

/// Where a connection goes: a resolved endpoint. Host names never reach a [`Connector`]; a
/// resolver (see [`Resolver`](crate::client::Resolver)) turns them into addresses first.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Address {
    /// A TCP endpoint (IPv4 or IPv6).
    Tcp(SocketAddr),
    /// A Unix domain socket path.
    Unix(PathBuf),
    /// A name in Linux's abstract Unix socket namespace, without the leading NUL byte.
    UnixAbstract(Vec<u8>),
}

impl fmt::Display for Address {
    /// `1.2.3.4:5`, `[::1]:5`, `unix:/path` or `unix-abstract:name`, the name percent-encoded
    /// where it is not printable ASCII (so the text is a valid target again).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Tcp(addr) => write!(f, "{addr}"),
            Address::Unix(path) => write!(f, "unix:{}", path.display()),
            Address::UnixAbstract(name) => {
                f.write_str("unix-abstract:")?;
                for &b in name {
                    if b.is_ascii_graphic() && b != b'%' {
                        write!(f, "{}", b as char)?;
                    } else {
                        write!(f, "%{b:02X}")?;
                    }
                }
                Ok(())
            }
        }
    }
}

impl From<SocketAddr> for Address {
    fn from(addr: SocketAddr) -> Address {
        Address::Tcp(addr)
    }
}

/// Where a server's client connected from, as a handler sees it
/// ([`CallContext::remote_addr`](crate::CallContext::remote_addr)).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RemoteAddr {
    /// A TCP client's address and port.
    Tcp(SocketAddr),
    /// A Unix-socket client: its socket's path, `None` when it is unnamed (the usual case) or
    /// abstract.
    Unix(Option<PathBuf>),
}

impl fmt::Display for RemoteAddr {
    /// gRPC's peer strings, as grpcio's `context.peer()` gives them: `ipv4:127.0.0.1:5000`,
    /// `ipv6:[::1]:5000`, `unix:/path` (`unix:` for an unnamed socket).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RemoteAddr::Tcp(SocketAddr::V4(addr)) => write!(f, "ipv4:{addr}"),
            RemoteAddr::Tcp(SocketAddr::V6(addr)) => write!(f, "ipv6:{addr}"),
            RemoteAddr::Unix(path) => match path {
                Some(path) => write!(f, "unix:{}", path.display()),
                None => f.write_str("unix:"),
            },
        }
    }
}

/// The certificate chain a TLS peer presented (leaf first), carried from a server connection
/// to the calls on it.
#[derive(Debug, Clone)]
pub(crate) struct PeerCertificates(pub(crate) Arc<[CertificateDer<'static>]>);

/// Opens byte streams to addresses; implement it to bring your own transport.
pub trait Connector: Send + Sync + 'static {
    /// Connects to `address`; errors become UNAVAILABLE for the calls waiting on it.
    fn connect(&self, address: &Address) -> BoxFuture<std::io::Result<BoxedIo>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_display_as_targets() {
        let shown = [
            (Address::Tcp("1.2.3.4:5".parse().unwrap()), "1.2.3.4:5"),
            (Address::Tcp("[::1]:5".parse().unwrap()), "[::1]:5"),
            (Address::Unix("/tmp/a.sock".into()), "unix:/tmp/a.sock"),
            (
                Address::UnixAbstract(b"name".to_vec()),
                "unix-abstract:name",
            ),
            (
                Address::UnixAbstract(b"a b\0%\xff".to_vec()),
                "unix-abstract:a%20b%00%25%FF",
            ),
        ];
        for (address, text) in shown {
            assert_eq!(address.to_string(), text);
        }
    }
}
