//! The C ABI of plexus: `libplexus.so` / `libplexus.a` and `include/plexus.h`.
//!
//! ```text
//!  C host ──► plexus_* (boundary: fork check, catch_unwind, last error)
//!               │
//!               ├─ blocking calls: run on the calling thread (async_io::block_on)
//!               └─ *_async calls: a task on the runtime ──► event on a plexus_cq (+ eventfd)
//!                                  │
//!  core plexus::Channel (shared process-wide by target + options) ──► HTTP/2 connections
//! ```
//!
//! # Threads
//! The runtime starts on first use (or `plexus_init`): `PLEXUS_THREADS` (default one per
//! core) `plexus-ffi-N` workers run connection drivers and asynchronous operations, and drive
//! the `async-io` reactor while idle. Blocking functions run on the caller's thread. DNS
//! lookups run on `blocking`'s pool. `plexus_shutdown` stops and joins the workers.
//!
//! # Modules
//! `boundary` (the one panic boundary), `handle` (every pointer conversion), `error`,
//! `runtime`, `bytes`, `metadata`, `status`, `options`, `channel`, `unary`, `call`, `cq`,
//! `server` (with `server_options` and `server_call`).
#![allow(non_camel_case_types, reason = "C type names")]
#![expect(
    unreachable_pub,
    reason = "exported functions and types reach C through #[no_mangle] and the header, not Rust paths"
)]

mod boundary;
mod bytes;
mod call;
mod channel;
mod cq;
mod error;
mod handle;
mod hooks;
mod metadata;
mod options;
mod runtime;
mod server;
mod server_call;
mod server_options;
mod status;
mod unary;

use std::ffi::c_char;

use boundary::boundary;
use error::{Error, PLEXUS_ERR_INVALID_ARGUMENT, PLEXUS_OK, plexus_result};

/// Returns the library version, e.g. `"0.1.0"`. Static: never free it. Thread-safe.
#[unsafe(no_mangle)]
pub extern "C" fn plexus_version() -> *const c_char {
    boundary("plexus_version", || {
        Ok(concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast())
    })
}

/// Returns the text of the last failure on the calling thread: the function's name and what
/// went wrong (empty if nothing failed yet). Borrowed: valid until the next failing plexus
/// call on this thread; never free it. Works in every process, a forked child too.
#[unsafe(no_mangle)]
pub extern "C" fn plexus_last_error() -> *const c_char {
    boundary("plexus_last_error", || Ok(error::last_error_ptr()))
}

/// Returns the name of a result code, e.g. `"PLEXUS_ERR_TIMEOUT"` (`"PLEXUS_UNKNOWN_RESULT"`
/// for a value this version does not know). Static: never free it. Thread-safe.
#[unsafe(no_mangle)]
pub extern "C" fn plexus_result_name(result: i32) -> *const c_char {
    boundary("plexus_result_name", || {
        Ok(error::result_name(result).as_ptr().cast())
    })
}

/// Starts the runtime now with `threads` worker threads (0: the `PLEXUS_THREADS`
/// environment variable, else one per core) instead of at first use. Thread-safe.
///
/// Returns PLEXUS_OK (also when it already runs with that many threads, or `threads` is 0);
/// PLEXUS_ERR_WRONG_STATE when it already runs with another count;
/// PLEXUS_ERR_INVALID_ARGUMENT when `PLEXUS_THREADS` is not a positive integer or
/// `PLEXUS_SPIN_MICROS` not a whole number;
/// PLEXUS_ERR_SHUTDOWN after `plexus_shutdown`; PLEXUS_ERR_SYSTEM when no thread could start.
#[unsafe(no_mangle)]
pub extern "C" fn plexus_init(threads: u32) -> plexus_result {
    boundary("plexus_init", || {
        if threads > 4096 {
            return Err(Error::new(
                PLEXUS_ERR_INVALID_ARGUMENT,
                format!("{threads} threads is more than the 4096 allowed"),
            ));
        }
        runtime::request_threads(threads as usize);
        runtime::start(threads as usize)?;
        Ok(PLEXUS_OK)
    })
}

/// Writes the number of runtime worker threads to `*threads`, starting the runtime if it is
/// not running. Thread-safe.
///
/// Returns PLEXUS_OK; PLEXUS_ERR_NULL_ARGUMENT; the failures of `plexus_init`.
///
/// # Safety
/// `threads` is writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn plexus_runtime_threads(threads: *mut u32) -> plexus_result {
    boundary("plexus_runtime_threads", || {
        handle::check_out(threads, "threads")?;
        let count = runtime::get()?.threads() as u32;
        // SAFETY: threads was checked and is writable.
        unsafe { handle::write_out(threads, "threads", count) }?;
        Ok(PLEXUS_OK)
    })
}

/// Stops the runtime for good: every channel shuts down (waiting calls fail), blocked calls
/// return PLEXUS_ERR_SHUTDOWN, queued operations complete with PLEXUS_ERR_SHUTDOWN events,
/// connections close and the worker threads are joined. Afterwards every function that
/// needs the runtime returns PLEXUS_ERR_SHUTDOWN; `_free` functions still work and should
/// still be called. Idempotent; thread-safe; must not be called from a release callback.
///
/// Returns PLEXUS_OK.
#[unsafe(no_mangle)]
pub extern "C" fn plexus_shutdown() -> plexus_result {
    boundary("plexus_shutdown", || {
        runtime::shutdown();
        Ok(PLEXUS_OK)
    })
}

#[cfg(test)]
mod header {
    /// `include/plexus.h` is what the pinned cbindgen makes of `ffi/src` now; with
    /// `PLEXUS_BLESS=1` the test rewrites it instead.
    #[test]
    fn header_is_current() {
        let crate_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let config = cbindgen::Config::from_file(crate_dir.join("cbindgen.toml")).unwrap();
        let mut generated = Vec::new();
        cbindgen::Builder::new()
            .with_crate(crate_dir)
            .with_config(config)
            .generate()
            .expect("cbindgen generates the header")
            .write(&mut generated);
        let path = crate_dir.join("../include/plexus.h");
        if std::env::var_os("PLEXUS_BLESS").is_some() {
            std::fs::write(&path, &generated).unwrap();
            return;
        }
        let committed = std::fs::read(&path).unwrap_or_default();
        assert!(
            committed == generated,
            "include/plexus.h is stale: regenerate it with \
             PLEXUS_BLESS=1 cargo test -p plexus-ffi header_is_current"
        );
    }
}
