//! One PING manager per HTTP/2 connection: keepalive, enforcement of the peer's ping rate, and
//! flow-control windows sized from a measured bandwidth-delay product (BDP).
//!
//! h2 lets us have one PING of our own in flight (its `PingPong`), answers the peer's PINGs
//! itself and does not report them. So the [`PingManager`] shares that one PING between
//! keepalive and BDP probes, and learns what crosses the wire from the [`FrameTap`] under h2
//! through [`ConnectionEvents`]. It runs in the task that polls the h2 connection, right after
//! each poll of it: the tap only sees bytes while h2 is being polled, so every event has been
//! recorded by the time the manager looks.
//!
//! - **Keepalive** (gRPC's `doc/keepalive.md`, gRFC A8 and A9): once `keepalive_time` passes
//!   without a frame from the peer, send a PING; if still nothing (the ACK or any other frame)
//!   arrives within `keepalive_timeout`, the connection is dead: every read and write on it
//!   fails with "keepalive timed out", which h2 hands to each open stream (so calls end
//!   UNAVAILABLE), and the driver returns. Like grpc-go, any frame received counts as a sign of
//!   life, so a busy connection never pings. Without active calls the client pings only when
//!   `keepalive_permit_without_calls` is set; a server pings regardless, as grpc-go's does.
//! - **Enforcement** (server): a PING from the client sooner than `min_ping_interval` after the
//!   previous one (or than two hours when no call is active and pings without calls are not
//!   permitted) is a strike; sending DATA or HEADERS forgives them, since a client may answer
//!   data with a BDP ping. Past [`MAX_PING_STRIKES`] the server sends GOAWAY
//!   ENHANCE_YOUR_CALM with debug data `too_many_pings` and closes, as grpc-go and C-core do.
//! - **BDP** (grpc-go's `bdp_estimator.go`): on DATA received with no probe outstanding, send a
//!   PING and count the DATA bytes that arrive until its ACK. When that sample reaches 2/3 of
//!   the current window and the bandwidth it implies is the highest seen, the window becomes
//!   twice the sample (at most [`BDP_LIMIT`]): the connection window through
//!   `set_target_window_size`, every stream's through a new SETTINGS_INITIAL_WINDOW_SIZE.
//!   A sample under a quarter of the window says the link is far from busy: the next probe
//!   then waits [`BDP_QUIET`] (as C-core spaces its BDP pings), so small calls do not cost a
//!   PING and its ACK each, which was a third of a small unary call's CPU time.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use async_io::Timer;
use bytes::Bytes;

use crate::client::{DEFAULT_CONNECTION_WINDOW, DEFAULT_STREAM_WINDOW};
use crate::proto::tap::ConnectionEvents;
use crate::status::Status;

/// Default keepalive timeout: 20 s, gRPC's default for `GRPC_ARG_KEEPALIVE_TIMEOUT_MS`
/// (`doc/keepalive.md`) and grpc-go's `keepalive.ClientParameters.Timeout`.
pub const DEFAULT_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// Default server keepalive time: 2 hours, gRPC's server default for
/// `GRPC_ARG_KEEPALIVE_TIME_MS` (`doc/keepalive.md`) and grpc-go's
/// `keepalive.ServerParameters.Time`. (Clients do not send keepalive pings by default.)
pub const DEFAULT_SERVER_KEEPALIVE_TIME: Duration = Duration::from_secs(2 * 60 * 60);

/// Default shortest interval a server accepts between a client's PINGs: 5 minutes, C-core's
/// `GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS` and grpc-go's
/// `keepalive.EnforcementPolicy.MinTime`.
pub const DEFAULT_MIN_PING_INTERVAL: Duration = Duration::from_secs(5 * 60);

/// Strikes a client may collect before the server closes the connection: C-core's
/// `GRPC_ARG_HTTP2_MAX_PING_STRIKES` default and grpc-go's `maxPingStrikes`; the third
/// strike closes.
pub const MAX_PING_STRIKES: u32 = 2;

/// The interval a server expects between PINGs when no call is active and pings without calls
/// are not permitted: grpc-go's `defaultPingTimeout` (2 hours).
const IDLE_MIN_PING_INTERVAL: Duration = Duration::from_secs(2 * 60 * 60);

/// GOAWAY debug data for ping abuse, as C-core and grpc-go send it (gRFC A8).
const TOO_MANY_PINGS: &[u8] = b"too_many_pings";

/// Time allowed to flush a final GOAWAY before the socket is dropped anyway.
pub(crate) const GOAWAY_FLUSH_GRACE: Duration = Duration::from_secs(1);

/// Windows adaptive flow control starts from: 65,535 bytes, HTTP/2's initial window
/// (RFC 9113 §6.9.2) and grpc-go's `defaultWindowSize`, from which its BDP estimator grows.
pub const ADAPTIVE_START_WINDOW: u32 = 65_535;

/// Largest window the BDP estimator sets: 16 MiB, grpc-go's `bdpLimit` ("TCP typically limits
/// this to 4MB, but some systems go up to 16MB").
pub const BDP_LIMIT: u32 = 16 * 1024 * 1024;

/// A sample at least this share of the current window may raise it: grpc-go's `beta`.
const BDP_GROW_AT: f64 = 0.66;

/// A raised window is this many times the sample: grpc-go's `gamma`.
const BDP_GROWTH: f64 = 2.0;

/// How long probing pauses after a sample under a quarter of the window: a connection that
/// turns busy waits at most this long before its windows start growing.
pub(crate) const BDP_QUIET: Duration = Duration::from_millis(100);

/// On a saturated link a sample is at most this many times the real BDP, so bandwidth is
/// `sample / (rtt * 1.5)`: grpc-go's `bdpEstimator.calculate`.
const SAMPLE_PER_BDP: f64 = 1.5;

/// RTT samples averaged plainly before the moving average takes over: grpc-go's bootstrap.
const RTT_BOOTSTRAP_SAMPLES: u32 = 10;

/// Weight of a new RTT sample in the moving average: grpc-go's `alpha`.
const RTT_ALPHA: f64 = 0.9;

/// Initial receive windows and whether the BDP estimator may grow them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct WindowConfig {
    /// Initial stream window (SETTINGS_INITIAL_WINDOW_SIZE).
    pub stream: u32,
    /// Initial connection window.
    pub connection: u32,
    /// Whether BDP estimates grow both windows.
    pub adaptive: bool,
}

impl WindowConfig {
    /// Resolves a builder's window options the way grpc-go does: windows adapt by default,
    /// starting at 64 KiB ([`ADAPTIVE_START_WINDOW`]); setting either window explicitly pins
    /// both (the other keeps its fixed default, [`DEFAULT_STREAM_WINDOW`] or
    /// [`DEFAULT_CONNECTION_WINDOW`]). An explicit `adaptive` wins over both rules: `true` with
    /// explicit windows grows from them, `false` alone pins the fixed defaults.
    pub(crate) fn resolve(
        stream: Option<u32>,
        connection: Option<u32>,
        adaptive: Option<bool>,
    ) -> Self {
        let adaptive = adaptive.unwrap_or(stream.is_none() && connection.is_none());
        let (stream, connection) = if adaptive {
            let s = stream.unwrap_or(ADAPTIVE_START_WINDOW);
            (s, connection.unwrap_or(s.max(ADAPTIVE_START_WINDOW)))
        } else {
            (
                stream.unwrap_or(DEFAULT_STREAM_WINDOW),
                connection.unwrap_or(DEFAULT_CONNECTION_WINDOW),
            )
        };
        WindowConfig {
            stream,
            connection,
            adaptive,
        }
    }
}

/// How a server polices the client's PINGs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PingPolicy {
    /// Shortest allowed interval between PINGs ([`DEFAULT_MIN_PING_INTERVAL`]).
    pub min_interval: Duration,
    /// Whether PINGs are allowed at that rate while no call is active (default false: then
    /// the interval is two hours).
    pub permit_without_calls: bool,
}

/// Everything a connection's [`PingManager`] needs to know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PingConfig {
    /// Send a keepalive PING after this long without a frame from the peer; `None` disables
    /// keepalive (gRPC's client default).
    pub keepalive_time: Option<Duration>,
    /// How long to wait for any frame after a keepalive PING before closing the connection.
    pub keepalive_timeout: Duration,
    /// Whether keepalive PINGs go out while no call is active.
    pub keepalive_permit_without_calls: bool,
    /// Initial windows, and whether they adapt.
    pub windows: WindowConfig,
    /// How the peer's PINGs are policed (servers only); `None` accepts any rate.
    pub policy: Option<PingPolicy>,
}

/// Why the manager wants the connection closed.
#[derive(Debug)]
pub(crate) enum Verdict {
    /// Keepalive found the peer unresponsive.
    Dead(Status),
    /// The peer pinged too often.
    TooManyPings,
}

/// The flow-control knobs the manager turns, on client and server connections alike.
pub(crate) trait WindowControl {
    /// h2's `set_target_window_size`.
    fn set_target_window_size(&mut self, size: u32);
    /// h2's `set_initial_window_size`; fails while an earlier SETTINGS awaits its ACK.
    fn set_initial_window_size(&mut self, size: u32) -> Result<(), h2::Error>;
}

impl<T> WindowControl for h2::client::Connection<T, Bytes>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    fn set_target_window_size(&mut self, size: u32) {
        h2::client::Connection::set_target_window_size(self, size);
    }

    fn set_initial_window_size(&mut self, size: u32) -> Result<(), h2::Error> {
        h2::client::Connection::set_initial_window_size(self, size)
    }
}

impl<T> WindowControl for h2::server::Connection<T, Bytes>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    fn set_target_window_size(&mut self, size: u32) {
        h2::server::Connection::set_target_window_size(self, size);
    }

    fn set_initial_window_size(&mut self, size: u32) -> Result<(), h2::Error> {
        h2::server::Connection::set_initial_window_size(self, size)
    }
}

/// grpc-go's BDP estimator, on plain numbers.
#[derive(Debug, Clone)]
struct BdpEstimator {
    /// The current estimate, which is also the window in force.
    bdp: u32,
    samples: u32,
    /// Smoothed round-trip time, in seconds.
    rtt: f64,
    /// Highest bandwidth seen, in bytes per second.
    bw_max: f64,
}

impl BdpEstimator {
    fn new(window: u32) -> BdpEstimator {
        BdpEstimator {
            bdp: window,
            samples: 0,
            rtt: 0.0,
            bw_max: 0.0,
        }
    }

    /// Whether no sample can raise the window any more.
    fn settled(&self) -> bool {
        self.bdp >= BDP_LIMIT
    }

    /// Takes one sample (`bytes` of DATA received between a PING and its ACK, `rtt` apart) and
    /// returns the new window when it should grow.
    fn complete(&mut self, bytes: u64, rtt: Duration) -> Option<u32> {
        self.samples = self.samples.saturating_add(1);
        let rtt_sample = rtt.as_secs_f64();
        if self.samples < RTT_BOOTSTRAP_SAMPLES {
            self.rtt += (rtt_sample - self.rtt) / f64::from(self.samples);
        } else {
            self.rtt += (rtt_sample - self.rtt) * RTT_ALPHA;
        }
        // A ping answered within the clock's resolution still measures a finite bandwidth.
        let rtt = self.rtt.max(1e-6);
        let sample = bytes as f64;
        let bw = sample / (rtt * SAMPLE_PER_BDP);
        if bw > self.bw_max {
            self.bw_max = bw;
        }
        if sample >= BDP_GROW_AT * f64::from(self.bdp) && bw >= self.bw_max && !self.settled() {
            let grown = (BDP_GROWTH * sample).min(f64::from(BDP_LIMIT)) as u32;
            if grown > self.bdp {
                self.bdp = grown;
                return Some(grown);
            }
        }
        None
    }
}

/// Our one PING in flight.
#[derive(Debug, Clone, Copy)]
struct InFlight {
    sent_at: Instant,
    /// For a BDP probe: the DATA byte count the sample starts from (just before the DATA that
    /// triggered the probe, which grpc-go counts in the sample too).
    bdp_from: Option<u64>,
}

/// Strike counting for a peer's PINGs (gRPC's keepalive enforcement): a PING sooner than
/// `min_interval` after the previous one (`idle_interval` while no call is active) is a
/// strike, unless we sent DATA or HEADERS since that PING, which clears the strikes (a client
/// answers our data with BDP pings).
#[derive(Debug)]
pub(crate) struct PingPolice {
    pub(crate) min_interval: std::time::Duration,
    pub(crate) idle_interval: std::time::Duration,
    pub(crate) max_strikes: u32,
    strikes: u32,
    last_ping_at: Option<std::time::Instant>,
    sent_at_last_ping: u64,
}

impl PingPolice {
    /// A policy with no strikes yet.
    pub(crate) fn new(
        min_interval: std::time::Duration,
        idle_interval: std::time::Duration,
        max_strikes: u32,
    ) -> PingPolice {
        PingPolice {
            min_interval,
            idle_interval,
            max_strikes,
            strikes: 0,
            last_ping_at: None,
            sent_at_last_ping: 0,
        }
    }

    /// Judges a PING read at `now`, when `sent` DATA/HEADERS frames had been written; true
    /// once past the strike limit.
    pub(crate) fn on_ping(
        &mut self,
        now: std::time::Instant,
        sent: u64,
        calls_active: bool,
    ) -> bool {
        let interval = if calls_active {
            self.min_interval
        } else {
            self.idle_interval
        };
        if sent != self.sent_at_last_ping {
            self.strikes = 0;
        } else if self
            .last_ping_at
            .and_then(|last| last.checked_add(interval))
            .is_some_and(|allowed| now < allowed)
        {
            self.strikes += 1;
        }
        self.last_ping_at = Some(now);
        self.sent_at_last_ping = sent;
        self.strikes > self.max_strikes
    }
}

/// Runs keepalive, ping enforcement and BDP for one connection; see the module docs.
pub(crate) struct PingManager {
    config: PingConfig,
    events: Arc<ConnectionEvents>,
    pings: Option<h2::PingPong>,
    in_flight: Option<InFlight>,
    timer: Timer,
    timer_at: Option<Instant>,
    // Keepalive.
    seen_frames: u64,
    last_read: Instant,
    keepalive_deadline: Option<Instant>,
    dormant: bool,
    // BDP.
    bdp: Option<BdpEstimator>,
    seen_data: u64,
    /// No probe before this (after a sample far below the window).
    bdp_quiet_until: Option<Instant>,
    connection_window: u32,
    pending_stream_window: Option<u32>,
}

impl PingManager {
    /// A manager for a connection whose tap reports to `events`; `pings` is the connection's
    /// `PingPong` (without it, keepalive and BDP are off).
    pub(crate) fn new(
        config: PingConfig,
        events: Arc<ConnectionEvents>,
        pings: Option<h2::PingPong>,
    ) -> PingManager {
        let windows = config.windows;
        let bdp = windows.adaptive.then(|| BdpEstimator::new(windows.stream));
        if let Some(policy) = config.policy {
            let idle_interval = if policy.permit_without_calls {
                policy.min_interval
            } else {
                IDLE_MIN_PING_INTERVAL
            };
            events.install_police(PingPolice::new(
                policy.min_interval,
                idle_interval,
                MAX_PING_STRIKES,
            ));
        }
        PingManager {
            events,
            pings,
            in_flight: None,
            timer: Timer::never(),
            timer_at: None,
            seen_frames: 0,
            last_read: Instant::now(),
            keepalive_deadline: None,
            dormant: true,
            bdp,
            seen_data: 0,
            bdp_quiet_until: None,
            connection_window: windows.connection,
            pending_stream_window: None,
            config,
        }
    }

    /// Looks at what happened since the last call and acts: to be called right after every
    /// poll of the connection, in the same task. `active_calls` is the number of open streams.
    /// Pending while the connection should stay open; the task is woken when the manager has
    /// work (a timer, or frames it queued that the connection must flush).
    pub(crate) fn poll<C: WindowControl>(
        &mut self,
        cx: &mut Context<'_>,
        conn: &mut C,
        active_calls: usize,
    ) -> Poll<Verdict> {
        let now = Instant::now();
        let mut queued = false;

        let frames = self.events.frames_received();
        if frames != self.seen_frames {
            self.seen_frames = frames;
            self.last_read = now;
            self.keepalive_deadline = None;
        }

        self.poll_pong(cx, now, conn, &mut queued);

        if self.police(active_calls) {
            return Poll::Ready(Verdict::TooManyPings);
        }

        // DATA since the last look starts a probe unless one is out. (A keepalive PING out
        // defers it: the next DATA after its ACK starts one.)
        let data = self.events.data_received();
        let from = std::mem::replace(&mut self.seen_data, data);
        if data > from
            && self.in_flight.is_none()
            && self.bdp.as_ref().is_some_and(|b| !b.settled())
            && self.bdp_quiet_until.is_none_or(|until| now >= until)
        {
            queued |= self.send_ping(now, Some(from));
        }

        if let Some(size) = self.pending_stream_window {
            if conn.set_initial_window_size(size).is_ok() {
                self.pending_stream_window = None;
                queued = true;
            }
        }

        let wake_at = match self.keepalive(now, active_calls, &mut queued) {
            Ok(at) => at,
            Err(status) => return Poll::Ready(Verdict::Dead(status)),
        };
        // Re-arming an async-io timer costs a reactor wake-up, and every frame received moves
        // the keepalive time. So, as grpc-go does, the timer is only moved earlier; when it
        // fires early we look again and arm it for the new time.
        if let Some(at) = wake_at {
            if self.timer_at.is_none_or(|armed| at < armed) {
                self.timer.set_at(at);
                self.timer_at = Some(at);
            }
        }
        if self.timer_at.is_some() && Pin::new(&mut self.timer).poll(cx).is_ready() {
            // Run again right away; that run arms the timer for what is next.
            self.timer_at = None;
            queued = true;
        }
        if queued {
            cx.waker().wake_by_ref();
        }
        Poll::Pending
    }

    fn poll_pong<C: WindowControl>(
        &mut self,
        cx: &mut Context<'_>,
        now: Instant,
        conn: &mut C,
        queued: &mut bool,
    ) {
        let (Some(in_flight), Some(pings)) = (self.in_flight, self.pings.as_mut()) else {
            return;
        };
        match pings.poll_pong(cx) {
            Poll::Pending => {}
            Poll::Ready(Err(_)) => {
                // The connection is closing; it reports why itself.
                self.pings = None;
                self.in_flight = None;
            }
            Poll::Ready(Ok(_)) => {
                self.in_flight = None;
                let (Some(from), Some(bdp)) = (in_flight.bdp_from, self.bdp.as_mut()) else {
                    return;
                };
                // The tap noted the DATA count when the ACK arrived: the sample is exactly what
                // came in between, however the frames were batched between our polls.
                let to = self.events.data_received_at_ping_ack();
                // DATA that followed the ACK in the same batch starts the next probe.
                self.seen_data = to;
                let sample = to.saturating_sub(from);
                let quiet = sample < u64::from(bdp.bdp / 4);
                self.bdp_quiet_until = quiet.then(|| now + BDP_QUIET);
                if let Some(window) = bdp.complete(sample, now - in_flight.sent_at) {
                    self.bdp_quiet_until = None;
                    self.connection_window = self.connection_window.max(window);
                    conn.set_target_window_size(self.connection_window);
                    if conn.set_initial_window_size(window).is_err() {
                        // An earlier SETTINGS is unacknowledged: retry on a later poll.
                        self.pending_stream_window = Some(window);
                    }
                    *queued = true;
                }
            }
        }
    }

    /// Whether the peer went past the PING strike limit (judged by the tap as PINGs arrive).
    fn police(&mut self, active_calls: usize) -> bool {
        if self.config.policy.is_none() {
            return false;
        }
        self.events.set_calls_active(active_calls > 0);
        self.events.too_many_pings()
    }

    /// Runs the keepalive clock: sends a PING when due, fails the connection when one went
    /// unanswered. Returns when to look again.
    fn keepalive(
        &mut self,
        now: Instant,
        active_calls: usize,
        queued: &mut bool,
    ) -> Result<Option<Instant>, Status> {
        let Some(time) = self.config.keepalive_time else {
            return Ok(None);
        };
        if self.pings.is_none() {
            return Ok(None);
        }
        if let Some(deadline) = self.keepalive_deadline {
            if now >= deadline {
                return Err(Status::unavailable(format!(
                    "keepalive timed out: no response to a PING within {:?}",
                    self.config.keepalive_timeout
                )));
            }
            return Ok(Some(deadline));
        }
        if active_calls == 0 && !self.config.keepalive_permit_without_calls {
            self.dormant = true;
            return Ok(None);
        }
        if std::mem::take(&mut self.dormant) {
            // Calls just started: a full keepalive_time from now, as grpc-go does.
            self.last_read = now;
        }
        let Some(due) = self.last_read.checked_add(time) else {
            return Ok(None);
        };
        if now < due {
            return Ok(Some(due));
        }
        // A BDP probe already out serves as the keepalive PING too.
        if self.in_flight.is_none() {
            *queued |= self.send_ping(now, None);
        }
        let deadline = now.checked_add(self.config.keepalive_timeout);
        self.keepalive_deadline = deadline;
        Ok(deadline)
    }

    fn send_ping(&mut self, now: Instant, bdp_from: Option<u64>) -> bool {
        let Some(pings) = self.pings.as_mut() else {
            return false;
        };
        match pings.send_ping(h2::Ping::opaque()) {
            Ok(()) => {
                self.in_flight = Some(InFlight {
                    sent_at: now,
                    bdp_from,
                });
                true
            }
            Err(_) => {
                // Closed (the connection reports why) or, never expected, already pending.
                self.pings = None;
                false
            }
        }
    }
}

/// Makes every later read and write on the tapped connection fail with `status`'s message.
pub(crate) fn fail(events: &ConnectionEvents, status: &Status) {
    events.fail(io::ErrorKind::TimedOut, status.message().to_string());
}

/// Starts closing a server connection for ping abuse: GOAWAY ENHANCE_YOUR_CALM carrying
/// `too_many_pings` (h2 sends the frame; the tap adds the debug data). Keep polling the
/// connection, for at most [`GOAWAY_FLUSH_GRACE`], to flush it.
pub(crate) fn goaway_too_many_pings<T>(
    conn: &mut h2::server::Connection<T, Bytes>,
    events: &ConnectionEvents,
) -> Status
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    events.arm_goaway_debug(Bytes::from_static(TOO_MANY_PINGS));
    conn.abrupt_shutdown(h2::Reason::ENHANCE_YOUR_CALM);
    Status::from_reason(
        h2::Reason::ENHANCE_YOUR_CALM,
        "closed the connection: too many pings",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn window_options_resolve() {
        let adaptive = WindowConfig::resolve(None, None, None);
        assert_eq!(
            adaptive,
            WindowConfig {
                stream: ADAPTIVE_START_WINDOW,
                connection: ADAPTIVE_START_WINDOW,
                adaptive: true
            }
        );
        // An explicit window pins both.
        let pinned = WindowConfig::resolve(Some(1 << 20), None, None);
        assert!(!pinned.adaptive);
        assert_eq!(pinned.stream, 1 << 20);
        assert_eq!(pinned.connection, DEFAULT_CONNECTION_WINDOW);
        // Adaptive off alone: the fixed defaults.
        let fixed = WindowConfig::resolve(None, None, Some(false));
        assert_eq!(
            (fixed.stream, fixed.connection, fixed.adaptive),
            (DEFAULT_STREAM_WINDOW, DEFAULT_CONNECTION_WINDOW, false)
        );
        // Adaptive on with a start window.
        let grown = WindowConfig::resolve(Some(1 << 20), None, Some(true));
        assert_eq!((grown.stream, grown.connection), (1 << 20, 1 << 20));
        assert!(grown.adaptive);
    }

    #[test]
    fn bdp_grows_to_twice_a_saturating_sample() {
        let mut bdp = BdpEstimator::new(65_535);
        // 2/3 of the window is the threshold.
        assert_eq!(bdp.complete(40_000, 20 * MS), None);
        assert_eq!(bdp.complete(60_000, 20 * MS), Some(120_000));
        assert_eq!(bdp.complete(120_000, 20 * MS), Some(240_000));
        // Less bandwidth than the best seen (same bytes, slower): no growth.
        assert_eq!(bdp.complete(200_000, 200 * MS), None);
        assert_eq!(bdp.bdp, 240_000);
    }

    #[test]
    fn bdp_stops_at_the_limit() {
        let mut bdp = BdpEstimator::new(65_535);
        let mut sample = 60_000u64;
        let mut last = 0;
        for _ in 0..20 {
            if let Some(w) = bdp.complete(sample, 10 * MS) {
                last = w;
            }
            sample *= 2;
        }
        assert_eq!(last, BDP_LIMIT);
        assert!(bdp.settled());
        assert_eq!(bdp.complete(u64::from(BDP_LIMIT) * 4, 10 * MS), None);
    }

    #[test]
    fn bdp_rtt_bootstraps_then_follows_recent_samples() {
        let mut bdp = BdpEstimator::new(65_535);
        bdp.complete(1, 10 * MS);
        bdp.complete(1, 30 * MS);
        assert!((bdp.rtt - 0.020).abs() < 1e-9);
        for _ in 0..20 {
            bdp.complete(1, 100 * MS);
        }
        assert!((bdp.rtt - 0.100).abs() < 1e-3);
    }

    #[test]
    fn ping_strikes_follow_wire_order() {
        use std::time::{Duration, Instant};
        let minute = Duration::from_secs(60);
        let mut police = PingPolice::new(minute, 2 * minute, 2);
        let now = Instant::now();
        // Pings each answering data we sent are never strikes, however close together.
        for sent in 1..10 {
            assert!(!police.on_ping(now, sent, true));
        }
        // Three pings in a row without data in between: two strikes are allowed, the third
        // goes past the limit.
        assert!(!police.on_ping(now, 9, true));
        assert!(!police.on_ping(now, 9, true));
        assert!(police.on_ping(now, 9, true));
        // Data clears the strikes; pings spaced by the interval are fine.
        let mut police = PingPolice::new(minute, 2 * minute, 2);
        for i in 0..5 {
            assert!(!police.on_ping(now + minute * i, 0, true));
        }
        // With no call open the idle interval applies.
        assert!(!police.on_ping(now + minute * 5 + minute / 2, 0, false));
        assert!(!police.on_ping(now + minute * 6, 0, false));
        assert!(police.on_ping(now + minute * 6 + minute / 2, 0, false));
    }
}
