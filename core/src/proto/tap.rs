//! The frame tap: sits between h2 and the socket and reports the HTTP/2 frames that cross
//! it ([`ConnectionEvents`]), since h2 answers PINGs itself and keeps frame-level events
//! private. Keepalive, ping enforcement and BDP estimation ([`super::ping`]) read what it saw.

mod goaway;

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};

use super::ping::PingPolice;
use goaway::GoAwayRewrite;

/// Length of the client connection preface, `PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n` (RFC 9113 §3.4).
const PREFACE_LEN: u32 = 24;

/// Length of an HTTP/2 frame header (RFC 9113 §4.1).
const FRAME_HEADER_LEN: usize = 9;

/// Frame types the tap reacts to (RFC 9113 §6).
pub(crate) mod kind {
    /// DATA (§6.1).
    pub(crate) const DATA: u8 = 0x0;
    /// HEADERS (§6.2).
    pub(crate) const HEADERS: u8 = 0x1;
    /// SETTINGS (§6.5).
    pub(crate) const SETTINGS: u8 = 0x4;
    /// PING (§6.7).
    pub(crate) const PING: u8 = 0x6;
    /// GOAWAY (§6.8).
    pub(crate) const GOAWAY: u8 = 0x7;
}

/// The ACK flag of SETTINGS and PING frames (RFC 9113 §6.5, §6.7).
const FLAG_ACK: u8 = 0x1;

/// What a client connection fails with when the server answers in TLS.
pub(crate) const PEER_SPEAKS_TLS: &str =
    "the server seems to speak TLS; use an https:// target or ChannelBuilder::tls";

/// Bytes of a TLS record header that tell it from an HTTP/2 frame header: content type,
/// then the protocol version's two bytes (RFC 8446 §5.1).
const TLS_SNIFF_LEN: usize = 3;

/// Whether the first bytes a server sent start a TLS record: an alert (21) or a handshake
/// (22) with version 3.0 to 3.4 (SSL 3.0 to TLS 1.3; TLS 1.3 records say 3.3). As an HTTP/2
/// frame header those bytes would declare a frame of over 1.3 MB, and a server's first frame
/// is a SETTINGS frame (RFC 9113 §3.4), a few dozen bytes.
fn looks_like_tls(b: &[u8; TLS_SNIFF_LEN]) -> bool {
    matches!(b[0], 21 | 22) && b[1] == 3 && b[2] <= 4
}

/// The first bytes read on a client connection, kept until there are enough for
/// [`looks_like_tls`].
#[derive(Debug, Default)]
struct TlsSniff {
    seen: [u8; TLS_SNIFF_LEN],
    len: usize,
}

impl TlsSniff {
    /// Takes the next bytes read; `Some` once the verdict is in.
    fn feed(&mut self, buf: &[u8]) -> Option<bool> {
        let n = buf.len().min(TLS_SNIFF_LEN - self.len);
        self.seen[self.len..self.len + n].copy_from_slice(&buf[..n]);
        self.len += n;
        (self.len == TLS_SNIFF_LEN).then(|| looks_like_tls(&self.seen))
    }
}

/// GOAWAY debug data kept from the peer; longer data is cut. gRPC's own strings
/// ("too_many_pings", "max_age") are far shorter.
const MAX_GOAWAY_DEBUG: usize = 256;

/// A parsed HTTP/2 frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FrameHead {
    /// Payload length (24 bits).
    pub(crate) len: u32,
    /// Frame type.
    pub(crate) kind: u8,
    /// Frame flags.
    pub(crate) flags: u8,
    /// Stream identifier (31 bits; the reserved bit is dropped).
    pub(crate) stream: u32,
}

impl FrameHead {
    fn parse(b: &[u8; FRAME_HEADER_LEN]) -> FrameHead {
        FrameHead {
            len: u32::from_be_bytes([0, b[0], b[1], b[2]]),
            kind: b[3],
            flags: b[4],
            stream: u32::from_be_bytes([b[5], b[6], b[7], b[8]]) & 0x7FFF_FFFF,
        }
    }

    fn encode(&self) -> [u8; FRAME_HEADER_LEN] {
        let len = self.len.to_be_bytes();
        let stream = self.stream.to_be_bytes();
        [
            len[1], len[2], len[3], self.kind, self.flags, stream[0], stream[1], stream[2],
            stream[3],
        ]
    }
}

/// What a run of bytes was, as a [`FrameScanner`] saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Piece {
    /// Bytes of the client connection preface.
    Preface,
    /// Bytes of a frame header; `Some` once the header is complete.
    Head(Option<FrameHead>),
    /// Payload bytes of `head`, starting `offset` bytes into its payload.
    Payload {
        /// The frame they belong to.
        head: FrameHead,
        /// Where in the payload they start.
        offset: u32,
    },
}

/// Follows frame boundaries in one direction of an HTTP/2 byte stream without buffering
/// payloads: only the 9-byte headers are kept, so any frame size costs nothing.
#[derive(Debug, Clone)]
pub(crate) struct FrameScanner {
    preface_left: u32,
    head: [u8; FRAME_HEADER_LEN],
    filled: usize,
    /// The frame whose payload is passing, and how much of it has passed.
    current: Option<(FrameHead, u32)>,
}

impl FrameScanner {
    /// A scanner at the start of a stream, which begins with the client preface if `preface`.
    pub(crate) fn new(preface: bool) -> FrameScanner {
        FrameScanner {
            preface_left: if preface { PREFACE_LEN } else { 0 },
            head: [0; FRAME_HEADER_LEN],
            filled: 0,
            current: None,
        }
    }

    /// Classifies a prefix of `buf`, returning its length (at least 1 for a non-empty `buf`)
    /// and what those bytes were.
    pub(crate) fn next(&mut self, buf: &[u8]) -> (usize, Piece) {
        if self.preface_left > 0 {
            let n = buf.len().min(self.preface_left as usize);
            self.preface_left -= n as u32;
            return (n, Piece::Preface);
        }
        if let Some((head, seen)) = &mut self.current {
            let head = *head;
            let offset = *seen;
            let n = buf.len().min((head.len - offset) as usize);
            *seen += n as u32;
            if *seen == head.len {
                self.current = None;
            }
            return (n, Piece::Payload { head, offset });
        }
        let n = buf.len().min(FRAME_HEADER_LEN - self.filled);
        self.head[self.filled..self.filled + n].copy_from_slice(&buf[..n]);
        self.filled += n;
        if self.filled < FRAME_HEADER_LEN {
            return (n, Piece::Head(None));
        }
        self.filled = 0;
        let head = FrameHead::parse(&self.head);
        if head.len > 0 {
            self.current = Some((head, 0));
        }
        (n, Piece::Head(Some(head)))
    }

    /// How many bytes of an unfinished frame header have been seen.
    fn partial_head(&self) -> usize {
        self.filled
    }

    /// The bytes of the last complete frame header.
    fn raw_head(&self) -> &[u8; FRAME_HEADER_LEN] {
        &self.head
    }
}

/// Which end of the connection a [`FrameTap`] sits on: the client writes the preface, the
/// server reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// The connecting side.
    Client,
    /// The accepting side.
    Server,
}

/// A GOAWAY frame received from the peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PeerGoAway {
    /// The last stream the peer says it processed.
    pub last_stream_id: u32,
    /// The error code.
    pub reason: h2::Reason,
    /// Opaque debug data (at most 256 bytes kept), such as gRPC's `too_many_pings`.
    pub debug_data: bytes::Bytes,
}

impl PeerGoAway {
    /// Whether this is gRPC's ping-abuse GOAWAY: ENHANCE_YOUR_CALM with `too_many_pings`,
    /// after which a client should double its keepalive time (gRFC A8).
    pub(crate) fn is_too_many_pings(&self) -> bool {
        self.reason == h2::Reason::ENHANCE_YOUR_CALM
            && self.debug_data.as_ref() == b"too_many_pings"
    }
}

/// What one HTTP/2 connection's [`FrameTap`] saw on the wire, and the few requests its
/// connection driver makes of the tap. Shared by the tap (inside h2's I/O) and the driver
/// polling the same connection, so plain atomics are enough.
#[derive(Debug, Default)]
pub(crate) struct ConnectionEvents {
    frames_read: AtomicU64,
    data_bytes_read: AtomicU64,
    headers_read: AtomicU64,
    pings_read: AtomicU64,
    data_at_ping_ack: AtomicU64,
    data_or_headers_written: AtomicU64,
    pings_written: AtomicU64,
    peer_goaway: Mutex<Option<PeerGoAway>>,
    /// Notified when a GOAWAY from the peer is read.
    goaway_event: event_listener::Event,
    goaway_debug: Mutex<Option<bytes::Bytes>>,
    goaway_armed: AtomicBool,
    failure: Mutex<Option<(io::ErrorKind, String)>>,
    failed: AtomicBool,
    /// The peer's first SETTINGS frame was read off the socket.
    settings_read: AtomicBool,
    /// ... and h2 has applied it (set by the connection's driver after polling h2).
    settings_applied: AtomicBool,
    settings_event: event_listener::Event,
    /// Ping policing (servers): strikes are judged as each PING is read, in wire order with
    /// the frames we write, so batching between the driver's polls cannot skew them.
    police: Mutex<Option<PingPolice>>,
    calls_active: AtomicBool,
    too_many_pings: AtomicBool,
    /// The server answered a client in TLS (see [`PEER_SPEAKS_TLS`]).
    peer_speaks_tls: AtomicBool,
}

impl ConnectionEvents {
    /// Frames of any type received.
    pub(crate) fn frames_received(&self) -> u64 {
        self.frames_read.load(Ordering::Acquire)
    }

    /// DATA payload bytes received (padding included, as flow control counts them).
    pub(crate) fn data_received(&self) -> u64 {
        self.data_bytes_read.load(Ordering::Acquire)
    }

    /// HEADERS frames received.
    #[cfg(test)]
    pub(crate) fn headers_received(&self) -> u64 {
        self.headers_read.load(Ordering::Acquire)
    }

    /// PING frames received from the peer, not counting ACKs of ours.
    #[cfg(test)]
    pub(crate) fn pings_received(&self) -> u64 {
        self.pings_read.load(Ordering::Acquire)
    }

    /// What [`data_received`](Self::data_received) was when the last PING ACK arrived.
    pub(crate) fn data_received_at_ping_ack(&self) -> u64 {
        self.data_at_ping_ack.load(Ordering::Acquire)
    }

    /// PING frames sent, not counting ACKs of the peer's.
    #[cfg(test)]
    pub(crate) fn pings_sent(&self) -> u64 {
        self.pings_written.load(Ordering::Acquire)
    }

    /// DATA and HEADERS frames sent.
    #[cfg(test)]
    pub(crate) fn data_or_headers_sent(&self) -> u64 {
        self.data_or_headers_written.load(Ordering::Acquire)
    }

    /// The last GOAWAY the peer sent, if any.
    pub(crate) fn peer_goaway(&self) -> Option<PeerGoAway> {
        lock(&self.peer_goaway).clone()
    }

    /// Resolves once the peer has sent a GOAWAY (at once if it already has).
    pub(crate) async fn goaway_received(&self) {
        loop {
            let listener = self.goaway_event.listen();
            if lock(&self.peer_goaway).is_some() {
                return;
            }
            listener.await;
        }
    }

    /// Makes the next GOAWAY h2 writes carry `debug` (h2 sends none with `abrupt_shutdown`).
    pub(crate) fn arm_goaway_debug(&self, debug: bytes::Bytes) {
        *lock(&self.goaway_debug) = Some(debug);
        self.goaway_armed.store(true, Ordering::Release);
    }

    fn take_goaway_debug(&self) -> Option<bytes::Bytes> {
        // A plain load first: this runs on every write.
        if !self.goaway_armed.load(Ordering::Acquire)
            || !self.goaway_armed.swap(false, Ordering::AcqRel)
        {
            return None;
        }
        lock(&self.goaway_debug).take()
    }

    /// Fails every later read and write on the connection with `kind` and `message`, so that
    /// h2 hands that error to every open stream.
    pub(crate) fn fail(&self, kind: io::ErrorKind, message: String) {
        *lock(&self.failure) = Some((kind, message));
        self.failed.store(true, Ordering::Release);
    }

    fn failure(&self) -> Option<io::Error> {
        if !self.failed.load(Ordering::Acquire) {
            return None;
        }
        lock(&self.failure)
            .as_ref()
            .map(|(kind, message)| io::Error::new(*kind, message.clone()))
    }

    /// Starts policing the peer's PINGs with `police`.
    pub(crate) fn install_police(&self, police: PingPolice) {
        *lock(&self.police) = Some(police);
    }

    /// Tells the police whether calls are open (which interval applies).
    pub(crate) fn set_calls_active(&self, active: bool) {
        self.calls_active.store(active, Ordering::Release);
    }

    /// Whether the server answered this client in TLS: its first bytes were a TLS record.
    pub(crate) fn peer_speaks_tls(&self) -> bool {
        self.peer_speaks_tls.load(Ordering::Acquire)
    }

    /// Whether the peer went past the PING strike limit.
    pub(crate) fn too_many_pings(&self) -> bool {
        self.too_many_pings.load(Ordering::Acquire)
    }

    /// Called by the connection's driver after each poll of h2: a SETTINGS frame read before
    /// that poll has been applied by it. With `ended`, wakes waiters anyway.
    pub(crate) fn note_polled(&self, ended: bool) {
        if (ended || self.settings_read.load(Ordering::Acquire))
            && !self.settings_applied.swap(true, Ordering::AcqRel)
        {
            self.settings_event.notify(usize::MAX);
        }
    }

    /// Completes once the peer's first SETTINGS were applied (or the connection ended).
    pub(crate) async fn settings_applied(&self) {
        loop {
            if self.settings_applied.load(Ordering::Acquire) {
                return;
            }
            let listener = self.settings_event.listen();
            if self.settings_applied.load(Ordering::Acquire) {
                return;
            }
            listener.await;
        }
    }

    fn on_frame_read(&self, head: &FrameHead) {
        self.frames_read.fetch_add(1, Ordering::AcqRel);
        match head.kind {
            kind::DATA => {
                self.data_bytes_read
                    .fetch_add(u64::from(head.len), Ordering::AcqRel);
            }
            kind::HEADERS => {
                self.headers_read.fetch_add(1, Ordering::AcqRel);
            }
            kind::PING if head.flags & FLAG_ACK == 0 => {
                self.pings_read.fetch_add(1, Ordering::AcqRel);
                if let Some(police) = lock(&self.police).as_mut() {
                    let sent = self.data_or_headers_written.load(Ordering::Acquire);
                    let active = self.calls_active.load(Ordering::Acquire);
                    if police.on_ping(std::time::Instant::now(), sent, active) {
                        self.too_many_pings.store(true, Ordering::Release);
                    }
                }
            }
            kind::SETTINGS if head.flags & FLAG_ACK == 0 => {
                self.settings_read.store(true, Ordering::Release);
            }
            kind::PING => {
                let data = self.data_bytes_read.load(Ordering::Acquire);
                self.data_at_ping_ack.store(data, Ordering::Release);
            }
            _ => {}
        }
    }

    fn on_frame_written(&self, head: &FrameHead) {
        match head.kind {
            kind::DATA | kind::HEADERS => {
                self.data_or_headers_written.fetch_add(1, Ordering::AcqRel);
            }
            kind::PING if head.flags & FLAG_ACK == 0 => {
                self.pings_written.fetch_add(1, Ordering::AcqRel);
            }
            _ => {}
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Sits between h2 and the socket and reports what crosses it, frame by frame, to a shared
/// [`ConnectionEvents`]. h2 answers PINGs itself and keeps frame-level events private; this is
/// how keepalive, ping enforcement and BDP estimation see them.
///
/// Reads and writes pass straight through; only frame headers are parsed. On a client, a
/// server that answers in TLS fails the connection with [`PEER_SPEAKS_TLS`] before h2 reads
/// the record as a frame. Two requests change the bytes: [`ConnectionEvents::fail`] turns
/// every later read and write into an error, and
/// [`ConnectionEvents::arm_goaway_debug`] makes the tap hold h2's next GOAWAY frame until it is
/// complete and write it out again with the debug data added (see [`goaway`], the one place
/// that edits h2's output). Held bytes are owed to the socket: every write, flush and close
/// sends them first.
#[derive(Debug)]
pub(crate) struct FrameTap<T> {
    inner: T,
    events: Arc<ConnectionEvents>,
    read: FrameScanner,
    read_goaway: Option<Vec<u8>>,
    write: FrameScanner,
    rewrite: Option<GoAwayRewrite>,
    owed: Vec<u8>,
    owed_from: usize,
    /// On a client, the server's first bytes until they show whether it speaks TLS.
    sniff: Option<TlsSniff>,
}

impl<T> FrameTap<T> {
    /// Wraps `inner` on the `role` side of a connection; the events are shared with the driver.
    pub(crate) fn new(inner: T, role: Role) -> (FrameTap<T>, Arc<ConnectionEvents>) {
        let events = Arc::new(ConnectionEvents::default());
        let tap = FrameTap {
            inner,
            events: events.clone(),
            read: FrameScanner::new(role == Role::Server),
            read_goaway: None,
            write: FrameScanner::new(role == Role::Client),
            rewrite: None,
            owed: Vec::new(),
            owed_from: 0,
            sniff: (role == Role::Client).then(TlsSniff::default),
        };
        (tap, events)
    }

    fn scan_read(&mut self, mut buf: &[u8]) {
        while !buf.is_empty() {
            let (n, piece) = self.read.next(buf);
            match piece {
                Piece::Head(Some(head)) => {
                    self.events.on_frame_read(&head);
                    if head.kind == kind::GOAWAY && head.stream == 0 && head.len >= 8 {
                        self.read_goaway = Some(Vec::with_capacity(8 + MAX_GOAWAY_DEBUG));
                    }
                }
                Piece::Payload { head, offset } if head.kind == kind::GOAWAY => {
                    if let Some(payload) = &mut self.read_goaway {
                        let room = 8 + MAX_GOAWAY_DEBUG - payload.len();
                        payload.extend_from_slice(&buf[..n.min(room)]);
                        let end = offset as usize + n == head.len as usize;
                        if end || payload.len() == 8 + MAX_GOAWAY_DEBUG {
                            let goaway = PeerGoAway {
                                last_stream_id: u32::from_be_bytes([
                                    payload[0], payload[1], payload[2], payload[3],
                                ]) & 0x7FFF_FFFF,
                                reason: u32::from_be_bytes([
                                    payload[4], payload[5], payload[6], payload[7],
                                ])
                                .into(),
                                debug_data: bytes::Bytes::copy_from_slice(&payload[8..]),
                            };
                            *lock(&self.events.peer_goaway) = Some(goaway);
                            self.events.goaway_event.notify(usize::MAX);
                            self.read_goaway = None;
                        }
                    }
                }
                _ => {}
            }
            buf = &buf[n..];
        }
    }

    fn scan_written(&mut self, mut buf: &[u8]) {
        while !buf.is_empty() {
            let (n, piece) = self.write.next(buf);
            if let Piece::Head(Some(head)) = piece {
                self.events.on_frame_written(&head);
            }
            buf = &buf[n..];
        }
    }

    /// Takes `buf` into `owed`, rewriting the armed GOAWAY on the way.
    fn rewrite_into_owed(&mut self, buf: &[u8]) {
        match self.rewrite.as_mut() {
            Some(rewrite) => rewrite.take(buf, &mut self.write, &self.events, &mut self.owed),
            None => self.owed.extend_from_slice(buf),
        }
    }
}

impl<T: futures_io::AsyncWrite + Unpin> FrameTap<T> {
    /// Writes out the bytes already accepted from h2 but not yet sent.
    fn poll_owed(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.owed_from < self.owed.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.owed[self.owed_from..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.owed_from += n;
        }
        self.owed.clear();
        self.owed_from = 0;
        Poll::Ready(Ok(()))
    }

    fn start_rewrite_if_armed(&mut self) {
        if self.rewrite.is_none() {
            if let Some(debug) = self.events.take_goaway_debug() {
                self.rewrite = Some(GoAwayRewrite::new(debug, self.write.partial_head()));
            }
        }
    }
}

impl<T: futures_io::AsyncRead + Unpin> futures_io::AsyncRead for FrameTap<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        if let Some(err) = self.events.failure() {
            return Poll::Ready(Err(err));
        }
        let n = ready!(Pin::new(&mut self.inner).poll_read(cx, buf))?;
        if let Some(sniff) = &mut self.sniff {
            let verdict = if n == 0 {
                Some(false)
            } else {
                sniff.feed(&buf[..n])
            };
            match verdict {
                Some(true) => {
                    self.sniff = None;
                    self.events.peer_speaks_tls.store(true, Ordering::Release);
                    let why = PEER_SPEAKS_TLS.to_string();
                    self.events.fail(io::ErrorKind::InvalidData, why);
                    return Poll::Ready(Err(self.events.failure().expect("just failed")));
                }
                Some(false) => self.sniff = None,
                None => {}
            }
        }
        self.scan_read(&buf[..n]);
        Poll::Ready(Ok(n))
    }
}

impl<T: futures_io::AsyncWrite + Unpin> futures_io::AsyncWrite for FrameTap<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if let Some(err) = this.events.failure() {
            return Poll::Ready(Err(err));
        }
        ready!(this.poll_owed(cx))?;
        this.start_rewrite_if_armed();
        if this.rewrite.is_some() {
            // The connection is closing: take everything, rewrite, and start sending it. What
            // does not go out now goes out on the next write, flush or close.
            this.rewrite_into_owed(buf);
            if let Poll::Ready(Err(err)) = this.poll_owed(cx) {
                return Poll::Ready(Err(err));
            }
            return Poll::Ready(Ok(buf.len()));
        }
        let n = ready!(Pin::new(&mut this.inner).poll_write(cx, buf))?;
        this.scan_written(&buf[..n]);
        Poll::Ready(Ok(n))
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.rewrite.is_some()
            || !this.owed.is_empty()
            || this.events.failed.load(Ordering::Acquire)
            || this.events.goaway_armed.load(Ordering::Acquire)
        {
            let first = bufs
                .iter()
                .find(|b| !b.is_empty())
                .map_or(&[][..], |b| &**b);
            return Pin::new(this).poll_write(cx, first);
        }
        let n = ready!(Pin::new(&mut this.inner).poll_write_vectored(cx, bufs))?;
        let mut left = n;
        for buf in bufs {
            if left == 0 {
                break;
            }
            let take = left.min(buf.len());
            this.scan_written(&buf[..take]);
            left -= take;
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if let Some(err) = self.events.failure() {
            return Poll::Ready(Err(err));
        }
        ready!(self.poll_owed(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.events.failure().is_none() {
            ready!(self.poll_owed(cx))?;
        }
        Pin::new(&mut self.inner).poll_close(cx)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use futures_io::{AsyncRead, AsyncWrite};

    pub(super) fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let head = FrameHead {
            len: payload.len() as u32,
            kind,
            flags,
            stream,
        };
        let mut out = head.encode().to_vec();
        out.extend_from_slice(payload);
        out
    }

    /// A socket that accepts at most `chunk` bytes per write and is not ready every other
    /// call, so taps see frames cut at every boundary.
    pub(super) struct Stingy {
        pub(super) written: Vec<u8>,
        to_read: Vec<u8>,
        chunk: usize,
        ready: bool,
    }

    impl Stingy {
        pub(super) fn new(chunk: usize) -> Stingy {
            Stingy {
                written: Vec::new(),
                to_read: Vec::new(),
                chunk,
                ready: false,
            }
        }

        fn turn(&mut self, cx: &mut Context<'_>) -> bool {
            self.ready = !self.ready;
            if !self.ready {
                cx.waker().wake_by_ref();
            }
            self.ready
        }
    }

    impl AsyncWrite for Stingy {
        fn poll_write(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            if !self.turn(cx) {
                return Poll::Pending;
            }
            let n = buf.len().min(self.chunk);
            self.written.extend_from_slice(&buf[..n]);
            Poll::Ready(Ok(n))
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    impl AsyncRead for Stingy {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut [u8],
        ) -> Poll<io::Result<usize>> {
            if !self.turn(cx) {
                return Poll::Pending;
            }
            let n = buf.len().min(self.chunk).min(self.to_read.len());
            buf[..n].copy_from_slice(&self.to_read[..n]);
            self.to_read.drain(..n);
            Poll::Ready(Ok(n))
        }
    }

    pub(super) fn block<T>(mut f: impl FnMut(&mut Context<'_>) -> Poll<T>) -> T {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        loop {
            if let Poll::Ready(out) = f(&mut cx) {
                return out;
            }
        }
    }

    pub(super) fn write_all<T: AsyncWrite + Unpin>(tap: &mut FrameTap<T>, mut buf: &[u8]) {
        while !buf.is_empty() {
            let n = block(|cx| Pin::new(&mut *tap).poll_write(cx, buf)).unwrap();
            buf = &buf[n..];
        }
    }

    fn read_all<T: AsyncRead + Unpin>(tap: &mut FrameTap<T>) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            let mut buf = [0u8; 64];
            let n = block(|cx| Pin::new(&mut *tap).poll_read(cx, &mut buf)).unwrap();
            if n == 0 {
                return out;
            }
            out.extend_from_slice(&buf[..n]);
        }
    }

    #[test]
    fn scanner_finds_frames_cut_anywhere() {
        let mut wire = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        wire.extend(frame(kind::HEADERS, 0x4, 1, &[7; 30]));
        wire.extend(frame(kind::DATA, 0, 1, &[1; 100]));
        wire.extend(frame(kind::PING, 0, 0, &[0; 8]));
        wire.extend(frame(4, 0, 0, &[]));
        for cut in 1..wire.len() {
            let mut scanner = FrameScanner::new(true);
            let mut heads = Vec::new();
            let mut payload = 0;
            for chunk in wire.chunks(cut) {
                let mut rest = chunk;
                while !rest.is_empty() {
                    let (n, piece) = scanner.next(rest);
                    assert!(n > 0);
                    match piece {
                        Piece::Head(Some(h)) => heads.push((h.kind, h.len, h.stream)),
                        Piece::Payload { .. } => payload += n,
                        _ => {}
                    }
                    rest = &rest[n..];
                }
            }
            assert_eq!(
                heads,
                [
                    (kind::HEADERS, 30, 1),
                    (kind::DATA, 100, 1),
                    (kind::PING, 8, 0),
                    (4, 0, 0)
                ]
            );
            assert_eq!(payload, 138);
        }
    }

    #[test]
    fn read_path_reports_events() {
        let mut wire = frame(4, 0, 0, &[]);
        wire.extend(frame(kind::HEADERS, 0x4, 1, &[0; 12]));
        wire.extend(frame(kind::DATA, 0, 1, &[0; 1000]));
        wire.extend(frame(kind::PING, FLAG_ACK, 0, &[0; 8]));
        wire.extend(frame(kind::DATA, 0x1, 1, &[0; 24]));
        wire.extend(frame(kind::PING, 0, 0, &[0; 8]));
        let mut goaway = 3u32.to_be_bytes().to_vec();
        goaway.extend(11u32.to_be_bytes());
        goaway.extend(b"too_many_pings");
        wire.extend(frame(kind::GOAWAY, 0, 0, &goaway));
        let mut io = Stingy::new(5);
        io.to_read = wire;
        let (mut tap, events) = FrameTap::new(io, Role::Client);
        read_all(&mut tap);
        assert_eq!(events.frames_received(), 7);
        assert_eq!(events.headers_received(), 1);
        assert_eq!(events.data_received(), 1024);
        assert_eq!(events.data_received_at_ping_ack(), 1000);
        assert_eq!(events.pings_received(), 1);
        let goaway = events.peer_goaway().unwrap();
        assert_eq!(goaway.last_stream_id, 3);
        assert!(goaway.is_too_many_pings());
    }

    #[test]
    fn server_read_path_skips_the_preface() {
        let mut wire = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        wire.extend(frame(kind::PING, 0, 0, &[0; 8]));
        let mut io = Stingy::new(7);
        io.to_read = wire;
        let (mut tap, events) = FrameTap::new(io, Role::Server);
        read_all(&mut tap);
        assert_eq!(events.frames_received(), 1);
        assert_eq!(events.pings_received(), 1);
    }

    #[test]
    fn write_path_counts_and_passes_bytes_through() {
        let mut wire = frame(kind::HEADERS, 0x4, 2, &[0; 12]);
        wire.extend(frame(kind::DATA, 0, 2, &[9; 300]));
        wire.extend(frame(kind::PING, 0, 0, &[0; 8]));
        wire.extend(frame(kind::PING, FLAG_ACK, 0, &[0; 8]));
        let (mut tap, events) = FrameTap::new(Stingy::new(4), Role::Server);
        write_all(&mut tap, &wire);
        assert_eq!(tap.inner.written, wire);
        assert_eq!(events.data_or_headers_sent(), 2);
        assert_eq!(events.pings_sent(), 1);
    }

    #[test]
    fn a_client_fails_on_a_server_that_answers_in_tls() {
        // A TLS alert record (content type 21, version 3.3, fatal decode_error) and the start
        // of a handshake record (22, version 3.1).
        for record in [&[21u8, 3, 3, 0, 2, 2, 50][..], &[22, 3, 1, 0, 90, 2]] {
            let mut io = Stingy::new(1);
            io.to_read = record.to_vec();
            let (mut tap, events) = FrameTap::new(io, Role::Client);
            let mut buf = [0u8; 64];
            let err = loop {
                match block(|cx| Pin::new(&mut tap).poll_read(cx, &mut buf)) {
                    Ok(n) => assert!(n > 0, "the tap let the record through"),
                    Err(err) => break err,
                }
            };
            assert_eq!(err.kind(), io::ErrorKind::InvalidData);
            assert_eq!(err.to_string(), PEER_SPEAKS_TLS);
            assert!(events.peer_speaks_tls());
            let err = block(|cx| Pin::new(&mut tap).poll_write(cx, b"x")).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        }
    }

    #[test]
    fn http2_from_a_server_is_not_taken_for_tls() {
        // A server's first frame, SETTINGS, passes untouched, even read a byte at a time.
        let mut wire = frame(kind::SETTINGS, 0, 0, &[0; 36]);
        wire.extend(frame(kind::PING, 0, 0, &[0; 8]));
        let mut io = Stingy::new(1);
        io.to_read = wire.clone();
        let (mut tap, events) = FrameTap::new(io, Role::Client);
        assert_eq!(read_all(&mut tap), wire);
        assert!(!events.peer_speaks_tls());
        // A server reads a client's preface, never a TLS record: no sniffing there.
        let mut io = Stingy::new(64);
        io.to_read = vec![22, 3, 1, 0, 90];
        let (mut tap, events) = FrameTap::new(io, Role::Server);
        assert_eq!(read_all(&mut tap).len(), 5);
        assert!(!events.peer_speaks_tls());
    }

    #[test]
    fn failure_fails_reads_and_writes() {
        let (mut tap, events) = FrameTap::new(Stingy::new(8), Role::Client);
        events.fail(io::ErrorKind::TimedOut, "keepalive timed out".into());
        let err = block(|cx| Pin::new(&mut tap).poll_write(cx, b"x")).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_eq!(err.to_string(), "keepalive timed out");
        let mut buf = [0u8; 4];
        let err = block(|cx| Pin::new(&mut tap).poll_read(cx, &mut buf)).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    }
}
