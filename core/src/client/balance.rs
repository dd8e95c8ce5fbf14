//! Load balancing: which endpoint a call goes to.
//!
//! `pick_first` (the default) sends every call to the first endpoint, in resolver order, that
//! is not failing; `round_robin` connects to every endpoint and rotates calls over the READY
//! ones. A [`Picker`] lets users decide themselves ("lookaside" balancing), together with a
//! custom [`Resolver`](super::resolve::Resolver) that supplies the endpoint list.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::state::ConnectivityState;
use super::stats::EndpointStats;
use super::subchannel::Subchannel;

/// Chooses an endpoint for each call.
pub trait Picker: Send + Sync + 'static {
    /// Returns the index in `endpoints` to send the call to; `None` to fail it with
    /// UNAVAILABLE. Called once per call; keep it cheap.
    fn pick(&self, endpoints: &[EndpointStats]) -> Option<usize>;

    /// Whether the channel should keep a connection to every endpoint (true) or connect only
    /// to the endpoints picked (false).
    fn connect_all(&self) -> bool {
        false
    }
}

/// The channel's balancing policy.
#[derive(Clone, Default)]
pub enum LbPolicy {
    /// Use the first endpoint that is not failing (gRPC's default).
    #[default]
    PickFirst,
    /// Rotate over every READY endpoint.
    RoundRobin,
    /// A user-supplied picker.
    Custom(Arc<dyn Picker>),
}

impl fmt::Debug for LbPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LbPolicy::PickFirst => "pick_first",
            LbPolicy::RoundRobin => "round_robin",
            LbPolicy::Custom(_) => "custom",
        })
    }
}

/// Custom pickers compare by identity: the same `Arc` is the same policy.
impl PartialEq for LbPolicy {
    fn eq(&self, other: &LbPolicy) -> bool {
        match (self, other) {
            (LbPolicy::PickFirst, LbPolicy::PickFirst)
            | (LbPolicy::RoundRobin, LbPolicy::RoundRobin) => true,
            (LbPolicy::Custom(a), LbPolicy::Custom(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

impl Eq for LbPolicy {}

impl std::hash::Hash for LbPolicy {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        std::mem::discriminant(self).hash(state);
        if let LbPolicy::Custom(picker) = self {
            Arc::as_ptr(picker).cast::<()>().hash(state);
        }
    }
}

impl LbPolicy {
    /// The policy named in gRPC service config terms: `pick_first` or `round_robin`.
    pub fn from_name(name: &str) -> Option<LbPolicy> {
        match name {
            "pick_first" => Some(LbPolicy::PickFirst),
            "round_robin" => Some(LbPolicy::RoundRobin),
            _ => None,
        }
    }
}

/// The per-channel state of a policy.
pub(crate) struct Balancer {
    policy: LbPolicy,
    next: AtomicUsize,
}

impl Balancer {
    pub(crate) fn new(policy: LbPolicy) -> Balancer {
        Balancer {
            policy,
            next: AtomicUsize::new(0),
        }
    }

    /// Whether every endpoint should be connected, not just the picked one.
    pub(crate) fn connect_all(&self) -> bool {
        match &self.policy {
            LbPolicy::PickFirst => false,
            LbPolicy::RoundRobin => true,
            LbPolicy::Custom(p) => p.connect_all(),
        }
    }

    /// Picks an endpoint for a call; `None` when there is none or a custom picker declines.
    pub(crate) fn pick(&self, endpoints: &[Arc<Subchannel>]) -> Option<usize> {
        match &self.policy {
            LbPolicy::Custom(picker) => {
                let stats: Vec<EndpointStats> = endpoints.iter().map(|e| e.stats()).collect();
                picker.pick(&stats).filter(|&i| i < endpoints.len())
            }
            _ => self.pick_by_state(endpoints.len(), |i| endpoints[i].state()),
        }
    }

    /// The built-in policies, over `n` endpoints whose states `state(i)` gives.
    fn pick_by_state(&self, n: usize, state: impl Fn(usize) -> ConnectivityState) -> Option<usize> {
        if n == 0 {
            return None;
        }
        let usable = |i: usize| {
            !matches!(
                state(i),
                ConnectivityState::TransientFailure | ConnectivityState::Shutdown
            )
        };
        let ready = |i: usize| state(i) == ConnectivityState::Ready;
        match &self.policy {
            LbPolicy::RoundRobin => {
                let turn = self.next.fetch_add(1, Ordering::Relaxed);
                nth_matching(n, turn, ready)
                    .or_else(|| nth_matching(n, turn, usable))
                    .or(Some(turn % n))
            }
            _ => (0..n)
                .find(|&i| ready(i))
                .or_else(|| (0..n).find(|&i| usable(i)))
                .or(Some(0)),
        }
    }
}

/// The `turn`-th (modulo their count) of the indexes below `n` that match.
fn nth_matching(n: usize, turn: usize, matches: impl Fn(usize) -> bool) -> Option<usize> {
    let count = (0..n).filter(|&i| matches(i)).count();
    if count == 0 {
        return None;
    }
    (0..n).filter(|&i| matches(i)).nth(turn % count)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ConnectivityState::*;

    fn pick(b: &Balancer, states: &[ConnectivityState]) -> Option<usize> {
        b.pick_by_state(states.len(), |i| states[i])
    }

    #[test]
    fn pick_first_prefers_ready_then_order() {
        let b = Balancer::new(LbPolicy::PickFirst);
        assert_eq!(pick(&b, &[Idle, Idle]), Some(0));
        assert_eq!(pick(&b, &[TransientFailure, Idle]), Some(1));
        assert_eq!(pick(&b, &[Connecting, Ready]), Some(1));
        assert_eq!(pick(&b, &[TransientFailure, TransientFailure]), Some(0));
        assert_eq!(pick(&b, &[]), None);
    }

    #[test]
    fn round_robin_rotates_over_ready_ones() {
        let b = Balancer::new(LbPolicy::RoundRobin);
        let states = [Ready, TransientFailure, Ready];
        let picks: Vec<_> = (0..6).map(|_| pick(&b, &states).unwrap()).collect();
        assert_eq!(picks.iter().filter(|&&i| i == 0).count(), 3);
        assert_eq!(picks.iter().filter(|&&i| i == 2).count(), 3);
        assert!(!picks.contains(&1));
        // Nothing ready: spread over the ones still trying.
        let picks: Vec<_> = (0..4)
            .map(|_| pick(&b, &[Connecting, TransientFailure, Idle]).unwrap())
            .collect();
        assert!(
            picks.iter().all(|&i| i == 0 || i == 2) && picks.contains(&0) && picks.contains(&2)
        );
    }
}
