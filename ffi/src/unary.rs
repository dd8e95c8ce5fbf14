//! Unary calls: one request, one response, blocking or through a completion queue.

use std::ffi::{c_char, c_void};

use crate::boundary::boundary;
use crate::bytes::{bytes_ref, plexus_bytes};
use crate::call::{Call, plexus_call, write_status};
use crate::channel::{channel_arg, channel_ref, interrupted, plexus_channel};
use crate::cq::{Outcome, begin, plexus_cq, plexus_op};
use crate::error::{Error, PLEXUS_ERR_RPC, PLEXUS_OK, plexus_result};
use crate::handle::{ArcHandle, BoxHandle, check_out, str_arg, write_out};
use crate::options::{call_options_arg, plexus_call_options};
use crate::runtime::{self, until_cancelled};
use crate::status::{CallStatus, plexus_status};

/// Makes a unary call on `method` (NUL-terminated, `/package.Service/Method`) with `request`
/// (borrowed: the caller still owns and frees it), waiting up to `timeout_ms` milliseconds
/// (negative: no limit; the call's deadline is set with `plexus_call_options_set_timeout_ms`
/// and also sent to the server). `options` may be NULL. Blocks the calling thread, which
/// drives the call itself. Thread-safe: any number of threads may call on one channel.
///
/// `*response` receives the response message, owned by the caller (`plexus_bytes_free`).
/// `status` may be NULL; otherwise `*status` receives the call's status with the initial and
/// trailing metadata, owned by the caller (`plexus_status_free`), whenever the call ran
/// (PLEXUS_OK or PLEXUS_ERR_RPC).
///
/// Returns PLEXUS_OK; PLEXUS_ERR_RPC when the call ended with another status (the text gives
/// its code and message); PLEXUS_ERR_TIMEOUT (the call is cancelled);
/// PLEXUS_ERR_NULL_ARGUMENT; PLEXUS_ERR_INVALID_UTF8; PLEXUS_ERR_SHUTDOWN.
///
/// # Safety
/// `channel` and `request` are live; `method` is a NUL-terminated string; `options` is NULL
/// or live; `response` is writable; `status` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn plexus_unary(
    channel: *const plexus_channel,
    method: *const c_char,
    request: *const plexus_bytes,
    options: *const plexus_call_options,
    timeout_ms: i64,
    response: *mut *mut plexus_bytes,
    status: *mut *mut plexus_status,
) -> plexus_result {
    boundary("plexus_unary", || {
        // SAFETY: the caller's arguments are live or NULL (checked).
        let channel = unsafe { channel_ref(channel) }?;
        // SAFETY: as above.
        let method = unsafe { str_arg(method, "method") }?;
        // SAFETY: as above.
        let request = unsafe { bytes_ref(request) }?;
        check_out(response, "response")?;
        // SAFETY: as above.
        let options = unsafe { call_options_arg(options) };
        let call = channel.channel.unary(method, request, options);
        match runtime::block_on(timeout_ms, call) {
            Ok(Ok(reply)) => {
                let (initial, message, trailers) = reply.into_parts();
                // SAFETY: response was checked; status is NULL or writable.
                unsafe {
                    write_out(response, "response", plexus_bytes::into_raw(message))?;
                    if !status.is_null() {
                        write_status(status, CallStatus::ok(initial, trailers));
                    }
                }
                Ok(PLEXUS_OK)
            }
            Ok(Err(failed)) => {
                // SAFETY: status is NULL or writable.
                unsafe { write_status(status, CallStatus::new(&failed, None)) };
                Err(Error::rpc(&failed))
            }
            Err(why) => Err(interrupted(why, timeout_ms)),
        }
    })
}

/// Asynchronous `plexus_unary`: returns at once; a PLEXUS_OP_UNARY event with `tag` arrives
/// on `cq` with `event.status` (always) and, on PLEXUS_OK, `event.message`; both are owned by
/// the caller. The request is borrowed: the caller may free it at once. Bounded by the
/// call's deadline (`options`). Thread-safe.
///
/// Returns PLEXUS_OK when the call started (exactly one event will follow); otherwise no
/// event follows: PLEXUS_ERR_NULL_ARGUMENT; PLEXUS_ERR_INVALID_UTF8; PLEXUS_ERR_SHUTDOWN
/// (runtime or queue shut down).
///
/// # Safety
/// `channel`, `request` and `cq` are live; `method` is a NUL-terminated string; `options` is
/// NULL or live. `tag` is passed back untouched.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn plexus_unary_async(
    channel: *const plexus_channel,
    method: *const c_char,
    request: *const plexus_bytes,
    options: *const plexus_call_options,
    cq: *const plexus_cq,
    tag: *mut c_void,
) -> plexus_result {
    boundary("plexus_unary_async", || {
        // SAFETY: the caller's arguments are live or NULL (checked).
        let channel = unsafe { channel_arg(channel) }?;
        // SAFETY: as above.
        let method = unsafe { str_arg(method, "method") }?.to_string();
        // SAFETY: as above.
        let request = unsafe { bytes_ref(request) }?;
        // SAFETY: as above.
        let options = unsafe { call_options_arg(options) };
        let rt = runtime::get()?;
        // SAFETY: as above.
        let completion = unsafe { begin(cq, tag, plexus_op::PLEXUS_OP_UNARY) }?;
        // The call's future is large (over a kilobyte): built inside the task and boxed
        // there, the spawned future stays small, so the caller's thread does not copy the big
        // one through every layer of the spawn (that copying was a third of its time).
        rt.spawn(async move {
            let call = Box::pin(channel.channel.unary(&method, request, options));
            match call.await {
                Ok(reply) => {
                    let (initial, message, trailers) = reply.into_parts();
                    completion.complete(
                        PLEXUS_OK,
                        Outcome {
                            message: Some(message),
                            status: Some(CallStatus::ok(initial, trailers)),
                            ..Outcome::default()
                        },
                    );
                }
                Err(failed) => completion.complete(
                    PLEXUS_ERR_RPC,
                    Outcome {
                        status: Some(CallStatus::new(&failed, None)),
                        ..Outcome::default()
                    },
                ),
            }
        });
        Ok(PLEXUS_OK)
    })
}

/// `plexus_unary_async` that can be cancelled: also writes to `*call` a handle on the call,
/// owned by the caller (`plexus_call_free`). `plexus_call_cancel(*call)` (or freeing the
/// handle before the event arrived) cancels the call: RST_STREAM(CANCEL) goes out and the
/// PLEXUS_OP_UNARY event arrives at once with PLEXUS_ERR_RPC and a CANCELLED status. The
/// handle serves only to cancel and free: sends on it return PLEXUS_ERR_WRONG_STATE,
/// receive-side operations PLEXUS_ERR_BUSY. Otherwise as `plexus_unary_async`.
///
/// Returns PLEXUS_OK when the call started (exactly one event will follow) and writes
/// `*call`; otherwise no event follows and `*call` is not written: as `plexus_unary_async`,
/// and PLEXUS_ERR_NULL_ARGUMENT if `call` is NULL.
///
/// # Safety
/// As `plexus_unary_async`; `call` is writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn plexus_unary_call_async(
    channel: *const plexus_channel,
    method: *const c_char,
    request: *const plexus_bytes,
    options: *const plexus_call_options,
    cq: *const plexus_cq,
    tag: *mut c_void,
    call: *mut *const plexus_call,
) -> plexus_result {
    boundary("plexus_unary_call_async", || {
        // SAFETY: the caller's arguments are live or NULL (checked).
        let channel = unsafe { channel_arg(channel) }?;
        // SAFETY: as above.
        let method = unsafe { str_arg(method, "method") }?.to_string();
        // SAFETY: as above.
        let request = unsafe { bytes_ref(request) }?;
        check_out(call, "call")?;
        // SAFETY: as above.
        let options = unsafe { call_options_arg(options) };
        let rt = runtime::get()?;
        // SAFETY: as above.
        let completion = unsafe { begin(cq, tag, plexus_op::PLEXUS_OP_UNARY) }?;
        let handle = Call::unary_handle();
        let token = handle.clone();
        // SAFETY: call was checked and is writable.
        unsafe { write_out(call, "call", plexus_call::into_raw(handle)) }?;
        rt.spawn(async move {
            let unary = channel.channel.unary(&method, request, options);
            // Cancelled: the call future is dropped here, which resets its stream.
            let outcome = until_cancelled(token.cancel_flag(), unary)
                .await
                .unwrap_or_else(|_| Err(core_plexus::Status::cancelled("the call was cancelled")));
            match outcome {
                Ok(reply) => {
                    let (initial, message, trailers) = reply.into_parts();
                    completion.complete(
                        PLEXUS_OK,
                        Outcome {
                            message: Some(message),
                            status: Some(CallStatus::ok(initial, trailers)),
                            ..Outcome::default()
                        },
                    );
                }
                Err(failed) => completion.complete(
                    PLEXUS_ERR_RPC,
                    Outcome {
                        status: Some(CallStatus::new(&failed, None)),
                        ..Outcome::default()
                    },
                ),
            }
        });
        Ok(PLEXUS_OK)
    })
}
