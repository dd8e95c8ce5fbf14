//! Listening sockets: TCP (with TCP_NODELAY on every accepted connection), Unix domain sockets
//! and, on Linux, abstract Unix sockets.

use std::io;
use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::path::Path;
#[cfg(unix)]
use std::path::PathBuf;

use async_io::Async;

use crate::transport::{BoxedIo, RemoteAddr, Socket};

/// A bound socket a [`Server`](super::Server) accepts connections on.
pub struct Listener {
    kind: Kind,
    /// TLS for this listener's connections alone, overriding the server's.
    #[cfg(feature = "tls")]
    tls: Option<futures_rustls::TlsAcceptor>,
}

impl std::fmt::Debug for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut d = f.debug_struct("Listener");
        d.field("kind", &self.kind);
        #[cfg(feature = "tls")]
        d.field("tls", &self.tls.is_some());
        d.finish()
    }
}

#[derive(Debug)]
enum Kind {
    Tcp(Async<TcpListener>),
    /// A Unix socket and its file, removed on drop; `None` for an abstract socket, which has
    /// no file.
    #[cfg(unix)]
    Unix(Async<std::os::unix::net::UnixListener>, Option<PathBuf>),
}

impl Listener {
    fn new(kind: Kind) -> Listener {
        Listener {
            kind,
            #[cfg(feature = "tls")]
            tls: None,
        }
    }

    /// Serves this listener's connections over TLS with `config`, whatever the server's own
    /// TLS setting (so one server can listen in plaintext on one socket and over TLS on
    /// another, as grpcio's `add_insecure_port` and `add_secure_port` do). A config that does
    /// not build is a configuration [`Error`](crate::Error).
    #[cfg(feature = "tls")]
    pub fn tls(mut self, config: &crate::ServerTlsConfig) -> Result<Listener, crate::Error> {
        let acceptor = config
            .acceptor()
            .map_err(|status| crate::Error::from_status(crate::error::Kind::Config, status))?;
        self.tls = Some(acceptor);
        Ok(self)
    }

    /// This listener's own TLS, if [`tls`](Self::tls) set one.
    #[cfg(feature = "tls")]
    pub(crate) fn acceptor(&self) -> Option<&futures_rustls::TlsAcceptor> {
        self.tls.as_ref()
    }

    /// Binds a TCP socket; port 0 picks a free port (see [`Listener::local_addr`]).
    pub fn bind_tcp(addr: impl ToSocketAddrs) -> io::Result<Listener> {
        let mut last = None;
        for addr in addr.to_socket_addrs()? {
            match Async::<TcpListener>::bind(addr) {
                Ok(listener) => return Ok(Listener::new(Kind::Tcp(listener))),
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
        Ok(Listener::new(Kind::Unix(listener, Some(path))))
    }

    /// Binds a Unix socket in Linux's abstract namespace under `name` (any bytes, at most
    /// 107; the leading NUL is added here), reachable as the target `unix-abstract:name`
    /// with non-UTF-8 or unprintable bytes percent-encoded. There is no file: the name
    /// disappears when the listener is dropped. Fails if the name is taken.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    pub fn bind_unix_abstract(name: &[u8]) -> io::Result<Listener> {
        #[cfg(target_os = "android")]
        use std::os::android::net::SocketAddrExt;
        #[cfg(target_os = "linux")]
        use std::os::linux::net::SocketAddrExt;

        if name.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "an abstract socket name must not be empty",
            ));
        }
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
        let listener = std::os::unix::net::UnixListener::bind_addr(&addr)?;
        Ok(Listener::new(Kind::Unix(Async::new(listener)?, None)))
    }

    /// The bound TCP address (None for a Unix socket).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        match &self.kind {
            Kind::Tcp(l) => l.get_ref().local_addr().ok(),
            #[cfg(unix)]
            Kind::Unix(..) => None,
        }
    }

    /// The socket path of a Unix listener (None for TCP and abstract sockets).
    pub fn unix_path(&self) -> Option<&Path> {
        match &self.kind {
            Kind::Tcp(_) => None,
            #[cfg(unix)]
            Kind::Unix(_, path) => path.as_deref(),
        }
    }

    /// The next connection and where it came from.
    pub(crate) async fn accept(&self) -> io::Result<(BoxedIo, RemoteAddr)> {
        match &self.kind {
            Kind::Tcp(l) => {
                let (stream, addr) = l.accept().await?;
                // gRPC messages are latency-sensitive; Nagle only adds delay.
                stream.get_ref().set_nodelay(true)?;
                Ok((Box::new(Socket::new(stream)), RemoteAddr::Tcp(addr)))
            }
            #[cfg(unix)]
            Kind::Unix(l, _) => {
                let (stream, addr) = l.accept().await?;
                let path = addr.as_pathname().map(Path::to_path_buf);
                Ok((Box::new(Socket::new(stream)), RemoteAddr::Unix(path)))
            }
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        #[cfg(unix)]
        if let Kind::Unix(_, Some(path)) = &self.kind {
            let _ = std::fs::remove_file(path);
        }
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::net::{SocketAddr, UnixStream};

    use super::*;

    #[test]
    fn abstract_socket_accepts_and_frees_its_name_on_drop() {
        let name = format!("plexus-listener-test-{}", std::process::id());
        let listener = Listener::bind_unix_abstract(name.as_bytes()).unwrap();
        assert_eq!(listener.unix_path(), None);
        assert_eq!(listener.local_addr(), None);
        let err = Listener::bind_unix_abstract(name.as_bytes()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);

        let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let _client = UnixStream::connect_addr(&addr).unwrap();
        smol::block_on(listener.accept()).unwrap();

        drop(listener);
        Listener::bind_unix_abstract(name.as_bytes()).unwrap();
    }

    #[test]
    fn abstract_socket_name_must_fit() {
        let err = Listener::bind_unix_abstract(b"").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        assert!(Listener::bind_unix_abstract(&[b'x'; 200]).is_err());
    }
}
