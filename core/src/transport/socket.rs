//! TCP, Unix domain socket and abstract Unix socket connections through `async-io`.

use std::io;
use std::net::TcpStream;
use std::os::fd::AsFd;
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::task::{Context, Poll, ready};

use async_io::Async;

use super::{Address, BoxedIo, Connector};
use crate::rt::BoxFuture;
#[cfg(any(target_os = "linux", target_os = "android"))]
use crate::rt::read_watch::ReadWatch;

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

/// A connected `async-io` socket (TCP or Unix stream) whose reads make one failed system call
/// per wait for readiness instead of two.
///
/// `Async::poll_read` tries the read, and when it fails with `EAGAIN` asks the reactor whether
/// the socket became readable. The reactor answers yes whenever it delivered an event since
/// the task last registered interest, which is also true of the event whose data the task has
/// already read; so after every wake-up the second read that would block is retried at once and
/// fails again before interest is registered. h2 reads until a read would block, so that was
/// two failed `recvfrom` calls per batch of frames received.
///
/// Here a read that would block registers interest straight away, consuming any event the
/// reactor holds. No wake-up can be lost: async-io registers interest as a level-triggered
/// one-shot `epoll` event, so if data arrived after the failed read the socket is reported
/// readable at once and the task woken again.
///
/// Once interest is registered, later reads ask the reactor first and make no system call
/// until it has delivered an event: h2 reads from the socket every time its connection task is
/// polled, and that task is mostly woken to write (a handler's response, a call's request), so
/// without this every such wake-up cost a `recvfrom` that failed (three per unary call on a
/// server answering one call at a time).
///
/// On a pool worker about to spin, a read that would block registers nothing: the worker
/// watches the socket itself ([`ReadWatch`]), with one `poll` a round instead of the reactor's
/// system calls, and hands the read back to the reactor (by waking it) before it sleeps.
///
/// After a short read (fewer bytes than asked for) a watched socket is not read again until
/// its worker sees it readable: the read would most likely fail, and a segment that follows
/// microseconds later is seen within a round of the spin. Off the watch, a short read is
/// followed by a read as before: waiting on the reactor after a short read, as tokio does, was
/// tried and measured worse, since a gRPC response often arrives in two segments microseconds
/// apart and a read retried right away catches the second one without a trip through the
/// reactor.
#[derive(Debug)]
pub(crate) struct Socket<T> {
    /// Shared with the watch, which holds it weakly.
    io: Arc<async_io::Async<T>>,
    /// A read would block: it did, interest is registered, and no event has come since.
    drained: bool,
    /// How a pool worker watches this socket's reads.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    watch: Arc<ReadWatch>,
    /// A read would block and a worker watches the socket for it.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    watched: bool,
    /// The last read returned less than it asked for.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    short_read: bool,
}

impl<T: AsFd + Send + Sync + 'static> Socket<T> {
    /// Wraps a socket registered with the reactor.
    pub(crate) fn new(io: async_io::Async<T>) -> Socket<T> {
        let io = Arc::new(io);
        #[cfg(any(target_os = "linux", target_os = "android"))]
        let watch = {
            let weak: Weak<dyn AsFd + Send + Sync> = Arc::downgrade(&io) as _;
            ReadWatch::new(weak)
        };
        Socket {
            io,
            drained: false,
            #[cfg(any(target_os = "linux", target_os = "android"))]
            watch,
            #[cfg(any(target_os = "linux", target_os = "android"))]
            watched: false,
            #[cfg(any(target_os = "linux", target_os = "android"))]
            short_read: false,
        }
    }
}

impl<T> futures_io::AsyncRead for Socket<T>
where
    for<'a> &'a T: io::Read,
{
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        #[cfg(any(target_os = "linux", target_os = "android"))]
        if this.watched {
            // Pending until the watching worker saw the socket readable or stopped watching
            // (no system call).
            ready!(this.watch.poll_ready(cx));
            this.watched = false;
        } else if std::mem::take(&mut this.short_read) && this.watch.watch(cx) {
            // The last read took less than it asked for, so the socket most likely has nothing
            // more: a watch sees anything that comes within one round of the worker's spin,
            // without the read that would fail first.
            this.watched = true;
            return Poll::Pending;
        }
        if this.drained {
            // Pending until the reactor delivers an event (the waker is already registered,
            // so this is a check of its state, not a system call).
            ready!(this.io.poll_readable(cx))?;
            this.drained = false;
        }
        let mut took_event = false;
        loop {
            match io::Read::read(&mut this.io.get_ref(), buf) {
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
                res => {
                    #[cfg(any(target_os = "linux", target_os = "android"))]
                    {
                        this.short_read = matches!(res, Ok(n) if n > 0 && n < buf.len());
                    }
                    return Poll::Ready(res);
                }
            }
            #[cfg(any(target_os = "linux", target_os = "android"))]
            if this.watch.watch(cx) {
                this.watched = true;
                return Poll::Pending;
            }
            loop {
                if this.io.poll_readable(cx)?.is_pending() {
                    this.drained = true;
                    return Poll::Pending;
                }
                if took_event {
                    // Two events in a row: data came in meanwhile; read it.
                    break;
                }
                // The event the reactor held predates the read that just failed: take it and
                // ask again, which registers interest (Pending) and reports data that came
                // since.
                took_event = true;
            }
        }
    }
}

impl<T: AsFd> futures_io::AsyncWrite for Socket<T>
where
    for<'a> &'a T: io::Write,
{
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[io::IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        #[cfg(any(target_os = "linux", target_os = "android"))]
        {
            // sendmsg with MSG_NOSIGNAL instead of writev: writing to a socket whose peer
            // closed would raise SIGPIPE, which kills a C host that has not ignored it (Rust
            // programs and Python ignore it, C programs do not). The error comes back as
            // EPIPE instead.
            use rustix::net::{SendAncillaryBuffer, SendFlags, sendmsg};
            loop {
                let sent = sendmsg(
                    this.io.get_ref(),
                    bufs,
                    &mut SendAncillaryBuffer::default(),
                    SendFlags::NOSIGNAL,
                );
                match sent {
                    Ok(n) => return Poll::Ready(Ok(n)),
                    Err(rustix::io::Errno::AGAIN) => ready!(this.io.poll_writable(cx))?,
                    Err(rustix::io::Errno::INTR) => {}
                    Err(err) => return Poll::Ready(Err(err.into())),
                }
            }
        }
        #[cfg(not(any(target_os = "linux", target_os = "android")))]
        Pin::new(&mut &*this.io).poll_write_vectored(cx, bufs)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut &*self.io).poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut &*self.io).poll_close(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_io::AsyncRead;

    /// One read, which must be woken by the data: a lost wake-up fails after 20 s instead of
    /// hanging the test.
    async fn read_once_woken(
        socket: &mut (impl AsyncRead + Unpin),
        buf: &mut [u8],
    ) -> io::Result<usize> {
        let read = std::future::poll_fn(|cx| Pin::new(&mut *socket).poll_read(cx, buf));
        let timeout = async {
            async_io::Timer::after(std::time::Duration::from_secs(20)).await;
            Err(io::Error::other("read not woken"))
        };
        // The timeout is polled first, so a read that was never woken cannot pass when the
        // timer's wake-up polls it again.
        smol::future::or(timeout, read).await
    }

    /// A Unix stream that counts the reads made on it.
    #[cfg(unix)]
    struct CountedReads {
        stream: std::os::unix::net::UnixStream,
        reads: std::sync::atomic::AtomicUsize,
    }

    #[cfg(unix)]
    impl io::Read for &CountedReads {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.reads.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            (&self.stream).read(buf)
        }
    }

    #[cfg(unix)]
    impl std::os::fd::AsFd for CountedReads {
        fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
            self.stream.as_fd()
        }
    }

    /// The connection task is polled again and again while no data comes (it is woken to
    /// write): once a read has blocked, those polls make no read until the reactor reports the
    /// socket readable, and the data that comes then is read.
    #[cfg(unix)]
    #[test]
    fn a_socket_that_would_block_is_not_read_again_until_the_reactor_reports_data() {
        use std::io::Write as _;
        use std::sync::atomic::Ordering;

        let (ours, mut theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        let counted = CountedReads {
            stream: ours,
            reads: Default::default(),
        };
        let mut socket = Socket::new(async_io::Async::new(counted).unwrap());
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut buf = [0u8; 8];
        for _ in 0..5 {
            assert!(
                Pin::new(&mut socket)
                    .poll_read(&mut cx, &mut buf)
                    .is_pending()
            );
        }
        let reads = || socket.io.get_ref().reads.load(Ordering::SeqCst);
        assert_eq!(reads(), 1, "reads while the socket had no data");
        theirs.write_all(b"hi").unwrap();
        let n = smol::block_on(read_once_woken(&mut socket, &mut buf)).unwrap();
        assert_eq!(&buf[..n], b"hi");
    }

    /// A connected pair over TCP loopback: our socket and the peer's blocking end.
    fn tcp_pair() -> (Socket<std::net::TcpStream>, std::net::TcpStream) {
        use std::net::{TcpListener, TcpStream};

        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let writer = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        writer.set_nodelay(true).unwrap();
        let (accepted, _) = listener.accept().unwrap();
        (Socket::new(async_io::Async::new(accepted).unwrap()), writer)
    }

    /// Reads racing with writes from another thread, 2,000 rounds of one byte: every byte
    /// written after a read that would block must still wake the reader (a lost wake-up hangs
    /// until the timeout). `on` runs the reads.
    fn reads_race_writes(on: impl FnOnce(BoxFuture<()>)) {
        use std::io::Write as _;

        let (mut socket, mut writer) = tcp_pair();
        let (go, wait) = std::sync::mpsc::channel::<u32>();
        let thread = std::thread::spawn(move || {
            for round in wait {
                // Vary when the byte lands: before, during or after the reader's failed read,
                // and now and then after a worker's spin has given up.
                if round % 97 == 0 {
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
                for _ in 0..(round % 7) * 200 {
                    std::hint::spin_loop();
                }
                writer.write_all(&[round as u8]).unwrap();
            }
        });
        on(Box::pin(async move {
            for round in 0..2_000u32 {
                go.send(round).unwrap();
                let mut buf = [0u8; 8];
                let n = read_once_woken(&mut socket, &mut buf).await.unwrap();
                assert_eq!(n, 1, "round {round}");
                assert_eq!(buf[0], round as u8);
            }
        }));
        thread.join().unwrap();
    }

    /// Off the pool: reads wait on the reactor.
    #[test]
    fn socket_reads_see_data_sent_after_a_read_would_block() {
        reads_race_writes(smol::block_on);
    }

    /// On a spinning pool worker: reads are watched by the worker while it spins, and go back
    /// to the reactor when it sleeps.
    #[test]
    fn watched_socket_reads_see_data_sent_after_a_read_would_block() {
        let settings = crate::rt::RuntimeSettings {
            threads: 1,
            spin: std::time::Duration::from_micros(100),
        };
        let pool = crate::rt::ThreadPool::new(&settings, "socket-test").unwrap();
        reads_race_writes(|reads| {
            let (done_tx, done_rx) = std::sync::mpsc::channel();
            pool.spawn_future(async move {
                reads.await;
                let _ = done_tx.send(());
            });
            done_rx
                .recv()
                .expect("the reads ended early (a failed assertion)");
        });
        pool.shutdown();
    }
}
