//! Listening sockets: TCP (with TCP_NODELAY on every accepted connection) and Unix domain.

use std::io;
use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::path::{Path, PathBuf};

use async_io::Async;

use crate::transport::BoxedIo;

/// A bound socket a [`Server`](super::Server) accepts connections on.
#[derive(Debug)]
pub struct Listener {
    kind: Kind,
}

#[derive(Debug)]
enum Kind {
    Tcp(Async<TcpListener>),
    #[cfg(unix)]
    Unix(Async<std::os::unix::net::UnixListener>, PathBuf),
}

impl Listener {
    /// Binds a TCP socket; port 0 picks a free port (see [`Listener::local_addr`]).
    pub fn bind_tcp(addr: impl ToSocketAddrs) -> io::Result<Listener> {
        let mut last = None;
        for addr in addr.to_socket_addrs()? {
            match Async::<TcpListener>::bind(addr) {
                Ok(listener) => {
                    return Ok(Listener {
                        kind: Kind::Tcp(listener),
                    });
                }
                Err(err) => last = Some(err),
            }
        }
        Err(last
            .unwrap_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no address to bind")))
    }

    /// Binds a Unix domain socket at `path`; the socket file is removed when the listener is
    /// dropped. Fails if `path` already exists.
    #[cfg(unix)]
    pub fn bind_unix(path: impl AsRef<Path>) -> io::Result<Listener> {
        let path = path.as_ref().to_path_buf();
        let listener = Async::<std::os::unix::net::UnixListener>::bind(&path)?;
        Ok(Listener {
            kind: Kind::Unix(listener, path),
        })
    }

    /// The bound TCP address (None for a Unix socket).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        match &self.kind {
            Kind::Tcp(l) => l.get_ref().local_addr().ok(),
            #[cfg(unix)]
            Kind::Unix(..) => None,
        }
    }

    /// The socket path of a Unix listener.
    pub fn unix_path(&self) -> Option<&Path> {
        match &self.kind {
            Kind::Tcp(_) => None,
            #[cfg(unix)]
            Kind::Unix(_, path) => Some(path),
        }
    }

    pub(crate) async fn accept(&self) -> io::Result<BoxedIo> {
        match &self.kind {
            Kind::Tcp(l) => {
                let (stream, _) = l.accept().await?;
                // gRPC messages are latency-sensitive; Nagle only adds delay.
                stream.get_ref().set_nodelay(true)?;
                Ok(Box::new(stream))
            }
            #[cfg(unix)]
            Kind::Unix(l, _) => {
                let (stream, _) = l.accept().await?;
                Ok(Box::new(stream))
            }
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        #[cfg(unix)]
        if let Kind::Unix(_, path) = &self.kind {
            let _ = std::fs::remove_file(path);
        }
    }
}
