//! What handlers see: [`Request`], [`CallContext`], [`RequestStream`] and [`ResponseSink`], and
//! the type-erased handler the router stores for each of the four call kinds.

use std::fmt;
use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use bytes::Bytes;
use event_listener::{Event, EventListener};
use futures_util::Stream;

use super::slot::Slot;
use crate::codec::compress::AcceptSet;
use crate::codec::frame::{Framed, frame_message};
use crate::codec::{Codec, Compression, SendOptions};
use crate::metadata::Metadata;
use crate::proto::recv::MessageReader;
use crate::response::Response;
use crate::rt::BoxFuture;
use crate::status::Status;
use crate::transport::{CertificateDer, PeerCertificates, RemoteAddr};

/// Facts about a call that a handler may consult at any time: method, deadline, metadata,
/// compression and whether the call was cancelled; and the response compression it may
/// choose. Cheap to clone.
#[derive(Clone)]
pub struct CallContext {
    inner: Arc<ContextInner>,
}

struct ContextInner {
    method: String,
    deadline: Option<Instant>,
    metadata: Metadata,
    cancelled: AtomicBool,
    event: Event,
    peer_certificates: Option<PeerCertificates>,
    remote_addr: Option<RemoteAddr>,
    /// The request's `grpc-encoding`.
    request_compression: Compression,
    /// What the client's `grpc-accept-encoding` lists.
    accepted: AcceptSet,
    response: Mutex<ResponseCompression>,
    /// The request's `grpc-previous-rpc-attempts`.
    previous_attempts: u32,
    /// `grpc-retry-pushback-ms` to send with the status, or [`NO_PUSHBACK`].
    pushback_ms: AtomicI64,
}

/// [`ContextInner::pushback_ms`] when the handler set none.
const NO_PUSHBACK: i64 = i64::MIN;

/// The response compression a handler asked for, and what went out in the response headers.
#[derive(Debug)]
struct ResponseCompression {
    requested: Compression,
    /// Fixed when the response headers are queued: `requested` if the client accepts it.
    sent: Option<Compression>,
}

impl fmt::Debug for CallContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CallContext")
            .field("method", &self.inner.method)
            .field("deadline", &self.inner.deadline)
            .field("request_compression", &self.inner.request_compression)
            .field("cancelled", &self.is_cancelled())
            .finish()
    }
}

impl CallContext {
    pub(crate) fn new(
        method: String,
        deadline: Option<Instant>,
        metadata: Metadata,
        compression: CallCompression,
        peer_certificates: Option<PeerCertificates>,
        remote_addr: Option<RemoteAddr>,
        previous_attempts: u32,
    ) -> CallContext {
        CallContext {
            inner: Arc::new(ContextInner {
                method,
                deadline,
                metadata,
                cancelled: AtomicBool::new(false),
                event: Event::new(),
                request_compression: compression.request,
                accepted: compression.accepted,
                response: Mutex::new(ResponseCompression {
                    requested: compression.response_default,
                    sent: None,
                }),
                peer_certificates,
                remote_addr,
                previous_attempts,
                pushback_ms: AtomicI64::new(NO_PUSHBACK),
            }),
        }
    }

    /// How many attempts of this call the client made before this one, when its retry
    /// policy tried again (`grpc-previous-rpc-attempts`; 0 for a first attempt).
    pub fn previous_attempts(&self) -> u32 {
        self.inner.previous_attempts
    }

    /// Tells a client with a retry policy when to try again if this call fails: after
    /// `Some(delay)`, or never (`None`). Sent as `grpc-retry-pushback-ms` with the status.
    pub fn set_retry_pushback(&self, after: Option<Duration>) {
        let ms = after.map_or(-1, |d| {
            i64::try_from(d.as_millis())
                .unwrap_or(i64::MAX)
                .min(i64::from(i32::MAX))
        });
        self.inner.pushback_ms.store(ms, Ordering::Relaxed);
    }

    /// The pushback set with [`set_retry_pushback`](Self::set_retry_pushback), in ms (-1:
    /// never), if any.
    pub(crate) fn retry_pushback_ms(&self) -> Option<i64> {
        let ms = self.inner.pushback_ms.load(Ordering::Relaxed);
        (ms != NO_PUSHBACK).then_some(ms)
    }

    /// The full method path, like `/package.Service/Method`.
    pub fn method(&self) -> &str {
        &self.inner.method
    }

    /// When the client's deadline falls, if it set one (from `grpc-timeout`).
    pub fn deadline(&self) -> Option<Instant> {
        self.inner.deadline
    }

    /// The request metadata (headers other than the protocol's own).
    pub fn metadata(&self) -> &Metadata {
        &self.inner.metadata
    }

    /// The certificate chain the client presented over TLS (leaf first, DER-encoded), for
    /// authorizing mutual-TLS clients; `None` without TLS or when the client sent none.
    pub fn peer_certificates(&self) -> Option<&[CertificateDer<'static>]> {
        self.inner.peer_certificates.as_ref().map(|p| &*p.0)
    }

    /// Where the client connected from (its TCP address, or a Unix socket); `None` for a
    /// connection handed to [`Server::serve_connection`](crate::Server::serve_connection),
    /// whose origin plexus does not know. Displays as gRPC's peer strings
    /// (`ipv4:127.0.0.1:5000`).
    pub fn remote_addr(&self) -> Option<&RemoteAddr> {
        self.inner.remote_addr.as_ref()
    }

    /// The compression of the request messages (`grpc-encoding`; `Identity` when the client
    /// sent none). Each message may still arrive uncompressed: see [`Request::compressed`] and
    /// [`RequestStream::last_message_compressed`].
    pub fn request_compression(&self) -> Compression {
        self.inner.request_compression
    }

    /// Whether the client can inflate `compression` (listed in its `grpc-accept-encoding`;
    /// `Identity` always is).
    pub fn accepts_compression(&self, compression: Compression) -> bool {
        self.inner.accepted.contains(compression)
    }

    /// Compresses the response messages with `compression` (default: the server's
    /// [`response_compression`](crate::ServerBuilder::response_compression), itself off by
    /// default). It takes effect only if the client accepts it (else messages go out
    /// uncompressed, as the spec asks) and only before the response headers are sent, that
    /// is before the first message or [`ResponseSink::send_initial_metadata`]; later calls
    /// change nothing. Single messages opt out with [`ResponseSink::send_with`].
    pub fn set_response_compression(&self, compression: Compression) {
        let mut state = self.response();
        if state.sent.is_none() {
            state.requested = compression;
        }
    }

    /// The response compression: what the response headers announced once they were sent,
    /// else what would be used if they went out now.
    pub fn response_compression(&self) -> Compression {
        let state = self.response();
        state
            .sent
            .unwrap_or_else(|| self.effective(state.requested))
    }

    /// Fixes the response compression as the headers are queued; returns it.
    pub(crate) fn lock_response_compression(&self) -> Compression {
        let mut state = self.response();
        let effective = self.effective(state.requested);
        *state.sent.get_or_insert(effective)
    }

    fn effective(&self, requested: Compression) -> Compression {
        if self.inner.accepted.contains(requested) {
            requested
        } else {
            Compression::Identity
        }
    }

    fn response(&self) -> std::sync::MutexGuard<'_, ResponseCompression> {
        self.inner
            .response
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the client cancelled the call, its deadline passed, or the connection went away.
    pub fn is_cancelled(&self) -> bool {
        self.inner.cancelled.load(Ordering::Acquire)
    }

    /// Completes when the call is cancelled (see [`CallContext::is_cancelled`]).
    pub async fn cancelled(&self) {
        loop {
            if self.is_cancelled() {
                return;
            }
            let listener = self.inner.event.listen();
            if self.is_cancelled() {
                return;
            }
            listener.await;
        }
    }

    pub(crate) fn cancel(&self) {
        if !self.inner.cancelled.swap(true, Ordering::AcqRel) {
            self.inner.event.notify(usize::MAX);
        }
    }

    /// Ready once the call is cancelled; `listener` keeps the registration between polls.
    pub(crate) fn poll_cancelled(
        &self,
        listener: &mut Option<Pin<Box<EventListener>>>,
        cx: &mut Context<'_>,
    ) -> Poll<()> {
        loop {
            if self.is_cancelled() {
                return Poll::Ready(());
            }
            match listener {
                Some(l) => {
                    ready!(l.as_mut().poll(cx));
                    *listener = None;
                }
                None => *listener = Some(Box::pin(self.inner.event.listen())),
            }
        }
    }
}

/// How a call's messages are compressed, as the request headers and the server set it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CallCompression {
    pub(crate) request: Compression,
    pub(crate) accepted: AcceptSet,
    pub(crate) response_default: Compression,
}

/// A request as a handler receives it: the message (or message stream) and its context.
#[derive(Debug)]
pub struct Request<T> {
    context: CallContext,
    message: T,
    compressed: bool,
}

impl<T> Request<T> {
    /// The message, or for streaming requests the [`RequestStream`].
    pub fn message(&self) -> &T {
        &self.message
    }

    /// Mutable access to the message (needed to read a [`RequestStream`]).
    pub fn message_mut(&mut self) -> &mut T {
        &mut self.message
    }

    /// Takes the message.
    pub fn into_message(self) -> T {
        self.message
    }

    /// The request metadata.
    pub fn metadata(&self) -> &Metadata {
        self.context.metadata()
    }

    /// Whether the request message of a unary or server-streaming call arrived compressed (its
    /// Compressed-Flag was set); it was inflated either way. Always false for streaming
    /// requests, whose messages say it one by one:
    /// [`RequestStream::last_message_compressed`].
    pub fn compressed(&self) -> bool {
        self.compressed
    }

    /// The call's context (deadline, cancellation, method).
    pub fn context(&self) -> &CallContext {
        &self.context
    }

    /// Splits into context and message.
    pub fn into_parts(self) -> (CallContext, T) {
        (self.context, self.message)
    }
}

type DecodeFn<T> = Arc<dyn Fn(Bytes) -> Result<T, Status> + Send + Sync>;

/// The request messages of a client- or bidi-streaming call.
pub struct RequestStream<T> {
    reader: MessageReader,
    decode: DecodeFn<T>,
    finished: bool,
}

impl<T> fmt::Debug for RequestStream<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequestStream")
            .field("finished", &self.finished)
            .finish_non_exhaustive()
    }
}

impl<T> RequestStream<T> {
    /// The next message; `Ok(None)` once the client closed its side. A client that cancels
    /// gives `Err` with CANCELLED.
    pub async fn message(&mut self) -> Result<Option<T>, Status> {
        poll_fn(|cx| self.poll_message(cx)).await
    }

    /// Whether the last message [`RequestStream::message`] returned arrived compressed (its
    /// Compressed-Flag was set); it was inflated either way.
    pub fn last_message_compressed(&self) -> bool {
        self.reader.last_compressed()
    }

    /// Polls for the next message; see [`RequestStream::message`].
    pub fn poll_message(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<T>, Status>> {
        if self.finished {
            return Poll::Ready(Ok(None));
        }
        match ready!(self.reader.poll_message(cx)) {
            Ok(Some(bytes)) => Poll::Ready((self.decode)(bytes).map(Some)),
            Ok(None) => {
                self.finished = true;
                Poll::Ready(Ok(None))
            }
            Err(status) => Poll::Ready(Err(status)),
        }
    }
}

impl<T> Stream for RequestStream<T> {
    type Item = Result<T, Status>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        match ready!(this.poll_message(cx)) {
            Ok(Some(msg)) => Poll::Ready(Some(Ok(msg))),
            Ok(None) => Poll::Ready(None),
            Err(status) => {
                this.finished = true;
                Poll::Ready(Some(Err(status)))
            }
        }
    }
}

/// What a sink hands to the stream driver.
#[derive(Debug)]
pub(crate) enum SinkItem {
    Headers(Metadata),
    Message(Framed),
    /// The headers and the one message of a unary or client-streaming response, in one item
    /// so the handler does not wait for the driver between them.
    Single(Metadata, Framed),
}

/// The untyped core of a [`ResponseSink`].
#[derive(Clone, Debug)]
pub(crate) struct RawSink {
    pub(crate) items: Arc<Slot>,
    pub(crate) trailers: Arc<Mutex<Metadata>>,
    pub(crate) max_send: usize,
    pub(crate) context: CallContext,
}

impl RawSink {
    async fn push(&self, item: SinkItem) -> Result<(), Status> {
        self.items
            .push(item)
            .await
            .map_err(|_| Status::cancelled("the call was cancelled or has ended"))
    }

    fn set_trailers(&self, metadata: Metadata) {
        *self.trailers.lock().unwrap_or_else(|e| e.into_inner()) = metadata;
    }

    /// The compression for the next message; fixes the call's response compression, since
    /// the headers go out with the first item.
    fn compression(&self, options: SendOptions) -> Compression {
        let call = self.context.lock_response_compression();
        if options.get_compress() {
            call
        } else {
            Compression::Identity
        }
    }
}

type EncodeFn<T> = Arc<dyn Fn(&T, usize, Compression) -> Result<Framed, Status> + Send + Sync>;

/// Sends response messages of a server- or bidi-streaming call. `send` waits for HTTP/2 flow
/// control, so a fast handler never buffers more than a message ahead of the network.
pub struct ResponseSink<T> {
    raw: RawSink,
    encode: EncodeFn<T>,
}

impl<T> Clone for ResponseSink<T> {
    fn clone(&self) -> Self {
        ResponseSink {
            raw: self.raw.clone(),
            encode: self.encode.clone(),
        }
    }
}

impl<T> fmt::Debug for ResponseSink<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseSink").finish_non_exhaustive()
    }
}

impl<T> ResponseSink<T> {
    /// Sends the response headers with `metadata`; optional, and only before the first message
    /// (later calls are ignored).
    pub async fn send_initial_metadata(&self, metadata: Metadata) -> Result<(), Status> {
        self.raw.context.lock_response_compression();
        self.raw.push(SinkItem::Headers(metadata)).await
    }

    /// Sends one message, compressed if the call compresses its responses
    /// ([`CallContext::set_response_compression`]). Fails with CANCELLED once the call is gone.
    pub async fn send(&self, message: T) -> Result<(), Status> {
        self.send_with(message, SendOptions::new()).await
    }

    /// Sends one message like [`ResponseSink::send`], with per-message options:
    /// `SendOptions::new().compress(false)` sends it uncompressed on a compressing call.
    pub async fn send_with(&self, message: T, options: SendOptions) -> Result<(), Status> {
        let compression = self.raw.compression(options);
        let framed = (self.encode)(&message, self.raw.max_send, compression)?;
        self.raw.push(SinkItem::Message(framed)).await
    }

    /// Sets the trailing metadata sent with the final status.
    pub fn set_trailers(&self, metadata: Metadata) {
        self.raw.set_trailers(metadata);
    }
}

/// A handler with its types erased: what the router stores.
pub(crate) type ErasedHandler =
    Arc<dyn Fn(CallContext, MessageReader, RawSink) -> BoxFuture<Result<(), Status>> + Send + Sync>;

fn decoder<C: Codec>(codec: &Arc<C>) -> DecodeFn<C::Decode> {
    let codec = codec.clone();
    Arc::new(move |bytes| codec.decode(bytes))
}

fn sink<C: Codec>(codec: &Arc<C>, raw: RawSink) -> ResponseSink<C::Encode> {
    let codec = codec.clone();
    ResponseSink {
        raw,
        encode: Arc::new(move |msg, max, compression| {
            frame_message(&*codec, msg, max, compression)
        }),
    }
}

/// Reads the single request of a unary or server-streaming call, and whether it arrived
/// compressed.
async fn read_one<C: Codec>(
    codec: &C,
    reader: &mut MessageReader,
) -> Result<(C::Decode, bool), Status> {
    let first = poll_fn(|cx| reader.poll_message(cx)).await?;
    let Some(bytes) = first else {
        return Err(Status::internal(
            "client sent no request message for a unary request",
        ));
    };
    let compressed = reader.last_compressed();
    if poll_fn(|cx| reader.poll_message(cx)).await?.is_some() {
        return Err(Status::internal(
            "client sent more than one request message for a unary request",
        ));
    }
    Ok((codec.decode(bytes)?, compressed))
}

/// Sends a single response (unary and client-streaming handlers).
async fn respond<C: Codec>(
    codec: &C,
    sink: &RawSink,
    response: Response<C::Encode>,
) -> Result<(), Status> {
    let (metadata, message, trailers) = response.into_parts();
    let compression = sink.compression(SendOptions::new());
    let framed = frame_message(codec, &message, sink.max_send, compression)?;
    sink.set_trailers(trailers);
    sink.push(SinkItem::Single(metadata, framed)).await
}

pub(crate) fn unary<C, F, Fut>(codec: C, handler: F) -> ErasedHandler
where
    C: Codec,
    F: Fn(Request<C::Decode>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Response<C::Encode>, Status>> + Send + 'static,
{
    let codec = Arc::new(codec);
    let handler = Arc::new(handler);
    Arc::new(move |context, mut reader, raw| {
        let (codec, handler) = (codec.clone(), handler.clone());
        Box::pin(async move {
            let (message, compressed) = read_one(&*codec, &mut reader).await?;
            let response = handler(Request {
                context,
                message,
                compressed,
            })
            .await?;
            respond(&*codec, &raw, response).await
        })
    })
}

pub(crate) fn server_streaming<C, F, Fut>(codec: C, handler: F) -> ErasedHandler
where
    C: Codec,
    F: Fn(Request<C::Decode>, ResponseSink<C::Encode>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), Status>> + Send + 'static,
{
    let codec = Arc::new(codec);
    let handler = Arc::new(handler);
    Arc::new(move |context, mut reader, raw| {
        let (codec, handler) = (codec.clone(), handler.clone());
        Box::pin(async move {
            let (message, compressed) = read_one(&*codec, &mut reader).await?;
            let request = Request {
                context,
                message,
                compressed,
            };
            handler(request, sink(&codec, raw)).await
        })
    })
}

pub(crate) fn client_streaming<C, F, Fut>(codec: C, handler: F) -> ErasedHandler
where
    C: Codec,
    F: Fn(Request<RequestStream<C::Decode>>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Response<C::Encode>, Status>> + Send + 'static,
{
    let codec = Arc::new(codec);
    let handler = Arc::new(handler);
    Arc::new(move |context, reader, raw| {
        let (codec, handler) = (codec.clone(), handler.clone());
        Box::pin(async move {
            let stream = RequestStream {
                reader,
                decode: decoder(&codec),
                finished: false,
            };
            let response = handler(Request {
                context,
                message: stream,
                compressed: false,
            })
            .await?;
            respond(&*codec, &raw, response).await
        })
    })
}

pub(crate) fn bidi_streaming<C, F, Fut>(codec: C, handler: F) -> ErasedHandler
where
    C: Codec,
    F: Fn(Request<RequestStream<C::Decode>>, ResponseSink<C::Encode>) -> Fut
        + Send
        + Sync
        + 'static,
    Fut: Future<Output = Result<(), Status>> + Send + 'static,
{
    let codec = Arc::new(codec);
    let handler = Arc::new(handler);
    Arc::new(move |context, reader, raw| {
        let (codec, handler) = (codec.clone(), handler.clone());
        Box::pin(async move {
            let stream = RequestStream {
                reader,
                decode: decoder(&codec),
                finished: false,
            };
            handler(
                Request {
                    context,
                    message: stream,
                    compressed: false,
                },
                sink(&codec, raw),
            )
            .await
        })
    })
}
