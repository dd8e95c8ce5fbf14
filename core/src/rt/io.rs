//! Adapts `futures-io` sockets to the tokio I/O traits that h2 is written against; no tokio
//! runtime is involved.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

/// The most a read takes while the peer's writes arrive in small pieces (see [`Compat`]).
const SMALL_READ: usize = 2048;

/// Wraps a `futures-io` stream so h2 can use it; no tokio runtime is involved.
///
/// h2 hands each read its buffer's whole spare room, uninitialized, and a safe reader has to
/// zero the part it passes down: kilobytes per poll, also for the many polls that find nothing
/// to read. So while reads come back small (a request, a ping, a window update) a read may use
/// only its first [`SMALL_READ`] bytes; one that fills them shows that more is waiting, and
/// reads take the whole room until one comes back small again. Reading less than is waiting
/// only leaves the rest for the next read, which h2 makes at once.
#[derive(Debug)]
pub struct Compat<T> {
    io: T,
    /// Reads use the buffer's whole spare room (the last read filled its small one).
    large_reads: bool,
}

impl<T> Compat<T> {
    /// Wraps `io`.
    pub fn new(io: T) -> Compat<T> {
        Compat {
            io,
            large_reads: false,
        }
    }

    /// The wrapped stream.
    pub fn into_inner(self) -> T {
        self.io
    }
}

impl<T: futures_io::AsyncRead + Unpin> tokio::io::AsyncRead for Compat<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let room = buf.remaining();
        let take = if self.large_reads {
            room
        } else {
            room.min(SMALL_READ)
        };
        // Zeroes only the part of `take` never initialized before, which lets us stay in
        // safe code.
        let slice = buf.initialize_unfilled_to(take);
        let n = ready!(Pin::new(&mut self.io).poll_read(cx, slice))?;
        buf.advance(n);
        self.large_reads = if self.large_reads {
            n >= SMALL_READ
        } else {
            n == take && take < room
        };
        Poll::Ready(Ok(()))
    }
}

impl<T: futures_io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Compat<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_close(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use tokio::io::AsyncReadExt;

    use super::*;

    /// A reader that hands out queued chunks (a "socket" with writes landing in pieces) and
    /// records how much room each read was given.
    struct Chunks {
        chunks: VecDeque<Vec<u8>>,
        offered: Vec<usize>,
    }

    impl futures_io::AsyncRead for Chunks {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &mut [u8],
        ) -> Poll<io::Result<usize>> {
            self.offered.push(buf.len());
            let Some(chunk) = self.chunks.front_mut() else {
                return Poll::Ready(Ok(0));
            };
            let n = chunk.len().min(buf.len());
            buf[..n].copy_from_slice(&chunk[..n]);
            chunk.drain(..n);
            if chunk.is_empty() {
                self.chunks.pop_front();
            }
            Poll::Ready(Ok(n))
        }
    }

    fn read_all(chunks: &[&[u8]], buffer: usize) -> (Vec<u8>, Vec<usize>) {
        let mut compat = Compat::new(Chunks {
            chunks: chunks.iter().map(|c| c.to_vec()).collect(),
            offered: Vec::new(),
        });
        let mut out = Vec::new();
        smol::block_on(async {
            let mut buf = vec![0; buffer];
            loop {
                let n = compat.read(&mut buf).await.unwrap();
                if n == 0 {
                    break;
                }
                out.extend_from_slice(&buf[..n]);
            }
        });
        (out, compat.into_inner().offered)
    }

    #[test]
    fn small_writes_are_read_with_small_room_and_a_burst_with_the_whole_buffer() {
        let big: Vec<u8> = (0..20_000u32).map(|i| (i % 251) as u8).collect();
        let chunks: [&[u8]; 4] = [b"a request", b"a ping", &big, b"the end"];
        let (out, offered) = read_all(&chunks, 16 * 1024);
        assert_eq!(out, chunks.concat(), "every byte, in order");
        assert_eq!(
            offered,
            [
                SMALL_READ, // "a request"
                SMALL_READ, // "a ping"
                SMALL_READ, // filled: the burst is waiting
                16_384,     // the whole room from here: 16,384 bytes of the burst
                16_384,     // its last 1,568 bytes, a small read
                SMALL_READ, // "the end"
                SMALL_READ, // end of stream
            ]
        );
    }

    #[test]
    fn a_buffer_smaller_than_a_small_read_is_offered_whole() {
        let (out, offered) = read_all(&[b"0123456789", b"abc"], 4);
        assert_eq!(out, b"0123456789abc");
        assert!(offered.iter().all(|&n| n == 4), "{offered:?}");
    }
}
