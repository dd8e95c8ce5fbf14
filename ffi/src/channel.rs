//! `plexus_channel`: a handle on a core `Channel`, shared process-wide between handles made
//! for the same target with equal options.

use std::collections::HashMap;
use std::ffi::{c_char, c_void};
use std::time::Duration;

use async_io::Timer;
use futures_util::future::{Either, select};
use std::sync::{Arc, Mutex, Weak};

use core_plexus::{Channel, ConnectivityState};

use crate::boundary::boundary;
use crate::cq::{Outcome, begin, plexus_cq, plexus_op};
use crate::error::{
    Error, PLEXUS_ERR_INVALID_ARGUMENT, PLEXUS_ERR_RPC, PLEXUS_ERR_TIMEOUT, PLEXUS_OK, Result,
    plexus_result,
};
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[allow(non_camel_case_types, reason = "C names")]
pub enum plexus_connectivity_state {
    /// No connection and no attempt under way.
    #[default]
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
/// Thread-safe. The connection attempt (with the target's resolution) goes on in the
/// background when the wait ends first, so `timeout_ms` 0 starts connecting without waiting
/// (follow it with `plexus_channel_watch_state_async`).
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

/// Watches the channel's connectivity state without blocking (C-core's
/// `grpc_channel_watch_connectivity_state`): a PLEXUS_OP_STATE_CHANGE event with `tag`
/// arrives on `cq` once the state differs from `last_observed` (a `plexus_connectivity_state`
/// value; at once if it differs already), with PLEXUS_OK and `event.state` the new state; or,
/// if `timeout_ms` milliseconds pass first (negative: no limit), with PLEXUS_ERR_TIMEOUT and
/// `event.state` the state then. Watching starts no connection (`plexus_channel_connect`
/// does). Any number of watches may be pending; each holds the channel until its event.
/// Thread-safe.
///
/// Returns PLEXUS_OK when the watch started (exactly one event will follow); otherwise no
/// event follows: PLEXUS_ERR_NULL_ARGUMENT; PLEXUS_ERR_INVALID_ARGUMENT when `last_observed`
/// is not a state; PLEXUS_ERR_SHUTDOWN (runtime or queue shut down).
///
/// # Safety
/// `channel` and `cq` are live. `tag` is passed back untouched.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn plexus_channel_watch_state_async(
    channel: *const plexus_channel,
    last_observed: i32,
    timeout_ms: i64,
    cq: *const plexus_cq,
    tag: *mut c_void,
) -> plexus_result {
    boundary("plexus_channel_watch_state_async", || {
        use plexus_connectivity_state::*;
        // SAFETY: the caller passes a live handle or NULL (checked).
        let shared = unsafe { channel_arg(channel) }?;
        let last = [
            PLEXUS_STATE_IDLE,
            PLEXUS_STATE_CONNECTING,
            PLEXUS_STATE_READY,
            PLEXUS_STATE_TRANSIENT_FAILURE,
            PLEXUS_STATE_SHUTDOWN,
        ]
        .into_iter()
        .find(|s| *s as i32 == last_observed)
        .ok_or_else(|| {
            Error::new(
                PLEXUS_ERR_INVALID_ARGUMENT,
                format!("last_observed {last_observed} is not a connectivity state"),
            )
        })?;
        let rt = runtime::get()?;
        // SAFETY: as above.
        let completion = unsafe { begin(cq, tag, plexus_op::PLEXUS_OP_STATE_CHANGE) }?;
        rt.spawn(async move {
            let channel = &shared.channel;
            let from = *[
                ConnectivityState::Idle,
                ConnectivityState::Connecting,
                ConnectivityState::Ready,
                ConnectivityState::TransientFailure,
                ConnectivityState::Shutdown,
            ]
            .iter()
            .find(|s| state_code(**s) == last)
            .expect("every C state has a Rust one");
            let changed = std::pin::pin!(channel.wait_for_state_change(from));
            let limit = u64::try_from(timeout_ms).ok().map(Duration::from_millis);
            let expired = std::pin::pin!(limit.map_or_else(Timer::never, Timer::after));
            let (result, state) = match select(changed, expired).await {
                Either::Left((state, _)) => (PLEXUS_OK, state),
                Either::Right(_) => (PLEXUS_ERR_TIMEOUT, channel.state()),
            };
            let outcome = Outcome {
                state: state_code(state),
                ..Outcome::default()
            };
            completion.complete(result, outcome);
        });
        Ok(PLEXUS_OK)
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
        Interrupted::OnWorker => on_worker_error(),
    }
}

/// The error of a blocking function called on a plexus worker thread.
pub(crate) fn on_worker_error() -> Error {
    Error::wrong_state(
        "this function waits, and it was called on one of plexus's worker threads (in a server \
         callback or a hook), where waiting would stall the runtime: use its _async form",
    )
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
