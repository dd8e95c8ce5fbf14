//! [`Sender`]: the request half of a streaming call, shared by its clones.

use std::fmt;
use std::future::poll_fn;
use std::sync::Arc;
use std::task::{Poll, ready};

use bytes::Bytes;

use super::call::{CallShared, EncodeFn, SendHalf};
use super::recv::ParentWatch;
use crate::codec::{Compression, SendOptions};
use crate::rt::Deadline;
use crate::rt::with_deadline;
use crate::status::Status;

/// Sends request messages. Clone it to feed one call from many tasks: each message is written
/// whole, in the order the sends got their turn. Dropping the last clone ends the request
/// stream (half-close), as does [`Sender::close`].
pub struct Sender<T> {
    pub(super) state: Arc<SenderState>,
    pub(super) encode: EncodeFn<T>,
}

/// What every clone of one call's [`Sender`] shares; dropping the last ends the request.
pub(super) struct SenderState {
    pub(super) call: Arc<CallShared>,
    /// The call's request compression.
    pub(super) compression: Compression,
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        Sender {
            state: self.state.clone(),
            encode: self.encode.clone(),
        }
    }
}

impl<T> fmt::Debug for Sender<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sender").finish_non_exhaustive()
    }
}

impl Drop for SenderState {
    fn drop(&mut self) {
        let mut half = self.call.half();
        if half.closed || half.reset {
            return;
        }
        half.closed = true;
        if half.dead.is_some() {
            // The replay on the next stream ends the request.
            return;
        }
        // Whatever an abandoned send left of its message still goes out whole (h2 holds at
        // most that one message), then END_STREAM.
        let SendHalf { stream, outbox, .. } = &mut *half;
        for chunk in outbox.take_all() {
            let _ = stream.send_data(chunk, false);
        }
        let _ = stream.send_data(Bytes::new(), true);
        half.close_hedges();
    }
}

impl<T> Sender<T> {
    /// Sends one message, waiting for HTTP/2 flow control; never buffers more than this
    /// message. Fails with the call's deadline, a cancelled call, or a size over the limit.
    /// On a compressing call the message goes out compressed.
    pub async fn send(&self, message: T) -> Result<(), Status> {
        self.send_with(message, SendOptions::new()).await
    }

    /// Sends one message like [`Sender::send`], with per-message options:
    /// `SendOptions::new().compress(false)` sends it uncompressed on a compressing call.
    pub async fn send_with(&self, message: T, options: SendOptions) -> Result<(), Status> {
        let call = &self.state.call;
        let compression = if options.get_compress() {
            self.state.compression
        } else {
            Compression::Identity
        };
        let framed = (self.encode)(&message, call.max_send, compression)?;
        drop(message);
        let _turn = with_deadline(call.deadline, call.turn.lock())
            .await
            .inspect_err(|_| call.cancel())?;
        let mut framed = Some(framed);
        let mut deadline = Deadline::new(call.deadline);
        let mut parent = call.parent.clone().map(ParentWatch::new);
        poll_fn(|cx| {
            let mut guard = call.half();
            let half = &mut *guard;
            if half.reset {
                return Poll::Ready(Err(Status::cancelled("the call was cancelled")));
            }
            if half.closed {
                return Poll::Ready(Err(Status::internal(
                    "send after the request stream was closed",
                )));
            }
            if let Some(failure) = &half.dead {
                // Waiting for the response side's verdict on the failed stream: the message
                // goes out with the replay, if there is one.
                let failure = failure.clone();
                return Poll::Ready(match framed.take() {
                    Some(msg) if !half.keep_message(&msg) => Err(failure),
                    _ => Ok(()),
                });
            }
            loop {
                match half.outbox.poll_flush(&mut half.stream, cx) {
                    Poll::Ready(Ok(())) => match framed.take() {
                        Some(msg) => {
                            if let Some(metrics) = &call.metrics {
                                metrics.sent(msg.len());
                            }
                            half.push_message(msg)
                        }
                        None => return Poll::Ready(Ok(())),
                    },
                    Poll::Ready(Err(status)) if half.replay.is_some() => {
                        // Perhaps refused by the server: everything sent is in the replay
                        // (and on any hedged attempt, which takes over).
                        half.primary_failed(status.clone());
                        if half.dead.is_none() {
                            continue;
                        }
                        return Poll::Ready(match framed.take() {
                            Some(msg) if !half.keep_message(&msg) => Err(status),
                            _ => Ok(()),
                        });
                    }
                    Poll::Ready(Err(status)) => return Poll::Ready(Err(status)),
                    Poll::Pending => break,
                }
            }
            if deadline.poll_expired(cx).is_ready() {
                half.reset = true;
                half.stream.send_reset(h2::Reason::CANCEL);
                half.drop_hedges();
                return Poll::Ready(Err(Status::deadline_exceeded(
                    "deadline exceeded while sending",
                )));
            }
            if parent
                .as_mut()
                .is_some_and(|p| p.poll_cancelled(cx).is_ready())
            {
                half.reset = true;
                half.stream.send_reset(h2::Reason::CANCEL);
                half.drop_hedges();
                return Poll::Ready(Err(Status::cancelled("the parent call was cancelled")));
            }
            Poll::Pending
        })
        .await
    }

    /// Ends the request stream after the messages already sent (half-close).
    pub async fn close(&self) -> Result<(), Status> {
        let call = &self.state.call;
        let _turn = with_deadline(call.deadline, call.turn.lock()).await?;
        poll_fn(|cx| {
            let mut half = call.half();
            if half.closed || half.reset {
                return Poll::Ready(Ok(()));
            }
            if half.dead.is_some() {
                // The replay on the next stream ends the request.
                half.closed = true;
                return Poll::Ready(Ok(()));
            }
            let SendHalf { stream, outbox, .. } = &mut *half;
            ready!(outbox.poll_flush(stream, cx))?;
            half.closed = true;
            half.close_hedges();
            half.stream
                .send_data(Bytes::new(), true)
                .map_err(Status::from_h2)?;
            Poll::Ready(Ok(()))
        })
        .await
    }
}
