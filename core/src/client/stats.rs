//! Channel statistics: atomic counters, cheap to update on every call and to read.

use std::sync::atomic::{AtomicU64, Ordering};

use super::state::ConnectivityState;
use crate::transport::Address;

/// Counters a channel updates as calls start and end.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    started: AtomicU64,
    succeeded: AtomicU64,
    failed: AtomicU64,
}

impl Counters {
    pub(crate) fn call_started(&self) {
        self.started.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn call_ended(&self, ok: bool) {
        let counter = if ok { &self.succeeded } else { &self.failed };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn read(&self) -> (u64, u64, u64) {
        (
            self.started.load(Ordering::Relaxed),
            self.succeeded.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        )
    }
}

/// A snapshot of a channel's statistics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelStats {
    /// Calls started on the channel.
    pub calls_started: u64,
    /// Calls that ended with OK.
    pub calls_succeeded: u64,
    /// Calls that ended with any other status.
    pub calls_failed: u64,
    /// HTTP/2 streams open now, over every connection.
    pub active_streams: usize,
    /// The channel's connectivity state.
    pub state: ConnectivityState,
    /// One entry per resolved endpoint.
    pub endpoints: Vec<EndpointStats>,
}

impl ChannelStats {
    /// Open connections over all endpoints.
    pub fn connections(&self) -> usize {
        self.endpoints.iter().map(|e| e.connections).sum()
    }
}

/// Statistics of one endpoint (subchannel).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointStats {
    /// The endpoint's address.
    pub address: Address,
    /// Its connectivity state.
    pub state: ConnectivityState,
    /// Open HTTP/2 connections to it.
    pub connections: usize,
    /// Streams open on those connections.
    pub active_streams: usize,
}
