//! The server: a [`ServerBuilder`] routes `/package.Service/Method` to handlers of the four
//! call kinds; a [`Server`] serves them on listeners or on any byte stream, and shuts down
//! gracefully.

mod handler;
mod listener;
mod service;
mod settings;
mod shutdown;
mod slot;
mod stream;

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::future::{Future, poll_fn};
use std::io;
use std::pin::Pin;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use async_io::Timer;
use futures_util::future::{Either, select};
use futures_util::{Stream, StreamExt};

pub use handler::{CallContext, Request, RequestStream, ResponseSink};
pub use listener::Listener;
pub use service::Service;
pub use settings::ServerSettings;

use self::handler::ErasedHandler;
use self::shutdown::Shutdown;
use crate::codec::{Codec, Compression};
use crate::error::{Error, Kind};
use crate::intercept::{Chain, ServerInterceptor};
use crate::metrics::Metrics;
use crate::proto::DATA_FRAME_BUDGET;
use crate::proto::ping::{self, PingConfig, PingManager, PingPolicy, Verdict};
pub use crate::proto::ping::{
    ADAPTIVE_START_WINDOW, BDP_LIMIT, DEFAULT_KEEPALIVE_TIMEOUT, DEFAULT_MIN_PING_INTERVAL,
    DEFAULT_SERVER_KEEPALIVE_TIME, MAX_PING_STRIKES,
};
use crate::proto::tap::{FrameTap, Role};
use crate::response::Response;
use crate::rt::{Compat, DefaultExecutor, Executor, yield_now};
use crate::status::Status;
use crate::transport::{Io, RemoteAddr};

/// A TLS acceptor where the `tls` feature has one; nothing without it.
#[cfg(feature = "tls")]
type TlsAcceptor = futures_rustls::TlsAcceptor;
#[cfg(not(feature = "tls"))]
type TlsAcceptor = std::convert::Infallible;

/// Default SETTINGS_MAX_CONCURRENT_STREAMS: 100, the value RFC 9113 §6.5.2 recommends as a
/// minimum and grpc-go's and C-core's common production setting.
pub const DEFAULT_MAX_CONCURRENT_STREAMS: u32 = 100;

/// Default time a new connection has to finish its handshake (the TLS handshake, if any, and
/// the HTTP/2 preface): the 20 s minimum connect timeout of gRPC's connection-backoff spec,
/// which a client's own handshake must meet anyway. A connection that sends nothing is closed
/// after it, so idle sockets cannot pile up.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(20);

/// Default SETTINGS_MAX_HEADER_LIST_SIZE: 16 KiB, C-core's hard limit on received metadata.
/// Bigger request headers get a stream error (h2 answers 431) instead of being buffered.
pub const DEFAULT_MAX_HEADER_LIST_SIZE: u32 = 16 * 1024;

/// Streams a connection's task accepts in a row before it yields, so their handlers run and
/// their responses go out in the next write while later requests are still arriving.
///
/// h2 writes only once its reads would block, and a busy client keeps the socket readable, so
/// without a limit the task accepted every request in reach before any handler ran: responses
/// left in bursts of ten or more, a round trip late. 4 was the best of 1 to 8 in the benchmark
/// matrix's unary case with 64 calls in flight, for both the tonic and the plexus client.
const ACCEPT_BATCH: usize = 4;

/// A pause after a failed accept (such as EMFILE), so the loop does not spin.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(50);

/// A server's settings checked and resolved for use.
#[derive(Debug, Clone)]
struct ServerConfig {
    settings: ServerSettings,
    /// Keepalive, windows and ping policing, from the settings.
    pings: PingConfig,
}

/// Collects routes and settings for a [`Server`].
#[derive(Default)]
pub struct ServerBuilder {
    routes: HashMap<String, ErasedHandler>,
    /// Serves the paths no route matches, if set.
    fallback: Option<ErasedHandler>,
    /// A path routed twice, which `build` refuses.
    duplicate: Option<String>,
    settings: ServerSettings,
    executor: Option<Arc<dyn Executor>>,
    interceptors: Vec<Arc<dyn ServerInterceptor>>,
    metrics: Option<Arc<dyn Metrics>>,
    on_shutdown: Vec<ShutdownHook>,
}

/// A function [`ServerBuilder::on_shutdown`] registered.
type ShutdownHook = Box<dyn FnOnce() + Send>;

impl fmt::Debug for ServerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerBuilder")
            .field("routes", &self.routes.keys().collect::<Vec<_>>())
            .field("settings", &self.settings)
            .finish()
    }
}

impl ServerBuilder {
    fn route(mut self, path: &str, handler: ErasedHandler) -> Self {
        if self.routes.insert(path.to_string(), handler).is_some() {
            self.duplicate.get_or_insert_with(|| path.to_string());
        }
        self
    }

    /// Routes every method of `service` (a generated `FooServer`, or any [`Service`]).
    pub fn add_service<S: Service>(self, service: S) -> Self {
        service.register(self)
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

    /// Serves every path that no route matches with a bidirectional-streaming handler (a
    /// proxy, or a host that looks methods up itself; the path is
    /// [`CallContext::method`]). Without one such calls get UNIMPLEMENTED.
    pub fn fallback<C, F, Fut>(mut self, codec: C, handler: F) -> Self
    where
        C: Codec,
        F: Fn(Request<RequestStream<C::Decode>>, ResponseSink<C::Encode>) -> Fut
            + Send
            + Sync
            + 'static,
        Fut: Future<Output = Result<(), Status>> + Send + 'static,
    {
        self.fallback = Some(handler::bidi_streaming(codec, handler));
        self
    }

    /// Calls open at once over the whole server; calls beyond it are refused with
    /// RESOURCE_EXHAUSTED before any handler runs (default: no limit).
    pub fn max_concurrent_calls(mut self, calls: u32) -> Self {
        self.settings.max_concurrent_calls = Some(calls);
        self
    }

    /// SETTINGS_MAX_CONCURRENT_STREAMS per connection (default 100).
    pub fn max_concurrent_streams(mut self, streams: u32) -> Self {
        self.settings.max_concurrent_streams = streams;
        self
    }

    /// Initial HTTP/2 stream window. By default windows adapt (see
    /// [`adaptive_window`](Self::adaptive_window)); setting this pins them, as in grpc-go, and
    /// the connection window then defaults to 16 MiB.
    pub fn initial_stream_window_size(mut self, bytes: u32) -> Self {
        self.settings.http2.initial_stream_window_size = Some(bytes);
        self
    }

    /// Initial HTTP/2 connection window. Setting it pins the windows, as in grpc-go; the
    /// stream window then defaults to 1 MiB.
    pub fn initial_connection_window_size(mut self, bytes: u32) -> Self {
        self.settings.http2.initial_connection_window_size = Some(bytes);
        self
    }

    /// Whether flow-control windows follow the measured bandwidth-delay product, as in grpc-go
    /// and C-core: they start at 64 KiB ([`ADAPTIVE_START_WINDOW`]) and grow up to 16 MiB
    /// ([`BDP_LIMIT`]) as PING round trips show more data in flight. On by default unless a
    /// window size is set; `false` pins the windows (1 MiB per stream and 16 MiB per
    /// connection unless set), `true` with explicit sizes grows from them.
    pub fn adaptive_window(mut self, adaptive: bool) -> Self {
        self.settings.http2.adaptive_window = Some(adaptive);
        self
    }

    /// Sends a keepalive PING after `time` without any frame from a client (default 2 hours,
    /// gRPC's server default), whether or not calls are active; see
    /// [`keepalive_timeout`](Self::keepalive_timeout). `Duration::MAX` turns it off.
    pub fn keepalive_time(mut self, time: Duration) -> Self {
        self.settings.keepalive_time = time;
        self
    }

    /// Closes a connection when nothing arrives within `timeout` of a keepalive PING
    /// (default 20 s); its calls fail and their handlers see the connection gone.
    pub fn keepalive_timeout(mut self, timeout: Duration) -> Self {
        self.settings.keepalive_timeout = timeout;
        self
    }

    /// The shortest interval allowed between a client's PINGs while calls are active
    /// (default 5 minutes, C-core's and grpc-go's). A PING sooner than that is a strike, and
    /// sending DATA or HEADERS clears the strikes; past [`MAX_PING_STRIKES`] the server sends
    /// GOAWAY ENHANCE_YOUR_CALM with debug data `too_many_pings` and closes the connection.
    pub fn keepalive_min_ping_interval(mut self, interval: Duration) -> Self {
        self.settings.keepalive_min_ping_interval = interval;
        self
    }

    /// Whether clients may ping at the [minimum interval](Self::keepalive_min_ping_interval)
    /// while no call is active (default false: then any two PINGs less than two hours apart
    /// count as a strike, as in grpc-go).
    pub fn keepalive_permit_without_calls(mut self, permit: bool) -> Self {
        self.settings.keepalive_permit_without_calls = permit;
        self
    }

    /// Sends GOAWAY to, and closes, a connection that has had no call for `idle` (gRFC A9;
    /// default never).
    pub fn max_connection_idle(mut self, idle: Duration) -> Self {
        self.settings.max_connection_idle = idle;
        self
    }

    /// Sends GOAWAY to a connection once it is `age` old, ±10 % jitter so connections made
    /// together do not all leave together (gRFC A9; default never). Its clients open a new
    /// connection for their next calls and resolve their target again: behind an L4 load
    /// balancer or DNS round robin, this is what spreads long-lived clients over servers that
    /// were added since. Calls in flight finish, within
    /// [`max_connection_age_grace`](Self::max_connection_age_grace).
    pub fn max_connection_age(mut self, age: Duration) -> Self {
        self.settings.max_connection_age = age;
        self
    }

    /// How long calls in flight on a connection past its
    /// [`max_connection_age`](Self::max_connection_age) have before it is closed under them
    /// (default: as long as they take).
    pub fn max_connection_age_grace(mut self, grace: Duration) -> Self {
        self.settings.max_connection_age_grace = grace;
        self
    }

    /// Largest HTTP/2 frame we accept (default 16 KiB).
    pub fn max_frame_size(mut self, bytes: u32) -> Self {
        self.settings.http2.max_frame_size = bytes;
        self
    }

    /// How long a new connection has, from when it is served, to finish the TLS handshake
    /// (with a [TLS config](Self::tls)) and send the HTTP/2 preface before it is closed
    /// (default [`DEFAULT_HANDSHAKE_TIMEOUT`], 20 s).
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.settings.handshake_timeout = timeout;
        self
    }

    /// Largest request header block (metadata included) we accept, as
    /// SETTINGS_MAX_HEADER_LIST_SIZE (default [`DEFAULT_MAX_HEADER_LIST_SIZE`], 16 KiB).
    pub fn max_header_list_size(mut self, bytes: u32) -> Self {
        self.settings.max_header_list_size = bytes;
        self
    }

    /// Max size of a received message (default 4 MiB).
    pub fn max_receive_message_size(mut self, bytes: usize) -> Self {
        self.settings.max_receive_message_size = bytes;
        self
    }

    /// Max size of a sent message (default unlimited).
    pub fn max_send_message_size(mut self, bytes: usize) -> Self {
        self.settings.max_send_message_size = bytes;
        self
    }

    /// Serves every connection over TLS with these settings: the TLS handshake runs first
    /// (within [`handshake_timeout`](Self::handshake_timeout)), then HTTP/2. Handlers see a
    /// client's certificates through [`CallContext::peer_certificates`].
    #[cfg(feature = "tls")]
    pub fn tls(mut self, config: crate::transport::tls::ServerTlsConfig) -> Self {
        self.settings.tls = Some(config);
        self
    }

    /// Compresses response messages with `compression` on every call whose client accepts it
    /// (lists it in `grpc-accept-encoding`); default [`Compression::Identity`] (none), as in
    /// C-core and grpc-go. A handler overrides it per call with
    /// [`CallContext::set_response_compression`] and per message with
    /// [`ResponseSink::send_with`]. Compressed requests are inflated whatever this says:
    /// plexus accepts `identity`, `deflate` and `gzip`, and answers any other `grpc-encoding`
    /// with UNIMPLEMENTED.
    pub fn response_compression(mut self, compression: Compression) -> Self {
        self.settings.response_compression = compression;
        self
    }

    /// Replaces every setting with `settings` (routes and the executor stay).
    pub fn settings(mut self, settings: ServerSettings) -> Self {
        self.settings = settings;
        self
    }

    /// The settings so far.
    pub fn current_settings(&self) -> &ServerSettings {
        &self.settings
    }

    /// Reports every call's measurements to `metrics` (see [`crate::metrics`]).
    pub fn metrics(mut self, metrics: impl Metrics) -> Self {
        self.metrics = Some(Arc::new(metrics));
        self
    }

    /// Adds an interceptor to every call the server receives, after those added before (see
    /// [`crate::intercept`]).
    pub fn interceptor(mut self, interceptor: impl ServerInterceptor) -> Self {
        self.interceptors.push(Arc::new(interceptor));
        self
    }

    /// Runs `hook` once, when shutdown starts: at the start of the first [`Server::shutdown`],
    /// before the listeners stop and GOAWAY goes out, so that it can tell clients the server is
    /// leaving (a health service reports NOT_SERVING) over calls that are still open. Hooks run
    /// in the order added, on the task that called `shutdown`, so they should be quick; one
    /// that panics is skipped and shutdown goes on.
    pub fn on_shutdown(mut self, hook: impl FnOnce() + Send + 'static) -> Self {
        self.on_shutdown.push(Box::new(hook));
        self
    }

    /// Runs connections and handlers on `executor` (default: [`DefaultExecutor`]).
    pub fn executor(mut self, executor: impl Executor) -> Self {
        self.executor = Some(Arc::new(executor));
        self
    }

    /// Checks the settings and routes and builds the server. A bad one is a configuration
    /// error ([`Error::is_config`]) whose source is the INVALID_ARGUMENT status naming it.
    pub fn build(self) -> Result<Server, Error> {
        self.try_build()
            .map_err(|status| Error::from_status(Kind::Config, status))
    }

    fn try_build(self) -> Result<Server, Status> {
        let settings = self.settings;
        settings.check()?;
        #[cfg(feature = "tls")]
        let tls = settings.tls.as_ref().map(|t| t.acceptor()).transpose()?;
        let pings = PingConfig {
            keepalive_time: Some(settings.keepalive_time),
            keepalive_timeout: settings.keepalive_timeout,
            // A server watches every connection, busy or idle, as grpc-go's does.
            keepalive_permit_without_calls: true,
            windows: settings.http2.windows(),
            policy: Some(PingPolicy {
                min_interval: settings.keepalive_min_ping_interval,
                permit_without_calls: settings.keepalive_permit_without_calls,
            }),
        };
        if let Some(path) = &self.duplicate {
            return Err(Status::invalid_argument(format!(
                "route {path:?} is registered twice"
            )));
        }
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
                fallback: self.fallback,
                open_calls: Arc::new(AtomicUsize::new(0)),
                services,
                config: ServerConfig { settings, pings },
                executor: self.executor.unwrap_or_else(|| Arc::new(DefaultExecutor)),
                interceptors: Chain::new(self.interceptors),
                metrics: self.metrics,
                shutdown: Shutdown::default(),
                on_shutdown: Mutex::new(self.on_shutdown),
                #[cfg(feature = "tls")]
                tls,
            }),
        })
    }
}

pub(crate) struct ServerInner {
    routes: HashMap<String, ErasedHandler>,
    fallback: Option<ErasedHandler>,
    /// Calls open now, counted against `max_concurrent_calls`.
    open_calls: Arc<AtomicUsize>,
    services: HashSet<String>,
    config: ServerConfig,
    executor: Arc<dyn Executor>,
    interceptors: Chain<dyn ServerInterceptor>,
    metrics: Option<Arc<dyn Metrics>>,
    shutdown: Shutdown,
    /// Taken and run by the first `shutdown`.
    on_shutdown: Mutex<Vec<ShutdownHook>>,
    #[cfg(feature = "tls")]
    tls: Option<futures_rustls::TlsAcceptor>,
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
    /// on the executor. Passing accept errors (such as running out of file descriptors) are
    /// waited out; one that will not pass ends serving with an I/O [`Error`].
    pub async fn serve(&self, listener: Listener) -> Result<(), Error> {
        let shutdown = &self.inner.shutdown;
        // Counted like a connection, so `shutdown` returns only after the listener is closed.
        let _active = shutdown.track();
        loop {
            let accept = std::pin::pin!(listener.accept());
            let stop = std::pin::pin!(shutdown.graceful_started());
            match select(accept, stop).await {
                Either::Left((Ok((io, addr)), _)) => {
                    #[cfg(feature = "tls")]
                    let tls = listener.acceptor().or(self.inner.tls.as_ref()).cloned();
                    #[cfg(not(feature = "tls"))]
                    let tls = None;
                    let server = self.clone();
                    self.inner.executor.spawn(Box::pin(async move {
                        let _ = server.serve_accepted(io, Some(addr), tls).await;
                    }));
                }
                Either::Left((Err(err), _)) => {
                    if is_fatal_accept_error(&err) {
                        return Err(Error::from(err));
                    }
                    async_io::Timer::after(ACCEPT_ERROR_BACKOFF).await;
                }
                Either::Right(_) => return Ok(()),
            }
        }
    }

    /// Serves every connection `incoming` yields (an in-memory listener, say) until it ends or
    /// the server shuts down. Errors it yields are skipped, as [`serve`](Self::serve) skips
    /// accept errors, unless they will not pass (`InvalidInput`, `Unsupported`): those end
    /// serving with an I/O [`Error`].
    pub async fn serve_incoming<S, I>(&self, incoming: S) -> Result<(), Error>
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
                Either::Left((Some(Err(err)), _)) => {
                    if is_fatal_accept_error(&err) {
                        return Err(Error::from(err));
                    }
                }
                Either::Left((None, _)) | Either::Right(_) => return Ok(()),
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
    ///
    /// With a TLS config the TLS handshake comes first; one that fails gives a TLS [`Error`]
    /// back here, one that outlasts the handshake timeout a timeout. The connection's
    /// keepalive, ping policing and adaptive windows run in the same task, between polls of
    /// the connection. A client that stops answering keepalive PINGs gives a timeout (its
    /// status UNAVAILABLE); one that pings too often gets GOAWAY ENHANCE_YOUR_CALM and gives a
    /// protocol error (its status RESOURCE_EXHAUSTED). A connection that ends by shutdown or
    /// by the client leaving gives `Ok`.
    pub async fn serve_connection<I: Io>(&self, io: I) -> Result<(), Error> {
        #[cfg(feature = "tls")]
        let tls = self.inner.tls.clone();
        #[cfg(not(feature = "tls"))]
        let tls = None;
        self.serve_accepted(io, None, tls).await
    }

    /// [`serve_connection`](Self::serve_connection) with the client's address and the TLS
    /// to use (the listener's own, or the server's).
    async fn serve_accepted<I: Io>(
        &self,
        io: I,
        remote: Option<RemoteAddr>,
        tls: Option<TlsAcceptor>,
    ) -> Result<(), Error> {
        // A timeout too large for the clock (Duration::MAX) means none.
        let deadline = Instant::now().checked_add(self.inner.config.settings.handshake_timeout);
        #[cfg(feature = "tls")]
        if let Some(acceptor) = &tls {
            let inner = &self.inner;
            let _active = inner.shutdown.track();
            let timeout = inner.config.settings.handshake_timeout;
            // The handshake and the TLS connection are boxed: held inline, rustls's state made
            // every connection's task, plaintext ones too, 13 KiB instead of 4 KiB.
            let handshake = Box::pin(crate::transport::tls::accept(acceptor, io));
            let expired = std::pin::pin!(deadline.map_or_else(Timer::never, Timer::at));
            let stop = std::pin::pin!(inner.shutdown.forced());
            let (io, peer) = match select(select(handshake, expired), stop).await {
                Either::Left((Either::Left((accepted, _)), _)) => {
                    accepted.map_err(|status| Error::from_status(Kind::Tls, status))?
                }
                Either::Left((Either::Right(_), _)) => {
                    return Err(Error::timeout(format!(
                        "TLS handshake not finished within {timeout:?}"
                    )));
                }
                Either::Right(_) => return Ok(()),
            };
            return Box::pin(self.serve_http2(io, peer, remote, deadline)).await;
        }
        #[cfg(not(feature = "tls"))]
        let _: Option<TlsAcceptor> = tls;
        self.serve_http2(io, None, remote, deadline).await
    }

    /// Serves HTTP/2 on `io`, whose preface must arrive by `deadline`; every request carries
    /// `peer` (the client's TLS certificates) and `remote` (its address).
    async fn serve_http2<I: Io>(
        &self,
        io: I,
        peer: Option<crate::transport::PeerCertificates>,
        remote: Option<RemoteAddr>,
        deadline: Option<Instant>,
    ) -> Result<(), Error> {
        let inner = &self.inner;
        let _active = inner.shutdown.track();
        let c = &inner.config;
        let (io, events) = FrameTap::new(io, Role::Server);
        let handshake = h2::server::Builder::new()
            .max_concurrent_streams(c.settings.max_concurrent_streams)
            .initial_window_size(c.pings.windows.stream)
            .initial_connection_window_size(c.pings.windows.connection)
            .max_frame_size(c.settings.http2.max_frame_size)
            .max_header_list_size(c.settings.max_header_list_size)
            .data_frame_budget(DATA_FRAME_BUDGET)
            .handshake::<_, bytes::Bytes>(Compat::new(io));
        let stop = std::pin::pin!(inner.shutdown.forced());
        let timeout = deadline.map_or_else(Timer::never, Timer::at);
        let mut conn = match select(std::pin::pin!(handshake), select(stop, timeout)).await {
            Either::Left((Ok(conn), _)) => conn,
            Either::Left((Err(err), _)) => return Err(Error::from_h2(err)),
            Either::Right((Either::Left(_), _)) => return Ok(()),
            Either::Right((Either::Right(_), _)) => {
                return Err(Error::timeout(format!(
                    "no HTTP/2 preface within the handshake timeout ({:?})",
                    c.settings.handshake_timeout
                )));
            }
        };
        let mut pings = PingManager::new(c.pings.clone(), events.clone(), conn.ping_pong());
        let mut graceful = std::pin::pin!(inner.shutdown.graceful_started());
        let mut forced = std::pin::pin!(inner.shutdown.forced());
        let mut going_away = false;
        let mut accepted_in_row = 0;
        let mut lifetime = Lifetime::new(&c.settings);
        loop {
            let next = poll_fn(|cx| {
                if !going_away && graceful.as_mut().poll(cx).is_ready() {
                    // GOAWAY: no new streams; in-flight ones finish.
                    conn.graceful_shutdown();
                    going_away = true;
                }
                if !going_away && lifetime.poll_ended(cx) {
                    conn.graceful_shutdown();
                    going_away = true;
                }
                if forced.as_mut().poll(cx).is_ready() || lifetime.poll_grace_over(cx) {
                    return Poll::Ready(Next::Forced);
                }
                if let Poll::Ready(accepted) = conn.poll_accept(cx) {
                    return Poll::Ready(Next::Accepted(accepted));
                }
                let active = usize::from(conn.has_streams());
                let next = pings.poll(cx, &mut conn, active).map(Next::Pings);
                if next.is_pending() {
                    // Caught up with the client: the next batch starts afresh.
                    accepted_in_row = 0;
                }
                next
            })
            .await;
            match next {
                Next::Accepted(Some(Ok((request, respond)))) => {
                    let server = inner.clone();
                    let call =
                        stream::serve(server, request, respond, peer.clone(), remote.clone());
                    match lifetime.count_call() {
                        Some(counted) => inner.executor.spawn(Box::pin(async move {
                            let _counted = counted;
                            call.await
                        })),
                        None => inner.executor.spawn(Box::pin(call)),
                    }
                    accepted_in_row += 1;
                    if accepted_in_row == ACCEPT_BATCH {
                        accepted_in_row = 0;
                        yield_now().await;
                    }
                }
                Next::Accepted(Some(Err(err))) => return Err(Error::from_h2(err)),
                Next::Accepted(None) => return Ok(()),
                Next::Forced => {
                    conn.abrupt_shutdown(h2::Reason::NO_ERROR);
                    return Ok(());
                }
                Next::Pings(Verdict::Dead(status)) => {
                    ping::fail(&events, &status);
                    // One more poll hands the failure to every open stream; then drop.
                    let _ = poll_fn(|cx| Poll::Ready(conn.poll_closed(cx))).await;
                    return Err(Error::from_status(Kind::Timeout, status));
                }
                Next::Pings(Verdict::TooManyPings) => {
                    let status = ping::goaway_too_many_pings(&mut conn, &events);
                    let closed = std::pin::pin!(poll_fn(|cx| conn.poll_closed(cx)));
                    let _ = select(closed, async_io::Timer::after(ping::GOAWAY_FLUSH_GRACE)).await;
                    return Err(Error::from_status(Kind::Protocol, status));
                }
            }
        }
    }

    /// Shuts down: stops accepting, sends GOAWAY so in-flight calls can finish, and after
    /// `grace` closes whatever is left. Returns once every connection is closed.
    ///
    /// The [`on_shutdown`](ServerBuilder::on_shutdown) hooks run first, once.
    pub async fn shutdown(&self, grace: Duration) {
        // Taken under the lock and run outside it, so a hook may call into the server.
        let hooks = std::mem::take(
            &mut *self
                .inner
                .on_shutdown
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
        );
        for hook in hooks {
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(hook));
        }
        let shutdown = &self.inner.shutdown;
        shutdown.start_graceful();
        let drained = std::pin::pin!(shutdown.drained());
        if let Either::Right(_) = select(drained, async_io::Timer::after(grace)).await {
            shutdown.force();
            shutdown.drained().await;
        }
    }
}

/// gRFC A9's limits on one connection's life: its age (then a grace for the calls in
/// flight) and its time without calls.
struct Lifetime {
    /// Fires when the connection is old enough to go away.
    age: Option<Timer>,
    grace: Duration,
    /// After an age GOAWAY: when the calls still open are cut.
    grace_over: Option<Timer>,
    /// With a maximum idle time: the calls open, and a timer that fires when the connection
    /// may have been idle long enough.
    idle: Option<(Duration, Arc<CallCount>, Timer)>,
}

/// Calls open on one connection, and since when there have been none.
struct CallCount {
    open: Mutex<(usize, Instant)>,
}

/// Counts one call as open while it lives.
struct Counted(Arc<CallCount>);

impl Drop for Counted {
    fn drop(&mut self) {
        let mut open = self.0.open.lock().unwrap_or_else(|e| e.into_inner());
        open.0 -= 1;
        if open.0 == 0 {
            open.1 = Instant::now();
        }
    }
}

impl Lifetime {
    fn new(settings: &ServerSettings) -> Lifetime {
        let now = Instant::now();
        let age = (settings.max_connection_age != Duration::MAX)
            .then(|| {
                // ±10 %, so connections opened together do not all go away together.
                let jittered =
                    settings.max_connection_age.as_secs_f64() * (0.9 + 0.2 * fastrand::f64());
                now.checked_add(Duration::try_from_secs_f64(jittered).ok()?)
            })
            .flatten()
            .map(Timer::at);
        let idle = settings.max_connection_idle;
        let idle = now.checked_add(idle).map(|at| {
            let count = CallCount {
                open: Mutex::new((0, now)),
            };
            (idle, Arc::new(count), Timer::at(at))
        });
        Lifetime {
            age,
            grace: settings.max_connection_age_grace,
            grace_over: None,
            idle: idle.filter(|_| settings.max_connection_idle != Duration::MAX),
        }
    }

    /// A guard that counts a new call as open, when idle time is watched.
    fn count_call(&self) -> Option<Counted> {
        let (_, count, _) = self.idle.as_ref()?;
        count.open.lock().unwrap_or_else(|e| e.into_inner()).0 += 1;
        Some(Counted(count.clone()))
    }

    /// Whether the connection should go away now: it reached its age (the grace starts) or
    /// has been idle for the maximum.
    fn poll_ended(&mut self, cx: &mut Context<'_>) -> bool {
        if let Some(age) = &mut self.age {
            if Pin::new(age).poll(cx).is_ready() {
                self.age = None;
                self.grace_over = Instant::now().checked_add(self.grace).map(Timer::at);
                return true;
            }
        }
        if let Some((limit, count, timer)) = &mut self.idle {
            while Pin::new(&mut *timer).poll(cx).is_ready() {
                let (open, since) = *count.open.lock().unwrap_or_else(|e| e.into_inner());
                let now = Instant::now();
                let due = since + *limit;
                if open == 0 && due <= now {
                    self.idle = None;
                    return true;
                }
                // Busy, or idle for less than the limit: look again when it could be due.
                timer.set_at(if open > 0 { now + *limit } else { due });
            }
        }
        false
    }

    /// Whether the grace after an age GOAWAY is over: the calls left are cut.
    fn poll_grace_over(&mut self, cx: &mut Context<'_>) -> bool {
        self.grace_over
            .as_mut()
            .is_some_and(|timer| Pin::new(timer).poll(cx).is_ready())
    }
}

/// What woke a connection's serving loop.
enum Next<T> {
    Accepted(Option<Result<T, h2::Error>>),
    Forced,
    Pings(Verdict),
}

fn is_fatal_accept_error(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::InvalidInput | io::ErrorKind::Unsupported
    )
}

#[cfg(test)]
mod task_size {
    /// A plaintext connection's task stays small: it lives as long as the connection, so its
    /// size is paid per idle connection. (With the TLS handshake held inline it was 13 KiB.)
    #[test]
    fn a_plaintext_connection_task_is_small() {
        let server = super::Server::builder().build().unwrap();
        let (ours, _theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        let io = crate::transport::Socket::new(async_io::Async::new(ours).unwrap());
        let task = async move {
            let _ = server.serve_connection(io).await;
        };
        let size = std::mem::size_of_val(&task);
        assert!(size <= 6 * 1024, "a connection's task takes {size} bytes");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::BytesCodec;

    #[test]
    fn a_route_registered_twice_is_a_config_error() {
        let echo =
            |req: Request<bytes::Bytes>| async move { Ok(Response::new(req.into_message())) };
        let err = Server::builder()
            .unary("/a.B/C", BytesCodec, echo)
            .unary("/a.B/C", BytesCodec, echo)
            .build()
            .unwrap_err();
        assert!(err.is_config(), "{err}");
        assert!(
            err.to_string().contains("\"/a.B/C\" is registered twice"),
            "{err}"
        );
    }

    #[test]
    fn shutdown_hooks_run_once_in_order_and_a_panicking_one_is_skipped() {
        let ran = Arc::new(Mutex::new(Vec::new()));
        let (first, second) = (ran.clone(), ran.clone());
        let server = Server::builder()
            .on_shutdown(move || first.lock().unwrap().push(1))
            .on_shutdown(|| panic!("a hook that fails"))
            .on_shutdown(move || second.lock().unwrap().push(2))
            .build()
            .unwrap();
        smol::block_on(async {
            server.shutdown(Duration::ZERO).await;
            assert_eq!(*ran.lock().unwrap(), [1, 2]);
            server.clone().shutdown(Duration::ZERO).await;
        });
        assert_eq!(*ran.lock().unwrap(), [1, 2], "hooks ran again");
    }
}
