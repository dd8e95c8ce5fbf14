//! Connectivity states of channels and endpoints, readable and awaitable.

use std::sync::Mutex;

use event_listener::Event;

/// A channel's or endpoint's connectivity, as in gRPC's `doc/connectivity-semantics-and-api.md`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConnectivityState {
    /// No connection and no attempt under way; the next call (or `connect()`) starts one.
    Idle,
    /// A connection attempt is under way.
    Connecting,
    /// A connection is up and calls can go.
    Ready,
    /// The last attempt failed; the next waits out the reconnect backoff.
    TransientFailure,
    /// The channel was shut down.
    Shutdown,
}

/// A state that tasks can read and wait on.
#[derive(Debug)]
pub(crate) struct StateCell {
    state: Mutex<ConnectivityState>,
    changed: Event,
}

impl StateCell {
    pub(crate) fn new(state: ConnectivityState) -> StateCell {
        StateCell {
            state: Mutex::new(state),
            changed: Event::new(),
        }
    }

    pub(crate) fn get(&self) -> ConnectivityState {
        *self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sets the state; waiters wake when it differs. SHUTDOWN is final.
    pub(crate) fn set(&self, new: ConnectivityState) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if *state != new && *state != ConnectivityState::Shutdown {
            *state = new;
            drop(state);
            self.changed.notify(usize::MAX);
        }
    }

    /// Waits until the state is no longer `from`, and returns the new one.
    pub(crate) async fn changed_from(&self, from: ConnectivityState) -> ConnectivityState {
        loop {
            let now = self.get();
            if now != from {
                return now;
            }
            let listener = self.changed.listen();
            let now = self.get();
            if now != from {
                return now;
            }
            listener.await;
        }
    }
}
