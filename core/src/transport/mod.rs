//! Transports: how a channel reaches an address and what a server listens on.
//!
//! A [`Connector`] turns an [`Address`] into a byte stream. [`SocketConnector`] (the default)
//! speaks TCP and Unix domain sockets through `async-io`; [`memory`] gives in-process pipes for
//! tests and embedding; users may bring any other `futures-io` stream.

pub mod memory;
mod socket;

use std::fmt;
use std::path::PathBuf;

pub use socket::SocketConnector;

use crate::rt::BoxFuture;

/// A byte stream that can carry an HTTP/2 connection.
pub trait Io: futures_io::AsyncRead + futures_io::AsyncWrite + Send + Unpin + 'static {}

impl<T: futures_io::AsyncRead + futures_io::AsyncWrite + Send + Unpin + 'static> Io for T {}

/// A boxed [`Io`], as returned by connectors.
pub type BoxedIo = Box<dyn Io>;

/// Where a connection goes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Address {
    /// A host name or IP literal and a port, resolved when connecting.
    Host {
        /// Host name or IP literal (without brackets).
        host: String,
        /// TCP port.
        port: u16,
    },
    /// A Unix domain socket path.
    Unix(PathBuf),
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Host { host, port } if host.contains(':') => write!(f, "[{host}]:{port}"),
            Address::Host { host, port } => write!(f, "{host}:{port}"),
            Address::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

/// Opens byte streams to addresses; implement it to bring your own transport.
pub trait Connector: Send + Sync + 'static {
    /// Connects to `address`; errors become UNAVAILABLE for the calls waiting on it.
    fn connect(&self, address: &Address) -> BoxFuture<std::io::Result<BoxedIo>>;
}
