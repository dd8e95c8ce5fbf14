//! `plexus_server_call`: one incoming call as the host answers it. Its route's handler task
//! ([`ServerCall::serve`]) waits for the host's finish and then ends the call; the host's
//! receives and sends run as their own operations against the same request stream and
//! response sink.

use std::ffi::{CString, c_char, c_void};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Instant;

use bytes::Bytes;
use core_plexus::server::{CallContext, RequestStream, ResponseSink};
use core_plexus::{Code, SendOptions, Status};
use event_listener::Event;
use futures_util::future::{Either, select};

use crate::boundary::boundary;
use crate::bytes::{bytes_ref, plexus_bytes};
use crate::channel::interrupted;
use crate::cq::{Outcome, begin, plexus_cq, plexus_op};
use crate::error::{
    Error, PLEXUS_END_OF_STREAM, PLEXUS_ERR_BUSY, PLEXUS_ERR_INVALID_ARGUMENT, PLEXUS_ERR_RPC,
    PLEXUS_ERR_TIMEOUT, PLEXUS_OK, Result, plexus_result,
};
use crate::handle::{ArcHandle, BoxHandle, check_out, str_arg, write_out};
use crate::metadata::{Metadata, plexus_metadata};
use crate::options::compression_arg;
use crate::runtime::{self, Cancel, Interrupted, until_cancelled};
use crate::server::optional_bytes;
use crate::status::CallStatus;

/// One call the server received. Thread-safe: it may be used from any thread; one receive
/// at a time; sends from several threads each go out whole. Owned by the host from its
/// PLEXUS_OP_SERVER_CALL event; free with `plexus_server_call_free`.
pub struct plexus_server_call {
    _private: [u8; 0],
}

impl ArcHandle for plexus_server_call {
    type Rust = ServerCall;
    const NAME: &'static str = "call";
}

/// `plexus_server_call_send` flag: send this message uncompressed on a call that compresses
/// its responses.
pub const PLEXUS_SEND_NO_COMPRESS: u32 = 1;

/// How the call is to end, as the handler task takes it.
struct Finish {
    last: Option<Bytes>,
    status: Status,
    /// The host gave it with `plexus_server_call_finish` (not a cancel or a failed receive),
    /// with its place after the sends started before it.
    from_host: Option<Turn>,
}

/// The order in which the host started its sends, initial metadata and finish: each takes a
/// turn when the host calls the function and goes out only when its turn comes, so two
/// `_async` sends started one after the other arrive in that order, and a finish right after
/// them waits for them.
#[derive(Default)]
struct Turns {
    state: Mutex<TurnState>,
    next_served: Event,
    /// Turns waiting for theirs: a turn that ends with none skips the notification (which
    /// would allocate the event's state on most calls, where the turns never wait).
    waiting: AtomicUsize,
}

#[derive(Default)]
struct TurnState {
    /// The next turn to hand out.
    next: u64,
    /// The turn that may go now.
    serving: u64,
    /// Turns given up before they came (a send whose wait timed out).
    skipped: std::collections::BTreeSet<u64>,
}

/// One place in a call's [`Turns`]; ends the turn (or gives it up) when dropped.
struct Turn {
    turns: Arc<Turns>,
    number: u64,
}

impl Turns {
    fn lock(&self) -> MutexGuard<'_, TurnState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The next place in line.
    fn take(self: &Arc<Self>) -> Turn {
        let mut state = self.lock();
        let number = state.next;
        state.next += 1;
        Turn {
            turns: self.clone(),
            number,
        }
    }
}

impl Turn {
    /// Waits until every turn before this one has ended.
    async fn wait(&self) {
        if self.turns.lock().serving == self.number {
            return;
        }
        // Counted before the check below, so a turn that ends after it sees the waiter.
        let _waiting = Waiting::start(&self.turns.waiting);
        loop {
            let listener = self.turns.next_served.listen();
            if self.turns.lock().serving == self.number {
                return;
            }
            listener.await;
        }
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        let mut state = self.turns.lock();
        if state.serving == self.number {
            state.serving += 1;
        } else {
            state.skipped.insert(self.number);
        }
        loop {
            let serving = state.serving;
            if !state.skipped.remove(&serving) {
                break;
            }
            state.serving += 1;
        }
        drop(state);
        if self.turns.waiting.load(Ordering::SeqCst) > 0 {
            self.turns.next_served.notify(usize::MAX);
        }
    }
}

/// One turn counted in [`Turns::waiting`] while it waits (until it is served or dropped).
struct Waiting<'a>(&'a AtomicUsize);

impl<'a> Waiting<'a> {
    fn start(count: &'a AtomicUsize) -> Waiting<'a> {
        count.fetch_add(1, Ordering::SeqCst);
        Waiting(count)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The finish on its way from the host to the handler task.
enum FinishSlot {
    Waiting,
    Given(Finish),
    Taken,
}

/// What a `plexus_server_call` holds.
pub(crate) struct ServerCall {
    context: CallContext,
    /// The method path, the peer and the metadata as C sees them, made on first use (most
    /// hosts route by registration and never ask).
    method: OnceLock<CString>,
    peer: OnceLock<CString>,
    metadata: OnceLock<Metadata>,
    /// The request stream; `None` while a receive holds it.
    requests: Mutex<Option<RequestStream<Bytes>>>,
    sink: ResponseSink<Bytes>,
    finish: Mutex<FinishSlot>,
    /// Notified when a finish is given, if the handler task waits for one.
    finish_given: Event,
    /// The handler task found no finish and waits: a finish given without it (the usual case
    /// for a host that answers in a server callback) skips the notification.
    finish_awaited: AtomicBool,
    /// Set by the host's finish: later sends and finishes are refused.
    host_finished: AtomicBool,
    /// A message or the initial metadata went out: initial metadata no longer can.
    headers_sent: AtomicBool,
    /// Set by `plexus_server_call_cancel` (and a freed, unfinished call): stops waiting sends.
    cancel: Cancel,
    /// The order of the host's sends and finish.
    turns: Arc<Turns>,
    /// How the call ended when not with the host's status (for PLEXUS_OP_SERVER_DONE).
    ended: Mutex<Option<Status>>,
    /// The handler task returned the host's status: the call ended as the host asked.
    completed: AtomicBool,
    /// Whether the last request handed out (in the event or by a receive) arrived compressed.
    last_compressed: AtomicBool,
    /// A receive saw the call end under it (a cancel, a lost connection) before the server's
    /// own bookkeeping did: the call counts as over from then on.
    seen_over: AtomicBool,
}

impl ServerCall {
    pub(crate) fn new(
        context: CallContext,
        requests: RequestStream<Bytes>,
        sink: ResponseSink<Bytes>,
        first_compressed: bool,
    ) -> Arc<ServerCall> {
        Arc::new(ServerCall {
            method: OnceLock::new(),
            peer: OnceLock::new(),
            metadata: OnceLock::new(),
            context,
            requests: Mutex::new(Some(requests)),
            sink,
            finish: Mutex::new(FinishSlot::Waiting),
            finish_given: Event::new(),
            finish_awaited: AtomicBool::new(false),
            host_finished: AtomicBool::new(false),
            headers_sent: AtomicBool::new(false),
            cancel: Cancel::default(),
            turns: Arc::default(),
            ended: Mutex::new(None),
            completed: AtomicBool::new(false),
            last_compressed: AtomicBool::new(first_compressed),
            seen_over: AtomicBool::new(false),
        })
    }

    fn method(&self) -> &CString {
        self.method
            .get_or_init(|| c_text(self.context.method().to_string()))
    }

    fn peer(&self) -> &CString {
        self.peer.get_or_init(|| {
            c_text(
                self.context
                    .remote_addr()
                    .map_or_else(|| "unknown".to_string(), ToString::to_string),
            )
        })
    }

    fn metadata(&self) -> &Metadata {
        self.metadata
            .get_or_init(|| Metadata::from_core(self.context.metadata().clone()))
    }

    /// The call's context, for client calls made on its behalf.
    pub(crate) fn context(&self) -> &CallContext {
        &self.context
    }

    fn slot(&self) -> MutexGuard<'_, FinishSlot> {
        self.finish.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Hands `finish` to the handler task unless one was given already; returns whether
    /// this one was taken.
    fn give(&self, finish: Finish) -> bool {
        let mut slot = self.slot();
        if !matches!(*slot, FinishSlot::Waiting) {
            return false;
        }
        *slot = FinishSlot::Given(finish);
        drop(slot);
        // Set before the handler task's second look at the slot, so it sees the finish
        // or this sees it waiting.
        if self.finish_awaited.load(Ordering::SeqCst) {
            self.finish_given.notify(usize::MAX);
        }
        true
    }

    fn take(&self) -> Option<Finish> {
        let mut slot = self.slot();
        match std::mem::replace(&mut *slot, FinishSlot::Taken) {
            FinishSlot::Given(finish) => Some(finish),
            other => {
                *slot = other;
                None
            }
        }
    }

    /// Ends the call with `status` (not the host's: a cancel, a failed receive).
    fn end_with(&self, status: Status) {
        let ended = status.clone();
        if self.give(Finish {
            last: None,
            status,
            from_host: None,
        }) {
            self.record_end(ended);
        }
    }

    fn record_end(&self, status: Status) {
        let mut ended = self.ended.lock().unwrap_or_else(|e| e.into_inner());
        ended.get_or_insert(status);
    }

    /// The handler task's part: waits for the finish (or the end of the call), sends the
    /// last message and returns the status for core to send.
    pub(crate) async fn serve(self: Arc<Self>) -> std::result::Result<(), Status> {
        let finish = loop {
            if let Some(finish) = self.take() {
                break finish;
            }
            self.finish_awaited.store(true, Ordering::SeqCst);
            let given = self.finish_given.listen();
            if let Some(finish) = self.take() {
                break finish;
            }
            if self.context.is_cancelled() {
                return Err(Status::cancelled("the call ended"));
            }
            if let Either::Right(_) = select(given, std::pin::pin!(self.context.cancelled())).await
            {
                return Err(Status::cancelled("the call ended"));
            }
        };
        let Finish {
            last,
            status,
            from_host,
        } = finish;
        if let Some(turn) = &from_host {
            // After the sends the host started before finishing (or until the call ends).
            if let Either::Right(_) = select(
                std::pin::pin!(turn.wait()),
                std::pin::pin!(self.context.cancelled()),
            )
            .await
            {
                return Err(Status::cancelled("the call ended"));
            }
        }
        if let Some(message) = last {
            self.headers_sent.store(true, Ordering::Release);
            let sent = match until_cancelled(&self.cancel, self.sink.send(message)).await {
                Ok(sent) => sent,
                Err(_) => Err(Status::cancelled("the server cancelled the call")),
            };
            if let Err(failed) = sent {
                self.record_end(failed.clone());
                return Err(failed);
            }
        }
        let trailers = status.metadata().clone();
        self.sink.set_trailers(trailers);
        if from_host.is_some() {
            self.completed.store(true, Ordering::Release);
        }
        match status.code() {
            Code::Ok => Ok(()),
            _ => Err(status.with_metadata(core_plexus::Metadata::new())),
        }
    }

    /// Why the call ended, when it did not end with the host's status.
    fn end_reason(&self) -> Status {
        if let Some(status) = self.ended.lock().unwrap_or_else(|e| e.into_inner()).clone() {
            return status;
        }
        if self
            .context
            .deadline()
            .is_some_and(|at| at <= Instant::now())
        {
            return Status::deadline_exceeded("the call's deadline passed");
        }
        Status::cancelled("the client cancelled the call, or its connection closed")
    }

    /// Waits until the call is over; OK when it ended with the host's status, else the
    /// RPC error with why.
    async fn done(&self) -> (plexus_result, Option<CallStatus>) {
        self.context.cancelled().await;
        if self.completed.load(Ordering::Acquire) {
            return (PLEXUS_OK, None);
        }
        (
            PLEXUS_ERR_RPC,
            Some(CallStatus::new(&self.end_reason(), None)),
        )
    }

    /// Takes the request stream for one receive; BUSY while another receive holds it.
    fn take_requests(self: &Arc<Self>) -> Result<Requests> {
        let stream = self
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .ok_or_else(|| {
                Error::new(
                    PLEXUS_ERR_BUSY,
                    "another receive is in progress on this call",
                )
            })?;
        Ok(Requests {
            call: self.clone(),
            stream: Some(stream),
        })
    }

    /// Sends one response message in `turn`.
    async fn send(
        &self,
        turn: Turn,
        message: Bytes,
        flags: u32,
    ) -> std::result::Result<(), Status> {
        let options = SendOptions::new().compress(flags & PLEXUS_SEND_NO_COMPRESS == 0);
        self.headers_sent.store(true, Ordering::Release);
        let send = async {
            turn.wait().await;
            self.sink.send_with(message, options).await
        };
        match until_cancelled(&self.cancel, send).await {
            Ok(sent) => sent,
            Err(_) => Err(Status::cancelled("the server cancelled the call")),
        }
    }

    /// Sends the response headers in `turn`.
    async fn send_initial_metadata(
        &self,
        turn: Turn,
        metadata: core_plexus::Metadata,
    ) -> std::result::Result<(), Status> {
        let send = async {
            turn.wait().await;
            self.sink.send_initial_metadata(metadata).await
        };
        match until_cancelled(&self.cancel, send).await {
            Ok(sent) => sent,
            Err(_) => Err(Status::cancelled("the server cancelled the call")),
        }
    }

    /// Refuses sends after the host's finish.
    fn check_open(&self) -> Result<()> {
        if self.host_finished.load(Ordering::Acquire) {
            return Err(Error::wrong_state("the call was already finished"));
        }
        Ok(())
    }

    /// Ends the call now with CANCELLED (the host's cancel, or a call freed unfinished).
    fn cancel_call(&self, why: &str) {
        self.cancel.cancel();
        self.end_with(Status::cancelled(why));
    }
}

/// One receive's hold on the request stream, given back when dropped (also when a blocking
/// receive times out, so nothing is lost).
struct Requests {
    call: Arc<ServerCall>,
    stream: Option<RequestStream<Bytes>>,
}

impl Requests {
    /// The next request: `Some`, `None` at the end of the stream (or of the call), or the
    /// status the stream failed with (the call was ended with it).
    async fn next(mut self) -> std::result::Result<Option<Bytes>, Status> {
        let call = self.call.clone();
        let stream = self.stream.as_mut().expect("held until drop");
        let next = until_cancelled(&call.cancel, stream.message()).await;
        if let Ok(Ok(Some(_))) = &next {
            let compressed = stream.last_message_compressed();
            call.last_compressed.store(compressed, Ordering::Release);
        }
        // Given back before the result can be seen.
        drop(self);
        match next {
            Ok(Ok(message)) => Ok(message),
            // Cancelled by the server.
            Err(_) => Ok(None),
            // The call ended under the stream (the client cancelled, the connection or the
            // server went away, the deadline passed): the end of the requests;
            // PLEXUS_OP_SERVER_DONE says why.
            Ok(Err(status))
                if matches!(
                    status.code(),
                    Code::Cancelled | Code::Unavailable | Code::DeadlineExceeded
                ) =>
            {
                call.seen_over.store(true, Ordering::Release);
                Ok(None)
            }
            Ok(Err(status)) => {
                call.end_with(status.clone());
                Err(status)
            }
        }
    }
}

impl Drop for Requests {
    fn drop(&mut self) {
        if let Some(stream) = self.stream.take() {
            *self.call.requests.lock().unwrap_or_else(|e| e.into_inner()) = Some(stream);
        }
    }
}

/// Refuses flag bits this version does not know, so a host's typo is not silently ignored.
fn check_flags(flags: u32) -> Result<()> {
    if flags & !PLEXUS_SEND_NO_COMPRESS != 0 {
        return Err(Error::new(
            PLEXUS_ERR_INVALID_ARGUMENT,
            format!("unknown send flags {flags:#x} (known: PLEXUS_SEND_NO_COMPRESS)"),
        ));
    }
    Ok(())
}

/// A failed send: the call is over.
fn send_failed(status: &Status) -> Error {
    Error::new(
        PLEXUS_ERR_RPC,
        format!(
            "the call is over, the message was not sent ({}: {}); PLEXUS_OP_SERVER_DONE says why",
            status.code().name(),
            status.message()
        ),
    )
}

/// Metadata to send from an optional argument.
///
/// # Safety
/// `metadata` is NULL or live.
unsafe fn metadata_arg(metadata: *const plexus_metadata) -> Result<core_plexus::Metadata> {
    if metadata.is_null() {
        return Ok(core_plexus::Metadata::new());
    }
    // SAFETY: per this function's contract.
    Ok(unsafe { plexus_metadata::as_ref(metadata) }?.core().clone())
}

/// `s` as a C string (a NUL inside, which HTTP/2 cannot carry anyway, becomes a space).
fn c_text(s: String) -> CString {
    CString::new(s.replace('\0', " ")).unwrap_or_default()
}

/// Writes a borrowed string of the call to `*out`.
///
/// # Safety
/// `call` is NULL or live; `out` is NULL or writable.
unsafe fn borrowed_text(
    call: *const plexus_server_call,
    out: *mut *const c_char,
    text: fn(&ServerCall) -> &CString,
) -> Result<plexus_result> {
    // SAFETY: per this function's contract.
    let call = unsafe { plexus_server_call::as_ref(call) }?;
    check_out(out, "out")?;
    // SAFETY: out was checked and is writable.
    unsafe { write_out(out, "out", text(call).as_ptr()) }?;
    Ok(PLEXUS_OK)
}

/// Writes the call's method path (`/package.Service/Method`) to `*method`. Borrowed: valid
/// until the call is freed.
///
/// Returns PLEXUS_OK; PLEXUS_ERR_NULL_ARGUMENT.
///
/// # Safety
/// `call` is live; `method` is writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn plexus_server_call_method(
    call: *const plexus_server_call,
    method: *mut *const c_char,
) -> plexus_result {
    boundary("plexus_server_call_method", || {
        // SAFETY: forwarded from the caller, with the same contract.
        unsafe { borrowed_text(call, method, ServerCall::method) }
    })
}

/// Writes where the client connected from to `*peer`, in gRPC's forms:
/// `ipv4:127.0.0.1:5555`, `ipv6:[::1]:5555`, `unix:` (an unnamed Unix socket) or
/// `unix:/path`. Borrowed: valid until the call is freed.
///
/// Returns PLEXUS_OK; PLEXUS_ERR_NULL_ARGUMENT.
///
/// # Safety
/// `call` is live; `peer` is writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn plexus_server_call_peer(
    call: *const plexus_server_call,
    peer: *mut *const c_char,
) -> plexus_result {
    boundary("plexus_server_call_peer", || {
        // SAFETY: forwarded from the caller, with the same contract.
        unsafe { borrowed_text(call, peer, ServerCall::peer) }
    })
}

/// Writes the client's TLS certificate (the leaf, DER-encoded) to `*der` and its length to
/// `*len`, for authorizing mutual-TLS clients; NULL and 0 when the connection is not TLS or
/// the client sent none. Borrowed: valid until the call is freed.
///
/// Returns PLEXUS_OK; PLEXUS_ERR_NULL_ARGUMENT.
///
/// # Safety
/// `call` is live; `der` and `len` are writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn plexus_server_call_peer_certificate(
    call: *const plexus_server_call,
    der: *mut *const u8,
    len: *mut usize,
) -> plexus_result {
    boundary("plexus_server_call_peer_certificate", || {
        // SAFETY: the caller passes a live handle or NULL (checked).
        let call = unsafe { plexus_server_call::as_ref(call) }?;
        check_out(der, "der")?;
        check_out(len, "len")?;
        let leaf = call
            .context
            .peer_certificates()
            .and_then(|chain| chain.first())
            .map_or((std::ptr::null(), 0), |cert| (cert.as_ptr(), cert.len()));
        // SAFETY: der and len were checked and are writable.
        unsafe {
            write_out(der, "der", leaf.0)?;
            write_out(len, "len", leaf.1)?;
        }
        Ok(PLEXUS_OK)
    })
}

/// Writes to `*compressed` whether the last request message handed out (in the
/// PLEXUS_OP_SERVER_CALL event, or by the last receive) arrived compressed (its
/// Compressed-Flag set); it was inflated either way. False before any message.
///
/// Returns PLEXUS_OK; PLEXUS_ERR_NULL_ARGUMENT.
///
/// # Safety
/// `call` is live; `compressed` is writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn plexus_server_call_last_message_compressed(
    call: *const plexus_server_call,
    compressed: *mut bool,
) -> plexus_result {
    boundary("plexus_server_call_last_message_compressed", || {
        // SAFETY: the caller passes a live handle or NULL (checked).
        let call = unsafe { plexus_server_call::as_ref(call) }?;
        check_out(compressed, "compressed")?;
        let flag = call.last_compressed.load(Ordering::Acquire);
        // SAFETY: compressed was checked and is writable.
        unsafe { write_out(compressed, "compressed", flag) }?;
        Ok(PLEXUS_OK)
    })
}

/// Writes the request metadata to `*metadata`. Borrowed: valid until the call is freed;
/// never free it.
///
/// Returns PLEXUS_OK; PLEXUS_ERR_NULL_ARGUMENT.
///
/// # Safety
/// `call` is live; `metadata` is writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn plexus_server_call_metadata(
    call: *const plexus_server_call,
    metadata: *mut *const plexus_metadata,
) -> plexus_result {
    boundary("plexus_server_call_metadata", || {
        // SAFETY: the caller passes a live handle or NULL (checked).
        let call = unsafe { plexus_server_call::as_ref(call) }?;
        check_out(metadata, "metadata")?;
        let md = plexus_metadata::borrow_raw(call.metadata());
        // SAFETY: metadata was checked and is writable.
        unsafe { write_out(metadata, "metadata", md) }?;
        Ok(PLEXUS_OK)
    })
}

/// Writes the milliseconds left before the client's deadline to `*remaining_ms` (0 once it
/// passed), or -1 when the client set none.
///
/// Returns PLEXUS_OK; PLEXUS_ERR_NULL_ARGUMENT.
///
/// # Safety
/// `call` is live; `remaining_ms` is writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn plexus_server_call_deadline(
    call: *const plexus_server_call,
    remaining_ms: *mut i64,
) -> plexus_result {
    boundary("plexus_server_call_deadline", || {
        // SAFETY: the caller passes a live handle or NULL (checked).
        let call = unsafe { plexus_server_call::as_ref(call) }?;
        check_out(remaining_ms, "remaining_ms")?;
        let left = call.context.deadline().map_or(-1, |at| {
            let left = at.saturating_duration_since(Instant::now());
            i64::try_from(left.as_millis()).unwrap_or(i64::MAX)
        });
        // SAFETY: remaining_ms was checked and is writable.
        unsafe { write_out(remaining_ms, "remaining_ms", left) }?;
        Ok(PLEXUS_OK)
    })
}

/// Writes whether the call is over to `*cancelled`: true once the client cancelled, the
/// deadline passed, the connection went away or the server cancelled it, and also once it
/// ended normally.
///
/// Returns PLEXUS_OK; PLEXUS_ERR_NULL_ARGUMENT.
///
/// # Safety
/// `call` is live; `cancelled` is writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn plexus_server_call_is_cancelled(
    call: *const plexus_server_call,
    cancelled: *mut bool,
) -> plexus_result {
    boundary("plexus_server_call_is_cancelled", || {
        // SAFETY: the caller passes a live handle or NULL (checked).
        let call = unsafe { plexus_server_call::as_ref(call) }?;
        check_out(cancelled, "cancelled")?;
        let over = call.context.is_cancelled()
            || call.cancel.is_cancelled()
            || call.seen_over.load(Ordering::Acquire);
        // SAFETY: cancelled was checked and is writable.
        unsafe { write_out(cancelled, "cancelled", over) }?;
        Ok(PLEXUS_OK)
    })
}

/// Compresses this call's responses with `name` (`"identity"`, `"gzip"` or `"deflate"`),
/// if the client accepts it (else they go out uncompressed) and the response headers have
/// not gone out yet (else nothing changes).
///
/// Returns PLEXUS_OK; PLEXUS_ERR_NULL_ARGUMENT; PLEXUS_ERR_INVALID_UTF8;
/// PLEXUS_ERR_INVALID_ARGUMENT for another name.
///
/// # Safety
/// `call` is live; `name` is a NUL-terminated string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn plexus_server_call_set_compression(
    call: *const plexus_server_call,
    name: *const c_char,
) -> plexus_result {
    boundary("plexus_server_call_set_compression", || {
        // SAFETY: the caller passes a live handle or NULL (checked).
        let call = unsafe { plexus_server_call::as_ref(call) }?;
        // SAFETY: as above.
        let compression = unsafe { compression_arg(name) }?;
        call.context.set_response_compression(compression);
        Ok(PLEXUS_OK)
    })
}

/// The result of a receive, as the blocking and the asynchronous forms report it.
fn recv_result(received: std::result::Result<Option<Bytes>, Status>) -> (plexus_result, Outcome) {
    match received {
        Ok(Some(message)) => (
            PLEXUS_OK,
            Outcome {
                message: Some(message),
                ..Outcome::default()
            },
        ),
        Ok(None) => (PLEXUS_END_OF_STREAM, Outcome::default()),
        Err(status) => (
            PLEXUS_ERR_RPC,
            Outcome {
                status: Some(CallStatus::new(&status, None)),
                ..Outcome::default()
            },
        ),
    }
}

/// Receives the next request message, waiting up to `timeout_ms` milliseconds (negative: no
/// limit). The message is owned by the caller (`plexus_bytes_free`), read in place. Blocks.
///
/// Returns PLEXUS_OK and writes `*message`; PLEXUS_END_OF_STREAM when the client half-closed,
/// or the call is over (PLEXUS_OP_SERVER_DONE says how); PLEXUS_ERR_TIMEOUT (nothing is lost);
/// PLEXUS_ERR_BUSY while another receive runs; PLEXUS_ERR_RPC when the request stream failed
/// (an oversize message: RESOURCE_EXHAUSTED; one that does not inflate: INTERNAL), in which
/// case plexus already ended the call with that status; PLEXUS_ERR_NULL_ARGUMENT;
/// PLEXUS_ERR_SHUTDOWN.
///
/// # Safety
/// `call` is live; `message` is writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn plexus_server_call_recv(
    call: *const plexus_server_call,
    timeout_ms: i64,
    message: *mut *mut plexus_bytes,
) -> plexus_result {
    boundary("plexus_server_call_recv", || {
        // SAFETY: the caller passes a live handle or NULL (checked).
        let call = unsafe { plexus_server_call::clone_arc(call) }?;
        check_out(message, "message")?;
        let requests = call.take_requests()?;
        let received = runtime::block_on(timeout_ms, requests.next())
            .map_err(|why| interrupted(why, timeout_ms))?;
        match received {
            Ok(Some(bytes)) => {
                // SAFETY: message was checked and is writable.
                unsafe { write_out(message, "message", plexus_bytes::into_raw(bytes)) }?;
                Ok(PLEXUS_OK)
            }
            Ok(None) => Ok(PLEXUS_END_OF_STREAM),
            Err(status) => Err(Error::rpc(&status)),
        }
    })
}

/// `plexus_server_call_recv` without blocking: reports PLEXUS_OP_RECV with `tag` on `cq`
/// (`message` set on PLEXUS_OK; `status` set on PLEXUS_ERR_RPC).
///
/// Returns PLEXUS_OK (the event follows); PLEXUS_ERR_BUSY while another receive runs;
/// PLEXUS_ERR_NULL_ARGUMENT; PLEXUS_ERR_SHUTDOWN (no event follows for these).
///
/// # Safety
/// `call` and `cq` are live.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn plexus_server_call_recv_async(
    call: *const plexus_server_call,
    cq: *const plexus_cq,
    tag: *mut c_void,
) -> plexus_result {
    boundary("plexus_server_call_recv_async", || {
        // SAFETY: the caller passes a live handle or NULL (checked).
        let call = unsafe { plexus_server_call::clone_arc(call) }?;
        let rt = runtime::get()?;
        let requests = call.take_requests()?;
        // SAFETY: as above.
        let completion = unsafe { begin(cq, tag, plexus_op::PLEXUS_OP_RECV) }?;
        rt.spawn(async move {
            let (result, outcome) = recv_result(requests.next().await);
            completion.complete(result, outcome);
        });
        Ok(PLEXUS_OK)
    })
}

/// Sends the response headers with `metadata` (NULL: none; copied). Optional: the first
/// message or the finish sends them otherwise. Waits up to `timeout_ms` milliseconds
/// (negative: no limit). Blocks.
///
/// Returns PLEXUS_OK; PLEXUS_ERR_WRONG_STATE after a message or the finish (the headers
/// went out already); PLEXUS_ERR_RPC when the call is over; PLEXUS_ERR_INVALID_ARGUMENT for
/// metadata that cannot be sent; PLEXUS_ERR_TIMEOUT; PLEXUS_ERR_NULL_ARGUMENT;
/// PLEXUS_ERR_SHUTDOWN.
///
/// # Safety
/// `call` is live; `metadata` is NULL or live.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn plexus_server_call_send_initial_metadata(
    call: *const plexus_server_call,
    metadata: *const plexus_metadata,
    timeout_ms: i64,
) -> plexus_result {
    boundary("plexus_server_call_send_initial_metadata", || {
        // SAFETY: the caller passes a live handle or NULL (checked).
        let call = unsafe { plexus_server_call::clone_arc(call) }?;
        // SAFETY: as above.
        let metadata = unsafe { metadata_arg(metadata) }?;
        check_headers(&call)?;
        let turn = call.turns.take();
        runtime::block_on(timeout_ms, call.send_initial_metadata(turn, metadata))
            .map_err(|why| interrupted(why, timeout_ms))?
            .map_err(|status| send_failed(&status))?;
        Ok(PLEXUS_OK)
    })
}

/// Refuses initial metadata once the headers went out.
fn check_headers(call: &ServerCall) -> Result<()> {
    call.check_open()?;
    if call.headers_sent.swap(true, Ordering::AcqRel) {
        return Err(Error::wrong_state(
            "the response headers were already sent (initial metadata goes before the first message)",
        ));
    }
    Ok(())
}

/// `plexus_server_call_send_initial_metadata` without blocking: reports
/// PLEXUS_OP_SEND_INITIAL_METADATA with `tag` on `cq`.
///
/// Returns PLEXUS_OK (the event follows); the argument and state errors of the blocking form
/// (no event follows); PLEXUS_ERR_SHUTDOWN.
///
/// # Safety
/// `call` and `cq` are live; `metadata` is NULL or live.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn plexus_server_call_send_initial_metadata_async(
    call: *const plexus_server_call,
    metadata: *const plexus_metadata,
    cq: *const plexus_cq,
    tag: *mut c_void,
) -> plexus_result {
    boundary("plexus_server_call_send_initial_metadata_async", || {
        // SAFETY: the caller passes a live handle or NULL (checked).
        let call = unsafe { plexus_server_call::clone_arc(call) }?;
        // SAFETY: as above.
        let metadata = unsafe { metadata_arg(metadata) }?;
        let rt = runtime::get()?;
        // Checked before the operation is registered: a registered one always reports.
        check_headers(&call)?;
        // SAFETY: as above.
        let completion = unsafe { begin(cq, tag, plexus_op::PLEXUS_OP_SEND_INITIAL_METADATA) }?;
        let turn = call.turns.take();
        rt.spawn(async move {
            let result = match call.send_initial_metadata(turn, metadata).await {
                Ok(()) => PLEXUS_OK,
                Err(_) => PLEXUS_ERR_RPC,
            };
            completion.complete(result, Outcome::default());
        });
        Ok(PLEXUS_OK)
    })
}

/// Sends one response message (borrowed: the caller still frees `message`; wrapped memory is
/// released once it went out), waiting up to `timeout_ms` milliseconds (negative: no limit)
/// for HTTP/2 flow control. `flags`: 0, or PLEXUS_SEND_NO_COMPRESS. Sends from several
/// threads each go out whole. Blocks.
///
/// Returns PLEXUS_OK once the message is handed to the connection; PLEXUS_ERR_RPC when the
/// call is over (cancelled; PLEXUS_OP_SERVER_DONE says why) or the message is bigger than
/// the server's max send size (the call then ends RESOURCE_EXHAUSTED); PLEXUS_ERR_TIMEOUT,
/// in which case the call is cancelled (part of the message may have gone out);
/// PLEXUS_ERR_WRONG_STATE after the finish; PLEXUS_ERR_INVALID_ARGUMENT for unknown flags;
/// PLEXUS_ERR_NULL_ARGUMENT; PLEXUS_ERR_SHUTDOWN.
///
/// # Safety
/// `call` and `message` are live.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn plexus_server_call_send(
    call: *const plexus_server_call,
    message: *const plexus_bytes,
    flags: u32,
    timeout_ms: i64,
) -> plexus_result {
    boundary("plexus_server_call_send", || {
        // SAFETY: the caller passes live handles or NULL (checked).
        let call = unsafe { plexus_server_call::clone_arc(call) }?;
        // SAFETY: as above.
        let message = unsafe { bytes_ref(message) }?;
        check_flags(flags)?;
        call.check_open()?;
        let turn = call.turns.take();
        match runtime::block_on(timeout_ms, call.send(turn, message, flags)) {
            Ok(Ok(())) => Ok(PLEXUS_OK),
            Ok(Err(status)) => Err(failed_send(&call, status)),
            Err(Interrupted::Timeout) => {
                call.cancel_call("a send timed out on the server");
                Err(Error::new(
                    PLEXUS_ERR_TIMEOUT,
                    format!("timed out after {timeout_ms} ms; the call was cancelled"),
                ))
            }
            Err(why) => Err(interrupted(why, timeout_ms)),
        }
    })
}

/// A send that failed: a message too big for the server's max send size ends the call with
/// that status (the client learns why); otherwise the call was over already.
fn failed_send(call: &ServerCall, status: Status) -> Error {
    if status.code() == Code::ResourceExhausted {
        call.end_with(status.clone());
    }
    send_failed(&status)
}

/// `plexus_server_call_send` without blocking: reports PLEXUS_OP_SEND with `tag` on `cq`.
///
/// Returns PLEXUS_OK (the event follows); PLEXUS_ERR_WRONG_STATE after the finish;
/// PLEXUS_ERR_INVALID_ARGUMENT for unknown flags; PLEXUS_ERR_NULL_ARGUMENT;
/// PLEXUS_ERR_SHUTDOWN (no event follows for these).
///
/// # Safety
/// `call`, `message` and `cq` are live.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn plexus_server_call_send_async(
    call: *const plexus_server_call,
    message: *const plexus_bytes,
    flags: u32,
    cq: *const plexus_cq,
    tag: *mut c_void,
) -> plexus_result {
    boundary("plexus_server_call_send_async", || {
        // SAFETY: the caller passes live handles or NULL (checked).
        let call = unsafe { plexus_server_call::clone_arc(call) }?;
        // SAFETY: as above.
        let message = unsafe { bytes_ref(message) }?;
        check_flags(flags)?;
        call.check_open()?;
        let rt = runtime::get()?;
        // SAFETY: as above.
        let completion = unsafe { begin(cq, tag, plexus_op::PLEXUS_OP_SEND) }?;
        let turn = call.turns.take();
        rt.spawn(async move {
            let result = match call.send(turn, message, flags).await {
                Ok(()) => PLEXUS_OK,
                Err(status) => failed_send(&call, status).code,
            };
            completion.complete(result, Outcome::default());
        });
        Ok(PLEXUS_OK)
    })
}

/// The key whose binary value is a status's details (`google.rpc.Status`).
const STATUS_DETAILS_KEY: &str = "grpc-status-details-bin";

/// Ends the call: sends `last_message` if not NULL (borrowed; the usual way to answer a unary
/// call in one step), then the status `code` (0..16) with `message` (NULL: empty) and
/// `trailers` (NULL: none; copied). A binary trailer `grpc-status-details-bin` becomes the
/// status details. Never blocks: the status goes out after the messages already sent. A
/// call that is already over (cancelled) still returns PLEXUS_OK: nothing goes out, and
/// PLEXUS_OP_SERVER_DONE says it was cancelled.
///
/// Returns PLEXUS_OK; PLEXUS_ERR_WRONG_STATE when the call was already finished;
/// PLEXUS_ERR_INVALID_ARGUMENT for a code outside 0..16; PLEXUS_ERR_NULL_ARGUMENT;
/// PLEXUS_ERR_INVALID_UTF8.
///
/// # Safety
/// `call` is live; `last_message` and `trailers` are NULL or live; `message` is NULL or a
/// NUL-terminated string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn plexus_server_call_finish(
    call: *const plexus_server_call,
    last_message: *const plexus_bytes,
    code: i32,
    message: *const c_char,
    trailers: *const plexus_metadata,
) -> plexus_result {
    boundary("plexus_server_call_finish", || {
        // SAFETY: the caller passes live handles or NULL (checked).
        let call = unsafe { plexus_server_call::clone_arc(call) }?;
        // SAFETY: as above.
        let last = unsafe { optional_bytes(last_message) }?;
        let text = if message.is_null() {
            ""
        } else {
            // SAFETY: message is a NUL-terminated string (checked non-NULL).
            unsafe { str_arg(message, "message") }?
        };
        // SAFETY: as above.
        let mut trailers = unsafe { metadata_arg(trailers) }?;
        if !(0..=16).contains(&code) {
            return Err(Error::new(
                PLEXUS_ERR_INVALID_ARGUMENT,
                format!("status code {code} is not a gRPC code (0..16)"),
            ));
        }
        if call.host_finished.swap(true, Ordering::AcqRel) {
            return Err(Error::wrong_state("the call was already finished"));
        }
        let mut status = Status::new(Code::from_i32(code), text);
        if let Some(details) = trailers.get_bin(STATUS_DETAILS_KEY) {
            trailers.remove(STATUS_DETAILS_KEY);
            status = status.with_details(details);
        }
        call.give(Finish {
            last,
            status: status.with_metadata(trailers),
            from_host: Some(call.turns.take()),
        });
        Ok(PLEXUS_OK)
    })
}

/// Ends the call now with CANCELLED (the client sees CANCELLED); waiting sends and receives
/// return. Idempotent; no effect on a call that is over.
///
/// Returns PLEXUS_OK; PLEXUS_ERR_NULL_ARGUMENT.
///
/// # Safety
/// `call` is live.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn plexus_server_call_cancel(
    call: *const plexus_server_call,
) -> plexus_result {
    boundary("plexus_server_call_cancel", || {
        // SAFETY: the caller passes a live handle or NULL (checked).
        let call = unsafe { plexus_server_call::as_ref(call) }?;
        call.cancel_call("the server cancelled the call");
        Ok(PLEXUS_OK)
    })
}

/// Reports PLEXUS_OP_SERVER_DONE with `tag` on `cq` once the call is over: result PLEXUS_OK
/// when it ended with the status given to `plexus_server_call_finish`, PLEXUS_ERR_RPC when it
/// did not (the client cancelled, the deadline passed, the connection went away, the server
/// cancelled or shut down), with `status` saying why (CANCELLED, DEADLINE_EXCEEDED, or the
/// status a failed request stream ended it with). May be asked more than once.
///
/// Returns PLEXUS_OK (the event follows); PLEXUS_ERR_NULL_ARGUMENT; PLEXUS_ERR_SHUTDOWN (no
/// event follows).
///
/// # Safety
/// `call` and `cq` are live.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn plexus_server_call_done_async(
    call: *const plexus_server_call,
    cq: *const plexus_cq,
    tag: *mut c_void,
) -> plexus_result {
    boundary("plexus_server_call_done_async", || {
        // SAFETY: the caller passes a live handle or NULL (checked).
        let call = unsafe { plexus_server_call::clone_arc(call) }?;
        let rt = runtime::get()?;
        // SAFETY: as above.
        let completion = unsafe { begin(cq, tag, plexus_op::PLEXUS_OP_SERVER_DONE) }?;
        rt.spawn(async move {
            let (result, status) = call.done().await;
            completion.complete(
                result,
                Outcome {
                    status,
                    ..Outcome::default()
                },
            );
        });
        Ok(PLEXUS_OK)
    })
}

/// Releases the host's handle. A call not finished yet is cancelled (the client sees
/// CANCELLED). Operations still running on it complete normally. NULL is a no-op.
///
/// # Safety
/// `call` is NULL or live, not used again.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn plexus_server_call_free(call: *const plexus_server_call) {
    boundary("plexus_server_call_free", || {
        // SAFETY: the caller gives up a live handle or NULL.
        if let Some(call) = unsafe { plexus_server_call::take(call) } {
            if !call.host_finished.load(Ordering::Acquire) {
                call.cancel_call("the server dropped the call without finishing it");
            }
        }
        Ok(())
    })
}
