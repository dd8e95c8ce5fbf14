//! Reading length-prefixed messages from an h2 stream, releasing flow control as we go.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use h2::RecvStream;
use http::HeaderMap;

use crate::codec::compress::StreamEncoding;
use crate::codec::frame::Decoder;
use crate::status::Status;

/// Messages arriving on one h2 stream.
#[derive(Debug)]
pub(crate) struct MessageReader {
    body: RecvStream,
    decoder: Decoder,
    data_done: bool,
    /// Message bytes received so far (5-byte prefixes included), for metrics.
    received: u64,
    /// Also counted here, for a server call's metrics (the reader goes to the handler).
    counter: Option<Arc<AtomicU64>>,
}

impl MessageReader {
    /// Reads `body`, rejecting messages over `max_len` (before and after decompression);
    /// `encoding` is the stream's `grpc-encoding`.
    pub(crate) fn new(body: RecvStream, max_len: usize, encoding: StreamEncoding) -> MessageReader {
        MessageReader {
            body,
            decoder: Decoder::new(max_len, encoding),
            data_done: false,
            received: 0,
            counter: None,
        }
    }

    /// Counts the bytes received into `counter` too.
    pub(crate) fn count_into(&mut self, counter: Arc<AtomicU64>) {
        self.counter = Some(counter);
    }

    /// Message bytes received so far.
    pub(crate) fn received(&self) -> u64 {
        self.received
    }

    /// The next message; `Ok(None)` once the peer ended its side with no partial message left.
    pub(crate) fn poll_message(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Option<Bytes>, Status>> {
        loop {
            if let Some(msg) = self.decoder.next_message()? {
                return Poll::Ready(Ok(Some(msg)));
            }
            if self.data_done {
                return Poll::Ready(self.decoder.finish().map(|()| None));
            }
            match ready!(self.body.poll_data(cx)) {
                Some(Ok(chunk)) => {
                    // Hand the window back as soon as the bytes are ours: at most one message
                    // plus one frame is ever buffered here, because we only read on demand.
                    let _ = self.body.flow_control().release_capacity(chunk.len());
                    self.received += chunk.len() as u64;
                    if let Some(counter) = &self.counter {
                        counter.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                    }
                    self.decoder.push(chunk);
                }
                Some(Err(err)) => return Poll::Ready(Err(Status::from_h2(err))),
                None => self.data_done = true,
            }
        }
    }

    /// Whether the last message [`MessageReader::poll_message`] returned arrived compressed.
    pub(crate) fn last_compressed(&self) -> bool {
        self.decoder.last_compressed()
    }

    /// The trailers, once all data was read; `Ok(None)` when the peer sent none.
    pub(crate) fn poll_trailers(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Option<HeaderMap>, Status>> {
        self.body.poll_trailers(cx).map_err(Status::from_h2)
    }
}
