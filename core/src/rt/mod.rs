//! The runtime seam: spawning, timers and the socket adapter, so plexus runs on any executor.
//!
//! Nothing here starts a tokio runtime. I/O readiness and timers come from `async-io`, whose
//! reactor runs on whichever thread blocks on it (or on its own `async-io` thread).

mod executor;
mod io;
#[cfg(any(target_os = "linux", target_os = "android"))]
pub(crate) mod read_watch;
mod thread_pool;
mod timer;

pub use executor::{
    BoxFuture, DefaultExecutor, Executor, RuntimeSettings, RuntimeSettingsError, SmolExecutor,
    yield_now,
};
pub use io::Compat;
pub use thread_pool::{ThreadPool, block_on};
pub(crate) use timer::{Deadline, with_deadline};
