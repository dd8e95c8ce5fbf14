//! Call handles: [`Sender`] for request messages, [`Streaming`] for responses,
//! [`ResponseFuture`] for a single response, and the typed [`Client`].

use std::fmt;
use std::future::{Future, IntoFuture, poll_fn};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, ready};
use std::time::Instant;

use bytes::Bytes;
use futures_util::Stream;
use h2::SendStream;
use h2::client::ResponseFuture as H2ResponseFuture;
use http::header::CONTENT_TYPE;

use super::channel::Channel;
use super::options::CallOptions;
use super::stats::Counters;
use super::subchannel::StreamSlot;
use crate::codec::compress::StreamEncoding;
use crate::codec::frame::{Framed, frame_message};
use crate::codec::{Codec, Compression, SendOptions};
use crate::metadata::Metadata;
use crate::proto::headers::{self, is_grpc_content_type, status_from_trailers};
use crate::proto::recv::MessageReader;
use crate::proto::send::Outbox;
use crate::response::Response;
use crate::rt::with_deadline;
use crate::rt::{BoxFuture, Deadline};
use crate::status::{Code, Status};

type EncodeFn<T> = Arc<dyn Fn(&T, usize, Compression) -> Result<Framed, Status> + Send + Sync>;
type DecodeFn<T> = Arc<dyn Fn(Bytes) -> Result<T, Status> + Send + Sync>;

/// Request bytes a streaming call keeps until the response headers arrive, so that a stream
/// the server never processed can be replayed on a new one; past this the call is committed
/// to its stream. grpc-go's default per-call retry buffer is the same 256 KiB. (A unary or
/// server-streaming request is in memory anyway and does not count.)
const REPLAY_LIMIT: usize = 256 * 1024;

/// How to open a call again: what [`Channel::start`] was given.
pub(crate) struct RetryPlan {
    pub(crate) channel: Channel,
    pub(crate) path: Box<str>,
    pub(crate) options: CallOptions,
}

/// A call's deadline and message size limits.
pub(crate) struct Limits {
    pub(crate) deadline: Option<Instant>,
    pub(crate) max_recv: usize,
    pub(crate) max_send: usize,
}

/// What a call has sent on its stream so far, kept (as `Bytes` handles, not copies) while a
/// transparent retry is still possible.
struct Replay {
    plan: RetryPlan,
    frames: Vec<Bytes>,
    /// Bytes of streamed messages kept, against [`REPLAY_LIMIT`].
    bytes: usize,
}

/// The request half of a call, shared by every [`Sender`] clone and the response side.
pub(crate) struct CallShared {
    half: Mutex<SendHalf>,
    /// Held for the whole of one message, so messages from many senders never interleave.
    turn: async_lock::Mutex<()>,
    deadline: Option<Instant>,
    max_send: usize,
}

struct SendHalf {
    stream: SendStream<Bytes>,
    outbox: Outbox,
    /// END_STREAM was sent.
    closed: bool,
    /// RST_STREAM was sent.
    reset: bool,
    /// Present until the response headers arrive, the call ends or it has sent too much.
    replay: Option<Replay>,
    /// The stream failed while a retry was still possible: sends go only to the replay until
    /// the response side decides (retry on a new stream, or fail the call with this status).
    dead: Option<Status>,
}

impl SendHalf {
    /// Keeps `msg` for a replay; `counted` messages count against [`REPLAY_LIMIT`], past
    /// which the replay is dropped. Returns whether the message is kept.
    fn keep(&mut self, msg: &Framed, counted: bool) -> bool {
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
    fn half(&self) -> MutexGuard<'_, SendHalf> {
        self.half.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sends RST_STREAM(CANCEL) unless the stream was already reset.
    fn cancel(&self) {
        let mut half = self.half();
        if !half.reset {
            half.reset = true;
            half.stream.send_reset(h2::Reason::CANCEL);
        }
    }

    /// Whether END_STREAM was already sent.
    fn request_closed(&self) -> bool {
        self.half().closed
    }

    /// The call is bound to its stream for good: no retry, nothing more to keep.
    fn commit(&self) {
        self.half().replay = None;
    }

    fn take_replay(&self) -> Option<Replay> {
        self.half().replay.take()
    }

    /// Moves the call onto `stream`: sends everything `frames` kept, then END_STREAM if the
    /// request was already closed. Whatever was left unsent of the old stream is in `frames`.
    fn replace_stream(&self, mut stream: SendStream<Bytes>, frames: Vec<Bytes>) {
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

/// A call's hold on its stream slot and its place in the channel's counters, released when
/// the call ends.
pub(crate) struct Tracker {
    slot: StreamSlot,
    counters: Arc<Counters>,
}

impl Tracker {
    pub(crate) fn new(slot: StreamSlot, counters: Arc<Counters>) -> Tracker {
        Tracker { slot, counters }
    }

    fn done(self, ok: bool) {
        self.counters.call_ended(ok);
        drop(self.slot);
    }

    /// Frees the stream but leaves the call uncounted, for an attempt being retried.
    fn release(self) -> Arc<Counters> {
        self.counters
    }
}

/// Starts the call's bookkeeping once h2 accepted the request headers.
pub(crate) fn open(
    response: H2ResponseFuture,
    mut stream: SendStream<Bytes>,
    first: Option<Framed>,
    end: bool,
    limits: Limits,
    tracker: Tracker,
    retry: RetryPlan,
) -> (Arc<CallShared>, RawStreaming) {
    let mut frames = Vec::new();
    if let Some(first) = first {
        // One message already in memory: h2 may hold it until the window opens, which costs
        // nothing extra. Errors surface on the response side.
        frames.push(first.head.clone());
        let has_tail = first.tail.is_some();
        let _ = stream.send_data(first.head, end && !has_tail);
        if let Some(tail) = first.tail {
            frames.push(tail.clone());
            let _ = stream.send_data(tail, end);
        }
    }
    let stream_id = stream.stream_id().as_u32();
    let call = Arc::new(CallShared {
        half: Mutex::new(SendHalf {
            stream,
            outbox: Outbox::default(),
            closed: end,
            reset: false,
            replay: Some(Replay {
                plan: retry,
                frames,
                bytes: 0,
            }),
            dead: None,
        }),
        turn: async_lock::Mutex::new(()),
        deadline: limits.deadline,
        max_send: limits.max_send,
    });
    let raw = RawStreaming {
        state: RecvState::Headers(response),
        call: call.clone(),
        deadline: Deadline::new(limits.deadline),
        max_recv: limits.max_recv,
        initial: None,
        status: None,
        stream_id,
        last_compressed: false,
        tracker: Some(tracker),
        retrying: None,
    };
    (call, raw)
}

/// Sends request messages. Clone it to feed one call from many tasks: each message is written
/// whole, in the order the sends got their turn. Dropping the last clone ends the request
/// stream (half-close), as does [`Sender::close`].
pub struct Sender<T> {
    state: Arc<SenderState>,
    encode: EncodeFn<T>,
}

struct SenderState {
    call: Arc<CallShared>,
    /// The call's request compression.
    compression: Compression,
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
                    Some(msg) if !half.keep(&msg, true) => Err(failure),
                    _ => Ok(()),
                });
            }
            loop {
                match half.outbox.poll_flush(&mut half.stream, cx) {
                    Poll::Ready(Ok(())) => match framed.take() {
                        Some(msg) => {
                            half.keep(&msg, true);
                            half.outbox.push(msg);
                        }
                        None => return Poll::Ready(Ok(())),
                    },
                    Poll::Ready(Err(status)) if half.replay.is_some() => {
                        // Perhaps refused by the server: everything sent is in the replay.
                        half.outbox.clear();
                        half.dead = Some(status.clone());
                        return Poll::Ready(match framed.take() {
                            Some(msg) if !half.keep(&msg, true) => Err(status),
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
                return Poll::Ready(Err(Status::deadline_exceeded(
                    "deadline exceeded while sending",
                )));
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
            half.stream
                .send_data(Bytes::new(), true)
                .map_err(Status::from_h2)?;
            Poll::Ready(Ok(()))
        })
        .await
    }
}

/// A retry's new stream: its response, slot and id.
type Reopened = (H2ResponseFuture, StreamSlot, u32);

enum RecvState {
    Headers(H2ResponseFuture),
    /// Opening a new stream for a stream the server never processed.
    Retrying(BoxFuture<Result<Reopened, Status>>),
    Body(MessageReader),
    Done,
}

/// The response side of a call, before decoding.
pub(crate) struct RawStreaming {
    state: RecvState,
    call: Arc<CallShared>,
    deadline: Deadline,
    max_recv: usize,
    initial: Option<Metadata>,
    status: Option<Status>,
    stream_id: u32,
    /// Whether the last message handed out arrived compressed.
    last_compressed: bool,
    tracker: Option<Tracker>,
    /// The channel's counters while a retry opens a new stream (the call is counted once).
    retrying: Option<Arc<Counters>>,
}

impl RawStreaming {
    /// Ends the call with `status`, cancelling the stream if it is still open.
    fn fail(&mut self, status: Status) {
        if self.status.is_none() {
            self.call.cancel();
            self.finish(status);
        }
    }

    /// Ends the call with a failure the peer or the connection caused. RST_STREAM(CANCEL)
    /// after our deadline passed is the server giving up on that deadline (gRPC servers reset
    /// expired calls, and its timer may beat ours): DEADLINE_EXCEEDED, as grpc-go reports it.
    fn peer_failed(&mut self, status: Status) {
        let expired = self.call.deadline.is_some_and(|at| Instant::now() >= at);
        if status.code() == Code::Cancelled && expired {
            let message = format!("deadline exceeded; then {}", status.message());
            return self.fail(Status::deadline_exceeded(message));
        }
        self.fail(status);
    }

    fn finish(&mut self, status: Status) {
        // The server is done: stop a request stream that is still open.
        if !self.call.request_closed() {
            self.call.cancel();
        }
        self.state = RecvState::Done;
        self.call.commit();
        if let Some(tracker) = self.tracker.take() {
            tracker.done(status.is_ok());
        }
        if let Some(counters) = self.retrying.take() {
            counters.call_ended(status.is_ok());
        }
        self.status = Some(status);
    }

    fn on_headers(&mut self, response: http::Response<h2::RecvStream>) {
        // The server has the call: it will not be retried.
        self.call.commit();
        let (parts, body) = response.into_parts();
        if let Some(status) = status_from_trailers(&parts.headers) {
            // Trailers-only response (or an error page that carries a gRPC status anyway).
            return self.finish(status);
        }
        if parts.status != http::StatusCode::OK {
            return self.finish(Status::from_http_status(parts.status));
        }
        if !is_grpc_content_type(parts.headers.get(CONTENT_TYPE)) {
            let got = parts
                .headers
                .get(CONTENT_TYPE)
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
            return self.fail(Status::new(
                Code::Unknown,
                format!("invalid content-type in response: {got:?}"),
            ));
        }
        let encoding = StreamEncoding::from_header(parts.headers.get(headers::GRPC_ENCODING));
        self.initial = Some(Metadata::from_headers(&parts.headers));
        self.state = RecvState::Body(MessageReader::new(body, self.max_recv, encoding));
    }

    /// Drives the call until the response headers arrived (or it ended).
    fn poll_headers(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            let polled = match &mut self.state {
                RecvState::Headers(fut) => match Pin::new(fut).poll(cx) {
                    Poll::Ready(Ok(response)) => {
                        self.on_headers(response);
                        continue;
                    }
                    Poll::Ready(Err(err)) => {
                        self.stream_failed(err);
                        continue;
                    }
                    Poll::Pending => "deadline exceeded waiting for response headers",
                },
                RecvState::Retrying(fut) => match fut.as_mut().poll(cx) {
                    Poll::Ready(Ok((response, slot, id))) => {
                        if let Some(counters) = self.retrying.take() {
                            self.tracker = Some(Tracker::new(slot, counters));
                        }
                        self.stream_id = id;
                        self.state = RecvState::Headers(response);
                        continue;
                    }
                    Poll::Ready(Err(status)) => {
                        self.fail(status);
                        continue;
                    }
                    Poll::Pending => "deadline exceeded retrying the call",
                },
                RecvState::Body(_) | RecvState::Done => return Poll::Ready(()),
            };
            ready!(self.deadline.poll_expired(cx));
            self.fail(Status::deadline_exceeded(polled));
        }
    }

    /// The stream failed before the response headers. A stream the server never processed
    /// (RST_STREAM(REFUSED_STREAM), or above the last stream id of its GOAWAY) is retried
    /// once on a new stream, replaying what was sent, unless the call was committed.
    fn stream_failed(&mut self, err: h2::Error) {
        let above_goaway = err.is_go_away()
            && err.is_remote()
            && self
                .tracker
                .as_ref()
                .is_some_and(|t| t.slot.unprocessed(self.stream_id));
        let refused = err.reason() == Some(h2::Reason::REFUSED_STREAM) || above_goaway;
        let replay = if refused {
            self.call.take_replay()
        } else {
            None
        };
        let Some(Replay { plan, frames, .. }) = replay else {
            return self.peer_failed(Status::from_h2(err));
        };
        // The attempt frees its stream without being counted; the retry is the same call.
        self.retrying = self.tracker.take().map(Tracker::release);
        let call = self.call.clone();
        self.state = RecvState::Retrying(Box::pin(async move {
            let (slot, response, stream) = plan
                .channel
                .open_stream(&plan.path, &plan.options, false)
                .await?;
            let id = stream.stream_id().as_u32();
            call.replace_stream(stream, frames);
            Ok((response, slot, id))
        }));
    }

    fn poll_message(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<Bytes>, Status>> {
        loop {
            if let Some(status) = &self.status {
                return Poll::Ready(if status.is_ok() {
                    Ok(None)
                } else {
                    Err(status.clone())
                });
            }
            ready!(self.poll_headers(cx));
            let RecvState::Body(reader) = &mut self.state else {
                continue;
            };
            let pending = match reader.poll_message(cx) {
                Poll::Ready(Ok(Some(msg))) => {
                    self.last_compressed = reader.last_compressed();
                    return Poll::Ready(Ok(Some(msg)));
                }
                Poll::Ready(Ok(None)) => match reader.poll_trailers(cx) {
                    Poll::Ready(Ok(Some(trailers))) => {
                        let status = status_from_trailers(&trailers).unwrap_or_else(|| {
                            Status::new(Code::Unknown, "server sent trailers without grpc-status")
                        });
                        self.finish(status);
                        false
                    }
                    Poll::Ready(Ok(None)) => {
                        self.finish(Status::new(
                            Code::Unknown,
                            "server ended the stream without trailers",
                        ));
                        false
                    }
                    Poll::Ready(Err(status)) => {
                        self.peer_failed(status);
                        false
                    }
                    Poll::Pending => true,
                },
                Poll::Ready(Err(status)) => {
                    self.peer_failed(status);
                    false
                }
                Poll::Pending => true,
            };
            if pending {
                ready!(self.deadline.poll_expired(cx));
                self.fail(Status::deadline_exceeded(
                    "deadline exceeded waiting for the response",
                ));
            }
        }
    }
}

impl Drop for RawStreaming {
    fn drop(&mut self) {
        if self.status.is_none() {
            self.call.cancel();
        }
        if let Some(tracker) = self.tracker.take() {
            tracker.done(false);
        }
        if let Some(counters) = self.retrying.take() {
            counters.call_ended(false);
        }
    }
}

/// The response messages of a call, ending in a [`Status`]. Dropping it before the end
/// cancels the call (RST_STREAM(CANCEL)).
pub struct Streaming<T> {
    raw: RawStreaming,
    decode: DecodeFn<T>,
    /// Set once the error was yielded through [`Stream`], which then ends.
    fused: bool,
}

impl<T> fmt::Debug for Streaming<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Streaming")
            .field("status", &self.raw.status)
            .finish_non_exhaustive()
    }
}

impl<T> Streaming<T> {
    /// The next message: `Ok(None)` when the call ended with OK, `Err` with any other status.
    pub async fn message(&mut self) -> Result<Option<T>, Status> {
        poll_fn(|cx| self.poll_message(cx)).await
    }

    /// Polls for the next message; see [`Streaming::message`].
    pub fn poll_message(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<T>, Status>> {
        match ready!(self.raw.poll_message(cx)) {
            Ok(Some(bytes)) => match (self.decode)(bytes) {
                Ok(msg) => Poll::Ready(Ok(Some(msg))),
                Err(status) => {
                    self.raw.fail(status.clone());
                    Poll::Ready(Err(status))
                }
            },
            Ok(None) => Poll::Ready(Ok(None)),
            Err(status) => Poll::Ready(Err(status)),
        }
    }

    /// Whether the last message [`Streaming::message`] returned arrived compressed (its
    /// Compressed-Flag was set); it was inflated either way.
    pub fn last_message_compressed(&self) -> bool {
        self.raw.last_compressed
    }

    /// The response headers' metadata (empty for a trailers-only response); waits for them.
    pub async fn initial_metadata(&mut self) -> Result<Metadata, Status> {
        poll_fn(|cx| self.raw.poll_headers(cx)).await;
        match (&self.raw.initial, &self.raw.status) {
            (Some(md), _) => Ok(md.clone()),
            (None, Some(status)) if !status.is_ok() => Err(status.clone()),
            (None, _) => Ok(Metadata::new()),
        }
    }

    /// The final status, once the call ended.
    pub fn status(&self) -> Option<&Status> {
        self.raw.status.as_ref()
    }

    /// The trailing metadata, once the call ended.
    pub fn trailers(&self) -> Option<&Metadata> {
        self.raw.status.as_ref().map(Status::metadata)
    }

    /// Cancels the call: sends RST_STREAM(CANCEL); later reads give CANCELLED.
    pub fn cancel(&mut self) {
        self.raw
            .fail(Status::cancelled("call cancelled by the client"));
    }
}

impl<T> Stream for Streaming<T> {
    type Item = Result<T, Status>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.fused {
            return Poll::Ready(None);
        }
        match ready!(this.poll_message(cx)) {
            Ok(Some(msg)) => Poll::Ready(Some(Ok(msg))),
            Ok(None) => {
                this.fused = true;
                Poll::Ready(None)
            }
            Err(status) => {
                this.fused = true;
                Poll::Ready(Some(Err(status)))
            }
        }
    }
}

/// The single response of a client-streaming call; await it after feeding the [`Sender`].
pub struct ResponseFuture<T> {
    stream: Streaming<T>,
}

impl<T> fmt::Debug for ResponseFuture<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<T: Send + 'static> ResponseFuture<T> {
    /// Waits for the response.
    pub async fn response(mut self) -> Result<Response<T>, Status> {
        read_unary(&mut self.stream).await
    }

    /// Cancels the call.
    pub fn cancel(&mut self) {
        self.stream.cancel();
    }
}

impl<T: Send + 'static> IntoFuture for ResponseFuture<T> {
    type Output = Result<Response<T>, Status>;
    type IntoFuture = BoxFuture<Result<Response<T>, Status>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.response())
    }
}

/// Reads exactly one message and the status: what unary and client-streaming calls return.
async fn read_unary<T>(stream: &mut Streaming<T>) -> Result<Response<T>, Status> {
    let metadata = stream.initial_metadata().await?;
    let Some(message) = stream.message().await? else {
        return Err(Status::internal(
            "server sent no response message for a unary call",
        ));
    };
    let compressed = stream.last_message_compressed();
    if stream.message().await?.is_some() {
        let status =
            Status::internal("server sent more than one response message for a unary call");
        stream.raw.fail(status.clone());
        return Err(status);
    }
    let trailers = stream.trailers().cloned().unwrap_or_default();
    Ok(Response::from_parts(metadata, message, trailers).with_compressed(compressed))
}

/// A typed client over a [`Channel`]: messages go through the codec `C`.
pub struct Client<C> {
    channel: Channel,
    codec: Arc<C>,
}

impl<C> Clone for Client<C> {
    fn clone(&self) -> Self {
        Client {
            channel: self.channel.clone(),
            codec: self.codec.clone(),
        }
    }
}

impl<C> fmt::Debug for Client<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("channel", &self.channel)
            .finish_non_exhaustive()
    }
}

impl<C: Codec> Client<C> {
    /// A client that sends on `channel` with `codec`.
    pub fn new(channel: Channel, codec: C) -> Client<C> {
        Client {
            channel,
            codec: Arc::new(codec),
        }
    }

    /// The channel this client uses.
    pub fn channel(&self) -> &Channel {
        &self.channel
    }

    fn encoder(&self) -> EncodeFn<C::Encode> {
        let codec = self.codec.clone();
        Arc::new(move |msg, max, compression| frame_message(&*codec, msg, max, compression))
    }

    fn streaming(&self, raw: RawStreaming) -> Streaming<C::Decode> {
        let codec = self.codec.clone();
        Streaming {
            raw,
            decode: Arc::new(move |bytes| codec.decode(bytes)),
            fused: false,
        }
    }

    fn max_send(&self, options: &CallOptions) -> usize {
        options
            .max_send_message_size
            .unwrap_or(self.channel.config().max_send_message_size)
    }

    fn compression(&self, options: &CallOptions) -> Compression {
        options
            .compression
            .unwrap_or(self.channel.config().compression)
    }

    /// A unary call: one request, one response.
    pub async fn unary(
        &self,
        path: &str,
        message: &C::Encode,
        options: CallOptions,
    ) -> Result<Response<C::Decode>, Status> {
        let framed = frame_message(
            &*self.codec,
            message,
            self.max_send(&options),
            self.compression(&options),
        )?;
        let (_call, raw) = self
            .channel
            .start(path, options, Some(framed), true)
            .await?;
        read_unary(&mut self.streaming(raw)).await
    }

    /// A server-streaming call: one request, a stream of responses.
    pub async fn server_streaming(
        &self,
        path: &str,
        message: &C::Encode,
        options: CallOptions,
    ) -> Result<Streaming<C::Decode>, Status> {
        let framed = frame_message(
            &*self.codec,
            message,
            self.max_send(&options),
            self.compression(&options),
        )?;
        let (_call, raw) = self
            .channel
            .start(path, options, Some(framed), true)
            .await?;
        Ok(self.streaming(raw))
    }

    /// A client-streaming call: send requests, then await the one response.
    pub async fn client_streaming(
        &self,
        path: &str,
        options: CallOptions,
    ) -> Result<(Sender<C::Encode>, ResponseFuture<C::Decode>), Status> {
        let (sender, stream) = self.bidi_streaming(path, options).await?;
        Ok((sender, ResponseFuture { stream }))
    }

    /// A bidirectional-streaming call: a sender and a receiver that may live on different tasks.
    pub async fn bidi_streaming(
        &self,
        path: &str,
        options: CallOptions,
    ) -> Result<(Sender<C::Encode>, Streaming<C::Decode>), Status> {
        let compression = self.compression(&options);
        let (call, raw) = self.channel.start(path, options, None, false).await?;
        let sender = Sender {
            state: Arc::new(SenderState { call, compression }),
            encode: self.encoder(),
        };
        Ok((sender, self.streaming(raw)))
    }
}
