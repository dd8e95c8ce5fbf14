//! Call hooks: C functions a channel runs around every call, enough for auth tokens and
//! metrics. A core client interceptor calls them.

use std::ffi::{CString, c_char, c_void};

use core_plexus::intercept::{ClientCall, ClientInterceptor, InterceptFuture};
use core_plexus::{Code, Status};

use crate::handle::BoxHandle;
use crate::metadata::{Metadata, plexus_metadata};

/// Runs before each call of a channel, on the thread that starts the call or a plexus worker,
/// possibly on several threads at once. `method` is the full method path (NUL-terminated,
/// borrowed for the callback); `metadata` is the call's request metadata, borrowed for the
/// callback, to which it may add entries with `plexus_metadata_append` (for an auth token).
/// Returns 0 to go on, or a gRPC status code (1 to 16) to fail the call with it, unsent. It
/// must not block for long, nor call plexus functions that wait for calls.
pub type plexus_call_start_hook = Option<
    unsafe extern "C" fn(
        user_data: *mut c_void,
        method: *const c_char,
        metadata: *mut plexus_metadata,
    ) -> i32,
>;

/// Runs once a call of the channel has ended (or its start hook refused it), with its status
/// code and message (NUL-terminated, borrowed for the callback), on whatever thread ended it.
pub type plexus_call_end_hook = Option<
    unsafe extern "C" fn(
        user_data: *mut c_void,
        method: *const c_char,
        code: i32,
        message: *const c_char,
    ),
>;

/// A channel's hooks and the pointer they are given. Compared by address, so channels with the
/// same hooks may share connections (a function that has two addresses only costs sharing).
#[derive(Debug, Clone, Copy)]
pub(crate) struct CallHooks {
    pub(crate) start: plexus_call_start_hook,
    pub(crate) end: plexus_call_end_hook,
    /// The caller's pointer, kept as an address: plexus never dereferences it.
    pub(crate) user_data: usize,
}

impl CallHooks {
    /// The addresses the hooks are compared and hashed by.
    fn key(&self) -> (usize, usize, usize) {
        let start = self.start.map_or(0, |f| f as usize);
        let end = self.end.map_or(0, |f| f as usize);
        (start, end, self.user_data)
    }

    /// The interceptor that runs these hooks.
    pub(crate) fn interceptor(self) -> impl ClientInterceptor {
        HookInterceptor(self)
    }
}

impl PartialEq for CallHooks {
    fn eq(&self, other: &CallHooks) -> bool {
        self.key() == other.key()
    }
}

impl Eq for CallHooks {}

impl std::hash::Hash for CallHooks {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.key().hash(state);
    }
}

struct HookInterceptor(CallHooks);

/// `text` as a C string, with any NUL cut out (method paths and messages have none normally).
fn c_string(text: &str) -> CString {
    CString::new(text.replace('\0', "")).unwrap_or_default()
}

impl HookInterceptor {
    fn start(&self, call: &mut ClientCall) -> Result<(), Status> {
        let Some(start) = self.0.start else {
            return Ok(());
        };
        let method = c_string(call.method());
        let metadata = std::mem::take(call.metadata_mut());
        let handle = plexus_metadata::into_raw(Metadata::from_core(metadata));
        // SAFETY: the hook's contract: `method` and `handle` are valid for the callback, which
        // only reads `method` and modifies `handle` through plexus_metadata_* functions.
        let code = unsafe { start(self.0.user_data as *mut c_void, method.as_ptr(), handle) };
        // SAFETY: `handle` came from into_raw above and C does not keep it past the callback.
        let metadata = unsafe { plexus_metadata::take(handle) }.unwrap_or_default();
        *call.metadata_mut() = metadata.into_core();
        match code {
            0 => Ok(()),
            1..=16 => Err(Status::new(
                Code::from_i32(code),
                "refused by the channel's call start hook",
            )),
            _ => Err(Status::internal(format!(
                "the channel's call start hook returned {code}, which is not a status code"
            ))),
        }
    }
}

impl ClientInterceptor for HookInterceptor {
    fn before<'a>(&'a self, call: &'a mut ClientCall) -> InterceptFuture<'a> {
        let result = self.start(call);
        Box::pin(async move { result })
    }

    fn after(&self, method: &str, status: &Status) {
        let Some(end) = self.0.end else {
            return;
        };
        let (method, message) = (c_string(method), c_string(status.message()));
        let code = status.code().as_i32();
        // SAFETY: the hook's contract: both strings are valid for the callback.
        unsafe {
            end(
                self.0.user_data as *mut c_void,
                method.as_ptr(),
                code,
                message.as_ptr(),
            )
        };
    }
}
