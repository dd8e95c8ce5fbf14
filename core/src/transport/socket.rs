//! TCP and Unix domain socket connections through `async-io`.

use std::io;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};

use async_io::Async;

use super::{Address, BoxedIo, Connector};
use crate::rt::BoxFuture;

/// The default connector: TCP (with TCP_NODELAY) and Unix domain sockets.
#[derive(Debug, Clone, Copy, Default)]
pub struct SocketConnector;

impl Connector for SocketConnector {
    fn connect(&self, address: &Address) -> BoxFuture<io::Result<BoxedIo>> {
        let address = address.clone();
        Box::pin(async move {
            match address {
                Address::Host { host, port } => {
                    let addrs = resolve(host, port).await?;
                    let mut last = None;
                    for addr in addrs {
                        match Async::<TcpStream>::connect(addr).await {
                            Ok(stream) => {
                                // gRPC messages are latency-sensitive; Nagle only adds delay.
                                stream.get_ref().set_nodelay(true)?;
                                return Ok(Box::new(stream) as BoxedIo);
                            }
                            Err(err) => last = Some(err),
                        }
                    }
                    Err(last.unwrap_or_else(|| {
                        io::Error::new(io::ErrorKind::NotFound, "name resolved to no addresses")
                    }))
                }
                #[cfg(unix)]
                Address::Unix(path) => {
                    let stream = Async::<std::os::unix::net::UnixStream>::connect(&path).await?;
                    Ok(Box::new(stream) as BoxedIo)
                }
                #[cfg(not(unix))]
                Address::Unix(_) => Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    "Unix domain sockets are not supported on this platform",
                )),
            }
        })
    }
}

/// Resolves a host: IP literals directly, names on a blocking thread (never on the executor).
async fn resolve(host: String, port: u16) -> io::Result<Vec<SocketAddr>> {
    if let Ok(ip) = host.parse::<std::net::IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    blocking::unblock(move || {
        (host.as_str(), port)
            .to_socket_addrs()
            .map(Iterator::collect)
    })
    .await
}
