//! Result codes of the C ABI, the crate's error type, and the thread-local last error.

use std::cell::RefCell;
use std::ffi::{CString, c_char};

use core_plexus::{Code, Status};

/// The result of every plexus function that returns one. The values are stable: they never
/// change meaning and are never renumbered; new codes get new numbers. Read them as integers.
#[repr(i32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(non_camel_case_types, reason = "C names")]
pub enum plexus_result {
    /// Success.
    PLEXUS_OK = 0,
    /// A required pointer argument was NULL.
    PLEXUS_ERR_NULL_ARGUMENT = 1,
    /// An argument was out of range or malformed (a bad target, key, size or option value).
    PLEXUS_ERR_INVALID_ARGUMENT = 2,
    /// A string argument was not valid UTF-8.
    PLEXUS_ERR_INVALID_UTF8 = 3,
    /// The call ended with a gRPC status other than OK; the status object, where the function
    /// has one, says which, and `plexus_last_error()` gives its code name and message.
    PLEXUS_ERR_RPC = 4,
    /// The function's timeout passed before the operation finished; the function's
    /// documentation says what state the call is left in.
    PLEXUS_ERR_TIMEOUT = 5,
    /// No more response messages: the call ended. `plexus_call_finish` gives its status.
    PLEXUS_END_OF_STREAM = 6,
    /// The object is not in a state that allows the operation (a send after
    /// `plexus_call_close_send`, `plexus_init` after the runtime started, ...).
    PLEXUS_ERR_WRONG_STATE = 7,
    /// Another operation of the same kind is already in progress on this call (one receive
    /// at a time).
    PLEXUS_ERR_BUSY = 8,
    /// The runtime (`plexus_shutdown`) or the completion queue (`plexus_cq_shutdown`) was shut
    /// down.
    PLEXUS_ERR_SHUTDOWN = 9,
    /// This process is a fork of a process that had started the plexus runtime; this copy of
    /// the library cannot be used here (load a fresh copy of it, or use it before forking
    /// only in the child).
    PLEXUS_ERR_FORKED = 10,
    /// A bug in plexus: a panic was caught at the boundary. The text says where.
    PLEXUS_ERR_PANIC = 11,
    /// The operating system refused a resource (a thread, an eventfd).
    PLEXUS_ERR_SYSTEM = 12,
}

pub(crate) use plexus_result::*;

/// An error on its way to C: a code and the text `plexus_last_error` will return.
#[derive(Debug)]
pub(crate) struct Error {
    pub(crate) code: plexus_result,
    pub(crate) message: String,
}

impl Error {
    pub(crate) fn new(code: plexus_result, message: impl Into<String>) -> Error {
        Error {
            code,
            message: message.into(),
        }
    }

    /// A NULL where a pointer was required; `what` names the argument.
    pub(crate) fn null(what: &str) -> Error {
        Error::new(PLEXUS_ERR_NULL_ARGUMENT, format!("{what} must not be NULL"))
    }

    pub(crate) fn invalid(message: impl Into<String>) -> Error {
        Error::new(PLEXUS_ERR_INVALID_ARGUMENT, message)
    }

    pub(crate) fn wrong_state(message: impl Into<String>) -> Error {
        Error::new(PLEXUS_ERR_WRONG_STATE, message)
    }

    /// A call that ended with a non-OK gRPC status.
    pub(crate) fn rpc(status: &Status) -> Error {
        Error::new(
            PLEXUS_ERR_RPC,
            format!("{}: {}", status.code().name(), status.message()),
        )
    }

    /// An invalid option or setting that core rejected with INVALID_ARGUMENT (or any code).
    pub(crate) fn from_setting(status: &Status) -> Error {
        let code = match status.code() {
            Code::InvalidArgument | Code::Internal => PLEXUS_ERR_INVALID_ARGUMENT,
            _ => PLEXUS_ERR_RPC,
        };
        Error::new(code, status.message().to_string())
    }
}

pub(crate) type Result<T, E = Error> = std::result::Result<T, E>;

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

/// Records `message` as this thread's last error; interior NULs become spaces.
pub(crate) fn set_last_error(function: &str, message: &str) {
    let text = format!("{function}: {message}").replace('\0', " ");
    let text = CString::new(text).unwrap_or_default();
    // A thread that is exiting has no thread-locals left; nothing to record then.
    let _ = LAST_ERROR.try_with(|cell| *cell.borrow_mut() = text);
}

/// This thread's last error text; valid until the next failing call on this thread.
pub(crate) fn last_error_ptr() -> *const c_char {
    static EMPTY: &[u8; 1] = b"\0";
    LAST_ERROR
        .try_with(|cell| cell.borrow().as_ptr())
        .unwrap_or(EMPTY.as_ptr().cast())
}

/// The stable name of a result code, e.g. `"PLEXUS_ERR_TIMEOUT"`.
pub(crate) fn result_name(code: i32) -> &'static [u8] {
    match code {
        0 => b"PLEXUS_OK\0",
        1 => b"PLEXUS_ERR_NULL_ARGUMENT\0",
        2 => b"PLEXUS_ERR_INVALID_ARGUMENT\0",
        3 => b"PLEXUS_ERR_INVALID_UTF8\0",
        4 => b"PLEXUS_ERR_RPC\0",
        5 => b"PLEXUS_ERR_TIMEOUT\0",
        6 => b"PLEXUS_END_OF_STREAM\0",
        7 => b"PLEXUS_ERR_WRONG_STATE\0",
        8 => b"PLEXUS_ERR_BUSY\0",
        9 => b"PLEXUS_ERR_SHUTDOWN\0",
        10 => b"PLEXUS_ERR_FORKED\0",
        11 => b"PLEXUS_ERR_PANIC\0",
        12 => b"PLEXUS_ERR_SYSTEM\0",
        _ => b"PLEXUS_UNKNOWN_RESULT\0",
    }
}
