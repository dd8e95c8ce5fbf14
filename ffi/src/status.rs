//! `plexus_status`: how a call ended: gRPC code, message, details, and its metadata.

use std::ffi::{CString, c_char};

use bytes::Bytes;
use core_plexus::{Code, Status};

use crate::boundary::boundary;
use crate::error::{PLEXUS_OK, plexus_result};
use crate::handle::{BoxHandle, check_out, write_out};
use crate::metadata::{Metadata, plexus_metadata};

/// The outcome of a call: gRPC status code, message, binary details, and the response's
/// initial and trailing metadata. Owned by the caller; free with `plexus_status_free`.
/// Immutable: reading from several threads at once is safe.
pub struct plexus_status {
    _private: [u8; 0],
}

impl BoxHandle for plexus_status {
    type Rust = CallStatus;
    const NAME: &'static str = "status";
}

/// What a `plexus_status` holds.
pub(crate) struct CallStatus {
    code: Code,
    message: CString,
    details: Bytes,
    initial: Metadata,
    trailers: Metadata,
}

impl CallStatus {
    /// The status of a finished call, with the initial metadata when it was received.
    pub(crate) fn new(status: &Status, initial: Option<core_plexus::Metadata>) -> CallStatus {
        CallStatus {
            code: status.code(),
            message: CString::new(status.message().replace('\0', " ")).unwrap_or_default(),
            details: status.details().clone(),
            initial: Metadata::from_core(initial.unwrap_or_default()),
            trailers: Metadata::from_core(status.metadata().clone()),
        }
    }

    /// OK, with the response's initial and trailing metadata.
    pub(crate) fn ok(
        initial: core_plexus::Metadata,
        trailers: core_plexus::Metadata,
    ) -> CallStatus {
        CallStatus {
            code: Code::Ok,
            message: CString::default(),
            details: Bytes::new(),
            initial: Metadata::from_core(initial),
            trailers: Metadata::from_core(trailers),
        }
    }

    /// OK for an OK status, else the RPC error with its code name and message.
    pub(crate) fn result(&self) -> crate::error::Result<()> {
        if self.code == Code::Ok {
            return Ok(());
        }
        Err(crate::error::Error::new(
            crate::error::PLEXUS_ERR_RPC,
            format!("{}: {}", self.code.name(), self.message.to_string_lossy()),
        ))
    }

    /// Hands the status to C.
    pub(crate) fn into_raw(self) -> *mut plexus_status {
        plexus_status::into_raw(self)
    }
}

/// Writes the gRPC status code (0 OK to 16 UNAUTHENTICATED, as in the gRPC spec) to `*code`.
/// Thread-safe.
///
/// Returns PLEXUS_OK; PLEXUS_ERR_NULL_ARGUMENT for a NULL argument.
///
/// # Safety
/// `status` is live; `code` is writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn plexus_status_code(
    status: *const plexus_status,
    code: *mut i32,
) -> plexus_result {
    boundary("plexus_status_code", || {
        // SAFETY: the caller passes a live object or NULL (checked).
        let s = unsafe { plexus_status::as_ref(status) }?;
        // SAFETY: code is NULL (checked) or writable.
        unsafe { write_out(code, "code", s.code.as_i32()) }?;
        Ok(PLEXUS_OK)
    })
}

/// Writes the status message (UTF-8, NUL-terminated, empty for OK) to `*message` and its
/// length without the NUL to `*len`. Borrowed: valid until the status is freed. Thread-safe.
///
/// Returns PLEXUS_OK; PLEXUS_ERR_NULL_ARGUMENT for a NULL argument (`len` may be NULL).
///
/// # Safety
/// `status` is live; `message` is writable; `len` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn plexus_status_message(
    status: *const plexus_status,
    message: *mut *const c_char,
    len: *mut usize,
) -> plexus_result {
    boundary("plexus_status_message", || {
        // SAFETY: the caller passes a live object or NULL (checked).
        let s = unsafe { plexus_status::as_ref(status) }?;
        check_out(message, "message")?;
        // SAFETY: message was checked; len is NULL (skipped) or writable.
        unsafe {
            write_out(message, "message", s.message.as_ptr())?;
            if !len.is_null() {
                write_out(len, "len", s.message.as_bytes().len())?;
            }
        }
        Ok(PLEXUS_OK)
    })
}

/// Writes the binary status details (`grpc-status-details-bin`, usually a serialized
/// `google.rpc.Status`; empty when absent) to `*details` and `*len`. Borrowed: valid until
/// the status is freed; the pointer may be NULL when the length is 0. Thread-safe.
///
/// Returns PLEXUS_OK; PLEXUS_ERR_NULL_ARGUMENT for a NULL argument.
///
/// # Safety
/// `status` is live; `details` and `len` are writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn plexus_status_details(
    status: *const plexus_status,
    details: *mut *const u8,
    len: *mut usize,
) -> plexus_result {
    boundary("plexus_status_details", || {
        // SAFETY: the caller passes a live object or NULL (checked).
        let s = unsafe { plexus_status::as_ref(status) }?;
        check_out(details, "details")?;
        check_out(len, "len")?;
        // SAFETY: both outputs were checked.
        unsafe {
            write_out(details, "details", s.details.as_ptr())?;
            write_out(len, "len", s.details.len())?;
        }
        Ok(PLEXUS_OK)
    })
}

/// Writes the trailing metadata (trailers) to `*metadata`. Borrowed: valid until the status
/// is freed; never free it. Thread-safe.
///
/// Returns PLEXUS_OK; PLEXUS_ERR_NULL_ARGUMENT for a NULL argument.
///
/// # Safety
/// `status` is live; `metadata` is writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn plexus_status_trailing_metadata(
    status: *const plexus_status,
    metadata: *mut *const plexus_metadata,
) -> plexus_result {
    boundary("plexus_status_trailing_metadata", || {
        // SAFETY: the caller passes a live object or NULL (checked).
        let s = unsafe { plexus_status::as_ref(status) }?;
        let md = plexus_metadata::borrow_raw(&s.trailers);
        // SAFETY: metadata is NULL (checked) or writable.
        unsafe { write_out(metadata, "metadata", md) }?;
        Ok(PLEXUS_OK)
    })
}

/// Writes the initial metadata (response headers; empty when the call failed before they
/// came) to `*metadata`. Borrowed: valid until the status is freed; never free it.
/// Thread-safe.
///
/// Returns PLEXUS_OK; PLEXUS_ERR_NULL_ARGUMENT for a NULL argument.
///
/// # Safety
/// `status` is live; `metadata` is writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn plexus_status_initial_metadata(
    status: *const plexus_status,
    metadata: *mut *const plexus_metadata,
) -> plexus_result {
    boundary("plexus_status_initial_metadata", || {
        // SAFETY: the caller passes a live object or NULL (checked).
        let s = unsafe { plexus_status::as_ref(status) }?;
        let md = plexus_metadata::borrow_raw(&s.initial);
        // SAFETY: metadata is NULL (checked) or writable.
        unsafe { write_out(metadata, "metadata", md) }?;
        Ok(PLEXUS_OK)
    })
}

/// Frees a status the caller owns (with its borrowed metadata). NULL is a no-op.
///
/// # Safety
/// `status` is NULL or live, not used again.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn plexus_status_free(status: *mut plexus_status) {
    boundary("plexus_status_free", || {
        // SAFETY: the caller gives up a live object or NULL.
        drop(unsafe { plexus_status::take(status) });
        Ok(())
    })
}

/// Returns the gRPC name of a status code, e.g. `"DEADLINE_EXCEEDED"` for 4 (`"UNKNOWN"` for
/// a value outside 0..16). Static: never free it. Thread-safe; never fails.
#[unsafe(no_mangle)]
pub extern "C" fn plexus_code_name(code: i32) -> *const c_char {
    boundary("plexus_code_name", || {
        let name: &'static [u8] = match Code::from_i32(code) {
            Code::Ok => b"OK\0",
            Code::Cancelled => b"CANCELLED\0",
            Code::Unknown => b"UNKNOWN\0",
            Code::InvalidArgument => b"INVALID_ARGUMENT\0",
            Code::DeadlineExceeded => b"DEADLINE_EXCEEDED\0",
            Code::NotFound => b"NOT_FOUND\0",
            Code::AlreadyExists => b"ALREADY_EXISTS\0",
            Code::PermissionDenied => b"PERMISSION_DENIED\0",
            Code::ResourceExhausted => b"RESOURCE_EXHAUSTED\0",
            Code::FailedPrecondition => b"FAILED_PRECONDITION\0",
            Code::Aborted => b"ABORTED\0",
            Code::OutOfRange => b"OUT_OF_RANGE\0",
            Code::Unimplemented => b"UNIMPLEMENTED\0",
            Code::Internal => b"INTERNAL\0",
            Code::Unavailable => b"UNAVAILABLE\0",
            Code::DataLoss => b"DATA_LOSS\0",
            Code::Unauthenticated => b"UNAUTHENTICATED\0",
        };
        Ok(name.as_ptr().cast())
    })
}
