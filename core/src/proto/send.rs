//! Writing framed messages to an h2 stream only as fast as HTTP/2 flow control allows, so a
//! sender never buffers more than the message in hand.

use std::task::{Context, Poll, ready};

use bytes::Bytes;
use h2::SendStream;

use crate::codec::frame::Framed;
use crate::status::Status;

/// The unsent part of the current message: a framed message is at most two buffers, kept in
/// place (a queue would allocate for every message).
#[derive(Debug, Default)]
pub(crate) struct Outbox {
    /// The unsent buffers, front first; `chunks[0]` is empty only when both are.
    chunks: [Option<Bytes>; 2],
    remaining: usize,
}

impl Outbox {
    /// Whether everything handed in has been written.
    pub(crate) fn is_empty(&self) -> bool {
        self.remaining == 0
    }

    /// Queues a message; call only when empty.
    pub(crate) fn push(&mut self, msg: Framed) {
        debug_assert!(self.is_empty());
        self.remaining = msg.len();
        self.chunks = [Some(msg.head), msg.tail];
    }

    /// Drops the unsent chunks.
    pub(crate) fn clear(&mut self) {
        self.remaining = 0;
        self.chunks = [None, None];
    }

    /// Takes the unsent chunks, leaving the outbox empty.
    pub(crate) fn take_all(&mut self) -> impl Iterator<Item = Bytes> + use<> {
        self.remaining = 0;
        std::mem::take(&mut self.chunks).into_iter().flatten()
    }

    /// Writes as much as the stream's window allows; Ready once all is written.
    pub(crate) fn poll_flush(
        &mut self,
        stream: &mut SendStream<Bytes>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), Status>> {
        while let Some(front) = &mut self.chunks[0] {
            if front.is_empty() {
                self.chunks.swap(0, 1);
                self.chunks[1] = None;
                continue;
            }
            stream.reserve_capacity(self.remaining);
            let mut capacity = stream.capacity();
            if capacity == 0 {
                match ready!(stream.poll_capacity(cx)) {
                    Some(Ok(_)) => capacity = stream.capacity(),
                    Some(Err(err)) => return Poll::Ready(Err(Status::from_h2(err))),
                    None => return Poll::Ready(Err(stream_gone(stream, cx))),
                }
                if capacity == 0 {
                    continue;
                }
            }
            let chunk = front.split_to(capacity.min(front.len()));
            self.remaining -= chunk.len();
            stream.send_data(chunk, false).map_err(Status::from_h2)?;
        }
        Poll::Ready(Ok(()))
    }
}

/// The status for a stream that stopped accepting data: the peer's reset reason if it sent one.
pub(crate) fn stream_gone(stream: &mut SendStream<Bytes>, cx: &mut Context<'_>) -> Status {
    match stream.poll_reset(cx) {
        Poll::Ready(Ok(reason)) => Status::from_reason(reason, "stream reset by peer"),
        Poll::Ready(Err(err)) => Status::from_h2(err),
        Poll::Pending => Status::unavailable("stream closed"),
    }
}
