//! Transparent retry (gRFC A6's "transparent retry"): a stream the server never processed,
//! refused with RST_STREAM(REFUSED_STREAM) or above the last stream id of a GOAWAY, is
//! opened again on another stream and what was sent is replayed, until the call commits
//! (response headers arrived, or it sent more than [`REPLAY_LIMIT`]).

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use h2::SendStream;
use h2::client::ResponseFuture as H2ResponseFuture;

use super::call;
use super::call::{CallShared, SendHalf};
use super::channel::Channel;
use super::options::CallOptions;
use super::recv::RawStreaming;
use super::recv::Reopened;
use super::subchannel::StreamSlot;
use crate::codec::frame::Framed;
use crate::rt::BoxFuture;
use crate::rt::with_deadline;
use crate::status::Status;

/// Request bytes a streaming call keeps until the response headers arrive, so that a stream
/// the server never processed can be replayed on a new one; past this the call is committed
/// to its stream. grpc-go's default per-call retry buffer is the same 256 KiB. (A unary or
/// server-streaming request is in memory anyway and does not count.)
pub(super) const REPLAY_LIMIT: usize = 256 * 1024;

/// How to open a call again: what [`Channel::start`] was given.
pub(crate) struct RetryPlan {
    pub(crate) channel: Channel,
    pub(crate) path: Box<str>,
    pub(crate) options: CallOptions,
}

/// What a call has sent on its stream so far, kept (as `Bytes` handles, not copies) while a
/// transparent retry is still possible.
pub(super) struct Replay {
    pub(super) plan: RetryPlan,
    pub(super) frames: Vec<Bytes>,
    /// Bytes of streamed messages kept, against [`REPLAY_LIMIT`].
    pub(super) bytes: usize,
}

impl SendHalf {
    /// Keeps `msg` for a replay; `counted` messages count against [`REPLAY_LIMIT`], past
    /// which the replay is dropped. Returns whether the message is kept.
    pub(super) fn keep(&mut self, msg: &Framed, counted: bool) -> bool {
        let Some(replay) = &mut self.replay else {
            return false;
        };
        if counted {
            replay.bytes += msg.len();
            if replay.bytes > REPLAY_LIMIT {
                self.replay = None;
                return false;
            }
        }
        replay.frames.push(msg.head.clone());
        if let Some(tail) = &msg.tail {
            replay.frames.push(tail.clone());
        }
        true
    }
}

impl CallShared {
    pub(super) fn take_replay(&self) -> Option<Replay> {
        self.half().replay.take()
    }

    /// Moves the call onto `stream`: sends everything `frames` kept, then END_STREAM if the
    /// request was already closed. Whatever was left unsent of the old stream is in `frames`.
    pub(super) fn replace_stream(&self, mut stream: SendStream<Bytes>, frames: Vec<Bytes>) {
        let mut half = self.half();
        half.outbox.clear();
        half.dead = None;
        if half.reset {
            stream.send_reset(h2::Reason::CANCEL);
        } else {
            // h2 queues data beyond the window and sends it as credit arrives.
            let end = half.closed;
            let count = frames.len();
            for (i, frame) in frames.into_iter().enumerate() {
                let _ = stream.send_data(frame, end && i + 1 == count);
            }
            if end && count == 0 {
                let _ = stream.send_data(Bytes::new(), true);
            }
        }
        half.stream = stream;
    }
}

/// Opens the call `plan` describes on a new stream and moves `call` onto it, replaying
/// `frames`: what the response side waits on in place of the refused stream.
pub(super) fn reopen(
    plan: RetryPlan,
    frames: Vec<Bytes>,
    call: Arc<CallShared>,
) -> BoxFuture<Result<Reopened, Status>> {
    Box::pin(async move {
        let (slot, response, stream) = plan
            .channel
            .open_stream(&plan.path, &plan.options, false)
            .await?;
        let id = stream.stream_id().as_u32();
        call.replace_stream(stream, frames);
        Ok((response, slot, id))
    })
}

/// Connections tried for one call when each turns out to be going away before the stream
/// starts (the stream never reached a server, so trying again is safe).
const MAX_UNSTARTED_ATTEMPTS: usize = 3;

impl Channel {
    /// Starts a call: opens a stream, sends `first` (and ends the request when `end`). The
    /// call keeps `options` and what it sends until the response headers arrive, so a stream
    /// the server never processed can be retried once, transparently.
    pub(crate) async fn start(
        &self,
        path: &str,
        options: CallOptions,
        first: Option<Framed>,
        end: bool,
    ) -> Result<(Arc<CallShared>, RawStreaming), Status> {
        let inner = &self.inner;
        inner.counters.call_started();
        inner.touch();
        let (slot, response, stream) = match self
            .open_stream(path, &options, end && first.is_none())
            .await
        {
            Ok(opened) => opened,
            Err(status) => {
                inner.counters.call_ended(false);
                return Err(status);
            }
        };
        let config = &inner.config;
        let limits = call::Limits {
            deadline: options.deadline,
            max_recv: options
                .max_recv_message_size
                .unwrap_or(config.max_recv_message_size),
            max_send: options
                .max_send_message_size
                .unwrap_or(config.max_send_message_size),
        };
        let tracker = call::Tracker::new(slot, inner.counters.clone());
        let retry = RetryPlan {
            channel: self.clone(),
            path: path.into(),
            options,
        };
        Ok(call::open(
            response, stream, first, end, limits, tracker, retry,
        ))
    }

    /// Picks a connection and opens a stream on it (request headers sent, ending the request
    /// when `end`), passing over connections that turn out to be going away.
    pub(crate) async fn open_stream(
        &self,
        path: &str,
        options: &CallOptions,
        end: bool,
    ) -> Result<(StreamSlot, H2ResponseFuture, SendStream<Bytes>), Status> {
        let deadline = options.deadline;
        let mut request = Some(self.request(path, options)?);
        if deadline.is_some_and(|d| d <= Instant::now()) {
            return Err(Status::deadline_exceeded(
                "deadline exceeded before the call started",
            ));
        }
        // A connection that is going away never started our stream: try another one.
        let mut attempts = 0;
        loop {
            attempts += 1;
            let slot = with_deadline(
                deadline,
                self.inner.pick(options.wait_for_ready.unwrap_or(false)),
            )
            .await??;
            let ready = with_deadline(deadline, slot.sender().ready()).await?;
            let mut send = match ready {
                Ok(send) => send,
                Err(err) => {
                    slot.connection_failed();
                    if attempts < MAX_UNSTARTED_ATTEMPTS {
                        continue;
                    }
                    return Err(Status::from_h2(err));
                }
            };
            let req = match request.take() {
                Some(req) => req,
                None => self.request(path, options)?,
            };
            match send.send_request(req, end) {
                Ok((response, stream)) => return Ok((slot, response, stream)),
                Err(err) => {
                    slot.connection_failed();
                    if attempts >= MAX_UNSTARTED_ATTEMPTS {
                        return Err(Status::from_h2(err));
                    }
                }
            }
        }
    }
}
