//! Shutdown signalling shared by a server's listeners and connections.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use event_listener::Event;

/// A one-way flag that tasks can await.
#[derive(Default)]
struct Flag {
    set: AtomicBool,
    event: Event,
}

impl Flag {
    fn raise(&self) {
        if !self.set.swap(true, Ordering::AcqRel) {
            self.event.notify(usize::MAX);
        }
    }

    async fn wait(&self) {
        loop {
            if self.set.load(Ordering::Acquire) {
                return;
            }
            let listener = self.event.listen();
            if self.set.load(Ordering::Acquire) {
                return;
            }
            listener.await;
        }
    }
}

/// The server's shutdown state: graceful, then forced, and the count of open connections.
#[derive(Default)]
pub(crate) struct Shutdown {
    graceful: Flag,
    forced: Flag,
    active: AtomicUsize,
    drained: Event,
}

/// Counts one open connection while alive.
pub(crate) struct Active<'a>(&'a Shutdown);

impl Drop for Active<'_> {
    fn drop(&mut self) {
        if self.0.active.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.drained.notify(usize::MAX);
        }
    }
}

impl Shutdown {
    pub(crate) fn track(&self) -> Active<'_> {
        self.active.fetch_add(1, Ordering::AcqRel);
        Active(self)
    }

    pub(crate) fn start_graceful(&self) {
        self.graceful.raise();
    }

    pub(crate) fn force(&self) {
        self.graceful.raise();
        self.forced.raise();
    }

    pub(crate) async fn graceful_started(&self) {
        self.graceful.wait().await
    }

    pub(crate) async fn forced(&self) {
        self.forced.wait().await
    }

    /// Completes when no connection is open.
    pub(crate) async fn drained(&self) {
        loop {
            if self.active.load(Ordering::Acquire) == 0 {
                return;
            }
            let listener = self.drained.listen();
            if self.active.load(Ordering::Acquire) == 0 {
                return;
            }
            listener.await;
        }
    }
}
