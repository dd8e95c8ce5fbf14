//! One server stream: checks the request, runs the handler, and writes what it produces with
//! flow control, ending in trailers (or a trailers-only response).

use std::future::poll_fn;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use h2::server::SendResponse;
use h2::{RecvStream, SendStream};
use http::header::CONTENT_TYPE;
use http::{HeaderMap, HeaderValue, Method, StatusCode};

use super::ServerInner;
use super::handler::{CallCompression, CallContext, RawSink, SinkItem};
use super::slot::Slot;
use crate::codec::Compression;
use crate::codec::compress::{ACCEPT_ENCODING, AcceptSet, SUPPORTED, StreamEncoding};
use crate::intercept::{Observer, ServerCall, ServerInterceptor};
use crate::metadata::Metadata;
use crate::metrics::ServerCallMetrics;
use crate::proto::headers::{
    self, CONTENT_TYPE_GRPC, decode_timeout, is_grpc_content_type, write_status,
};
use crate::proto::recv::MessageReader;
use crate::proto::send::Outbox;
use crate::rt::{BoxFuture, Deadline};
use crate::status::{Code, Status};
use crate::transport::{PeerCertificates, RemoteAddr};

/// Serves one request stream to completion; `peer` and `remote` are the connection's client
/// certificates and address, for the call's context.
pub(crate) async fn serve(
    server: Arc<ServerInner>,
    request: http::Request<RecvStream>,
    mut respond: SendResponse<Bytes>,
    peer: Option<PeerCertificates>,
    remote: Option<RemoteAddr>,
) {
    let (parts, body) = request.into_parts();
    if parts.method != Method::POST {
        return reject(respond, StatusCode::METHOD_NOT_ALLOWED);
    }
    if !is_grpc_content_type(parts.headers.get(CONTENT_TYPE)) {
        return reject(respond, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    }
    let path = parts.uri.path();
    let Some(handler) = server
        .routes
        .get(path)
        .or(server.fallback.as_ref())
        .cloned()
    else {
        let status = match path.rsplit_once('/') {
            Some((service, _)) if server.services.contains(service.trim_start_matches('/')) => {
                Status::unimplemented(format!("unknown method {path}"))
            }
            _ => Status::unimplemented(format!("unknown service in {path}")),
        };
        return trailers_only(&mut respond, &status);
    };
    let Some(_open) = OpenCall::start(&server) else {
        // grpcio's words, so clients that match on them keep working.
        let status = Status::resource_exhausted("Concurrent RPC limit exceeded!");
        return trailers_only(&mut respond, &status);
    };
    let deadline = match parts.headers.get(headers::GRPC_TIMEOUT) {
        None => None,
        Some(value) => match decode_timeout(value) {
            Some(timeout) => Some(
                Instant::now()
                    .checked_add(timeout)
                    .unwrap_or_else(far_future),
            ),
            None => {
                let status = Status::internal(format!("malformed grpc-timeout {value:?}"));
                return trailers_only(&mut respond, &status);
            }
        },
    };
    // compression.md: an encoding we cannot inflate is UNIMPLEMENTED, and the response lists
    // the ones we can in grpc-accept-encoding (trailers_only always does).
    let encoding = StreamEncoding::from_header(parts.headers.get(headers::GRPC_ENCODING));
    let request_compression = match &encoding {
        StreamEncoding::Identity => Compression::Identity,
        StreamEncoding::Known(c) => *c,
        StreamEncoding::Unknown(name) => {
            let status = Status::unimplemented(format!(
                "grpc-encoding {name:?} is not supported (supported: {SUPPORTED})"
            ));
            return trailers_only(&mut respond, &status);
        }
    };
    let compression = CallCompression {
        request: request_compression,
        accepted: AcceptSet::from_headers(
            parts.headers.get_all(headers::GRPC_ACCEPT_ENCODING).iter(),
        ),
        response_default: server.config.settings.response_compression,
    };
    let metrics = ServerCallMetrics::start(server.metrics.as_ref(), path);
    let mut metadata = Metadata::from_headers(&parts.headers);
    let observer = Observer::new(&server.interceptors, path);
    if observer.is_some() {
        let mut call = ServerCall::new(path, metadata, deadline);
        if let Err(status) = server.interceptors.before(&mut call).await {
            if let Some(metrics) = &metrics {
                metrics.ended(status.code());
            }
            return trailers_only(&mut respond, &status);
        }
        metadata = call.into_metadata();
    }
    let context = CallContext::new(
        path.to_string(),
        deadline,
        metadata,
        compression,
        peer,
        remote,
        parts
            .headers
            .get(headers::GRPC_PREVIOUS_RPC_ATTEMPTS)
            .and_then(|v| v.to_str().ok()?.parse().ok())
            .unwrap_or(0),
    );
    let mut reader = MessageReader::new(
        body,
        server.config.settings.max_receive_message_size,
        encoding,
    );
    if let Some(metrics) = &metrics {
        reader.count_into(metrics.received.clone());
    }
    let items = Arc::new(Slot::default());
    let trailers = Arc::new(Mutex::new(Metadata::new()));
    let sink = RawSink {
        items: items.clone(),
        trailers: trailers.clone(),
        max_send: server.config.settings.max_send_message_size,
        context: context.clone(),
    };
    let handler = handler(context.clone(), reader, sink);
    let mut driver = Driver {
        respond: Some(respond),
        stream: None,
        outbox: Outbox::default(),
        items,
        handler: Some(handler),
        result: None,
        context,
        deadline: Deadline::new(deadline),
        trailers,
        done_writing: false,
        observer,
        metrics,
    };
    poll_fn(|cx| driver.poll(cx)).await;
}

/// One call counted against the server's `max_concurrent_calls` while it lives.
struct OpenCall(Option<Arc<AtomicUsize>>);

impl OpenCall {
    /// Counts a new call; `None` when the server is at its limit.
    fn start(server: &ServerInner) -> Option<OpenCall> {
        let Some(limit) = server.config.settings.max_concurrent_calls else {
            return Some(OpenCall(None));
        };
        let open = &server.open_calls;
        let mut now = open.load(Ordering::Relaxed);
        loop {
            if now >= limit as usize {
                return None;
            }
            match open.compare_exchange_weak(now, now + 1, Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) => return Some(OpenCall(Some(open.clone()))),
                Err(actual) => now = actual,
            }
        }
    }
}

impl Drop for OpenCall {
    fn drop(&mut self) {
        if let Some(open) = &self.0 {
            open.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

fn far_future() -> Instant {
    Instant::now() + std::time::Duration::from_secs(100 * 365 * 24 * 3600)
}

fn reject(mut respond: SendResponse<Bytes>, status: StatusCode) {
    let mut response = http::Response::new(());
    *response.status_mut() = status;
    let _ = respond.send_response(response, true);
}

/// Sends a complete response in one HEADERS frame: status 200, content-type, our
/// grpc-accept-encoding and the status.
fn trailers_only(respond: &mut SendResponse<Bytes>, status: &Status) {
    trailers_only_with(respond, status, None);
}

/// [`trailers_only`] with the handler's `grpc-retry-pushback-ms`, if it set one.
fn trailers_only_with(respond: &mut SendResponse<Bytes>, status: &Status, pushback: Option<i64>) {
    let mut response = http::Response::new(());
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, CONTENT_TYPE_GRPC);
    headers.insert(headers::GRPC_ACCEPT_ENCODING, ACCEPT_ENCODING);
    write_status(status, headers);
    if let Some(ms) = pushback {
        headers.insert(headers::GRPC_RETRY_PUSHBACK_MS, HeaderValue::from(ms));
    }
    let _ = respond.send_response(response, true);
}

struct Driver {
    respond: Option<SendResponse<Bytes>>,
    stream: Option<SendStream<Bytes>>,
    outbox: Outbox,
    items: Arc<Slot>,
    handler: Option<BoxFuture<Result<(), Status>>>,
    result: Option<Result<(), Status>>,
    context: CallContext,
    deadline: Deadline,
    trailers: Arc<Mutex<Metadata>>,
    /// The response is complete or the stream is gone; only the handler is still polled.
    done_writing: bool,
    /// The server's interceptors, told how the call ended.
    observer: Option<Observer<dyn ServerInterceptor>>,
    /// The call's measurements, if the server has metrics.
    metrics: Option<ServerCallMetrics>,
}

impl Drop for Driver {
    fn drop(&mut self) {
        // Sinks still held elsewhere (a task the handler spawned) fail from now on, and
        // whoever waits for the call to end (a task of the handler's, a C host) learns it did.
        self.items.close();
        self.context.cancel();
        if let Some(observer) = self.observer.take() {
            observer.done(&Status::cancelled("the client cancelled the call"));
        }
        if let Some(metrics) = self.metrics.take() {
            metrics.ended(Code::Cancelled);
        }
    }
}

impl Driver {
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            self.poll_handler(cx);
            if self.done_writing {
                return if self.handler.is_none() {
                    Poll::Ready(())
                } else {
                    Poll::Pending
                };
            }
            if self.poll_peer_reset(cx) {
                self.stop_writing();
                continue;
            }
            if self.deadline.poll_expired(cx).is_ready() {
                self.finish(Err(Status::deadline_exceeded("deadline exceeded")));
                self.stop_writing();
                continue;
            }
            if let Some(stream) = &mut self.stream {
                match self.outbox.poll_flush(stream, cx) {
                    Poll::Ready(Ok(())) => {}
                    Poll::Ready(Err(_)) => {
                        self.stop_writing();
                        continue;
                    }
                    Poll::Pending => return Poll::Pending,
                }
            }
            match self.items.poll_take(cx) {
                Some(SinkItem::Headers(metadata)) => {
                    if self.stream.is_none() {
                        self.send_headers(&metadata);
                    }
                    continue;
                }
                Some(SinkItem::Message(framed)) => {
                    if self.stream.is_none() {
                        self.send_headers(&Metadata::new());
                    }
                    if let Some(metrics) = &mut self.metrics {
                        metrics.sent += framed.len() as u64;
                    }
                    self.outbox.push(framed);
                    continue;
                }
                Some(SinkItem::Single(metadata, framed)) => {
                    if self.stream.is_none() {
                        self.send_headers(&metadata);
                    }
                    if let Some(metrics) = &mut self.metrics {
                        metrics.sent += framed.len() as u64;
                    }
                    self.outbox.push(framed);
                    continue;
                }
                None => {}
            }
            if let Some(result) = self.result.take() {
                self.finish(result);
                self.stop_writing();
                continue;
            }
            return Poll::Pending;
        }
    }

    /// Polls the handler, turning a panic into INTERNAL for this call only.
    fn poll_handler(&mut self, cx: &mut Context<'_>) {
        let Some(handler) = &mut self.handler else {
            return;
        };
        // Items the handler pushes meanwhile are taken after this, without a wake-up.
        self.items.set_driver_polling(true);
        let poll = AssertUnwindSafe(|| handler.as_mut().poll(cx));
        let polled = match &self.metrics {
            Some(metrics) => metrics.in_scope(|| catch_unwind(poll)),
            None => catch_unwind(poll),
        };
        self.items.set_driver_polling(false);
        match polled {
            Ok(Poll::Pending) => return,
            Ok(Poll::Ready(result)) => self.result = Some(result),
            Err(_) => self.result = Some(Err(Status::internal("the handler panicked"))),
        }
        self.handler = None;
    }

    /// Whether the client reset the stream (or the connection died).
    fn poll_peer_reset(&mut self, cx: &mut Context<'_>) -> bool {
        let reset = match (&mut self.stream, &mut self.respond) {
            (Some(stream), _) => stream.poll_reset(cx),
            (None, Some(respond)) => respond.poll_reset(cx),
            (None, None) => return true,
        };
        reset.is_ready()
    }

    /// No more writes: the call is cancelled for the handler, its sinks start failing.
    fn stop_writing(&mut self) {
        self.done_writing = true;
        self.result = None;
        self.context.cancel();
        self.items.close();
    }

    fn send_headers(&mut self, metadata: &Metadata) {
        let Some(respond) = &mut self.respond else {
            return;
        };
        let mut response = http::Response::new(());
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, CONTENT_TYPE_GRPC);
        // The sink fixed the compression before queueing the item that got us here.
        headers::write_encoding(self.context.lock_response_compression(), headers);
        metadata.write_to(headers);
        match respond.send_response(response, false) {
            Ok(stream) => self.stream = Some(stream),
            Err(_) => self.done_writing = true,
        }
    }

    /// Sends the final status: as trailers after headers, or as a trailers-only response.
    fn finish(&mut self, result: Result<(), Status>) {
        let mut status = match result {
            Ok(()) => Status::ok(),
            Err(status) => status,
        };
        // Trailers set on the sink, then the status's own metadata, which wins for a key in both.
        let mut merged =
            std::mem::take(&mut *self.trailers.lock().unwrap_or_else(|e| e.into_inner()));
        if !merged.is_empty() {
            for key in status.metadata().keys() {
                merged.remove(key);
            }
            merged.extend(status.metadata().clone());
            status = status.with_metadata(merged);
        }
        if let Some(observer) = self.observer.take() {
            observer.done(&status);
        }
        if let Some(metrics) = self.metrics.take() {
            metrics.ended(status.code());
        }
        let pushback = self.context.retry_pushback_ms();
        match &mut self.stream {
            Some(stream) => {
                let mut trailers = HeaderMap::new();
                write_status(&status, &mut trailers);
                if let Some(ms) = pushback {
                    trailers.insert(headers::GRPC_RETRY_PUSHBACK_MS, HeaderValue::from(ms));
                }
                let _ = stream.send_trailers(trailers);
            }
            None => {
                if let Some(respond) = &mut self.respond {
                    trailers_only_with(respond, &status, pushback);
                }
            }
        }
    }
}
