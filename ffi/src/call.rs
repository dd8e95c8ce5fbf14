//! `plexus_call`: a streaming call (any of the three streaming kinds), with blocking
//! operations that each take a timeout and asynchronous ones that report to a completion
//! queue.

use std::ffi::{c_char, c_void};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use core_plexus::{Sender, Status, Streaming};

use crate::boundary::boundary;
use crate::bytes::{bytes_ref, plexus_bytes};
use crate::channel::{SharedChannel, channel_arg, channel_ref, interrupted, plexus_channel};
use crate::cq::{Outcome, begin, plexus_cq, plexus_op};
use crate::error::{
    Error, PLEXUS_END_OF_STREAM, PLEXUS_ERR_BUSY, PLEXUS_ERR_RPC, PLEXUS_ERR_TIMEOUT, PLEXUS_OK,
    Result, plexus_result,
};
use crate::handle::{ArcHandle, BoxHandle, check_out, str_arg, write_out};
use crate::metadata::{Metadata, plexus_metadata};
use crate::options::{call_options_arg, plexus_call_options};
use crate::runtime::{self, Cancel, Interrupted, until_cancelled};
use crate::status::{CallStatus, plexus_status};

/// A streaming call. Thread-safe: one thread may send while another receives, and
/// `plexus_call_cancel` may come from any thread; but only one receive-side operation
/// (receive, initial metadata, finish) runs at a time. Owned by the caller; free with
/// `plexus_call_free`.
pub struct plexus_call {
    _private: [u8; 0],
}

impl ArcHandle for plexus_call {
    type Rust = Call;
    const NAME: &'static str = "call";
}

/// A call's two halves and its cancellation flag.
pub(crate) struct Call {
    /// The request side; None for server streaming and after close_send.
    sender: Mutex<Option<Sender<Bytes>>>,
    send_closed: AtomicBool,
    /// The response side; None while an operation holds it.
    recv: Mutex<Option<Streaming<Bytes>>>,
    cancel: Cancel,
}

impl Call {
    fn new(sender: Option<Sender<Bytes>>, streaming: Streaming<Bytes>) -> Arc<Call> {
        Arc::new(Call {
            send_closed: AtomicBool::new(sender.is_none()),
            sender: Mutex::new(sender),
            recv: Mutex::new(Some(streaming)),
            cancel: Cancel::default(),
        })
    }

    /// The handle of an asynchronous unary call (`plexus_unary_call_async`): it has no
    /// request or response side of its own (send returns WRONG_STATE, receive-side
    /// operations BUSY); `plexus_call_cancel` and `plexus_call_free` cancel the call.
    pub(crate) fn unary_handle() -> Arc<Call> {
        Arc::new(Call {
            send_closed: AtomicBool::new(true),
            sender: Mutex::new(None),
            recv: Mutex::new(None),
            cancel: Cancel::default(),
        })
    }

    /// The flag `plexus_call_cancel` sets, for operations that run outside this module.
    pub(crate) fn cancel_flag(&self) -> &Cancel {
        &self.cancel
    }

    fn slot(&self) -> MutexGuard<'_, Option<Streaming<Bytes>>> {
        self.recv.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes the response side for one operation; BUSY while another one holds it.
    fn take_recv(self: &Arc<Self>) -> Result<RecvGuard> {
        match self.slot().take() {
            Some(streaming) => Ok(RecvGuard {
                call: self.clone(),
                streaming: Some(streaming),
            }),
            None => Err(Error::new(
                PLEXUS_ERR_BUSY,
                "another receive, initial-metadata or finish operation is in progress on this call",
            )),
        }
    }

    /// Cancels the call: RST_STREAM(CANCEL) now, or as soon as the operation holding the
    /// response side gives it back; every waiting operation wakes.
    pub(crate) fn cancel_call(&self) {
        self.cancel.cancel();
        if let Some(streaming) = self.slot().as_mut() {
            streaming.cancel();
        }
    }

    /// The sender for one send; WRONG_STATE after close_send or for server streaming.
    fn sender_for_send(&self) -> Result<Sender<Bytes>> {
        let sender = self
            .sender
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        match sender {
            Some(sender) if !self.send_closed.load(Ordering::Acquire) => Ok(sender),
            _ => Err(Error::wrong_state(
                "the request stream is closed (after close_send, or a server-streaming call)",
            )),
        }
    }

    /// Marks the request side closed and takes the sender to close it with.
    fn sender_for_close(&self) -> Option<Sender<Bytes>> {
        self.send_closed.store(true, Ordering::Release);
        self.sender.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

/// One operation's hold on the response side, given back when dropped (also when a blocking
/// wait times out, so nothing received is lost).
struct RecvGuard {
    call: Arc<Call>,
    streaming: Option<Streaming<Bytes>>,
}

impl RecvGuard {
    fn get(&mut self) -> &mut Streaming<Bytes> {
        self.streaming.as_mut().expect("held until drop")
    }

    /// The next message: `Some`, or `None` once the call ended (any status).
    async fn message(&mut self) -> Option<Bytes> {
        let call = self.call.clone();
        let streaming = self.get();
        if call.cancel.is_cancelled() {
            streaming.cancel();
        }
        let next = match until_cancelled(&call.cancel, streaming.message()).await {
            Ok(next) => next,
            Err(_) => {
                streaming.cancel();
                streaming.message().await
            }
        };
        next.ok().flatten()
    }

    /// Reads to the end (discarding messages) and gives the status with the initial
    /// metadata.
    async fn finish(&mut self) -> CallStatus {
        while self.message().await.is_some() {}
        let streaming = self.get();
        let status = streaming
            .status()
            .cloned()
            .unwrap_or_else(|| Status::new(core_plexus::Code::Unknown, "the call has no status"));
        let initial = streaming.initial_metadata().await.ok();
        CallStatus::new(&status, initial)
    }

    async fn initial_metadata(&mut self) -> std::result::Result<core_plexus::Metadata, Status> {
        let call = self.call.clone();
        let streaming = self.get();
        match until_cancelled(&call.cancel, streaming.initial_metadata()).await {
            Ok(result) => result,
            Err(_) => {
                streaming.cancel();
                streaming.initial_metadata().await
            }
        }
    }
}

impl Drop for RecvGuard {
    fn drop(&mut self) {
        if let Some(mut streaming) = self.streaming.take() {
            let mut slot = self.call.slot();
            // A cancel that found the slot empty left the job to us.
            if self.call.cancel.is_cancelled() {
                streaming.cancel();
            }
            *slot = Some(streaming);
        }
    }
}

async fn send(
    cancel: &Cancel,
    sender: Sender<Bytes>,
    message: Bytes,
) -> std::result::Result<(), Status> {
    match until_cancelled(cancel, sender.send(message)).await {
        Ok(result) => result,
        Err(_) => Err(Status::cancelled("the call was cancelled")),
    }
}

async fn close(cancel: &Cancel, sender: Option<Sender<Bytes>>) -> std::result::Result<(), Status> {
    let Some(sender) = sender else {
        return Ok(());
    };
    match until_cancelled(cancel, sender.close()).await {
        Ok(result) => result,
        Err(_) => Err(Status::cancelled("the call was cancelled")),
    }
}

/// A send or close that failed because the call ended.
fn send_failed(status: &Status) -> Error {
    Error::new(
        PLEXUS_ERR_RPC,
        format!(
            "the call ended, the message was not sent ({}: {}); plexus_call_finish gives the \
             call's status",
            status.code().name(),
            status.message()
        ),
    )
}

/// Writes `status` to the optional output `out`.
///
/// # Safety
/// `out` is NULL or writable.
pub(crate) unsafe fn write_status(out: *mut *mut plexus_status, status: CallStatus) {
    if !out.is_null() {
        // SAFETY: per this function's contract.
        unsafe { out.write(status.into_raw()) };
    }
}

/// Opens a call: bidirectional (`first` None) or server streaming.
async fn open(
    channel: &SharedChannel,
    method: &str,
    first: Option<Bytes>,
    options: core_plexus::CallOptions,
) -> std::result::Result<Arc<Call>, Status> {
    match first {
        None => {
            let (sender, streaming) = channel.channel.bidi_streaming(method, options).await?;
            Ok(Call::new(Some(sender), streaming))
        }
        Some(request) => {
            let streaming = channel
                .channel
                .server_streaming(method, request, options)
                .await?;
            Ok(Call::new(None, streaming))
        }
    }
}

/// The blocking start shared by both kinds.
///
/// # Safety
/// As the exported functions that call it.
unsafe fn start_blocking(
    channel: *const plexus_channel,
    method: *const c_char,
    request: Option<*const plexus_bytes>,
    options: *const plexus_call_options,
    timeout_ms: i64,
    call: *mut *const plexus_call,
    status: *mut *mut plexus_status,
) -> Result<plexus_result> {
    // SAFETY: the caller's arguments are live or NULL (checked).
    let channel = unsafe { channel_ref(channel) }?;
    // SAFETY: as above.
    let method = unsafe { str_arg(method, "method") }?;
    let first = match request {
        // SAFETY: as above.
        Some(request) => Some(unsafe { bytes_ref(request) }?),
        None => None,
    };
    check_out(call, "call")?;
    // SAFETY: as above.
    let options = unsafe { call_options_arg(options) };
    match runtime::block_on(timeout_ms, open(channel, method, first, options)) {
        Ok(Ok(opened)) => {
            // SAFETY: call was checked and is writable.
            unsafe { write_out(call, "call", plexus_call::into_raw(opened)) }?;
            Ok(PLEXUS_OK)
        }
        Ok(Err(failed)) => {
            // SAFETY: status is NULL or writable.
            unsafe { write_status(status, CallStatus::new(&failed, None)) };
            Err(Error::rpc(&failed))
        }
        Err(why) => Err(interrupted(why, timeout_ms)),
    }
}

/// Starts a call whose requests are sent with `plexus_call_send` (client streaming or
/// bidirectional streaming) on `method` (NUL-terminated, `/package.Service/Method`), and
/// waits up to `timeout_ms` milliseconds (negative: no limit) for its stream to open.
/// `options` may be NULL. Blocks the calling thread. Thread-safe.
///
/// The call is owned by the caller: free it with `plexus_call_free`. `status` may be NULL;
/// otherwise it receives the status of a call that failed to start (caller owns it).
///
/// Returns PLEXUS_OK and writes `*call`; PLEXUS_ERR_RPC when the call failed (UNAVAILABLE,
/// DEADLINE_EXCEEDED, ...) and writes `*status`; PLEXUS_ERR_TIMEOUT (nothing started);
/// PLEXUS_ERR_NULL_ARGUMENT; PLEXUS_ERR_INVALID_UTF8; PLEXUS_ERR_SHUTDOWN.
///
/// # Safety
/// `channel` is live; `method` is a NUL-terminated string; `options` is NULL or live; `call`
/// is writable; `status` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn plexus_call_start(
    channel: *const plexus_channel,
    method: *const c_char,
    options: *const plexus_call_options,
    timeout_ms: i64,
    call: *mut *const plexus_call,
    status: *mut *mut plexus_status,
) -> plexus_result {
    boundary("plexus_call_start", || {
        // SAFETY: forwarded from the caller, with the same contract.
        unsafe { start_blocking(channel, method, None, options, timeout_ms, call, status) }
    })
}

/// Starts a server-streaming call: sends `request` (borrowed; the caller still owns and
/// frees it) and ends the request stream, then waits up to `timeout_ms` milliseconds
/// (negative: no limit) for the stream to open. Responses come from `plexus_call_recv`.
/// Otherwise as `plexus_call_start`.
///
/// Returns as `plexus_call_start`.
///
/// # Safety
/// As `plexus_call_start`; `request` is live.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn plexus_call_start_server_streaming(
    channel: *const plexus_channel,
    method: *const c_char,
    request: *const plexus_bytes,
    options: *const plexus_call_options,
    timeout_ms: i64,
    call: *mut *const plexus_call,
    status: *mut *mut plexus_status,
) -> plexus_result {
    boundary("plexus_call_start_server_streaming", || {
        // SAFETY: forwarded from the caller, with the same contract.
        unsafe {
            start_blocking(
                channel,
                method,
                Some(request),
                options,
                timeout_ms,
                call,
                status,
            )
        }
    })
}

/// Sends one request message (borrowed: the caller still owns and frees `message`; wrapped
/// memory is released once it went out), waiting up to `timeout_ms` milliseconds (negative:
/// no limit) for HTTP/2 flow control to take it. Blocks the calling thread. Sends from
/// several threads are allowed; each message goes out whole.
///
/// Returns PLEXUS_OK once the message is handed to the connection; PLEXUS_ERR_TIMEOUT, in
/// which case the call is cancelled (part of the message may have gone out);
/// PLEXUS_ERR_RPC when the call already ended (see `plexus_call_finish`);
/// PLEXUS_ERR_WRONG_STATE after `plexus_call_close_send` or on a server-streaming call;
/// PLEXUS_ERR_NULL_ARGUMENT; PLEXUS_ERR_SHUTDOWN.
///
/// # Safety
/// `call` and `message` are live.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn plexus_call_send(
    call: *const plexus_call,
    message: *const plexus_bytes,
    timeout_ms: i64,
) -> plexus_result {
    boundary("plexus_call_send", || {
        // SAFETY: the caller's arguments are live or NULL (checked).
        let call = unsafe { plexus_call::as_ref(call) }?;
        // SAFETY: as above.
        let message = unsafe { bytes_ref(message) }?;
        let sender = call.sender_for_send()?;
        match runtime::block_on(timeout_ms, send(&call.cancel, sender, message)) {
            Ok(Ok(())) => Ok(PLEXUS_OK),
            Ok(Err(status)) => Err(send_failed(&status)),
            Err(Interrupted::Timeout) => {
                call.cancel_call();
                Err(Error::new(
                    PLEXUS_ERR_TIMEOUT,
                    format!("timed out after {timeout_ms} ms; the call was cancelled"),
                ))
            }
            Err(why) => Err(interrupted(why, timeout_ms)),
        }
    })
}

/// Receives the next response message, waiting up to `timeout_ms` milliseconds (negative: no
/// limit). The message is owned by the caller (`plexus_bytes_free`) and read in place with
/// `plexus_bytes_data`, without a copy. Blocks the calling thread.
///
/// Returns PLEXUS_OK and writes `*message`; PLEXUS_END_OF_STREAM when the call ended (with
/// any status: `plexus_call_finish` says which); PLEXUS_ERR_TIMEOUT (nothing is lost: the
/// call goes on and the next receive continues); PLEXUS_ERR_BUSY while another receive-side
/// operation runs; PLEXUS_ERR_NULL_ARGUMENT; PLEXUS_ERR_SHUTDOWN.
///
/// # Safety
/// `call` is live; `message` is writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn plexus_call_recv(
    call: *const plexus_call,
    timeout_ms: i64,
    message: *mut *mut plexus_bytes,
) -> plexus_result {
    boundary("plexus_call_recv", || {
        // SAFETY: the caller's arguments are live or NULL (checked).
        let call = unsafe { plexus_call::clone_arc(call) }?;
        check_out(message, "message")?;
        let mut guard = call.take_recv()?;
        match runtime::block_on(timeout_ms, guard.message()) {
            Ok(Some(bytes)) => {
                // SAFETY: message was checked and is writable.
                unsafe { write_out(message, "message", plexus_bytes::into_raw(bytes)) }?;
                Ok(PLEXUS_OK)
            }
            Ok(None) => Ok(PLEXUS_END_OF_STREAM),
            Err(why) => Err(interrupted(why, timeout_ms)),
        }
    })
}

/// Ends the request stream (half-close) after the messages already sent, waiting up to
/// `timeout_ms` milliseconds (negative: no limit) for them to be handed to the connection.
/// Idempotent; a no-op on a server-streaming call. Blocks the calling thread.
///
/// Returns PLEXUS_OK; PLEXUS_ERR_TIMEOUT (the half-close still goes out once the earlier
/// messages did); PLEXUS_ERR_RPC when the call already ended; PLEXUS_ERR_NULL_ARGUMENT;
/// PLEXUS_ERR_SHUTDOWN.
///
/// # Safety
/// `call` is live.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn plexus_call_close_send(
    call: *const plexus_call,
    timeout_ms: i64,
) -> plexus_result {
    boundary("plexus_call_close_send", || {
        // SAFETY: the caller's argument is live or NULL (checked).
        let call = unsafe { plexus_call::as_ref(call) }?;
        let sender = call.sender_for_close();
        match runtime::block_on(timeout_ms, close(&call.cancel, sender)) {
            Ok(Ok(())) => Ok(PLEXUS_OK),
            Ok(Err(status)) => Err(send_failed(&status)),
            Err(why) => Err(interrupted(why, timeout_ms)),
        }
    })
}

/// Waits up to `timeout_ms` milliseconds (negative: no limit) for the response headers and
/// writes a copy of their metadata to `*metadata`, owned by the caller
/// (`plexus_metadata_free`). Blocks the calling thread.
///
/// Returns PLEXUS_OK; PLEXUS_ERR_RPC when the call failed before sending headers;
/// PLEXUS_ERR_TIMEOUT (the call goes on); PLEXUS_ERR_BUSY; PLEXUS_ERR_NULL_ARGUMENT;
/// PLEXUS_ERR_SHUTDOWN.
///
/// # Safety
/// `call` is live; `metadata` is writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn plexus_call_initial_metadata(
    call: *const plexus_call,
    timeout_ms: i64,
    metadata: *mut *mut plexus_metadata,
) -> plexus_result {
    boundary("plexus_call_initial_metadata", || {
        // SAFETY: the caller's arguments are live or NULL (checked).
        let call = unsafe { plexus_call::clone_arc(call) }?;
        check_out(metadata, "metadata")?;
        let mut guard = call.take_recv()?;
        match runtime::block_on(timeout_ms, guard.initial_metadata()) {
            Ok(Ok(md)) => {
                let md = plexus_metadata::into_raw(Metadata::from_core(md));
                // SAFETY: metadata was checked and is writable.
                unsafe { write_out(metadata, "metadata", md) }?;
                Ok(PLEXUS_OK)
            }
            Ok(Err(status)) => Err(Error::rpc(&status)),
            Err(why) => Err(interrupted(why, timeout_ms)),
        }
    })
}

/// Waits up to `timeout_ms` milliseconds (negative: no limit) for the call to end, discarding
/// response messages not yet received, and writes its status (code, message, details,
/// initial and trailing metadata) to `*status`, owned by the caller (`plexus_status_free`).
/// Blocks the calling thread. May be called again after a timeout.
///
/// Returns PLEXUS_OK when the status is OK; PLEXUS_ERR_RPC for any other status (also
/// written); PLEXUS_ERR_TIMEOUT (the call goes on); PLEXUS_ERR_BUSY;
/// PLEXUS_ERR_NULL_ARGUMENT; PLEXUS_ERR_SHUTDOWN.
///
/// # Safety
/// `call` is live; `status` is writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn plexus_call_finish(
    call: *const plexus_call,
    timeout_ms: i64,
    status: *mut *mut plexus_status,
) -> plexus_result {
    boundary("plexus_call_finish", || {
        // SAFETY: the caller's arguments are live or NULL (checked).
        let call = unsafe { plexus_call::clone_arc(call) }?;
        check_out(status, "status")?;
        let mut guard = call.take_recv()?;
        match runtime::block_on(timeout_ms, guard.finish()) {
            Ok(done) => status_result(done, status),
            Err(why) => Err(interrupted(why, timeout_ms)),
        }
    })
}

/// Writes a final status out and maps it to OK or RPC.
fn status_result(done: CallStatus, out: *mut *mut plexus_status) -> Result<plexus_result> {
    let result = done.result();
    // SAFETY: out was checked by the caller and is writable.
    unsafe { write_out(out, "status", done.into_raw()) }?;
    result.map(|()| PLEXUS_OK)
}

/// Cancels the call: sends RST_STREAM(CANCEL) unless it already ended; operations waiting
/// on it (blocking or queued) finish at once, and `plexus_call_finish` gives CANCELLED.
/// Idempotent; thread-safe; never blocks.
///
/// Returns PLEXUS_OK; PLEXUS_ERR_NULL_ARGUMENT.
///
/// # Safety
/// `call` is live.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn plexus_call_cancel(call: *const plexus_call) -> plexus_result {
    boundary("plexus_call_cancel", || {
        // SAFETY: the caller's argument is live or NULL (checked).
        let call = unsafe { plexus_call::as_ref(call) }?;
        call.cancel_call();
        Ok(PLEXUS_OK)
    })
}

/// Releases the caller's handle. A call that has not ended is cancelled; queued operations
/// on it still deliver their events. NULL is a no-op. Must not be called while another
/// thread uses this handle.
///
/// # Safety
/// `call` is NULL or live, not used again.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn plexus_call_free(call: *const plexus_call) {
    boundary("plexus_call_free", || {
        // SAFETY: the caller gives up a live handle or NULL.
        if let Some(call) = unsafe { plexus_call::take(call) } {
            call.cancel_call();
        }
        Ok(())
    })
}

// ---- asynchronous versions ----

/// Starts an asynchronous start of either kind.
///
/// # Safety
/// As the exported functions that call it.
unsafe fn start_async(
    channel: *const plexus_channel,
    method: *const c_char,
    request: Option<*const plexus_bytes>,
    options: *const plexus_call_options,
    cq: *const plexus_cq,
    tag: *mut c_void,
) -> Result<plexus_result> {
    // SAFETY: the caller's arguments are live or NULL (checked).
    let channel = unsafe { channel_arg(channel) }?;
    // SAFETY: as above.
    let method = unsafe { str_arg(method, "method") }?.to_string();
    let first = match request {
        // SAFETY: as above.
        Some(request) => Some(unsafe { bytes_ref(request) }?),
        None => None,
    };
    // SAFETY: as above.
    let options = unsafe { call_options_arg(options) };
    let rt = runtime::get()?;
    // SAFETY: as above.
    let completion = unsafe { begin(cq, tag, plexus_op::PLEXUS_OP_START) }?;
    rt.spawn(async move {
        match open(&channel, &method, first, options).await {
            Ok(call) => completion.complete(
                PLEXUS_OK,
                Outcome {
                    call: Some(call),
                    ..Outcome::default()
                },
            ),
            Err(status) => completion.complete(
                PLEXUS_ERR_RPC,
                Outcome {
                    status: Some(CallStatus::new(&status, None)),
                    ..Outcome::default()
                },
            ),
        }
    });
    Ok(PLEXUS_OK)
}

/// Asynchronous `plexus_call_start`: returns at once; a PLEXUS_OP_START event with `tag`
/// arrives on `cq` when the stream opened (`event.call`, owned by the caller) or the call
/// failed (`event.result` PLEXUS_ERR_RPC, `event.status`). Thread-safe.
///
/// Returns PLEXUS_OK when the operation started (exactly one event will follow); otherwise
/// no event follows: PLEXUS_ERR_NULL_ARGUMENT; PLEXUS_ERR_INVALID_UTF8; PLEXUS_ERR_SHUTDOWN
/// (runtime or queue shut down).
///
/// # Safety
/// `channel` and `cq` are live; `method` is a NUL-terminated string; `options` is NULL or
/// live. `tag` is passed back untouched.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn plexus_call_start_async(
    channel: *const plexus_channel,
    method: *const c_char,
    options: *const plexus_call_options,
    cq: *const plexus_cq,
    tag: *mut c_void,
) -> plexus_result {
    boundary("plexus_call_start_async", || {
        // SAFETY: forwarded from the caller, with the same contract.
        unsafe { start_async(channel, method, None, options, cq, tag) }
    })
}

/// Asynchronous `plexus_call_start_server_streaming` (`request` is borrowed: the caller may
/// free it at once); reports like `plexus_call_start_async`.
///
/// Returns as `plexus_call_start_async`.
///
/// # Safety
/// As `plexus_call_start_async`; `request` is live.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn plexus_call_start_server_streaming_async(
    channel: *const plexus_channel,
    method: *const c_char,
    request: *const plexus_bytes,
    options: *const plexus_call_options,
    cq: *const plexus_cq,
    tag: *mut c_void,
) -> plexus_result {
    boundary("plexus_call_start_server_streaming_async", || {
        // SAFETY: forwarded from the caller, with the same contract.
        unsafe { start_async(channel, method, Some(request), options, cq, tag) }
    })
}

/// Asynchronous `plexus_call_send` (`message` is borrowed: the caller may free it at once):
/// a PLEXUS_OP_SEND event follows, with PLEXUS_OK, or PLEXUS_ERR_RPC and a `status` saying
/// why the message was not sent. Bounded by the call's deadline, not a timeout.
///
/// Returns PLEXUS_OK when the operation started (one event will follow); otherwise no event
/// follows: PLEXUS_ERR_WRONG_STATE after close_send or on a server-streaming call;
/// PLEXUS_ERR_NULL_ARGUMENT; PLEXUS_ERR_SHUTDOWN.
///
/// # Safety
/// `call`, `message` and `cq` are live.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn plexus_call_send_async(
    call: *const plexus_call,
    message: *const plexus_bytes,
    cq: *const plexus_cq,
    tag: *mut c_void,
) -> plexus_result {
    boundary("plexus_call_send_async", || {
        // SAFETY: the caller's arguments are live or NULL (checked).
        let call = unsafe { plexus_call::clone_arc(call) }?;
        // SAFETY: as above.
        let message = unsafe { bytes_ref(message) }?;
        let sender = call.sender_for_send()?;
        let rt = runtime::get()?;
        // SAFETY: as above.
        let completion = unsafe { begin(cq, tag, plexus_op::PLEXUS_OP_SEND) }?;
        rt.spawn(async move {
            match send(&call.cancel, sender, message).await {
                Ok(()) => completion.complete(PLEXUS_OK, Outcome::default()),
                Err(status) => completion.complete(PLEXUS_ERR_RPC, failure(&status)),
            }
        });
        Ok(PLEXUS_OK)
    })
}

/// A failed operation's outcome: its status, for the text.
fn failure(status: &Status) -> Outcome {
    Outcome {
        status: Some(CallStatus::new(status, None)),
        ..Outcome::default()
    }
}

/// Asynchronous `plexus_call_recv`: a PLEXUS_OP_RECV event follows with PLEXUS_OK and
/// `event.message` (owned by the caller), or PLEXUS_END_OF_STREAM.
///
/// Returns PLEXUS_OK when the operation started (one event will follow); otherwise no event
/// follows: PLEXUS_ERR_BUSY while another receive-side operation runs;
/// PLEXUS_ERR_NULL_ARGUMENT; PLEXUS_ERR_SHUTDOWN.
///
/// # Safety
/// `call` and `cq` are live.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn plexus_call_recv_async(
    call: *const plexus_call,
    cq: *const plexus_cq,
    tag: *mut c_void,
) -> plexus_result {
    boundary("plexus_call_recv_async", || {
        // SAFETY: the caller's arguments are live or NULL (checked).
        let call = unsafe { plexus_call::clone_arc(call) }?;
        let rt = runtime::get()?;
        let mut guard = call.take_recv()?;
        // SAFETY: as above.
        let completion = unsafe { begin(cq, tag, plexus_op::PLEXUS_OP_RECV) }?;
        rt.spawn(async move {
            let next = guard.message().await;
            // Give the response side back before the event can be seen.
            drop(guard);
            match next {
                Some(message) => completion.complete(
                    PLEXUS_OK,
                    Outcome {
                        message: Some(message),
                        ..Outcome::default()
                    },
                ),
                None => completion.complete(PLEXUS_END_OF_STREAM, Outcome::default()),
            }
        });
        Ok(PLEXUS_OK)
    })
}

/// Asynchronous `plexus_call_close_send`: a PLEXUS_OP_CLOSE_SEND event follows with
/// PLEXUS_OK, or PLEXUS_ERR_RPC and a `status` when the call already ended.
///
/// Returns PLEXUS_OK when the operation started (one event will follow); otherwise no event
/// follows: PLEXUS_ERR_NULL_ARGUMENT; PLEXUS_ERR_SHUTDOWN.
///
/// # Safety
/// `call` and `cq` are live.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn plexus_call_close_send_async(
    call: *const plexus_call,
    cq: *const plexus_cq,
    tag: *mut c_void,
) -> plexus_result {
    boundary("plexus_call_close_send_async", || {
        // SAFETY: the caller's arguments are live or NULL (checked).
        let call = unsafe { plexus_call::clone_arc(call) }?;
        let rt = runtime::get()?;
        // SAFETY: as above.
        let completion = unsafe { begin(cq, tag, plexus_op::PLEXUS_OP_CLOSE_SEND) }?;
        let sender = call.sender_for_close();
        rt.spawn(async move {
            match close(&call.cancel, sender).await {
                Ok(()) => completion.complete(PLEXUS_OK, Outcome::default()),
                Err(status) => completion.complete(PLEXUS_ERR_RPC, failure(&status)),
            }
        });
        Ok(PLEXUS_OK)
    })
}

/// Asynchronous `plexus_call_initial_metadata`: a PLEXUS_OP_INITIAL_METADATA event follows
/// with PLEXUS_OK and `event.metadata` (owned by the caller), or PLEXUS_ERR_RPC and a
/// `status` when the call failed before sending headers.
///
/// Returns PLEXUS_OK when the operation started (one event will follow); otherwise no event
/// follows: PLEXUS_ERR_BUSY; PLEXUS_ERR_NULL_ARGUMENT; PLEXUS_ERR_SHUTDOWN.
///
/// # Safety
/// `call` and `cq` are live.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn plexus_call_initial_metadata_async(
    call: *const plexus_call,
    cq: *const plexus_cq,
    tag: *mut c_void,
) -> plexus_result {
    boundary("plexus_call_initial_metadata_async", || {
        // SAFETY: the caller's arguments are live or NULL (checked).
        let call = unsafe { plexus_call::clone_arc(call) }?;
        let rt = runtime::get()?;
        let mut guard = call.take_recv()?;
        // SAFETY: as above.
        let completion = unsafe { begin(cq, tag, plexus_op::PLEXUS_OP_INITIAL_METADATA) }?;
        rt.spawn(async move {
            let headers = guard.initial_metadata().await;
            drop(guard);
            match headers {
                Ok(md) => completion.complete(
                    PLEXUS_OK,
                    Outcome {
                        metadata: Some(Metadata::from_core(md)),
                        ..Outcome::default()
                    },
                ),
                Err(status) => completion.complete(PLEXUS_ERR_RPC, failure(&status)),
            }
        });
        Ok(PLEXUS_OK)
    })
}

/// Asynchronous `plexus_call_finish`: a PLEXUS_OP_FINISH event follows with `event.status`
/// (owned by the caller) and PLEXUS_OK or PLEXUS_ERR_RPC as the status is OK or not.
///
/// Returns PLEXUS_OK when the operation started (one event will follow); otherwise no event
/// follows: PLEXUS_ERR_BUSY; PLEXUS_ERR_NULL_ARGUMENT; PLEXUS_ERR_SHUTDOWN.
///
/// # Safety
/// `call` and `cq` are live.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn plexus_call_finish_async(
    call: *const plexus_call,
    cq: *const plexus_cq,
    tag: *mut c_void,
) -> plexus_result {
    boundary("plexus_call_finish_async", || {
        // SAFETY: the caller's arguments are live or NULL (checked).
        let call = unsafe { plexus_call::clone_arc(call) }?;
        let rt = runtime::get()?;
        let mut guard = call.take_recv()?;
        // SAFETY: as above.
        let completion = unsafe { begin(cq, tag, plexus_op::PLEXUS_OP_FINISH) }?;
        rt.spawn(async move {
            let done = guard.finish().await;
            drop(guard);
            let result = match done.result() {
                Ok(()) => PLEXUS_OK,
                Err(_) => PLEXUS_ERR_RPC,
            };
            completion.complete(
                result,
                Outcome {
                    status: Some(done),
                    ..Outcome::default()
                },
            );
        });
        Ok(PLEXUS_OK)
    })
}
