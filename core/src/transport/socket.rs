//! TCP, Unix domain socket and abstract Unix socket connections through `async-io`.

use std::io;
use std::net::TcpStream;

use async_io::Async;

use super::{Address, BoxedIo, Connector};
use crate::rt::BoxFuture;
use crate::rt::io::Socket;

/// The default connector: TCP (with TCP_NODELAY), Unix domain sockets and, on Linux, abstract
/// Unix sockets.
#[derive(Debug, Clone, Copy, Default)]
pub struct SocketConnector;

impl Connector for SocketConnector {
    fn connect(&self, address: &Address) -> BoxFuture<io::Result<BoxedIo>> {
        let address = address.clone();
        Box::pin(async move {
            match address {
                Address::Tcp(addr) => {
                    let stream = Async::<TcpStream>::connect(addr).await?;
                    // gRPC messages are latency-sensitive; Nagle only adds delay.
                    stream.get_ref().set_nodelay(true)?;
                    Ok(Box::new(Socket::new(stream)) as BoxedIo)
                }
                #[cfg(unix)]
                Address::Unix(path) => {
                    let stream = Async::<std::os::unix::net::UnixStream>::connect(&path).await?;
                    Ok(Box::new(Socket::new(stream)) as BoxedIo)
                }
                #[cfg(not(unix))]
                Address::Unix(_) => Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    "Unix domain sockets are not supported on this platform",
                )),
                Address::UnixAbstract(name) => connect_abstract(name).await,
            }
        })
    }
}

/// Connects to a socket in Linux's abstract namespace. std can only connect these blocking;
/// a Unix connect finishes at once unless the listener's backlog is full, so it runs on the
/// blocking pool rather than risk stalling an executor thread.
#[cfg(any(target_os = "linux", target_os = "android"))]
async fn connect_abstract(name: Vec<u8>) -> io::Result<BoxedIo> {
    #[cfg(target_os = "android")]
    use std::os::android::net::SocketAddrExt;
    #[cfg(target_os = "linux")]
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::net::{SocketAddr, UnixStream};

    let addr = SocketAddr::from_abstract_name(&name)?;
    let stream = blocking::unblock(move || UnixStream::connect_addr(&addr)).await?;
    Ok(Box::new(Socket::new(Async::new(stream)?)) as BoxedIo)
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
async fn connect_abstract(_name: Vec<u8>) -> io::Result<BoxedIo> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "abstract Unix sockets (unix-abstract:) exist only on Linux",
    ))
}
