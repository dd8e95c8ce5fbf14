//! `plexus_channel`: a handle on a core `Channel`, shared process-wide between handles made
//! for the same target with equal options.

use std::collections::HashMap;
use std::ffi::c_char;
use std::sync::{Arc, Mutex, Weak};

use core_plexus::{Channel, ConnectivityState};

use crate::boundary::boundary;
use crate::error::{Error, PLEXUS_ERR_RPC, PLEXUS_ERR_TIMEOUT, PLEXUS_OK, Result, plexus_result};
use crate::handle::{ArcHandle, BoxHandle, check_out, str_arg, write_out};
use crate::options::{ChannelOptions, plexus_channel_options};
use crate::runtime::{self, Interrupted};

/// A channel: a target's connection pools, resolver and balancer. Thread-safe: one handle
/// may be used by any number of threads at once. Created by `plexus_channel_new`, owned by
/// the caller, freed with `plexus_channel_free`.
pub struct plexus_channel {
    _private: [u8; 0],
}

impl ArcHandle for plexus_channel {
    type Rust = SharedChannel;
    const NAME: &'static str = "channel";
}

/// One core channel and the handles that use it.
pub(crate) struct SharedChannel {
    pub(crate) channel: Channel,
}

impl Drop for SharedChannel {
    fn drop(&mut self) {
        // The last handle is gone: close the connections once their calls end.
        self.channel.shutdown();
    }
}

type Key = (String, ChannelOptions);

#[derive(Default)]
struct Registry {
    /// Channels that may be shared, by target and options.
    shared: HashMap<Key, Weak<SharedChannel>>,
    /// Every live channel, for `plexus_shutdown`.
    all: Vec<Weak<SharedChannel>>,
}

static REGISTRY: Mutex<Option<Registry>> = Mutex::new(None);

fn registry<T>(f: impl FnOnce(&mut Registry) -> T) -> T {
    let mut guard = REGISTRY.lock().unwrap_or_else(|e| e.into_inner());
    f(guard.get_or_insert_with(Registry::default))
}

/// Drops the registry's entries of channels that are gone, so the options they keep (call
/// credentials, whose release the caller waits for) go with them. The keys are dropped after
/// the lock is released: a release callback may call plexus.
fn forget_dead() {
    let dead: Vec<Key> = registry(|r| {
        let mut dead = Vec::new();
        for (key, channel) in std::mem::take(&mut r.shared) {
            match channel.strong_count() {
                0 => dead.push(key),
                _ => drop(r.shared.insert(key, channel)),
            }
        }
        dead
    });
    drop(dead);
}

/// Shuts every live channel down (for `plexus_shutdown`).
pub(crate) fn shutdown_all() {
    let (shared, all) = registry(|r| (std::mem::take(&mut r.shared), std::mem::take(&mut r.all)));
    drop(shared);
    for channel in all.iter().filter_map(Weak::upgrade) {
        channel.channel.shutdown();
    }
}

fn open(target: &str, options: &ChannelOptions) -> Result<Arc<SharedChannel>> {
    forget_dead();
    let rt = runtime::get()?;
    let build = || -> Result<Arc<SharedChannel>> {
        let mut builder = Channel::builder(target)
            .settings(options.settings.clone())
            .executor(rt.executor());
        if let Some(hooks) = options.hooks {
            builder = builder.interceptor(hooks.interceptor());
        }
        // After the start hook, as gRPC applies call credentials after interceptors.
        if let Some(credentials) = options.credentials.clone() {
            builder = builder.interceptor(credentials.interceptor());
        }
        let channel = builder
            .build()
            .map_err(|e| Error::from_setting(&core_plexus::Status::from(e)))?;
        Ok(Arc::new(SharedChannel { channel }))
    };
    registry(|r| {
        r.all.retain(|w| w.strong_count() > 0);
        let channel = if options.shared {
            let key = (target.to_string(), options.clone());
            match r.shared.get(&key).and_then(Weak::upgrade) {
                Some(existing) => return Ok(existing),
                None => {
                    let channel = build()?;
                    r.shared.insert(key, Arc::downgrade(&channel));
                    channel
                }
            }
        } else {
            build()?
        };
        r.all.push(Arc::downgrade(&channel));
        Ok(channel)
    })
}

/// Creates a channel to `target` (NUL-terminated UTF-8): `host:port`, `dns:///host:port`,
/// `ipv4:a:p[,b:p]`, `ipv6:[a]:p`, `unix:path`, `unix:///abs/path`, `unix-abstract:name`, or
/// `http://host:port`. `options` may be NULL (defaults); it is copied, so the caller may free
/// it at once. Nothing connects until the first call or `plexus_channel_connect`.
///
/// By default, channels created with the same target and equal options share one pool of
/// connections, process-wide, even when created by independent libraries in one process;
/// `plexus_channel_options_set_shared(options, false)` opts out. Starts the runtime if it is
/// not running. Thread-safe.
///
/// The channel is owned by the caller: free it with `plexus_channel_free`.
///
/// Returns PLEXUS_OK and writes `*out`; PLEXUS_ERR_NULL_ARGUMENT if `target` or `out` is
/// NULL; PLEXUS_ERR_INVALID_UTF8; PLEXUS_ERR_INVALID_ARGUMENT for a malformed target or
/// option values that do not go together; PLEXUS_ERR_SHUTDOWN after `plexus_shutdown`.
///
/// # Safety
/// `target` is a NUL-terminated string; `options` is NULL or live; `out` is writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn plexus_channel_new(
    target: *const c_char,
    options: *const plexus_channel_options,
    out: *mut *const plexus_channel,
) -> plexus_result {
    boundary("plexus_channel_new", || {
        // SAFETY: target is a C string or NULL (checked).
        let target = unsafe { str_arg(target, "target") }?;
        check_out(out, "out")?;
        let defaults = ChannelOptions::default();
        let options = if options.is_null() {
            &defaults
        } else {
            // SAFETY: options is live (checked non-NULL).
            unsafe { plexus_channel_options::as_ref(options) }?
        };
        let channel = open(target, options)?;
        // SAFETY: out was checked and is writable.
        unsafe { write_out(out, "out", plexus_channel::into_raw(channel)) }?;
        Ok(PLEXUS_OK)
    })
}

/// Releases the caller's handle. The connections close when the last handle sharing them
/// is freed and their calls have ended; calls in progress continue. NULL is a no-op. Must
/// not be called while another thread uses this handle.
///
/// # Safety
/// `channel` is NULL or a live handle, not used again.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn plexus_channel_free(channel: *const plexus_channel) {
    boundary("plexus_channel_free", || {
        // SAFETY: the caller gives up a live handle or NULL.
        drop(unsafe { plexus_channel::take(channel) });
        forget_dead();
        Ok(())
    })
}

/// Connectivity state of a channel, as in gRPC's connectivity-semantics doc.
#[repr(i32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(non_camel_case_types, reason = "C names")]
pub enum plexus_connectivity_state {
    /// No connection and no attempt under way.
    PLEXUS_STATE_IDLE = 0,
    /// A connection attempt is under way.
    PLEXUS_STATE_CONNECTING = 1,
    /// Connected: calls can go.
    PLEXUS_STATE_READY = 2,
    /// The last attempt failed; the next waits out the reconnect backoff.
    PLEXUS_STATE_TRANSIENT_FAILURE = 3,
    /// Shut down.
    PLEXUS_STATE_SHUTDOWN = 4,
}

fn state_code(state: ConnectivityState) -> plexus_connectivity_state {
    use plexus_connectivity_state::*;
    match state {
        ConnectivityState::Idle => PLEXUS_STATE_IDLE,
        ConnectivityState::Connecting => PLEXUS_STATE_CONNECTING,
        ConnectivityState::Ready => PLEXUS_STATE_READY,
        ConnectivityState::TransientFailure => PLEXUS_STATE_TRANSIENT_FAILURE,
        ConnectivityState::Shutdown => PLEXUS_STATE_SHUTDOWN,
    }
}

/// A snapshot of a channel's statistics, filled by `plexus_channel_get_stats`. Channels that
/// share a pool report the same numbers.
#[repr(C)]
pub struct plexus_channel_stats {
    /// Calls started.
    pub calls_started: u64,
    /// Calls that ended with OK.
    pub calls_succeeded: u64,
    /// Calls that ended with another status.
    pub calls_failed: u64,
    /// HTTP/2 streams open now.
    pub active_streams: u64,
    /// Open HTTP/2 connections, over every endpoint.
    pub connections: u64,
    /// Resolved endpoints.
    pub endpoints: u64,
    /// The channel's connectivity state.
    pub state: plexus_connectivity_state,
}

/// Fills `*stats` with a snapshot of the channel's statistics. Cheap; thread-safe.
///
/// Returns PLEXUS_OK; PLEXUS_ERR_NULL_ARGUMENT for a NULL argument.
///
/// # Safety
/// `channel` is live; `stats` is writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn plexus_channel_get_stats(
    channel: *const plexus_channel,
    stats: *mut plexus_channel_stats,
) -> plexus_result {
    boundary("plexus_channel_get_stats", || {
        // SAFETY: the caller passes a live handle or NULL (checked).
        let shared = unsafe { plexus_channel::as_ref(channel) }?;
        check_out(stats, "stats")?;
        let s = shared.channel.stats();
        let out = plexus_channel_stats {
            calls_started: s.calls_started,
            calls_succeeded: s.calls_succeeded,
            calls_failed: s.calls_failed,
            active_streams: s.active_streams as u64,
            connections: s.connections() as u64,
            endpoints: s.endpoints.len() as u64,
            state: state_code(s.state),
        };
        // SAFETY: stats was checked and is writable.
        unsafe { write_out(stats, "stats", out) }?;
        Ok(PLEXUS_OK)
    })
}

/// Writes the channel's connectivity state to `*state`. Thread-safe.
///
/// Returns PLEXUS_OK; PLEXUS_ERR_NULL_ARGUMENT for a NULL argument.
///
/// # Safety
/// `channel` is live; `state` is writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn plexus_channel_state(
    channel: *const plexus_channel,
    state: *mut plexus_connectivity_state,
) -> plexus_result {
    boundary("plexus_channel_state", || {
        // SAFETY: the caller passes a live handle or NULL (checked).
        let shared = unsafe { plexus_channel::as_ref(channel) }?;
        // SAFETY: state is NULL (checked) or writable.
        unsafe { write_out(state, "state", state_code(shared.channel.state())) }?;
        Ok(PLEXUS_OK)
    })
}

/// Connects now instead of at the first call, and waits up to `timeout_ms` milliseconds
/// (negative: no limit) for the channel to be READY. Blocks the calling thread.
/// Thread-safe.
///
/// Returns PLEXUS_OK when ready; PLEXUS_ERR_RPC when the connection attempt failed (the text
/// says why; the channel keeps retrying with backoff); PLEXUS_ERR_TIMEOUT;
/// PLEXUS_ERR_NULL_ARGUMENT; PLEXUS_ERR_SHUTDOWN.
///
/// # Safety
/// `channel` is live.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn plexus_channel_connect(
    channel: *const plexus_channel,
    timeout_ms: i64,
) -> plexus_result {
    boundary("plexus_channel_connect", || {
        // SAFETY: the caller passes a live handle or NULL (checked).
        let shared = unsafe { plexus_channel::as_ref(channel) }?;
        match runtime::block_on(timeout_ms, shared.channel.connect()) {
            Ok(Ok(())) => Ok(PLEXUS_OK),
            Ok(Err(status)) => Err(Error::rpc(&status)),
            Err(why) => Err(interrupted(why, timeout_ms)),
        }
    })
}

/// The error for a blocking wait that ended early.
pub(crate) fn interrupted(why: Interrupted, timeout_ms: i64) -> Error {
    match why {
        Interrupted::Timeout => Error::new(
            PLEXUS_ERR_TIMEOUT,
            format!("timed out after {timeout_ms} ms"),
        ),
        Interrupted::Shutdown => Error::new(
            crate::error::PLEXUS_ERR_SHUTDOWN,
            "the plexus runtime was shut down",
        ),
        Interrupted::Cancelled => Error::new(PLEXUS_ERR_RPC, "CANCELLED: the call was cancelled"),
    }
}

/// Reads the channel handle argument and keeps a reference for work that outlives the call.
///
/// # Safety
/// `channel` is NULL or live.
pub(crate) unsafe fn channel_arg(channel: *const plexus_channel) -> Result<Arc<SharedChannel>> {
    // SAFETY: per this function's contract.
    unsafe { plexus_channel::clone_arc(channel) }
}

/// Borrows the channel handle argument.
///
/// # Safety
/// `channel` is NULL or live for `'a`.
pub(crate) unsafe fn channel_ref<'a>(channel: *const plexus_channel) -> Result<&'a SharedChannel> {
    // SAFETY: per this function's contract.
    unsafe { plexus_channel::as_ref(channel) }
}
