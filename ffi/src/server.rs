//! `plexus_server`: core's server with listeners, and routes whose calls are delivered to the
//! host as `PLEXUS_OP_SERVER_CALL` events on its completion queues, or to a host callback run
//! on the worker that received the call.
//!
//! ```text
//!  client ──► core Server (h2, keepalive, limits) ──► route handler task (this module)
//!                                                       │ event SERVER_CALL (+ the unary request)
//!                                                       │ or the host's callback, on this worker
//!                                                       ▼
//!  host ◄── plexus_cq ◄─────────────────────────── plexus_server_call (server_call.rs)
//!       ──► recv / send / finish ──► the handler task sends, then returns the host's status
//! ```

use std::ffi::{c_char, c_void};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use core_plexus::server::{Request, RequestStream, ResponseSink};
use core_plexus::{BytesCodec, Listener, ServerSettings, Status};
use event_listener::Event;

use crate::boundary::boundary;
use crate::bytes::plexus_bytes;
use crate::cq::{Cq, Outcome, begin, plexus_cq, plexus_op};
use crate::error::{
    Error, PLEXUS_ERR_INVALID_ARGUMENT, PLEXUS_ERR_SYSTEM, PLEXUS_OK, Result, plexus_result,
};
use crate::handle::{ArcHandle, BoxHandle, check_out, str_arg, write_out};
use crate::runtime;
use crate::server_call::{ServerCall, plexus_server_call};
use crate::server_options::{plexus_server_options, plexus_server_tls};

/// A gRPC server. Thread-safe: any function may be called from any thread. Created by
/// `plexus_server_new`, owned by the caller, freed with `plexus_server_free`.
pub struct plexus_server {
    _private: [u8; 0],
}

impl ArcHandle for plexus_server {
    type Rust = ServerHandle;
    const NAME: &'static str = "server";
}

/// How a registered method's calls arrive.
#[repr(i32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(non_camel_case_types, reason = "C names")]
pub enum plexus_method_kind {
    /// One request, one response: the request comes in the PLEXUS_OP_SERVER_CALL event.
    PLEXUS_METHOD_UNARY = 0,
    /// A stream of requests (read with `plexus_server_call_recv`), one response.
    PLEXUS_METHOD_CLIENT_STREAMING = 1,
    /// One request (in the event), a stream of responses.
    PLEXUS_METHOD_SERVER_STREAMING = 2,
    /// Streams both ways.
    PLEXUS_METHOD_BIDI_STREAMING = 3,
}

/// Runs on a plexus worker thread for each incoming call of a method registered with
/// `plexus_server_register_method_callback`, possibly on several threads at once. `call` is
/// the call, owned by the callee (free it with `plexus_server_call_free`); `request` is the
/// single request of a UNARY or SERVER_STREAMING method, owned by the callee (free it with
/// `plexus_bytes_free`), NULL for the streaming kinds. The callback must return without
/// waiting: it answers with the calls that do not block (`plexus_server_call_finish`, the
/// `_async` operations) or hands the call to a thread of its own; the blocking calls fail
/// with PLEXUS_ERR_WRONG_STATE here. It must not unwind (no C++ exception may leave it).
/// Once `plexus_server_shutdown` has returned (or its `_async` event has come) no callback of
/// the server runs or starts, so `user_data` may be freed then; after `plexus_server_free`
/// without a shutdown none starts, but one already running finishes.
pub type plexus_server_call_fn = Option<
    unsafe extern "C" fn(
        user_data: *mut c_void,
        call: *const plexus_server_call,
        request: *mut plexus_bytes,
    ),
>;

/// How a route's calls reach the host.
enum Delivery {
    /// As PLEXUS_OP_SERVER_CALL events with this tag on this queue.
    Queue { cq: Arc<Cq>, tag: usize },
    /// By a call of this function, on the worker that received the call.
    Callback {
        function: unsafe extern "C" fn(*mut c_void, *const plexus_server_call, *mut plexus_bytes),
        /// The host's pointer, kept as an address: plexus never dereferences it.
        user_data: usize,
    },
}

/// Lets a server hand calls to the host (events, callbacks) until it shuts down, and tells
/// the shutdown when the last hand-off under way is done: a call's task may outlive its
/// connection briefly, and nothing of the server may reach the host once
/// `plexus_server_shutdown` returns (the host may free a callback's `user_data` then).
#[derive(Default)]
struct DeliveryGate {
    /// [`DeliveryGate::CLOSED`] and the number of hand-offs under way.
    state: AtomicUsize,
    /// Notified when the last hand-off under way at a closed gate is done.
    idle: Event,
}

impl DeliveryGate {
    const CLOSED: usize = 1 << (usize::BITS - 1);

    /// Counts a hand-off in; `None` once closed.
    fn enter(&self) -> Option<Running<'_>> {
        let before = self.state.fetch_add(1, Ordering::SeqCst);
        let running = Running(self);
        (before & Self::CLOSED == 0).then_some(running)
    }

    /// No hand-off starts from now on.
    fn close(&self) {
        self.state.fetch_or(Self::CLOSED, Ordering::SeqCst);
    }

    /// Closes the gate and waits until no hand-off is under way.
    async fn close_and_drain(&self) {
        self.close();
        loop {
            if self.state.load(Ordering::SeqCst) == Self::CLOSED {
                return;
            }
            let listener = self.idle.listen();
            if self.state.load(Ordering::SeqCst) == Self::CLOSED {
                return;
            }
            listener.await;
        }
    }
}

/// One hand-off counted in its gate; counted out when dropped.
struct Running<'a>(&'a DeliveryGate);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        let before = self.0.state.fetch_sub(1, Ordering::SeqCst);
        if before == DeliveryGate::CLOSED | 1 {
            self.0.idle.notify(usize::MAX);
        }
    }
}

/// Where a route's calls go, whether the single request is read before the host sees the
/// call, and the server's gate.
struct Target {
    delivery: Delivery,
    single_request: bool,
    gate: Arc<DeliveryGate>,
}

/// The server behind a `plexus_server`.
pub(crate) struct ServerHandle {
    settings: ServerSettings,
    /// Closed by shutdown (and free): no call reaches the host after it.
    gate: Arc<DeliveryGate>,
    state: Mutex<State>,
}

enum State {
    /// Before `plexus_server_start`: routes collect, listeners wait.
    Building {
        routes: Vec<(String, Arc<Target>)>,
        catch_all: Option<Arc<Target>>,
        listeners: Vec<Listener>,
    },
    Running(core_plexus::Server),
    /// Shutdown started (with the server, when it had been started).
    Stopped(Option<core_plexus::Server>),
}

impl ServerHandle {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Builds the core server from the routes and starts accepting on every listener.
    fn start(&self) -> Result<()> {
        let rt = runtime::get()?;
        let mut state = self.lock();
        let State::Building {
            routes,
            catch_all,
            listeners,
        } = &mut *state
        else {
            return Err(Error::wrong_state(
                "the server was already started or shut down",
            ));
        };
        let mut builder = core_plexus::Server::builder()
            .settings(self.settings.clone())
            .executor(rt.executor());
        for (path, target) in routes.iter() {
            let target = target.clone();
            builder = builder.bidi_streaming(path, BytesCodec, move |request, sink| {
                incoming(target.clone(), request, sink)
            });
        }
        if let Some(target) = catch_all.take() {
            builder = builder.fallback(BytesCodec, move |request, sink| {
                incoming(target.clone(), request, sink)
            });
        }
        let server = builder
            .build()
            .map_err(|err| Error::new(PLEXUS_ERR_INVALID_ARGUMENT, err.to_string()))?;
        for listener in listeners.drain(..) {
            serve(rt, &server, listener);
        }
        *state = State::Running(server);
        Ok(())
    }

    /// Starts shutting down; the server to wait for, if it had started.
    fn stop(&self) -> Option<core_plexus::Server> {
        let mut state = self.lock();
        let server = match &*state {
            State::Building { .. } => None,
            State::Running(server) => Some(server.clone()),
            State::Stopped(server) => server.clone(),
        };
        *state = State::Stopped(server.clone());
        server
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        self.gate.close();
        if let Some(server) = self.stop() {
            if let Some(rt) = runtime::running() {
                rt.spawn(async move { server.shutdown(Duration::ZERO).await });
            }
        }
    }
}

/// Accepts connections on `listener` on the runtime until the server shuts down.
fn serve(rt: &runtime::Runtime, server: &core_plexus::Server, listener: Listener) {
    let server = server.clone();
    rt.spawn(async move {
        let _ = server.serve(listener).await;
    });
}

/// One incoming call on a route: reads the single request of a unary or server-streaming
/// method, hands the call to the host (an event, or its callback right here), and waits for
/// the host to finish it (at once, when the callback finished it).
async fn incoming(
    target: Arc<Target>,
    request: Request<RequestStream<Bytes>>,
    sink: ResponseSink<Bytes>,
) -> std::result::Result<(), Status> {
    let (context, mut requests) = request.into_parts();
    let (first, compressed) = if target.single_request {
        let (message, compressed) = single_request(&mut requests).await?;
        (Some(message), compressed)
    } else {
        (None, false)
    };
    let Some(handing_off) = target.gate.enter() else {
        return Err(Status::unavailable("the server is shutting down"));
    };
    let call = ServerCall::new(context, requests, sink, compressed);
    match &target.delivery {
        Delivery::Queue { cq, tag } => {
            let completion = cq
                .begin(*tag as *mut c_void, plexus_op::PLEXUS_OP_SERVER_CALL)
                .map_err(|_| {
                    Status::unavailable(
                        "the server's completion queue for this method was shut down",
                    )
                })?;
            completion.complete(
                PLEXUS_OK,
                Outcome {
                    server_call: Some(call.clone()),
                    message: first,
                    ..Outcome::default()
                },
            );
        }
        Delivery::Callback {
            function,
            user_data,
        } => {
            let handle = plexus_server_call::into_raw(call.clone());
            let request = first.map_or(std::ptr::null_mut(), plexus_bytes::into_raw);
            // SAFETY: the host registered `function` for these arguments; it takes ownership
            // of the call handle and the request.
            unsafe { function(*user_data as *mut c_void, handle, request) };
        }
    }
    drop(handing_off);
    call.serve().await
}

/// The one request of a unary or server-streaming call, and whether it arrived compressed;
/// INTERNAL for none or more, as grpc answers them.
async fn single_request(
    requests: &mut RequestStream<Bytes>,
) -> std::result::Result<(Bytes, bool), Status> {
    let Some(message) = requests.message().await? else {
        return Err(Status::internal(
            "client sent no request message for a unary request",
        ));
    };
    let compressed = requests.last_message_compressed();
    if requests.message().await?.is_some() {
        return Err(Status::internal(
            "client sent more than one request message for a unary request",
        ));
    }
    Ok((message, compressed))
}

/// A listening socket for an address in gRPC's forms: `host:port`, `[v6]:port`,
/// `unix:path`, `unix:///abs/path`, `unix-abstract:name`.
fn bind(address: &str) -> std::io::Result<Listener> {
    if let Some(name) = address.strip_prefix("unix-abstract:") {
        #[cfg(any(target_os = "linux", target_os = "android"))]
        return Listener::bind_unix_abstract(name.as_bytes());
        #[cfg(not(any(target_os = "linux", target_os = "android")))]
        return Err(std::io::Error::new(
            std::io::ErrorKind::Unsupported,
            format!("abstract sockets exist only on Linux ({name:?})"),
        ));
    }
    if let Some(path) = address.strip_prefix("unix:") {
        // unix:///abs/path names /abs/path; unix:path is relative or absolute as written.
        let path = path.strip_prefix("//").unwrap_or(path);
        if path.is_empty() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "a unix: address needs a path",
            ));
        }
        // A socket file left by a server that is gone would fail the bind, as C-core avoids
        // by removing it first; only a socket is removed, never another kind of file.
        use std::os::unix::fs::FileTypeExt;
        if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket()) {
            let _ = std::fs::remove_file(path);
        }
        return Listener::bind_unix(path);
    }
    if !address.contains(':') {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "expected host:port, [v6]:port, unix:path or unix-abstract:name",
        ));
    }
    Listener::bind_tcp(address)
}

/// Creates a server with `options` (NULL: defaults; copied, so they may be freed right
/// after). It serves nothing until methods are registered, listeners added and
/// `plexus_server_start` called. Owned by the caller: free with `plexus_server_free`.
///
/// Returns PLEXUS_OK and writes `*out`; PLEXUS_ERR_NULL_ARGUMENT if `out` is NULL;
/// PLEXUS_ERR_INVALID_ARGUMENT when the options do not go together (the connection window
/// below the stream window).
///
/// # Safety
/// `options` is NULL or live; `out` is writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn plexus_server_new(
    options: *const plexus_server_options,
    out: *mut *const plexus_server,
) -> plexus_result {
    boundary("plexus_server_new", || {
        check_out(out, "out")?;
        let settings = if options.is_null() {
            ServerSettings::default()
        } else {
            // SAFETY: options is live (checked non-NULL).
            unsafe { plexus_server_options::as_ref(options) }?.clone()
        };
        settings.check().map_err(|s| Error::from_setting(&s))?;
        let server = Arc::new(ServerHandle {
            settings,
            gate: Arc::default(),
            state: Mutex::new(State::Building {
                routes: Vec::new(),
                catch_all: None,
                listeners: Vec::new(),
            }),
        });
        // SAFETY: out was checked and is writable.
        unsafe { write_out(out, "out", plexus_server::into_raw(server)) }?;
        Ok(PLEXUS_OK)
    })
}

/// Whether `path` reads `/package.Service/Method`.
fn valid_path(path: &str) -> bool {
    path.strip_prefix('/')
        .and_then(|rest| rest.split_once('/'))
        .is_some_and(|(s, m)| !s.is_empty() && !m.is_empty() && !m.contains('/'))
}

impl ServerHandle {
    /// Adds a route for `path` of `kind` (a `plexus_method_kind`) delivered as `delivery`.
    fn add_route(&self, path: &str, kind: i32, delivery: Delivery) -> Result<()> {
        use plexus_method_kind::*;
        let single_request = match kind {
            k if k == PLEXUS_METHOD_UNARY as i32 || k == PLEXUS_METHOD_SERVER_STREAMING as i32 => {
                true
            }
            k if k == PLEXUS_METHOD_CLIENT_STREAMING as i32
                || k == PLEXUS_METHOD_BIDI_STREAMING as i32 =>
            {
                false
            }
            other => {
                return Err(Error::invalid(format!(
                    "unknown method kind {other} (PLEXUS_METHOD_UNARY .. PLEXUS_METHOD_BIDI_STREAMING)"
                )));
            }
        };
        if !valid_path(path) {
            return Err(Error::invalid(format!(
                "invalid method path {path:?}: expected /package.Service/Method"
            )));
        }
        let mut state = self.lock();
        let State::Building { routes, .. } = &mut *state else {
            return Err(Error::wrong_state(
                "methods are registered before plexus_server_start",
            ));
        };
        if routes.iter().any(|(p, _)| p == path) {
            return Err(Error::invalid(format!("{path:?} is registered twice")));
        }
        let target = Target {
            delivery,
            single_request,
            gate: self.gate.clone(),
        };
        routes.push((path.to_string(), Arc::new(target)));
        Ok(())
    }

    /// Sets the catch-all route, delivered as `delivery`.
    fn set_catch_all(&self, delivery: Delivery) -> Result<()> {
        let mut state = self.lock();
        let State::Building { catch_all, .. } = &mut *state else {
            return Err(Error::wrong_state(
                "the catch-all is registered before plexus_server_start",
            ));
        };
        if catch_all.is_some() {
            return Err(Error::wrong_state("the server already has a catch-all"));
        }
        *catch_all = Some(Arc::new(Target {
            delivery,
            single_request: false,
            gate: self.gate.clone(),
        }));
        Ok(())
    }
}

/// Routes calls to `path` (NUL-terminated, `/package.Service/Method`; `kind` a
/// `plexus_method_kind`) to the host: each
/// becomes a PLEXUS_OP_SERVER_CALL event with `tag` on `cq` (the server keeps the queue
/// alive). For UNARY and SERVER_STREAMING methods plexus reads the single request first and
/// puts it in the event (a call with none or several is answered INTERNAL without reaching
/// the host). Only before `plexus_server_start`.
///
/// Returns PLEXUS_OK; PLEXUS_ERR_NULL_ARGUMENT; PLEXUS_ERR_INVALID_UTF8;
/// PLEXUS_ERR_INVALID_ARGUMENT for a malformed path, a path registered twice or an unknown
/// kind; PLEXUS_ERR_WRONG_STATE after `plexus_server_start` or shutdown.
///
/// # Safety
/// `server` and `cq` are live; `path` is a NUL-terminated string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn plexus_server_register_method(
    server: *const plexus_server,
    path: *const c_char,
    kind: i32,
    cq: *const plexus_cq,
    tag: *mut c_void,
) -> plexus_result {
    boundary("plexus_server_register_method", || {
        // SAFETY: the caller's arguments are live or NULL (checked).
        let server = unsafe { plexus_server::as_ref(server) }?;
        // SAFETY: as above.
        let path = unsafe { str_arg(path, "path") }?;
        // SAFETY: as above.
        let cq = unsafe { plexus_cq::clone_arc(cq) }?;
        let tag = tag as usize;
        server.add_route(path, kind, Delivery::Queue { cq, tag })?;
        Ok(PLEXUS_OK)
    })
}

/// Routes calls to `path` (as `plexus_server_register_method`) to `callback`, which plexus
/// calls with `user_data` on one of its worker threads as each call arrives (see
/// `plexus_server_call_fn` for what it may do there). No completion queue and no host
/// thread: a callback that answers at once (`plexus_server_call_finish`) costs no hand-off
/// between threads, the fastest way to serve calls whose handling does not wait. Only before
/// `plexus_server_start`.
///
/// Returns PLEXUS_OK; PLEXUS_ERR_NULL_ARGUMENT (also for a NULL `callback`);
/// PLEXUS_ERR_INVALID_UTF8; PLEXUS_ERR_INVALID_ARGUMENT for a malformed path, a path
/// registered twice or an unknown kind; PLEXUS_ERR_WRONG_STATE after `plexus_server_start`
/// or shutdown.
///
/// # Safety
/// `server` is live; `path` is a NUL-terminated string; `callback` is NULL or a function of
/// the type described; `user_data` stays valid until the server's shutdown has completed.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn plexus_server_register_method_callback(
    server: *const plexus_server,
    path: *const c_char,
    kind: i32,
    callback: plexus_server_call_fn,
    user_data: *mut c_void,
) -> plexus_result {
    boundary("plexus_server_register_method_callback", || {
        // SAFETY: the caller's arguments are live or NULL (checked).
        let server = unsafe { plexus_server::as_ref(server) }?;
        // SAFETY: as above.
        let path = unsafe { str_arg(path, "path") }?;
        let delivery = callback_delivery(callback, user_data)?;
        server.add_route(path, kind, delivery)?;
        Ok(PLEXUS_OK)
    })
}

/// The delivery to a host's callback; NULL_ARGUMENT for a NULL one.
fn callback_delivery(callback: plexus_server_call_fn, user_data: *mut c_void) -> Result<Delivery> {
    let function = callback.ok_or_else(|| Error::null("callback"))?;
    Ok(Delivery::Callback {
        function,
        user_data: user_data as usize,
    })
}

/// Routes calls to every path not registered with `plexus_server_register_method` to the
/// host, as PLEXUS_OP_SERVER_CALL events with `tag` on `cq` and no message in the event (read
/// the requests with `plexus_server_call_recv`; `plexus_server_call_method` gives the path).
/// Without a catch-all such calls get UNIMPLEMENTED. Only before `plexus_server_start`.
///
/// Returns PLEXUS_OK; PLEXUS_ERR_NULL_ARGUMENT; PLEXUS_ERR_WRONG_STATE after
/// `plexus_server_start`, after shutdown, or when a catch-all is already set.
///
/// # Safety
/// `server` and `cq` are live.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn plexus_server_register_catch_all(
    server: *const plexus_server,
    cq: *const plexus_cq,
    tag: *mut c_void,
) -> plexus_result {
    boundary("plexus_server_register_catch_all", || {
        // SAFETY: the caller's arguments are live or NULL (checked).
        let server = unsafe { plexus_server::as_ref(server) }?;
        // SAFETY: as above.
        let cq = unsafe { plexus_cq::clone_arc(cq) }?;
        let tag = tag as usize;
        server.set_catch_all(Delivery::Queue { cq, tag })?;
        Ok(PLEXUS_OK)
    })
}

/// Routes calls to every path not registered (as `plexus_server_register_catch_all`) to
/// `callback`, called with `user_data` on a plexus worker thread as each call arrives, with
/// no request (read them with `plexus_server_call_recv_async`). Only before
/// `plexus_server_start`.
///
/// Returns PLEXUS_OK; PLEXUS_ERR_NULL_ARGUMENT (also for a NULL `callback`);
/// PLEXUS_ERR_WRONG_STATE after `plexus_server_start`, after shutdown, or when a catch-all
/// is already set.
///
/// # Safety
/// `server` is live; `callback` is NULL or a function of the type described; `user_data`
/// stays valid until the server's shutdown has completed.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn plexus_server_register_catch_all_callback(
    server: *const plexus_server,
    callback: plexus_server_call_fn,
    user_data: *mut c_void,
) -> plexus_result {
    boundary("plexus_server_register_catch_all_callback", || {
        // SAFETY: the caller's arguments are live or NULL (checked).
        let server = unsafe { plexus_server::as_ref(server) }?;
        server.set_catch_all(callback_delivery(callback, user_data)?)?;
        Ok(PLEXUS_OK)
    })
}

/// Binds a listening socket now, before or after `plexus_server_start` (a server that runs
/// accepts on it at once): `host:port` or `[v6]:port` (port 0 picks a free one), `unix:path`
/// or `unix:///abs/path` (a stale socket file at the path is replaced; the file is removed
/// when the server is freed), or `unix-abstract:name` (Linux). `tls` NULL serves plaintext;
/// otherwise every connection on this listener speaks TLS with a copy of those settings.
/// `port` may be NULL; otherwise it receives the bound TCP port (0 for Unix sockets).
///
/// Returns PLEXUS_OK; PLEXUS_ERR_NULL_ARGUMENT; PLEXUS_ERR_INVALID_UTF8;
/// PLEXUS_ERR_INVALID_ARGUMENT for a malformed address or TLS settings that do not load (bad
/// PEM, key not matching); PLEXUS_ERR_SYSTEM when the socket cannot be bound (in use, no
/// permission: the text has the OS error); PLEXUS_ERR_WRONG_STATE after shutdown started;
/// PLEXUS_ERR_SHUTDOWN after `plexus_shutdown`.
///
/// # Safety
/// `server` is live; `address` is a NUL-terminated string; `tls` is NULL or live; `port` is
/// NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn plexus_server_add_listener(
    server: *const plexus_server,
    address: *const c_char,
    tls: *const plexus_server_tls,
    port: *mut i32,
) -> plexus_result {
    boundary("plexus_server_add_listener", || {
        // SAFETY: the caller's arguments are live or NULL (checked).
        let server = unsafe { plexus_server::as_ref(server) }?;
        // SAFETY: as above.
        let address = unsafe { str_arg(address, "address") }?;
        let rt = runtime::get()?;
        let mut listener = bind(address).map_err(|err| {
            let code = match err.kind() {
                std::io::ErrorKind::InvalidInput => PLEXUS_ERR_INVALID_ARGUMENT,
                _ => PLEXUS_ERR_SYSTEM,
            };
            Error::new(code, format!("cannot listen on {address:?}: {err}"))
        })?;
        if !tls.is_null() {
            // SAFETY: tls is live (checked non-NULL).
            let config = unsafe { plexus_server_tls::as_ref(tls) }?;
            listener = listener
                .tls(config)
                .map_err(|err| Error::invalid(format!("TLS for {address:?}: {err}")))?;
        }
        let bound = listener.local_addr().map_or(0, |a| i32::from(a.port()));
        let mut state = server.lock();
        match &mut *state {
            State::Building { listeners, .. } => listeners.push(listener),
            State::Running(running) => serve(rt, running, listener),
            State::Stopped(_) => {
                return Err(Error::wrong_state("the server is shut down"));
            }
        }
        drop(state);
        if !port.is_null() {
            // SAFETY: port is writable (checked non-NULL).
            unsafe { write_out(port, "port", bound) }?;
        }
        Ok(PLEXUS_OK)
    })
}

/// Starts serving: accepts connections on every listener added so far (and on those added
/// later), and routes their calls to the registered methods. Returns at once.
///
/// Returns PLEXUS_OK; PLEXUS_ERR_NULL_ARGUMENT; PLEXUS_ERR_WRONG_STATE when already started or
/// shut down; PLEXUS_ERR_SHUTDOWN after `plexus_shutdown`.
///
/// # Safety
/// `server` is live.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn plexus_server_start(server: *const plexus_server) -> plexus_result {
    boundary("plexus_server_start", || {
        // SAFETY: the caller passes a live handle or NULL (checked).
        let server = unsafe { plexus_server::as_ref(server) }?;
        server.start()?;
        Ok(PLEXUS_OK)
    })
}

/// A grace argument: negative means no limit.
fn grace_arg(grace_ms: i64) -> Duration {
    u64::try_from(grace_ms).map_or(Duration::MAX, Duration::from_millis)
}

/// Shuts the server down: stops accepting, sends GOAWAY so clients start no new calls here,
/// lets the calls in flight finish for up to `grace_ms` milliseconds (negative: no limit),
/// then cancels the rest (their hosts see PLEXUS_OP_SERVER_DONE with PLEXUS_ERR_RPC and
/// their sends fail), and returns once every connection is closed. No PLEXUS_OP_SERVER_CALL
/// event comes, and no callback of the server runs or starts, after it returns. Blocks the calling thread, so it must not run on a thread
/// that the calls in flight need to finish (answer them from other threads, or use
/// `plexus_server_shutdown_async`). Idempotent: a second call waits as well.
///
/// Returns PLEXUS_OK; PLEXUS_ERR_NULL_ARGUMENT; PLEXUS_ERR_SHUTDOWN after `plexus_shutdown`
/// (which closed everything already).
///
/// # Safety
/// `server` is live.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn plexus_server_shutdown(
    server: *const plexus_server,
    grace_ms: i64,
) -> plexus_result {
    boundary("plexus_server_shutdown", || {
        // SAFETY: the caller passes a live handle or NULL (checked).
        let server = unsafe { plexus_server::as_ref(server) }?;
        let Some(running) = server.stop() else {
            // Never started: nothing was ever handed to the host.
            server.gate.close();
            return Ok(PLEXUS_OK);
        };
        let gate = server.gate.clone();
        let grace = grace_arg(grace_ms);
        runtime::block_on(-1, async move {
            running.shutdown(grace).await;
            gate.close_and_drain().await;
        })
        .map_err(|why| crate::channel::interrupted(why, -1))?;
        Ok(PLEXUS_OK)
    })
}

/// `plexus_server_shutdown` without blocking: reports PLEXUS_OP_SERVER_SHUTDOWN with `tag`
/// on `cq` once every connection is closed and no callback of the server runs.
///
/// Returns PLEXUS_OK (the event follows); PLEXUS_ERR_NULL_ARGUMENT; PLEXUS_ERR_SHUTDOWN when
/// the queue or the runtime is shut down (no event follows).
///
/// # Safety
/// `server` and `cq` are live.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn plexus_server_shutdown_async(
    server: *const plexus_server,
    grace_ms: i64,
    cq: *const plexus_cq,
    tag: *mut c_void,
) -> plexus_result {
    boundary("plexus_server_shutdown_async", || {
        // SAFETY: the caller passes a live handle or NULL (checked).
        let server = unsafe { plexus_server::as_ref(server) }?;
        let rt = runtime::get()?;
        // SAFETY: as above.
        let completion = unsafe { begin(cq, tag, plexus_op::PLEXUS_OP_SERVER_SHUTDOWN) }?;
        let running = server.stop();
        let gate = server.gate.clone();
        let grace = grace_arg(grace_ms);
        rt.spawn(async move {
            if let Some(running) = running {
                running.shutdown(grace).await;
            }
            gate.close_and_drain().await;
            completion.complete(PLEXUS_OK, Outcome::default());
        });
        Ok(PLEXUS_OK)
    })
}

/// Releases the caller's handle. A server still running is shut down with no grace (its
/// calls are cancelled) in the background; call `plexus_server_shutdown` first for a
/// graceful stop. Calls the host still holds stay valid until freed. NULL is a no-op.
///
/// # Safety
/// `server` is NULL or live, not used again.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn plexus_server_free(server: *const plexus_server) {
    boundary("plexus_server_free", || {
        // SAFETY: the caller gives up a live handle or NULL.
        drop(unsafe { plexus_server::take(server) });
        Ok(())
    })
}

/// Reads a `plexus_bytes` argument that may be NULL.
///
/// # Safety
/// `ptr` is NULL or live.
pub(crate) unsafe fn optional_bytes(
    ptr: *const crate::bytes::plexus_bytes,
) -> Result<Option<Bytes>> {
    if ptr.is_null() {
        return Ok(None);
    }
    // SAFETY: per this function's contract, ptr is live.
    unsafe { crate::bytes::bytes_ref(ptr) }.map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_in_grpc_forms() {
        assert!(valid_path("/a.B/C"));
        for bad in ["", "/", "a.B/C", "/a.B/", "//C", "/a/B/C"] {
            assert!(!valid_path(bad), "{bad:?}");
        }
        let listener = bind("127.0.0.1:0").unwrap();
        assert_ne!(listener.local_addr().unwrap().port(), 0);
        for bad in ["nonsense", "unix:", "unix://"] {
            let err = bind(bad).unwrap_err();
            assert_eq!(
                err.kind(),
                std::io::ErrorKind::InvalidInput,
                "{bad:?}: {err}"
            );
        }
    }
}
