//! In-process byte pipes: a connector and a listener joined by a queue, for tests and for
//! embedding a server and client in one process without sockets.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use futures_util::Stream;

use super::{Address, BoxedIo, Connector};
use crate::rt::BoxFuture;

/// Bytes a pipe holds before the writer waits: enough for a few full HTTP/2 frames.
const PIPE_CAPACITY: usize = 256 * 1024;

/// One direction of a duplex pipe.
#[derive(Default)]
struct Pipe {
    buf: VecDeque<u8>,
    closed: bool,
    reader: Option<Waker>,
    writer: Option<Waker>,
}

/// One end of an in-memory duplex stream (`futures-io` read and write).
pub struct MemoryStream {
    read: Arc<Mutex<Pipe>>,
    write: Arc<Mutex<Pipe>>,
}

impl std::fmt::Debug for MemoryStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStream").finish_non_exhaustive()
    }
}

/// Two connected stream ends: what one writes, the other reads.
pub fn duplex() -> (MemoryStream, MemoryStream) {
    let a = Arc::new(Mutex::new(Pipe::default()));
    let b = Arc::new(Mutex::new(Pipe::default()));
    (
        MemoryStream {
            read: a.clone(),
            write: b.clone(),
        },
        MemoryStream { read: b, write: a },
    )
}

fn lock(pipe: &Mutex<Pipe>) -> std::sync::MutexGuard<'_, Pipe> {
    pipe.lock().unwrap_or_else(|e| e.into_inner())
}

impl futures_io::AsyncRead for MemoryStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let mut pipe = lock(&self.read);
        if pipe.buf.is_empty() {
            if pipe.closed {
                return Poll::Ready(Ok(0));
            }
            pipe.reader = Some(cx.waker().clone());
            return Poll::Pending;
        }
        let n = out.len().min(pipe.buf.len());
        for (dst, src) in out.iter_mut().zip(pipe.buf.drain(..n)) {
            *dst = src;
        }
        if let Some(w) = pipe.writer.take() {
            w.wake();
        }
        Poll::Ready(Ok(n))
    }
}

impl futures_io::AsyncWrite for MemoryStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let mut pipe = lock(&self.write);
        if pipe.closed {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        let room = PIPE_CAPACITY.saturating_sub(pipe.buf.len());
        if room == 0 {
            pipe.writer = Some(cx.waker().clone());
            return Poll::Pending;
        }
        let n = room.min(data.len());
        pipe.buf.extend(&data[..n]);
        if let Some(w) = pipe.reader.take() {
            w.wake();
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        close(&self.write);
        Poll::Ready(Ok(()))
    }
}

fn close(pipe: &Mutex<Pipe>) {
    let mut pipe = lock(pipe);
    pipe.closed = true;
    if let Some(w) = pipe.reader.take() {
        w.wake();
    }
    if let Some(w) = pipe.writer.take() {
        w.wake();
    }
}

impl Drop for MemoryStream {
    fn drop(&mut self) {
        close(&self.read);
        close(&self.write);
    }
}

/// A connector whose connections arrive at the paired [`MemoryListener`], whatever the address.
#[derive(Clone, Debug)]
pub struct MemoryConnector {
    accept: async_channel::Sender<MemoryStream>,
}

/// The accepting side of [`channel`]: a stream of incoming in-memory connections.
#[derive(Debug)]
pub struct MemoryListener {
    incoming: Pin<Box<async_channel::Receiver<MemoryStream>>>,
}

/// A connector and the listener it connects to.
pub fn channel() -> (MemoryConnector, MemoryListener) {
    let (accept, incoming) = async_channel::unbounded();
    (
        MemoryConnector { accept },
        MemoryListener {
            incoming: Box::pin(incoming),
        },
    )
}

impl Connector for MemoryConnector {
    fn connect(&self, _address: &Address) -> BoxFuture<io::Result<BoxedIo>> {
        let (client, server) = duplex();
        let sent = self.accept.try_send(server);
        Box::pin(async move {
            sent.map_err(|_| {
                io::Error::new(io::ErrorKind::ConnectionRefused, "memory listener closed")
            })?;
            Ok(Box::new(client) as BoxedIo)
        })
    }
}

impl Stream for MemoryListener {
    type Item = io::Result<MemoryStream>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.incoming.as_mut().poll_next(cx).map(|o| o.map(Ok))
    }
}
