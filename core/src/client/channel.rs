//! [`Channel`]: the handle clients keep; it owns the connection and starts calls on it.

use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::future::{Either, select};
use h2::client::SendRequest;
use http::{HeaderMap, Method, Request, Uri, Version};

use super::call::{self, CallShared, RawStreaming};
use super::options::{
    CallOptions, DEFAULT_CONNECT_TIMEOUT, DEFAULT_CONNECTION_WINDOW, DEFAULT_MAX_FRAME_SIZE,
    DEFAULT_STREAM_WINDOW, check_http2_settings,
};
use super::resolve::{Resolver, resolver_for};
use super::target::Target;
use crate::codec::frame::{DEFAULT_MAX_RECV_MESSAGE_SIZE, DEFAULT_MAX_SEND_MESSAGE_SIZE, Framed};
use crate::proto::headers::{self, CONTENT_TYPE_GRPC};
use crate::rt::{Compat, Executor, SmolExecutor};
use crate::status::Status;
use crate::transport::{Connector, SocketConnector};

/// Streams we open before the server's SETTINGS say its limit: RFC 9113 §6.5.2 recommends
/// servers allow at least 100, and grpc-go and C-core default to it.
const ASSUMED_MAX_CONCURRENT_STREAMS: usize = 100;

/// A gRPC channel to one target: cheap to clone (a pointer copy), usable from every thread,
/// connected lazily on the first call. Every clone shares the same HTTP/2 connection.
#[derive(Clone)]
pub struct Channel {
    inner: Arc<ChannelInner>,
}

struct ChannelInner {
    target: Target,
    config: ChannelConfig,
    connector: Arc<dyn Connector>,
    executor: Arc<dyn Executor>,
    resolver: Arc<dyn Resolver>,
    current: Mutex<Option<Connection>>,
    connecting: async_lock::Mutex<()>,
}

#[derive(Debug, Clone)]
pub(crate) struct ChannelConfig {
    pub(crate) max_recv_message_size: usize,
    pub(crate) max_send_message_size: usize,
    stream_window: u32,
    connection_window: u32,
    max_frame_size: u32,
    connect_timeout: Duration,
    user_agent: String,
}

#[derive(Clone)]
struct Connection {
    send: SendRequest<Bytes>,
    alive: Arc<AtomicBool>,
}

/// Builds a [`Channel`] with non-default settings.
pub struct ChannelBuilder {
    target: String,
    config: ChannelConfig,
    connector: Option<Arc<dyn Connector>>,
    executor: Option<Arc<dyn Executor>>,
    resolver: Option<Arc<dyn Resolver>>,
}

impl fmt::Debug for ChannelBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChannelBuilder")
            .field("target", &self.target)
            .field("config", &self.config)
            .finish()
    }
}

impl ChannelBuilder {
    /// Max size of a received message (default 4 MiB).
    pub fn max_receive_message_size(mut self, bytes: usize) -> Self {
        self.config.max_recv_message_size = bytes;
        self
    }

    /// Max size of a sent message (default unlimited).
    pub fn max_send_message_size(mut self, bytes: usize) -> Self {
        self.config.max_send_message_size = bytes;
        self
    }

    /// Initial HTTP/2 stream window (default [`DEFAULT_STREAM_WINDOW`]).
    pub fn initial_stream_window_size(mut self, bytes: u32) -> Self {
        self.config.stream_window = bytes;
        self
    }

    /// Initial HTTP/2 connection window (default [`DEFAULT_CONNECTION_WINDOW`]).
    pub fn initial_connection_window_size(mut self, bytes: u32) -> Self {
        self.config.connection_window = bytes;
        self
    }

    /// Largest HTTP/2 frame we accept (default 16 KiB).
    pub fn max_frame_size(mut self, bytes: u32) -> Self {
        self.config.max_frame_size = bytes;
        self
    }

    /// Time allowed to establish a connection (default 20 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.config.connect_timeout = timeout;
        self
    }

    /// Prepends an application name to the `user-agent` header.
    pub fn user_agent(mut self, prefix: &str) -> Self {
        self.config.user_agent = format!("{prefix} {}", headers::USER_AGENT);
        self
    }

    /// Runs the connection's background task on `executor` (default: [`SmolExecutor`]).
    pub fn executor(mut self, executor: impl Executor) -> Self {
        self.executor = Some(Arc::new(executor));
        self
    }

    /// Opens connections with `connector` (default: [`SocketConnector`], TCP and Unix sockets).
    pub fn connector(mut self, connector: impl Connector) -> Self {
        self.connector = Some(Arc::new(connector));
        self
    }

    /// Gets the addresses to connect to from `resolver` instead of from the target, which
    /// then only sets `:authority` (default: DNS for host names, the target's own addresses
    /// otherwise).
    pub fn resolver(mut self, resolver: impl Resolver) -> Self {
        self.resolver = Some(Arc::new(resolver));
        self
    }

    /// Validates the target and settings and builds the channel; nothing connects yet.
    pub fn build(self) -> Result<Channel, Status> {
        let target = Target::parse(&self.target)?;
        let c = &self.config;
        check_http2_settings(c.stream_window, c.connection_window, c.max_frame_size)?;
        if http::HeaderValue::from_str(&c.user_agent).is_err() {
            return Err(Status::invalid_argument(
                "user agent must be printable ASCII",
            ));
        }
        let resolver = self.resolver.unwrap_or_else(|| resolver_for(&target));
        Ok(Channel {
            inner: Arc::new(ChannelInner {
                resolver,
                target,
                config: self.config,
                connector: self.connector.unwrap_or_else(|| Arc::new(SocketConnector)),
                executor: self.executor.unwrap_or_else(|| Arc::new(SmolExecutor)),
                current: Mutex::new(None),
                connecting: async_lock::Mutex::new(()),
            }),
        })
    }
}

impl fmt::Debug for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Channel")
            .field("target", &self.inner.target)
            .finish_non_exhaustive()
    }
}

impl Channel {
    /// A channel with default settings; fails on a malformed target.
    pub fn new(target: &str) -> Result<Channel, Status> {
        Channel::builder(target).build()
    }

    /// A builder for a channel to `target` (`http://host:port`, `host:port`,
    /// `dns:///host:port`, `unix:/path`, `unix:///path`).
    pub fn builder(target: &str) -> ChannelBuilder {
        ChannelBuilder {
            target: target.to_string(),
            config: ChannelConfig {
                max_recv_message_size: DEFAULT_MAX_RECV_MESSAGE_SIZE,
                max_send_message_size: DEFAULT_MAX_SEND_MESSAGE_SIZE,
                stream_window: DEFAULT_STREAM_WINDOW,
                connection_window: DEFAULT_CONNECTION_WINDOW,
                max_frame_size: DEFAULT_MAX_FRAME_SIZE,
                connect_timeout: DEFAULT_CONNECT_TIMEOUT,
                user_agent: headers::USER_AGENT.to_string(),
            },
            connector: None,
            executor: None,
            resolver: None,
        }
    }

    /// Connects now instead of on the first call.
    pub async fn connect(&self) -> Result<(), Status> {
        self.connection(None).await.map(drop)
    }

    pub(crate) fn config(&self) -> &ChannelConfig {
        &self.inner.config
    }

    fn current(&self) -> Option<SendRequest<Bytes>> {
        let current = self.inner.current.lock().unwrap_or_else(|e| e.into_inner());
        current
            .as_ref()
            .filter(|c| c.alive.load(Ordering::Acquire))
            .map(|c| c.send.clone())
    }

    fn forget(&self) {
        let mut current = self.inner.current.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = current.as_ref() {
            c.alive.store(false, Ordering::Release);
        }
        *current = None;
    }

    /// A live connection, opening one if needed.
    async fn connection(&self, deadline: Option<Instant>) -> Result<SendRequest<Bytes>, Status> {
        if let Some(send) = self.current() {
            return Ok(send);
        }
        let _connecting = with_deadline(deadline, self.inner.connecting.lock()).await?;
        if let Some(send) = self.current() {
            return Ok(send);
        }
        let inner = &self.inner;
        let timeout = inner.config.connect_timeout;
        let connect_by = Instant::now() + timeout;
        let until = deadline.map_or(connect_by, |d| d.min(connect_by));
        let timed_out = |status: Status, what: &str| {
            if until == connect_by {
                Status::unavailable(format!("{what}: timed out after {timeout:?}"))
                    .with_metadata(status.metadata().clone())
            } else {
                status
            }
        };
        // Resolve, then take the first address that connects (pick_first).
        let authority = &inner.target.authority;
        let addresses = with_deadline(Some(until), inner.resolver.resolve())
            .await
            .map_err(|status| timed_out(status, &format!("resolving {authority}")))??;
        let mut failure = Status::unavailable(format!("resolving {authority} gave no addresses"));
        let mut connected = None;
        for address in addresses {
            match with_deadline(Some(until), inner.connector.connect(&address)).await {
                Ok(Ok(io)) => {
                    connected = Some((io, address));
                    break;
                }
                Ok(Err(err)) => {
                    failure = Status::unavailable(format!("failed to connect to {address}: {err}"));
                }
                Err(status) => {
                    return Err(timed_out(
                        status,
                        &format!("failed to connect to {address}"),
                    ));
                }
            }
        }
        let (io, address) = connected.ok_or(failure)?;
        let c = &inner.config;
        let handshake = h2::client::Builder::new()
            .initial_window_size(c.stream_window)
            .initial_connection_window_size(c.connection_window)
            .max_frame_size(c.max_frame_size)
            .enable_push(false)
            // Until the server's SETTINGS arrive, assume its limit is the common 100 rather
            // than h2's "unlimited", so a burst on a new connection is not refused.
            .initial_max_send_streams(ASSUMED_MAX_CONCURRENT_STREAMS)
            .handshake::<_, Bytes>(Compat(io));
        let (send, driver) = with_deadline(Some(until), handshake).await?.map_err(|e| {
            Status::unavailable(format!("HTTP/2 handshake with {address} failed: {e}"))
        })?;
        let alive = Arc::new(AtomicBool::new(true));
        let flag = alive.clone();
        inner.executor.spawn(Box::pin(async move {
            let _ = driver.await;
            flag.store(false, Ordering::Release);
        }));
        *inner.current.lock().unwrap_or_else(|e| e.into_inner()) = Some(Connection {
            send: send.clone(),
            alive,
        });
        Ok(send)
    }

    /// Opens a stream for a call, sending `first` (and ending the request when `end`).
    pub(crate) async fn start(
        &self,
        path: &str,
        options: &CallOptions,
        first: Option<Framed>,
        end: bool,
    ) -> Result<(Arc<CallShared>, RawStreaming), Status> {
        let deadline = options.deadline;
        let mut request = Some(self.request(path, options)?);
        if deadline.is_some_and(|d| d <= Instant::now()) {
            return Err(Status::deadline_exceeded(
                "deadline exceeded before the call started",
            ));
        }
        // A connection that died under us never started our stream: retry once on a new one.
        let mut attempt = 0;
        let (response, stream) = loop {
            attempt += 1;
            let send = self.connection(deadline).await?;
            let ready = with_deadline(deadline, send.ready()).await?;
            let mut send = match ready {
                Ok(send) => send,
                Err(err) if attempt == 1 => {
                    let _ = err;
                    self.forget();
                    continue;
                }
                Err(err) => {
                    self.forget();
                    return Err(Status::from_h2(err));
                }
            };
            let only_headers = end && first.is_none();
            let req = match request.take() {
                Some(req) => req,
                None => self.request(path, options)?,
            };
            match send.send_request(req, only_headers) {
                Ok(pair) => break pair,
                Err(err) if attempt == 1 => {
                    let _ = err;
                    self.forget();
                }
                Err(err) => return Err(Status::from_h2(err)),
            }
        };
        let max_recv = options
            .max_recv_message_size
            .unwrap_or(self.inner.config.max_recv_message_size);
        let max_send = options
            .max_send_message_size
            .unwrap_or(self.inner.config.max_send_message_size);
        Ok(call::open(
            response, stream, first, end, deadline, max_recv, max_send,
        ))
    }

    fn request(&self, path: &str, options: &CallOptions) -> Result<Request<()>, Status> {
        let target = &self.inner.target;
        if !path.starts_with('/') {
            return Err(Status::internal(format!(
                "invalid method path {path:?}: must start with '/'"
            )));
        }
        let uri = Uri::builder()
            .scheme(target.scheme.clone())
            .authority(target.authority.clone())
            .path_and_query(path)
            .build()
            .map_err(|e| Status::internal(format!("invalid method path {path:?}: {e}")))?;
        let mut headers = HeaderMap::with_capacity(4 + options.metadata.len());
        headers.insert(http::header::CONTENT_TYPE, CONTENT_TYPE_GRPC);
        headers.insert(http::header::TE, http::HeaderValue::from_static("trailers"));
        headers.insert(
            http::header::USER_AGENT,
            http::HeaderValue::from_str(&self.inner.config.user_agent).expect("checked in build"),
        );
        if let Some(deadline) = options.deadline {
            let left = deadline.saturating_duration_since(Instant::now());
            headers.insert(headers::GRPC_TIMEOUT, headers::encode_timeout(left));
        }
        options.metadata.write_to(&mut headers);
        let mut request = Request::new(());
        *request.method_mut() = Method::POST;
        *request.uri_mut() = uri;
        *request.version_mut() = Version::HTTP_2;
        *request.headers_mut() = headers;
        Ok(request)
    }

    /// A unary call with raw bytes.
    pub async fn unary(
        &self,
        path: &str,
        message: Bytes,
        options: CallOptions,
    ) -> Result<crate::Response<Bytes>, Status> {
        self.typed(crate::codec::BytesCodec)
            .unary(path, &message, options)
            .await
    }

    /// A server-streaming call with raw bytes.
    pub async fn server_streaming(
        &self,
        path: &str,
        message: Bytes,
        options: CallOptions,
    ) -> Result<super::Streaming<Bytes>, Status> {
        self.typed(crate::codec::BytesCodec)
            .server_streaming(path, &message, options)
            .await
    }

    /// A client-streaming call with raw bytes: feed the sender, then await the response.
    pub async fn client_streaming(
        &self,
        path: &str,
        options: CallOptions,
    ) -> Result<(super::Sender<Bytes>, super::ResponseFuture<Bytes>), Status> {
        self.typed(crate::codec::BytesCodec)
            .client_streaming(path, options)
            .await
    }

    /// A bidirectional-streaming call with raw bytes.
    pub async fn bidi_streaming(
        &self,
        path: &str,
        options: CallOptions,
    ) -> Result<(super::Sender<Bytes>, super::Streaming<Bytes>), Status> {
        self.typed(crate::codec::BytesCodec)
            .bidi_streaming(path, options)
            .await
    }

    /// A typed client over this channel that encodes and decodes with `codec`.
    pub fn typed<C: crate::Codec>(&self, codec: C) -> super::Client<C> {
        super::Client::new(self.clone(), codec)
    }
}

/// Runs `fut` until `deadline`, giving DEADLINE_EXCEEDED when it passes first.
pub(crate) async fn with_deadline<F: Future>(
    deadline: Option<Instant>,
    fut: F,
) -> Result<F::Output, Status> {
    let Some(at) = deadline else {
        return Ok(fut.await);
    };
    let fut = std::pin::pin!(fut);
    match select(fut, async_io::Timer::at(at)).await {
        Either::Left((out, _)) => Ok(out),
        Either::Right(_) => Err(Status::deadline_exceeded("deadline exceeded")),
    }
}
