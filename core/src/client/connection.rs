//! One HTTP/2 connection to one endpoint: open (connect and handshake), drive (h2's
//! connection plus keepalive and BDP pings), GOAWAY and close.
//!
//! [`open`] returns two halves, as an HTTP/2 client connection has: a [`Connection`] handle
//! that opens streams and reports what the frame tap saw, and a [`Driver`], the future that
//! runs the connection until it closes and must be spawned. The connection closes when its
//! driver sees an error, the server's GOAWAY is followed by the end of its last stream, or
//! every handle is dropped.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use h2::client::SendRequest;

use super::options::ConnConfig;
use crate::proto::DATA_FRAME_BUDGET;
use crate::proto::ping::{PingConfig, PingManager, Verdict, fail};
use crate::proto::tap::{ConnectionEvents, FrameTap, PEER_SPEAKS_TLS, PeerGoAway, Role};
use crate::rt::{Compat, with_deadline};
use crate::status::Status;
use crate::transport::{Address, BoxedIo, Connector};

/// Streams we open before the server's SETTINGS say its limit: RFC 9113 §6.5.2 recommends
/// servers allow at least 100, and grpc-go and C-core default to it.
const ASSUMED_MAX_CONCURRENT_STREAMS: usize = 100;

/// The socket under h2: the frame tap over whatever the connector returned.
type Tapped = Compat<FrameTap<BoxedIo>>;

/// A handle on one open HTTP/2 connection: cheap to clone, all clones the same connection.
#[derive(Clone)]
pub(crate) struct Connection {
    send: SendRequest<Bytes>,
    /// What the frame tap saw (the peer's GOAWAY among others).
    events: Arc<ConnectionEvents>,
    /// Streams open, counted by the caller; the driver reads it for keepalive.
    active: Arc<AtomicUsize>,
}

impl Connection {
    /// h2's request handle, to open a stream.
    pub(crate) fn sender(&self) -> SendRequest<Bytes> {
        self.send.clone()
    }

    /// Streams the peer lets us open at once (its SETTINGS_MAX_CONCURRENT_STREAMS, read live).
    pub(crate) fn max_streams(&self) -> usize {
        self.send.current_max_send_streams()
    }

    /// Streams counted open with [`stream_opened`](Self::stream_opened).
    pub(crate) fn active_streams(&self) -> usize {
        self.active.load(Ordering::Relaxed)
    }

    /// Counts a stream as open.
    pub(crate) fn stream_opened(&self) {
        self.active.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a stream as closed.
    pub(crate) fn stream_closed(&self) {
        self.active.fetch_sub(1, Ordering::Relaxed);
    }

    /// The last GOAWAY the server sent, if any.
    pub(crate) fn peer_goaway(&self) -> Option<PeerGoAway> {
        self.events.peer_goaway()
    }

    /// Whether the server announced, by GOAWAY, that it never processed stream `id`.
    pub(crate) fn unprocessed(&self, id: u32) -> bool {
        self.peer_goaway().is_some_and(|g| id > g.last_stream_id)
    }
}

/// Runs one connection until it closes: polls h2's connection and, right after each poll,
/// the [`PingManager`] (keepalive and BDP). Spawn it; dropping it closes the connection.
///
/// Resolves to `Ok` when the connection ended cleanly; otherwise to the status its calls ended
/// with: UNAVAILABLE "keepalive timed out …" when the peer stopped answering, UNAVAILABLE "the
/// server seems to speak TLS …" when it answered in TLS, or the GOAWAY's reason and debug data
/// when the server closed the connection with one.
#[must_use = "a connection does nothing unless its driver is spawned"]
pub(crate) struct Driver {
    conn: h2::client::Connection<Tapped, Bytes>,
    pings: PingManager,
    events: Arc<ConnectionEvents>,
    active: Arc<AtomicUsize>,
    done: bool,
}

impl Driver {
    /// What the frame tap saw, shared with the [`Connection`] handle.
    pub(crate) fn events(&self) -> &Arc<ConnectionEvents> {
        &self.events
    }
}

impl Future for Driver {
    type Output = Result<(), Status>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(Ok(()));
        }
        let outcome = this.poll_connection(cx);
        if outcome.is_ready() {
            this.done = true;
            this.events.note_polled(true);
        }
        outcome
    }
}

impl Driver {
    fn poll_connection(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Status>> {
        let polled = Pin::new(&mut self.conn).poll(cx);
        self.events.note_polled(polled.is_ready());
        if let Poll::Ready(result) = polled {
            return Poll::Ready(result.map_err(|err| connection_error(err, &self.events)));
        }
        let active = self.active.load(Ordering::Relaxed);
        match self.pings.poll(cx, &mut self.conn, active) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Verdict::Dead(status)) => {
                fail(&self.events, &status);
                // Let h2 hit the failure now, so every open stream gets it rather than the
                // vaguer "broken pipe" a dropped connection leaves behind.
                let _ = Pin::new(&mut self.conn).poll(cx);
                Poll::Ready(Err(status))
            }
            // A client does not police the server's pings (the policy is cleared in `open`):
            // only h2's server API can answer abuse with a GOAWAY.
            Poll::Ready(Verdict::TooManyPings) => Poll::Pending,
        }
    }
}

/// Connects to `address` and performs the HTTP/2 handshake, within `config.connect_timeout`
/// for both. The returned [`Driver`] must be spawned; then wait for
/// [`settings_applied`](ConnectionEvents::settings_applied) before opening streams (see
/// [`wait_for_settings`]), so no call goes over a stream limit not yet heard.
pub(crate) async fn open(
    connector: &dyn Connector,
    address: &Address,
    config: &ConnConfig,
    ping: PingConfig,
) -> Result<(Connection, Driver), Status> {
    let timeout = config.connect_timeout;
    let deadline = Instant::now() + timeout;
    let io: BoxedIo = match with_deadline(Some(deadline), connector.connect(address)).await {
        Ok(Ok(io)) => io,
        Ok(Err(err)) => {
            let status = Status::unavailable(format!("failed to connect to {address}: {err}"));
            return Err(status.with_source(err));
        }
        Err(_) => return Err(timed_out("failed to connect to", address, timeout)),
    };
    let (tap, events) = FrameTap::new(io, Role::Client);
    let handshake = h2::client::Builder::new()
        .initial_window_size(ping.windows.stream)
        .initial_connection_window_size(ping.windows.connection)
        .max_frame_size(config.max_frame_size)
        .data_frame_budget(DATA_FRAME_BUDGET)
        .enable_push(false)
        // Should a stream go out before the server's SETTINGS after all, assume its limit is
        // the common 100 rather than h2's "unlimited".
        .initial_max_send_streams(ASSUMED_MAX_CONCURRENT_STREAMS)
        .handshake::<_, Bytes>(Compat::new(tap));
    let (send, mut conn) = match with_deadline(Some(deadline), handshake).await {
        Ok(Ok(pair)) => pair,
        Ok(Err(err)) if events.peer_speaks_tls() => {
            let why = format!("HTTP/2 handshake with {address} failed: {PEER_SPEAKS_TLS}");
            return Err(Status::unavailable(why).with_h2_source(err));
        }
        Ok(Err(err)) => {
            let why = format!("HTTP/2 handshake with {address} failed: {err}");
            return Err(Status::unavailable(why).with_h2_source(err));
        }
        Err(_) => return Err(timed_out("HTTP/2 handshake with", address, timeout)),
    };
    let ping_pong = conn.ping_pong();
    let ping = PingConfig {
        policy: None,
        ..ping
    };
    let active = Arc::new(AtomicUsize::new(0));
    let driver = Driver {
        conn,
        pings: PingManager::new(ping, events.clone(), ping_pong),
        events: events.clone(),
        active: active.clone(),
        done: false,
    };
    let connection = Connection {
        send,
        events,
        active,
    };
    Ok((connection, driver))
}

/// Waits until the server's first SETTINGS are in force on `connection` (or it ended), at most
/// until `connect_timeout` from `started`; on timeout fails the connection and says so.
pub(crate) async fn wait_for_settings(
    connection: &Connection,
    address: &Address,
    started: Instant,
    connect_timeout: Duration,
) -> Result<(), Status> {
    let events = &connection.events;
    let deadline = started + connect_timeout;
    if with_deadline(Some(deadline), events.settings_applied())
        .await
        .is_err()
    {
        let status = timed_out("no SETTINGS from", address, connect_timeout);
        fail(events, &status);
        return Err(status);
    }
    Ok(())
}

fn timed_out(what: &str, address: &Address, timeout: Duration) -> Status {
    Status::unavailable(format!("{what} {address}: timed out after {timeout:?}"))
}

/// The status for a client connection that ended with `err`: a server that answered in TLS is
/// named as such, and a GOAWAY's debug data is quoted when the peer sent some.
fn connection_error(err: h2::Error, events: &ConnectionEvents) -> Status {
    if events.peer_speaks_tls() {
        return Status::unavailable(PEER_SPEAKS_TLS).with_h2_source(err);
    }
    if err.is_go_away() && err.is_remote() {
        if let Some(goaway) = events.peer_goaway() {
            if !goaway.debug_data.is_empty() {
                return Status::from_goaway(goaway.reason, &goaway.debug_data).with_h2_source(err);
            }
        }
    }
    Status::from_h2(err)
}
