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

/// Gets the credentials of one call of a channel, such as a bearer token, on a thread of
/// plexus's blocking pool (so it may block, for a token fetch), possibly on several threads at
/// once. `method` is the full method path (NUL-terminated, borrowed for the callback);
/// `metadata` is the call's request metadata, borrowed for the callback, to which it adds
/// entries with `plexus_metadata_append` (e.g. `authorization: Bearer <token>`).
///
/// Returns 0 to send the call. Any other value fails the call, unsent, with UNAVAILABLE (as
/// gRPC does for a failing credentials plugin) and the status message "getting metadata from
/// the call credentials failed: " followed by the text the callback wrote to `error`: a
/// zeroed buffer of `error_size` bytes for a NUL-terminated message, of which it writes at
/// most `error_size` bytes.
pub type plexus_call_credentials_fn = Option<
    unsafe extern "C" fn(
        user_data: *mut c_void,
        method: *const c_char,
        metadata: *mut plexus_metadata,
        error: *mut c_char,
        error_size: usize,
    ) -> i32,
>;

/// Room the credentials callback gets for its error text.
const CREDENTIALS_ERROR_SIZE: usize = 512;

/// A channel's call credentials: the callback and the caller's pointer, released once no
/// options, channel or call needs them.
#[derive(Debug)]
struct Credentials {
    callback: unsafe extern "C" fn(
        *mut c_void,
        *const c_char,
        *mut plexus_metadata,
        *mut c_char,
        usize,
    ) -> i32,
    /// The caller's pointer, kept as an address: plexus never dereferences it.
    user_data: usize,
    release: crate::bytes::plexus_release_fn,
}

impl Drop for Credentials {
    fn drop(&mut self) {
        if let Some(release) = self.release {
            // SAFETY: the contract of plexus_channel_options_set_call_credentials: release
            // takes user_data once, from any thread, and this is the one time.
            unsafe { release(self.user_data as *mut c_void) };
        }
    }
}

/// Shared handle on a channel's call credentials; options, channels and running callbacks
/// hold clones. Compared by the addresses of the callback, pointer and release function, so
/// channels with the same credentials may share connections.
#[derive(Debug, Clone)]
pub(crate) struct CallCredentials(std::sync::Arc<Credentials>);

impl CallCredentials {
    /// Credentials that run `callback` with `user_data`; dropping the last clone runs
    /// `release(user_data)`. With no callback, `release` runs at once and there are none.
    pub(crate) fn new(
        callback: plexus_call_credentials_fn,
        user_data: *mut c_void,
        release: crate::bytes::plexus_release_fn,
    ) -> Option<CallCredentials> {
        let Some(callback) = callback else {
            if let Some(release) = release {
                // SAFETY: per plexus_channel_options_set_call_credentials: release takes
                // user_data once, and nothing else will use it.
                unsafe { release(user_data) };
            }
            return None;
        };
        Some(CallCredentials(std::sync::Arc::new(Credentials {
            callback,
            user_data: user_data as usize,
            release,
        })))
    }

    /// The addresses the credentials are compared and hashed by.
    fn key(&self) -> (usize, usize, usize) {
        let c = &*self.0;
        let release = c.release.map_or(0, |f| f as usize);
        (c.callback as usize, c.user_data, release)
    }

    /// The interceptor that runs the callback before each call.
    pub(crate) fn interceptor(self) -> impl ClientInterceptor {
        CredentialsInterceptor(self)
    }

    /// Runs the callback for one call: the metadata it leaves, and its error text if it
    /// failed.
    fn fetch(
        &self,
        method: &str,
        metadata: core_plexus::Metadata,
    ) -> (core_plexus::Metadata, Result<(), String>) {
        let method = c_string(method);
        let handle = plexus_metadata::into_raw(Metadata::from_core(metadata));
        let mut error = [0u8; CREDENTIALS_ERROR_SIZE];
        let c = &*self.0;
        // SAFETY: the callback's contract: `method` and `handle` are valid for the callback,
        // which modifies `handle` only through plexus_metadata_* functions and writes at most
        // `error.len()` bytes to `error`.
        let code = unsafe {
            (c.callback)(
                c.user_data as *mut c_void,
                method.as_ptr(),
                handle,
                error.as_mut_ptr().cast(),
                error.len(),
            )
        };
        // SAFETY: `handle` came from into_raw above and C does not keep it past the callback.
        let metadata = unsafe { plexus_metadata::take(handle) }
            .unwrap_or_default()
            .into_core();
        if code == 0 {
            return (metadata, Ok(()));
        }
        let end = error.iter().position(|&b| b == 0).unwrap_or(error.len());
        let text = String::from_utf8_lossy(&error[..end]).into_owned();
        let text = match text.is_empty() {
            true => format!("the callback returned {code} and no error text"),
            false => text,
        };
        (metadata, Err(text))
    }
}

impl PartialEq for CallCredentials {
    fn eq(&self, other: &CallCredentials) -> bool {
        self.key() == other.key()
    }
}

impl Eq for CallCredentials {}

impl std::hash::Hash for CallCredentials {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.key().hash(state);
    }
}

struct CredentialsInterceptor(CallCredentials);

impl ClientInterceptor for CredentialsInterceptor {
    fn before<'a>(&'a self, call: &'a mut ClientCall) -> InterceptFuture<'a> {
        let credentials = self.0.clone();
        let method = call.method().to_string();
        let metadata = std::mem::take(call.metadata_mut());
        let deadline = call.deadline();
        Box::pin(async move {
            // Off the executor: a token fetch may block. The task keeps the credentials alive
            // even when the call gives up waiting.
            let fetch = blocking::unblock(move || credentials.fetch(&method, metadata));
            let (metadata, result) = match deadline {
                None => fetch.await,
                Some(deadline) => {
                    let timer = async_io::Timer::at(deadline);
                    match futures_util::future::select(fetch, timer).await {
                        futures_util::future::Either::Left((done, _)) => done,
                        futures_util::future::Either::Right((_, fetch)) => {
                            // The callback is not cut short, even if it has not started yet:
                            // it runs once per call it was given, and its metadata is dropped.
                            fetch.detach();
                            return Err(Status::new(
                                Code::DeadlineExceeded,
                                "the deadline passed while getting the call's credentials",
                            ));
                        }
                    }
                }
            };
            *call.metadata_mut() = metadata;
            result.map_err(|why| {
                Status::new(
                    Code::Unavailable,
                    format!("getting metadata from the call credentials failed: {why}"),
                )
            })
        })
    }
}
