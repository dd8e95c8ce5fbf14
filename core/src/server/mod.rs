//! The server: a [`ServerBuilder`] routes `/package.Service/Method` to handlers of the four
//! call kinds; a [`Server`] serves them on listeners or on any byte stream, and shuts down
//! gracefully.

mod handler;
mod listener;
mod shutdown;
mod stream;

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::future::{Future, poll_fn};
use std::io;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use futures_util::future::{Either, select};
use futures_util::{Stream, StreamExt};

pub use handler::{CallContext, Request, RequestStream, ResponseSink};
pub use listener::Listener;

use self::handler::ErasedHandler;
use self::shutdown::Shutdown;
use crate::client::{
    DEFAULT_CONNECTION_WINDOW, DEFAULT_MAX_FRAME_SIZE, DEFAULT_STREAM_WINDOW, check_http2_settings,
};
use crate::codec::Codec;
use crate::codec::frame::{DEFAULT_MAX_RECV_MESSAGE_SIZE, DEFAULT_MAX_SEND_MESSAGE_SIZE};
use crate::response::Response;
use crate::rt::{Compat, Executor, SmolExecutor};
use crate::status::Status;
use crate::transport::Io;

/// Default SETTINGS_MAX_CONCURRENT_STREAMS: 100, the value RFC 9113 §6.5.2 recommends as a
/// minimum and grpc-go's and C-core's common production setting.
pub const DEFAULT_MAX_CONCURRENT_STREAMS: u32 = 100;

/// A pause after a failed accept (such as EMFILE), so the loop does not spin.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(50);

#[derive(Debug, Clone)]
struct ServerConfig {
    max_concurrent_streams: u32,
    stream_window: u32,
    connection_window: u32,
    max_frame_size: u32,
    max_recv_message_size: usize,
    max_send_message_size: usize,
}

/// Collects routes and settings for a [`Server`].
pub struct ServerBuilder {
    routes: HashMap<String, ErasedHandler>,
    config: ServerConfig,
    executor: Option<Arc<dyn Executor>>,
}

impl fmt::Debug for ServerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerBuilder")
            .field("routes", &self.routes.keys().collect::<Vec<_>>())
            .field("config", &self.config)
            .finish()
    }
}

impl Default for ServerBuilder {
    fn default() -> Self {
        ServerBuilder {
            routes: HashMap::new(),
            config: ServerConfig {
                max_concurrent_streams: DEFAULT_MAX_CONCURRENT_STREAMS,
                stream_window: DEFAULT_STREAM_WINDOW,
                connection_window: DEFAULT_CONNECTION_WINDOW,
                max_frame_size: DEFAULT_MAX_FRAME_SIZE,
                max_recv_message_size: DEFAULT_MAX_RECV_MESSAGE_SIZE,
                max_send_message_size: DEFAULT_MAX_SEND_MESSAGE_SIZE,
            },
            executor: None,
        }
    }
}

impl ServerBuilder {
    fn route(mut self, path: &str, handler: ErasedHandler) -> Self {
        self.routes.insert(path.to_string(), handler);
        self
    }

    /// Routes `path` to a unary handler. `codec` encodes responses and decodes requests
    /// (`ProstCodec<Resp, Req>`, or `BytesCodec` for raw bytes).
    pub fn unary<C, F, Fut>(self, path: &str, codec: C, handler: F) -> Self
    where
        C: Codec,
        F: Fn(Request<C::Decode>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Response<C::Encode>, Status>> + Send + 'static,
    {
        self.route(path, handler::unary(codec, handler))
    }

    /// Routes `path` to a server-streaming handler, which sends through its [`ResponseSink`].
    pub fn server_streaming<C, F, Fut>(self, path: &str, codec: C, handler: F) -> Self
    where
        C: Codec,
        F: Fn(Request<C::Decode>, ResponseSink<C::Encode>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), Status>> + Send + 'static,
    {
        self.route(path, handler::server_streaming(codec, handler))
    }

    /// Routes `path` to a client-streaming handler, which reads a [`RequestStream`].
    pub fn client_streaming<C, F, Fut>(self, path: &str, codec: C, handler: F) -> Self
    where
        C: Codec,
        F: Fn(Request<RequestStream<C::Decode>>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Response<C::Encode>, Status>> + Send + 'static,
    {
        self.route(path, handler::client_streaming(codec, handler))
    }

    /// Routes `path` to a bidirectional-streaming handler.
    pub fn bidi_streaming<C, F, Fut>(self, path: &str, codec: C, handler: F) -> Self
    where
        C: Codec,
        F: Fn(Request<RequestStream<C::Decode>>, ResponseSink<C::Encode>) -> Fut
            + Send
            + Sync
            + 'static,
        Fut: Future<Output = Result<(), Status>> + Send + 'static,
    {
        self.route(path, handler::bidi_streaming(codec, handler))
    }

    /// SETTINGS_MAX_CONCURRENT_STREAMS per connection (default 100).
    pub fn max_concurrent_streams(mut self, streams: u32) -> Self {
        self.config.max_concurrent_streams = streams;
        self
    }

    /// Initial HTTP/2 stream window (default 1 MiB).
    pub fn initial_stream_window_size(mut self, bytes: u32) -> Self {
        self.config.stream_window = bytes;
        self
    }

    /// Initial HTTP/2 connection window (default 16 MiB).
    pub fn initial_connection_window_size(mut self, bytes: u32) -> Self {
        self.config.connection_window = bytes;
        self
    }

    /// Largest HTTP/2 frame we accept (default 16 KiB).
    pub fn max_frame_size(mut self, bytes: u32) -> Self {
        self.config.max_frame_size = bytes;
        self
    }

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

    /// Runs connections and handlers on `executor` (default: [`SmolExecutor`]).
    pub fn executor(mut self, executor: impl Executor) -> Self {
        self.executor = Some(Arc::new(executor));
        self
    }

    /// Checks the settings and builds the server.
    pub fn build(self) -> Result<Server, Status> {
        let c = &self.config;
        check_http2_settings(c.stream_window, c.connection_window, c.max_frame_size)?;
        for path in self.routes.keys() {
            let valid = path.starts_with('/')
                && path[1..]
                    .split_once('/')
                    .is_some_and(|(s, m)| !s.is_empty() && !m.is_empty() && !m.contains('/'));
            if !valid {
                return Err(Status::invalid_argument(format!(
                    "invalid route {path:?}: expected /package.Service/Method"
                )));
            }
        }
        let services = self
            .routes
            .keys()
            .filter_map(|p| p[1..].split_once('/').map(|(s, _)| s.to_string()))
            .collect();
        Ok(Server {
            inner: Arc::new(ServerInner {
                routes: self.routes,
                services,
                config: self.config,
                executor: self.executor.unwrap_or_else(|| Arc::new(SmolExecutor)),
                shutdown: Shutdown::default(),
            }),
        })
    }
}

pub(crate) struct ServerInner {
    routes: HashMap<String, ErasedHandler>,
    services: HashSet<String>,
    config: ServerConfig,
    executor: Arc<dyn Executor>,
    shutdown: Shutdown,
}

/// A gRPC server: cheap to clone; every clone serves the same routes and shuts down together.
#[derive(Clone)]
pub struct Server {
    inner: Arc<ServerInner>,
}

impl fmt::Debug for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server")
            .field("routes", &self.inner.routes.len())
            .finish_non_exhaustive()
    }
}

impl Server {
    /// A builder with default settings and no routes.
    pub fn builder() -> ServerBuilder {
        ServerBuilder::default()
    }

    /// Accepts connections on `listener` until [`Server::shutdown`]; each connection is served
    /// on the executor.
    pub async fn serve(&self, listener: Listener) -> io::Result<()> {
        let shutdown = &self.inner.shutdown;
        // Counted like a connection, so `shutdown` returns only after the listener is closed.
        let _active = shutdown.track();
        loop {
            let accept = std::pin::pin!(listener.accept());
            let stop = std::pin::pin!(shutdown.graceful_started());
            match select(accept, stop).await {
                Either::Left((Ok(io), _)) => self.spawn_connection(io),
                Either::Left((Err(err), _)) => {
                    if is_fatal_accept_error(&err) {
                        return Err(err);
                    }
                    async_io::Timer::after(ACCEPT_ERROR_BACKOFF).await;
                }
                Either::Right(_) => return Ok(()),
            }
        }
    }

    /// Serves every connection `incoming` yields (an in-memory listener, say) until it ends or
    /// the server shuts down.
    pub async fn serve_incoming<S, I>(&self, incoming: S)
    where
        S: Stream<Item = io::Result<I>> + Unpin,
        I: Io,
    {
        let mut incoming = incoming;
        let _active = self.inner.shutdown.track();
        loop {
            let stop = std::pin::pin!(self.inner.shutdown.graceful_started());
            match select(incoming.next(), stop).await {
                Either::Left((Some(Ok(io)), _)) => self.spawn_connection(io),
                Either::Left((Some(Err(_)), _)) => continue,
                Either::Left((None, _)) | Either::Right(_) => return,
            }
        }
    }

    fn spawn_connection<I: Io>(&self, io: I) {
        let server = self.clone();
        self.inner.executor.spawn(Box::pin(async move {
            let _ = server.serve_connection(io).await;
        }));
    }

    /// Serves one HTTP/2 connection on `io` until the client leaves or the server shuts down.
    pub async fn serve_connection<I: Io>(&self, io: I) -> Result<(), Status> {
        let inner = &self.inner;
        let _active = inner.shutdown.track();
        let c = &inner.config;
        let handshake = h2::server::Builder::new()
            .max_concurrent_streams(c.max_concurrent_streams)
            .initial_window_size(c.stream_window)
            .initial_connection_window_size(c.connection_window)
            .max_frame_size(c.max_frame_size)
            .handshake::<_, bytes::Bytes>(Compat(io));
        let stop = std::pin::pin!(inner.shutdown.forced());
        let mut conn = match select(std::pin::pin!(handshake), stop).await {
            Either::Left((Ok(conn), _)) => conn,
            Either::Left((Err(err), _)) => return Err(Status::from_h2(err)),
            Either::Right(_) => return Ok(()),
        };
        let mut graceful = std::pin::pin!(inner.shutdown.graceful_started());
        let mut forced = std::pin::pin!(inner.shutdown.forced());
        let mut going_away = false;
        loop {
            let next = poll_fn(|cx| {
                if !going_away && graceful.as_mut().poll(cx).is_ready() {
                    // GOAWAY: no new streams; in-flight ones finish.
                    conn.graceful_shutdown();
                    going_away = true;
                }
                if forced.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(None);
                }
                conn.poll_accept(cx).map(Some)
            })
            .await;
            match next {
                Some(Some(Ok((request, respond)))) => {
                    let server = inner.clone();
                    inner
                        .executor
                        .spawn(Box::pin(stream::serve(server, request, respond)));
                }
                Some(Some(Err(err))) => return Err(Status::from_h2(err)),
                Some(None) => return Ok(()),
                None => {
                    conn.abrupt_shutdown(h2::Reason::NO_ERROR);
                    return Ok(());
                }
            }
        }
    }

    /// Shuts down: stops accepting, sends GOAWAY so in-flight calls can finish, and after
    /// `grace` closes whatever is left. Returns once every connection is closed.
    pub async fn shutdown(&self, grace: Duration) {
        let shutdown = &self.inner.shutdown;
        shutdown.start_graceful();
        let drained = std::pin::pin!(shutdown.drained());
        if let Either::Right(_) = select(drained, async_io::Timer::after(grace)).await {
            shutdown.force();
            shutdown.drained().await;
        }
    }
}

fn is_fatal_accept_error(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::InvalidInput | io::ErrorKind::Unsupported
    )
}
