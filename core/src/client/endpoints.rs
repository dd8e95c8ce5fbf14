//! A channel's endpoints: resolving its target (on first use, on failure and on a timer), the
//! subchannel per address, picking one for a call, and the channel's state from theirs.

use std::sync::atomic::Ordering;
use std::sync::{Arc, MutexGuard};
use std::time::Instant;

use super::channel::ChannelInner;
use super::resolve::Resolver;
use super::state::ConnectivityState;
use super::subchannel::{StreamSlot, Subchannel};
use crate::rt::Executor;
use crate::status::Status;
use crate::transport::Address;

#[derive(Default)]
/// The resolved endpoints and the state of resolving them.
pub(super) struct Endpoints {
    pub(super) list: Arc<Vec<Arc<Subchannel>>>,
    pub(super) resolved_at: Option<Instant>,
    pub(super) resolving: bool,
    /// A resolution was asked for too soon after the last one and waits for its time.
    pub(super) resolution_deferred: bool,
    pub(super) error: Option<Status>,
    pub(super) shut_down: bool,
}

impl ChannelInner {
    pub(super) fn endpoints(&self) -> MutexGuard<'_, Endpoints> {
        self.endpoints.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Recomputes the channel's state from its endpoints': READY if any is, else CONNECTING,
    /// else TRANSIENT_FAILURE, else IDLE.
    pub(super) fn endpoint_state_changed(self: &Arc<Self>) {
        let _update = self.state_update.lock().unwrap_or_else(|e| e.into_inner());
        let (list, shut_down) = {
            let eps = self.endpoints();
            (eps.list.clone(), eps.shut_down)
        };
        if shut_down {
            return;
        }
        let states: Vec<_> = list.iter().map(|s| s.state()).collect();
        let state = aggregate(&states);
        if state == ConnectivityState::TransientFailure {
            // An endpoint failing may mean the addresses changed: refresh them.
            self.request_resolution();
        }
        if state == ConnectivityState::Ready {
            self.watch_idle();
            self.watch_resolution();
        } else if list.iter().any(|s| s.connected()) {
            // Connected but not healthy: the idle timeout still closes those connections
            // (and their health checks) when no call comes.
            self.watch_idle();
        }
        self.state.set(state);
    }

    /// Asks for the target to be resolved again, rate-limited: at once if the last
    /// resolution is at least the minimum resolve interval old, else once it is (one request waits at
    /// a time; more in the meantime add nothing).
    pub(super) fn request_resolution(self: &Arc<Self>) {
        let wait = {
            let mut eps = self.endpoints();
            if eps.shut_down || eps.resolving || eps.resolution_deferred {
                return;
            }
            let next = eps
                .resolved_at
                .map(|at| at + self.config.min_resolve_interval);
            match next.filter(|at| *at > Instant::now()) {
                Some(at) => {
                    eps.resolution_deferred = true;
                    at
                }
                None => {
                    drop(eps);
                    self.start_resolution();
                    return;
                }
            }
        };
        let weak = Arc::downgrade(self);
        self.env.executor.spawn(Box::pin(async move {
            async_io::Timer::at(wait).await;
            if let Some(inner) = weak.upgrade() {
                inner.endpoints().resolution_deferred = false;
                inner.start_resolution();
            }
        }));
    }

    pub(super) fn start_resolution(self: &Arc<Self>) {
        {
            let mut eps = self.endpoints();
            if eps.resolving || eps.shut_down {
                return;
            }
            eps.resolving = true;
        }
        let weak = Arc::downgrade(self);
        let resolve = self.resolver.resolve();
        self.env.executor.spawn(Box::pin(async move {
            let result = resolve.await;
            if let Some(inner) = weak.upgrade() {
                inner.resolution_done(result);
            }
        }));
    }

    pub(super) fn resolution_done(self: &Arc<Self>, result: Result<Vec<Address>, Status>) {
        let mut eps = self.endpoints();
        eps.resolving = false;
        eps.resolved_at = Some(Instant::now());
        let mut gone = Vec::new();
        match result {
            Ok(mut addresses) if !addresses.is_empty() => {
                if self.config.shuffle_addresses {
                    fastrand::shuffle(&mut addresses);
                }
                eps.error = None;
                let old = eps.list.clone();
                let list: Vec<_> = addresses
                    .into_iter()
                    .map(|a| {
                        old.iter()
                            .find(|s| *s.address() == a)
                            .cloned()
                            .unwrap_or_else(|| Subchannel::new(a, self.env.clone()))
                    })
                    .collect();
                gone = old
                    .iter()
                    .filter(|s| !list.iter().any(|n| Arc::ptr_eq(n, s)))
                    .cloned()
                    .collect();
                eps.list = Arc::new(list);
            }
            Ok(_) => {
                eps.error = Some(Status::unavailable(format!(
                    "{} resolved to no addresses",
                    self.target.authority
                )))
            }
            Err(status) => eps.error = Some(status),
        }
        if eps.error.is_some() && eps.list.is_empty() {
            // Nothing to use: the next call tries again rather than waiting out the refresh.
            eps.resolved_at = None;
        }
        drop(eps);
        // Endpoints no longer resolved: their calls finish, then their connections close.
        for sub in gone {
            sub.shutdown();
        }
        self.resolved.notify(usize::MAX);
        self.endpoint_state_changed();
    }

    /// The current endpoints, resolving first if there are none yet (and refreshing them in
    /// the background when they are older than the DNS refresh interval).
    pub(super) async fn resolved_endpoints(
        self: &Arc<Self>,
    ) -> Result<Arc<Vec<Arc<Subchannel>>>, Status> {
        let mut waited = false;
        loop {
            let listener = self.resolved.listen();
            let (list, error, stale, shut_down) = {
                let eps = self.endpoints();
                let stale = eps
                    .resolved_at
                    .is_none_or(|at| at.elapsed() >= self.config.resolve_interval);
                (eps.list.clone(), eps.error.clone(), stale, eps.shut_down)
            };
            if shut_down {
                return Err(Status::unavailable("channel is shut down"));
            }
            if stale {
                self.start_resolution();
            }
            if !list.is_empty() {
                return Ok(list);
            }
            if let (true, Some(error)) = (waited, error) {
                return Err(error);
            }
            listener.await;
            waited = true;
        }
    }

    /// Picks an endpoint and takes a stream slot on it. An endpoint that cannot be reached
    /// is passed over for the next one the policy picks (no stream was started), until every
    /// endpoint was tried.
    pub(super) async fn pick(self: &Arc<Self>, wait_for_ready: bool) -> Result<StreamSlot, Status> {
        if let Some(check) = &self.env.health {
            return self.pick_healthy(&check.service, wait_for_ready).await;
        }
        let list = self.resolved_endpoints().await?;
        if self.balancer.connect_all() {
            for sub in list.iter().filter(|s| s.state() == ConnectivityState::Idle) {
                sub.request_connection();
            }
        }
        let mut tried = 0;
        loop {
            let Some(index) = self.balancer.pick(&list) else {
                return Err(Status::unavailable("the load balancer picked no endpoint"));
            };
            tried += 1;
            match list[index].acquire(wait_for_ready).await {
                Err(status) if tried < list.len() && status.code() == crate::Code::Unavailable => {
                    continue;
                }
                result => return result,
            }
        }
    }

    /// [`pick`](Self::pick) when the subchannels check health (gRFC A17): only READY
    /// endpoints, those connected and healthy, take calls. With none, a call waits for one
    /// while some endpoint may still get there (CONNECTING, IDLE) or when it is wait-for-ready;
    /// otherwise it fails UNAVAILABLE saying why each endpoint is not usable.
    async fn pick_healthy(
        self: &Arc<Self>,
        service: &str,
        wait_for_ready: bool,
    ) -> Result<StreamSlot, Status> {
        use ConnectivityState::{Ready, Shutdown, TransientFailure};
        loop {
            let resolved = self.resolved.listen();
            let list = self.resolved_endpoints().await?;
            // Read before the endpoints' states: a change after it wakes the wait below.
            let channel_state = self.state.get();
            for sub in list.iter().filter(|s| s.state() == ConnectivityState::Idle) {
                sub.request_connection();
            }
            let mut tried = 0;
            while let Some(index) = self.balancer.pick(&list) {
                if list[index].state() != Ready || tried >= list.len() {
                    break;
                }
                tried += 1;
                match list[index].acquire(wait_for_ready).await {
                    Err(status) if status.code() == crate::Code::Unavailable => continue,
                    result => return result,
                }
            }
            if channel_state == Shutdown {
                return Err(Status::unavailable("channel is shut down"));
            }
            let failing = list
                .iter()
                .all(|s| matches!(s.state(), TransientFailure | Shutdown));
            if failing && !wait_for_ready {
                let why: Vec<_> = list.iter().map(|s| s.why_not_ready()).collect();
                return Err(Status::unavailable(format!(
                    "no endpoint is healthy (health check of service {service:?}): {}",
                    why.join("; ")
                )));
            }
            let changed = std::pin::pin!(self.state.changed_from(channel_state));
            futures_util::future::select(changed, resolved).await;
        }
    }

    /// Starts the periodic re-resolution if it is not running. It runs until the channel has
    /// had no call for its idle timeout (an idle channel sends no DNS queries), is shut down,
    /// or is dropped.
    pub(super) fn watch_resolution(self: &Arc<Self>) {
        if self.refresh_watch.swap(true, Ordering::AcqRel) {
            return;
        }
        let weak = Arc::downgrade(self);
        let interval = self.config.resolve_interval;
        self.env.executor.spawn(Box::pin(async move {
            loop {
                async_io::Timer::after(interval).await;
                let Some(inner) = weak.upgrade() else { return };
                let (list, shut_down, due) = {
                    let eps = inner.endpoints();
                    let due = eps.resolved_at.is_none_or(|at| at.elapsed() >= interval);
                    (eps.list.clone(), eps.shut_down, due)
                };
                // Outside the endpoints' lock: a subchannel reports state changes, which take
                // that lock, while holding its own.
                let busy = list.iter().any(|s| s.active_streams() > 0);
                let idle = !busy && inner.since_last_call() >= inner.config.idle_timeout;
                if idle || shut_down {
                    inner.refresh_watch.store(false, Ordering::Release);
                    return;
                }
                if due {
                    inner.start_resolution();
                }
            }
        }));
    }
}

fn aggregate(states: &[ConnectivityState]) -> ConnectivityState {
    use ConnectivityState::*;
    for wanted in [Ready, Connecting, TransientFailure, Idle] {
        if states.contains(&wanted) {
            return wanted;
        }
    }
    if states.is_empty() { Idle } else { Shutdown }
}
