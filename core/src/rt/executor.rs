//! The `Executor` trait, the default executor (a process-wide [`ThreadPool`]), one built on
//! smol's `async-executor`, and [`RuntimeSettings`], the one type that tunes plexus's pool.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Once, OnceLock};
use std::time::Duration;

use super::thread_pool::ThreadPool;

/// A boxed, sendable future, as handed to [`Executor::spawn`].
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// Something that runs background futures: connection drivers and server call handlers.
///
/// Implement it to run plexus on your own executor; the future must be polled to completion
/// (dropping it early aborts the connection or call it drives).
pub trait Executor: Send + Sync + 'static {
    /// Runs `future` in the background until it completes.
    fn spawn(&self, future: BoxFuture<()>);
}

impl<E: Executor + ?Sized> Executor for Arc<E> {
    fn spawn(&self, future: BoxFuture<()>) {
        (**self).spawn(future)
    }
}

/// How plexus's own thread pool ([`ThreadPool`]) runs: its size and how long an idle worker
/// spins before it sleeps. The default executor takes them from the environment
/// ([`RuntimeSettings::from_env`]); build a pool of your own with [`ThreadPool::new`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RuntimeSettings {
    /// Worker threads (at least one is started). Default: one per available core.
    pub threads: usize,
    /// How long a worker that ran out of work polls its sockets, the I/O reactor and the
    /// queues before it sleeps, so that work arriving meanwhile costs no thread wake-up. `Duration::ZERO` never
    /// spins. Workers skip or cut short a spin while the machine has more runnable threads
    /// than cores, so a busy machine never pays for it. Default:
    /// [`RuntimeSettings::DEFAULT_SPIN`].
    pub spin: Duration,
}

impl RuntimeSettings {
    /// Environment variable with the worker count (a positive integer).
    pub const THREADS_ENV: &'static str = "PLEXUS_THREADS";
    /// Environment variable with the spin time in microseconds (a whole number; 0: never).
    pub const SPIN_ENV: &'static str = "PLEXUS_SPIN_MICROS";
    /// The default spin time.
    ///
    /// A thread wake-up costs tens of µs on virtual machines, more than a loopback round trip
    /// between two spinning processes. On 2 idle cores 100 µs was the shortest spin that
    /// caught nearly every reply to a call in flight and every ping-pong message; shorter
    /// spins caught fewer (the figures are in the README's benchmark section).
    pub const DEFAULT_SPIN: Duration = Duration::from_micros(100);

    /// The settings in `PLEXUS_THREADS` and `PLEXUS_SPIN_MICROS`, defaults for those unset.
    /// Fails, naming the variable, if one is set to something else than its number.
    pub fn from_env() -> Result<RuntimeSettings, RuntimeSettingsError> {
        let (settings, mut errors) = RuntimeSettings::parse(env_value);
        if errors.is_empty() {
            Ok(settings)
        } else {
            Err(errors.swap_remove(0))
        }
    }

    /// The settings from the variables `lookup` gives, with every one that parses, and the
    /// errors of those that do not.
    fn parse(
        lookup: impl Fn(&str) -> Option<String>,
    ) -> (RuntimeSettings, Vec<RuntimeSettingsError>) {
        let mut settings = RuntimeSettings::default();
        let mut errors = Vec::new();
        if let Some(value) = lookup(Self::THREADS_ENV) {
            match value.trim().parse::<usize>() {
                Ok(n) if n > 0 => settings.threads = n,
                _ => errors.push(RuntimeSettingsError {
                    variable: Self::THREADS_ENV,
                    value,
                    expected: "a positive integer",
                }),
            }
        }
        if let Some(value) = lookup(Self::SPIN_ENV) {
            match value.trim().parse::<u64>() {
                Ok(micros) => settings.spin = Duration::from_micros(micros),
                Err(_) => errors.push(RuntimeSettingsError {
                    variable: Self::SPIN_ENV,
                    value,
                    expected: "a whole number of microseconds",
                }),
            }
        }
        (settings, errors)
    }

    /// The settings of the process-wide pools: the environment's, where it parses. A value
    /// that does not parse is reported once on stderr and its default used (a library cannot
    /// refuse to start over it, and must not pass it over in silence).
    fn for_process() -> RuntimeSettings {
        let (settings, errors) = RuntimeSettings::parse(env_value);
        static REPORTED: Once = Once::new();
        if !errors.is_empty() {
            REPORTED.call_once(|| {
                for error in &errors {
                    eprintln!("plexus: {error}; using the default");
                }
            });
        }
        settings
    }
}

impl Default for RuntimeSettings {
    fn default() -> RuntimeSettings {
        RuntimeSettings {
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            spin: RuntimeSettings::DEFAULT_SPIN,
        }
    }
}

/// The variable's value, if it is set (one that is not Unicode counts as set, so it is
/// reported rather than ignored).
fn env_value(name: &str) -> Option<String> {
    std::env::var_os(name).map(|v| v.to_string_lossy().into_owned())
}

/// An environment variable of [`RuntimeSettings`] that holds something else than its number.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuntimeSettingsError {
    variable: &'static str,
    value: String,
    expected: &'static str,
}

impl RuntimeSettingsError {
    /// The variable's name, such as `PLEXUS_THREADS`.
    pub fn variable(&self) -> &'static str {
        self.variable
    }
}

impl fmt::Display for RuntimeSettingsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} must be {}, not {:?}",
            self.variable, self.expected, self.value
        )
    }
}

impl std::error::Error for RuntimeSettingsError {}

/// The default executor of channels and servers: one process-wide [`ThreadPool`] named
/// `plexus-worker-N`, started on first use and never stopped, with the environment's
/// [`RuntimeSettings`] (`PLEXUS_THREADS`, default one per available core; `PLEXUS_SPIN_MICROS`;
/// a value that does not parse is reported on stderr and its default used).
///
/// Its workers drive the `async-io` reactor while idle, and a task woken by another task runs
/// next on the same thread, so a call's connection driver and handler do not hop between
/// threads. Spawn your own tasks here too (`DefaultExecutor.spawn(...)`) for the same effect.
#[derive(Debug, Clone, Copy, Default)]
pub struct DefaultExecutor;

impl DefaultExecutor {
    /// The pool itself.
    pub fn pool() -> &'static ThreadPool {
        static POOL: OnceLock<ThreadPool> = OnceLock::new();
        POOL.get_or_init(|| {
            ThreadPool::new(&RuntimeSettings::for_process(), "plexus-worker")
                .expect("failed to spawn a plexus worker thread")
        })
    }
}

impl Executor for DefaultExecutor {
    fn spawn(&self, future: BoxFuture<()>) {
        DefaultExecutor::pool().spawn_future(future);
    }
}

/// smol's executor (`async-executor`) as an [`Executor`]: one process-wide instance driven by
/// `PLEXUS_THREADS` threads (default: one per core) named `plexus-smol-N`, started on the
/// first spawn. Every wake-up goes through its global queue (and usually to another thread);
/// [`DefaultExecutor`] is faster for plexus's task chains. Kept for users who want smol's.
#[derive(Debug, Clone, Copy, Default)]
pub struct SmolExecutor;

impl SmolExecutor {
    fn global() -> &'static async_executor::Executor<'static> {
        static GLOBAL: OnceLock<&'static async_executor::Executor<'static>> = OnceLock::new();
        GLOBAL.get_or_init(|| {
            let executor: &'static async_executor::Executor<'static> =
                Box::leak(Box::new(async_executor::Executor::new()));
            for i in 0..RuntimeSettings::for_process().threads {
                std::thread::Builder::new()
                    .name(format!("plexus-smol-{i}"))
                    .spawn(move || {
                        loop {
                            // A panicking task must not take the worker down with it.
                            let run = std::panic::catch_unwind(|| {
                                async_io::block_on(executor.run(std::future::pending::<()>()))
                            });
                            if run.is_ok() {
                                break;
                            }
                        }
                    })
                    .expect("failed to spawn a plexus worker thread");
            }
            executor
        })
    }
}

impl Executor for SmolExecutor {
    fn spawn(&self, future: BoxFuture<()>) {
        SmolExecutor::global().spawn(future).detach();
    }
}

/// Lets every other task the executor has ready run before this one continues: wakes this task
/// and returns `Pending` once. On plexus's pool the task goes to the back of its worker's
/// queue, behind the tasks it just woke or spawned.
pub async fn yield_now() {
    let mut yielded = false;
    std::future::poll_fn(|cx| {
        if yielded {
            return std::task::Poll::Ready(());
        }
        yielded = true;
        cx.waker().wake_by_ref();
        std::task::Poll::Pending
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(threads: Option<&str>, spin: Option<&str>) -> (RuntimeSettings, Vec<String>) {
        let (settings, errors) = RuntimeSettings::parse(|name| match name {
            RuntimeSettings::THREADS_ENV => threads.map(str::to_string),
            RuntimeSettings::SPIN_ENV => spin.map(str::to_string),
            _ => None,
        });
        (settings, errors.iter().map(|e| e.to_string()).collect())
    }

    #[test]
    fn settings_come_from_the_environment() {
        assert_eq!(parse(None, None), (RuntimeSettings::default(), vec![]));
        let (settings, errors) = parse(Some(" 3 "), Some("0"));
        assert!(errors.is_empty());
        assert_eq!((settings.threads, settings.spin), (3, Duration::ZERO));
    }

    /// A value that does not parse is an error naming the variable, and does not spoil the
    /// other variable.
    #[test]
    fn a_bad_value_is_an_error_that_names_its_variable() {
        let (settings, errors) = parse(Some("abc"), Some("20"));
        assert_eq!(
            errors,
            vec![r#"PLEXUS_THREADS must be a positive integer, not "abc""#]
        );
        assert_eq!(settings.threads, RuntimeSettings::default().threads);
        assert_eq!(settings.spin, Duration::from_micros(20));
        let (_, errors) = parse(Some("0"), Some("abc"));
        assert_eq!(errors.len(), 2);
        assert!(errors[1].starts_with("PLEXUS_SPIN_MICROS must be a whole number"));
        let (settings, errors) = parse(None, Some("-5"));
        assert_eq!(errors.len(), 1);
        assert_eq!(settings.spin, RuntimeSettings::DEFAULT_SPIN);
    }
}
