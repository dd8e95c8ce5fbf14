//! The response side of a call: the state machine from response headers through messages to
//! trailers and status ([`RawStreaming`]), and its typed faces [`Streaming`] and
//! [`ResponseFuture`].

use std::fmt;
use std::future::{Future, IntoFuture, poll_fn};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use bytes::Bytes;
use event_listener::EventListener;
use futures_util::Stream;
use h2::client::ResponseFuture as H2ResponseFuture;
use http::header::CONTENT_TYPE;

use super::call::{CallShared, DecodeFn, Tracker};
use super::hedge::{Hedging, Outcome};
use super::retry::{Pushback, RetryBudget, reopen};
use super::service_config::HedgingPolicy;
use super::stats::Counters;
use super::subchannel::StreamSlot;

use crate::codec::compress::StreamEncoding;
use crate::intercept::{ClientInterceptor, Observer};
use crate::metadata::Metadata;
use crate::metrics::AttemptClock;
use crate::proto::headers::{self, is_grpc_content_type, status_from_trailers};
use crate::proto::recv::MessageReader;
use crate::response::Response;
use crate::rt::{BoxFuture, Deadline};
use crate::server::CallContext;
use crate::status::{Code, Status};

/// A retry's new stream: its response, slot and id.
pub(super) type Reopened = (H2ResponseFuture, StreamSlot, u32, AttemptClock);

pub(super) enum RecvState {
    Headers(H2ResponseFuture),
    /// Opening a new stream for another attempt.
    Retrying(BoxFuture<Result<Reopened, Status>>),
    /// Hedged attempts racing for the first response headers.
    Hedging(Box<Hedging>),
    Body(MessageReader),
    Done,
}

/// The response side of a call, before decoding.
pub(crate) struct RawStreaming {
    pub(super) state: RecvState,
    pub(super) call: Arc<CallShared>,
    pub(super) deadline: Deadline,
    pub(super) max_recv: usize,
    pub(super) initial: Option<Metadata>,
    pub(super) status: Option<Status>,
    pub(super) stream_id: u32,
    /// Whether the last message handed out arrived compressed.
    pub(super) last_compressed: bool,
    pub(super) tracker: Option<Tracker>,
    /// The channel's counters while a retry opens a new stream (the call is counted once).
    pub(super) retrying: Option<Arc<Counters>>,
    /// The channel's retry budget, when it has a throttle to tell of successful calls.
    pub(super) budget: Option<Arc<RetryBudget>>,
    /// The server call this call was made for, whose cancellation cancels it.
    pub(super) parent: Option<ParentWatch>,
    /// The channel's interceptors, told how the call ended.
    pub(super) observer: Option<Observer<dyn ClientInterceptor>>,
    /// When the current attempt started, for metrics.
    pub(super) attempt_started: AttemptClock,
}

/// A parent call's cancellation, watched from a child call.
pub(super) struct ParentWatch {
    context: CallContext,
    listener: Option<Pin<Box<EventListener>>>,
}

impl ParentWatch {
    pub(super) fn new(context: CallContext) -> ParentWatch {
        ParentWatch {
            context,
            listener: None,
        }
    }

    /// Ready once the parent call is cancelled.
    pub(super) fn poll_cancelled(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        self.context.poll_cancelled(&mut self.listener, cx)
    }
}

impl RawStreaming {
    /// Ends the call with `status`, cancelling the stream if it is still open.
    pub(super) fn fail(&mut self, status: Status) {
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

    pub(super) fn finish(&mut self, status: Status) {
        // The server is done: stop a request stream that is still open.
        if !self.call.request_closed() {
            self.call.cancel();
        }
        self.measure_end(status.code());
        self.state = RecvState::Done;
        self.call.commit();
        if let (true, Some(budget)) = (status.is_ok(), &self.budget) {
            budget.succeeded();
        }
        if let Some(tracker) = self.tracker.take() {
            tracker.done(status.is_ok());
        }
        if let Some(counters) = self.retrying.take() {
            counters.call_ended(status.is_ok());
        }
        if let Some(observer) = self.observer.take() {
            observer.done(&status);
        }
        self.status = Some(status);
    }

    fn on_headers(&mut self, response: http::Response<h2::RecvStream>) {
        let (parts, body) = response.into_parts();
        if let Some(status) = status_from_trailers(&parts.headers) {
            // Trailers-Only (or an error page that carries a gRPC status anyway): the call has
            // not committed, so the retry policy may try it again.
            let status = match status.is_ok() {
                true => status,
                false => match self.try_retry(status, Pushback::from_headers(&parts.headers)) {
                    Ok(()) => return,
                    Err(status) => status,
                },
            };
            return self.finish(status);
        }
        // Response headers: the server has the call, and it will not be retried.
        self.call.commit();
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
    pub(super) fn poll_headers(&mut self, cx: &mut Context<'_>) -> Poll<()> {
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
                    Poll::Ready(Ok((response, slot, id, started))) => {
                        self.adopt(slot, id, started);
                        self.state = RecvState::Headers(response);
                        continue;
                    }
                    Poll::Ready(Err(status)) => {
                        self.fail(status);
                        continue;
                    }
                    Poll::Pending => "deadline exceeded retrying the call",
                },
                RecvState::Hedging(hedging) => match hedging.poll(&self.call, cx) {
                    Poll::Ready(Outcome::Won(response, slot, id, started)) => {
                        self.adopt(slot, id, started);
                        self.on_headers(response);
                        continue;
                    }
                    Poll::Ready(Outcome::Alone(response, slot, id, started)) => {
                        self.adopt(slot, id, started);
                        self.state = RecvState::Headers(response);
                        continue;
                    }
                    Poll::Ready(Outcome::Failed(status)) => {
                        self.fail(status);
                        continue;
                    }
                    Poll::Pending => "deadline exceeded waiting for response headers",
                },
                RecvState::Body(_) | RecvState::Done => return Poll::Ready(()),
            };
            ready!(self.poll_limits(cx, polled));
        }
    }

    /// Ready, with the call failed, once its deadline passes (`what` says where it was) or
    /// its parent call is cancelled.
    fn poll_limits(&mut self, cx: &mut Context<'_>, what: &'static str) -> Poll<()> {
        if let Some(parent) = &mut self.parent {
            if parent.poll_cancelled(cx).is_ready() {
                self.fail(Status::cancelled("the parent call was cancelled"));
                return Poll::Ready(());
            }
        }
        ready!(self.deadline.poll_expired(cx));
        self.fail(Status::deadline_exceeded(what));
        Poll::Ready(())
    }

    /// Races hedged attempts from here on (the call's first stream is open).
    pub(super) fn start_hedging(&mut self, policy: HedgingPolicy) {
        let RecvState::Headers(response) = std::mem::replace(&mut self.state, RecvState::Done)
        else {
            unreachable!("a call starts waiting for its headers");
        };
        let (slot, counters) = self
            .tracker
            .take()
            .expect("a new call holds its stream")
            .into_parts();
        // The attempts hold their own slots; the call is counted once, when it ends.
        self.retrying = Some(counters);
        let started = std::mem::replace(&mut self.attempt_started, AttemptClock::unmeasured());
        let hedging = Hedging::new(&self.call, policy, response, slot, self.stream_id, started);
        self.state = RecvState::Hedging(Box::new(hedging));
    }

    /// The call goes on with the attempt on stream `id`, holding `slot`, that started at
    /// `started`.
    fn adopt(&mut self, slot: StreamSlot, id: u32, started: AttemptClock) {
        if let Some(counters) = self.retrying.take() {
            self.tracker = Some(Tracker::new(slot, counters));
        }
        self.stream_id = id;
        self.attempt_started = started;
    }

    /// Records the end of the current attempt and of the call, with `code`, if the channel
    /// has metrics.
    fn measure_end(&mut self, code: Code) {
        if let Some(metrics) = &self.call.metrics {
            let received = match &self.state {
                RecvState::Body(reader) => reader.received(),
                _ => 0,
            };
            let attempt = std::mem::replace(&mut self.attempt_started, AttemptClock::unmeasured());
            metrics.attempt_ended(attempt, code, received);
            metrics.call_ended(code);
        }
    }

    /// The stream failed before the response headers. A stream the server never processed
    /// (RST_STREAM(REFUSED_STREAM), or above the last stream id of its GOAWAY) is opened again
    /// at once, once per call; any other failure goes to the retry policy.
    fn stream_failed(&mut self, err: h2::Error) {
        let above_goaway = err.is_go_away()
            && err.is_remote()
            && self
                .tracker
                .as_ref()
                .is_some_and(|t| t.slot.unprocessed(self.stream_id));
        let refused = err.reason() == Some(h2::Reason::REFUSED_STREAM) || above_goaway;
        let status = Status::from_h2(err);
        let transparent = refused
            && self
                .call
                .with_plan(|plan| !std::mem::replace(&mut plan.transparent_used, true))
                .unwrap_or(false);
        let retried = if transparent {
            self.retry_after(&status, Duration::ZERO)
        } else {
            self.try_retry(status.clone(), Pushback::None).is_ok()
        };
        if !retried {
            self.peer_failed(status);
        }
    }

    /// The attempt failed with `status` before the call committed: schedules the next
    /// attempt if the retry policy allows one, else gives the status back.
    fn try_retry(&mut self, status: Status, pushback: Pushback) -> Result<(), Status> {
        let delay = self
            .call
            .with_plan(|plan| plan.next_attempt(&status, pushback))
            .flatten();
        match delay {
            Some(delay) if self.retry_after(&status, delay) => Ok(()),
            _ => Err(status),
        }
    }

    /// Moves the call to a new attempt that starts after `delay`; false if the call
    /// committed or was cancelled meanwhile.
    fn retry_after(&mut self, status: &Status, delay: Duration) -> bool {
        if !self.call.begin_retry(status) {
            return false;
        }
        if let Some(metrics) = &self.call.metrics {
            let attempt = std::mem::replace(&mut self.attempt_started, AttemptClock::unmeasured());
            metrics.attempt_ended(attempt, status.code(), 0);
        }
        // The attempt frees its stream without being counted; the retry is the same call.
        self.retrying = self.tracker.take().map(Tracker::release);
        self.state = RecvState::Retrying(reopen(self.call.clone(), delay));
        true
    }

    pub(super) fn poll_message(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Option<Bytes>, Status>> {
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
                ready!(self.poll_limits(cx, "deadline exceeded waiting for the response"));
            }
        }
    }
}

impl Drop for RawStreaming {
    fn drop(&mut self) {
        if self.status.is_none() {
            self.call.cancel();
        }
        if self.status.is_none() {
            self.measure_end(Code::Cancelled);
        }
        if let Some(observer) = self.observer.take() {
            observer.done(&Status::cancelled("the call was dropped before it ended"));
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
    pub(super) raw: RawStreaming,
    pub(super) decode: DecodeFn<T>,
    /// Set once the error was yielded through [`Stream`], which then ends.
    pub(super) fused: bool,
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

/// The single response of a client-streaming call; await it after feeding the [`Sender`](crate::Sender).
pub struct ResponseFuture<T> {
    pub(super) stream: Streaming<T>,
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
pub(super) async fn read_unary<T>(stream: &mut Streaming<T>) -> Result<Response<T>, Status> {
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
