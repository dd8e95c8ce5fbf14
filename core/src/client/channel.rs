//! [`Channel`]: the handle clients keep. It resolves the target, balances calls over the
//! endpoints' connection pools, tracks connectivity, and closes idle connections.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use event_listener::Event;
use http::Request;

use super::balance::Balancer;
use super::builder::{ChannelBuilder, ChannelConfig};
use super::endpoints::Endpoints;
use super::options::CallOptions;
use super::resolve::Resolver;
use super::retry::RetryBudget;
use super::state::{ConnectivityState, StateCell};
use super::stats::{ChannelStats, Counters};
use super::subchannel::Env;
use super::target::Target;
use crate::intercept::{Chain, ClientInterceptor};
use crate::metrics::Metrics;
use crate::proto::headers::{self};
use crate::rt::Executor;
use crate::status::Status;

/// A gRPC channel: cheap to clone (a pointer copy), usable from every thread. Clones share the
/// resolver, the balancer and every endpoint's pool of HTTP/2 connections; nothing connects
/// until the first call or [`Channel::connect`].
#[derive(Clone)]
pub struct Channel {
    pub(super) inner: Arc<ChannelInner>,
}

/// What every clone of a [`Channel`] shares.
pub(super) struct ChannelInner {
    pub(super) target: Target,
    pub(super) config: ChannelConfig,
    pub(super) env: Arc<Env>,
    pub(super) resolver: Arc<dyn Resolver>,
    pub(super) balancer: Balancer,
    pub(super) endpoints: Mutex<Endpoints>,
    pub(super) resolved: Event,
    pub(super) state: StateCell,
    pub(super) counters: Arc<Counters>,
    /// Retry buffers and throttle, shared by the channel's calls.
    pub(super) retry_budget: Arc<RetryBudget>,
    /// The channel's interceptors, in order.
    pub(super) interceptors: Chain<dyn ClientInterceptor>,
    /// Where call measurements go, if anywhere.
    pub(super) metrics: Option<Arc<dyn Metrics>>,
    /// The target as given, for metrics.
    pub(super) target_text: Arc<str>,
    pub(super) created: Instant,
    /// Milliseconds after `created` of the last call start (for the idle timeout).
    pub(super) last_call: AtomicU64,
    pub(super) idle_watch: AtomicBool,
    pub(super) refresh_watch: AtomicBool,
    /// Held while the channel's state is recomputed and set, so that a recomputation that
    /// read older endpoint states cannot land after a newer one.
    pub(super) state_update: Mutex<()>,
}

impl fmt::Debug for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Channel")
            .field("target", &self.inner.target.authority)
            .finish_non_exhaustive()
    }
}

impl ChannelInner {
    /// Starts the idle watch if it is not running.
    pub(super) fn watch_idle(self: &Arc<Self>) {
        if self.idle_watch.swap(true, Ordering::AcqRel) {
            return;
        }
        let weak = Arc::downgrade(self);
        let timeout = self.config.idle_timeout;
        self.env.executor.spawn(Box::pin(async move {
            let mut wait = timeout;
            loop {
                async_io::Timer::after(wait).await;
                let Some(inner) = weak.upgrade() else { return };
                let list = inner.endpoints().list.clone();
                let busy = list.iter().any(|s| s.active_streams() > 0);
                let since = inner.since_last_call();
                if !busy && since >= timeout {
                    inner.idle_watch.store(false, Ordering::Release);
                    for sub in list.iter() {
                        sub.go_idle();
                    }
                    return;
                }
                wait = if busy { timeout } else { timeout - since };
            }
        }));
    }

    pub(super) fn since_last_call(&self) -> Duration {
        let now = self.created.elapsed().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(self.last_call.load(Ordering::Relaxed)))
    }

    pub(super) fn touch(&self) {
        self.last_call
            .store(self.created.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
}

impl Channel {
    /// A channel with default settings; fails on a malformed target.
    pub fn new(target: &str) -> Result<Channel, crate::Error> {
        Channel::builder(target).build()
    }

    /// A builder for a channel to `target`: `http://host:port`, `https://host:port` (TLS),
    /// `host:port`, `dns:///host:port`, `ipv4:a:p,b:p`, `ipv6:[a]:p`, `unix:path`,
    /// `unix:///path`, `unix-abstract:name`.
    pub fn builder(target: &str) -> ChannelBuilder {
        ChannelBuilder::new(target)
    }

    /// Starts connecting without waiting (C-core's `try_to_connect`): resolves the target and
    /// connects (every endpoint under round_robin) in the background, so it goes on if the
    /// caller stops waiting, even before the resolution has finished.
    pub fn request_connection(&self) {
        let inner = self.inner.clone();
        self.inner.env.executor.spawn(Box::pin(async move {
            if let Ok(list) = inner.resolved_endpoints().await {
                if inner.balancer.connect_all() {
                    list.iter().for_each(|s| s.request_connection());
                } else if let Some(i) = inner.balancer.pick(&list) {
                    list[i].request_connection();
                }
            }
        }));
    }

    /// Connects now instead of on the first call: [starts connecting](Self::request_connection)
    /// and waits for READY. Fails with the connection error if the channel goes to
    /// TRANSIENT_FAILURE first; dropped early, the connection attempt goes on.
    pub async fn connect(&self) -> Result<(), Status> {
        let inner = &self.inner;
        self.request_connection();
        let list = inner.resolved_endpoints().await?;
        loop {
            match inner.state.get() {
                ConnectivityState::Ready => return Ok(()),
                ConnectivityState::Shutdown => {
                    return Err(Status::unavailable("channel is shut down"));
                }
                ConnectivityState::TransientFailure if inner.env.health.is_some() => {
                    // Connected endpoints may be failing their health checks: say which.
                    let why: Vec<_> = list.iter().map(|s| s.why_not_ready()).collect();
                    return Err(Status::unavailable(format!(
                        "no endpoint is healthy: {}",
                        why.join("; ")
                    )));
                }
                ConnectivityState::TransientFailure => {
                    let why = list
                        .iter()
                        .map(|s| s.address().to_string())
                        .collect::<Vec<_>>()
                        .join(", ");
                    return Err(Status::unavailable(format!("could not connect to {why}")));
                }
                from => {
                    inner.state.changed_from(from).await;
                }
            }
        }
    }

    /// The channel's connectivity state now.
    pub fn state(&self) -> ConnectivityState {
        self.inner.state.get()
    }

    /// Waits until the state differs from `from` and returns the new state.
    pub async fn wait_for_state_change(&self, from: ConnectivityState) -> ConnectivityState {
        self.inner.state.changed_from(from).await
    }

    /// A snapshot of the channel's statistics (cheap: a few atomics and one lock per
    /// endpoint).
    pub fn stats(&self) -> ChannelStats {
        let (started, succeeded, failed) = self.inner.counters.read();
        let list = self.inner.endpoints().list.clone();
        let endpoints: Vec<_> = list.iter().map(|s| s.stats()).collect();
        ChannelStats {
            calls_started: started,
            calls_succeeded: succeeded,
            calls_failed: failed,
            active_streams: endpoints.iter().map(|e| e.active_streams).sum(),
            state: self.inner.state.get(),
            endpoints,
        }
    }

    /// Shuts the channel down: waiting calls fail, connections close once their calls end,
    /// and new calls fail with UNAVAILABLE. Every clone is affected.
    pub fn shutdown(&self) {
        let list = {
            let mut eps = self.inner.endpoints();
            eps.shut_down = true;
            std::mem::take(&mut eps.list)
        };
        for sub in list.iter() {
            sub.shutdown();
        }
        let _update = self
            .inner
            .state_update
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        self.inner.state.set(ConnectivityState::Shutdown);
        self.inner.resolved.notify(usize::MAX);
    }

    pub(crate) fn config(&self) -> &ChannelConfig {
        &self.inner.config
    }

    /// The request head of a call to `path` with `options`, on this channel's target.
    /// `options` with the service config's method config for `path` applied: its timeout
    /// when the call has no earlier deadline, its wait-for-ready when the call sets none, and
    /// its message size limits where they are below the call's (or the channel's).
    pub(crate) fn method_options(&self, path: &str, mut options: CallOptions) -> CallOptions {
        let config = &self.inner.config;
        let Some(service_config) = &config.service_config else {
            return options;
        };
        let method = service_config.method(path).cloned();
        options.method_config = Some(method.clone());
        let Some(method) = method else {
            return options;
        };
        if let Some(timeout) = method.timeout {
            options = options.timeout(timeout);
        }
        options.wait_for_ready = options.wait_for_ready.or(method.wait_for_ready);
        if let Some(limit) = method.max_request_bytes {
            let current = options
                .max_send_message_size
                .unwrap_or(config.max_send_message_size);
            options.max_send_message_size = Some(current.min(limit));
        }
        if let Some(limit) = method.max_response_bytes {
            let current = options
                .max_recv_message_size
                .unwrap_or(config.max_recv_message_size);
            options.max_recv_message_size = Some(current.min(limit));
        }
        options
    }

    pub(crate) fn request(&self, path: &str, options: &CallOptions) -> Result<Request<()>, Status> {
        let inner = &self.inner;
        headers::request(
            &inner.target.scheme,
            &inner.target.authority,
            path,
            &inner.config.user_agent,
            options.deadline,
            options.compression.unwrap_or(inner.config.compression),
            &options.metadata,
        )
    }

    /// A unary call with raw bytes.
    pub async fn unary(
        &self,
        path: &str,
        message: Bytes,
        options: CallOptions,
    ) -> Result<crate::Response<Bytes>, Status> {
        self.typed(crate::codec::BytesCodec)
            .unary(path, &message, options)
            .await
    }

    /// A server-streaming call with raw bytes.
    pub async fn server_streaming(
        &self,
        path: &str,
        message: Bytes,
        options: CallOptions,
    ) -> Result<super::Streaming<Bytes>, Status> {
        self.typed(crate::codec::BytesCodec)
            .server_streaming(path, &message, options)
            .await
    }

    /// A client-streaming call with raw bytes: feed the sender, then await the response.
    pub async fn client_streaming(
        &self,
        path: &str,
        options: CallOptions,
    ) -> Result<(super::Sender<Bytes>, super::ResponseFuture<Bytes>), Status> {
        self.typed(crate::codec::BytesCodec)
            .client_streaming(path, options)
            .await
    }

    /// A bidirectional-streaming call with raw bytes.
    pub async fn bidi_streaming(
        &self,
        path: &str,
        options: CallOptions,
    ) -> Result<(super::Sender<Bytes>, super::Streaming<Bytes>), Status> {
        self.typed(crate::codec::BytesCodec)
            .bidi_streaming(path, options)
            .await
    }

    /// A typed client over this channel that encodes and decodes with `codec`.
    pub fn typed<C: crate::Codec>(&self, codec: C) -> super::Client<C> {
        super::Client::new(self.clone(), codec)
    }
}
