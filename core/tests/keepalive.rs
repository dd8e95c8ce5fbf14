//! Keepalive, ping policing and adaptive flow-control windows, over TCP on 127.0.0.1 with a
//! proxy in the middle that can add latency, stop forwarding ("black-hole" the peer) and read
//! the frames going each way. Clients are plexus channels, except where a test needs a peer
//! that only answers (a plain h2 connection).

use std::future::Future;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_io::{Async, Timer};
use bytes::Bytes;
use futures_util::future::{Either, select};
use plexus::rt::Compat;
use plexus::{
    BytesCodec, CallOptions, Channel, ChannelBuilder, Code, ConnectivityState, Listener,
    RequestStream, Response, Server, ServerBuilder,
};
use smol::io::{AsyncReadExt, AsyncWriteExt};

const MS: Duration = Duration::from_millis(1);

/// HTTP/2's initial window (RFC 9113 §6.9.2), where adaptive windows start.
const START_WINDOW: u32 = 65_535;

/// Runs `fut` on smol, failing the test if it takes longer than `limit`.
fn run<F: Future>(limit: Duration, fut: F) -> F::Output {
    smol::block_on(async {
        match select(std::pin::pin!(fut), Timer::after(limit)).await {
            Either::Left((out, _)) => out,
            Either::Right(_) => panic!("test timed out after {limit:?}"),
        }
    })
}

/// Waits until `cond` holds, looking every 5 ms: a wait for a state, not a judgement on how long
/// it took (the test's own limit catches a hang).
async fn until(mut cond: impl FnMut() -> bool) {
    while !cond() {
        Timer::after(5 * MS).await;
    }
}

// ===== A proxy that delays, black-holes and reads frames =====

/// What one direction of a proxied connection carried.
#[derive(Debug, Default)]
struct Sniffed {
    buf: Vec<u8>,
    preface_left: usize,
    /// Every SETTINGS_INITIAL_WINDOW_SIZE value sent, in order.
    initial_windows: Vec<u32>,
    /// Sum of connection-level WINDOW_UPDATE increments.
    connection_window_increments: u64,
    /// PINGs, not counting ACKs.
    pings: usize,
    /// GOAWAY frames.
    goaways: usize,
}

impl Sniffed {
    fn new(preface: bool) -> Sniffed {
        Sniffed {
            preface_left: if preface { 24 } else { 0 },
            ..Sniffed::default()
        }
    }

    fn feed(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
        let skip = self.preface_left.min(self.buf.len());
        self.buf.drain(..skip);
        self.preface_left -= skip;
        let mut at = 0;
        while self.buf.len() - at >= 9 {
            let h = &self.buf[at..at + 9];
            let len = u32::from_be_bytes([0, h[0], h[1], h[2]]) as usize;
            let (kind, flags) = (h[3], h[4]);
            let stream = u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7FFF_FFFF;
            if self.buf.len() - at < 9 + len {
                break;
            }
            let payload = &self.buf[at + 9..at + 9 + len];
            match kind {
                4 if flags & 1 == 0 => {
                    for setting in payload.chunks_exact(6) {
                        if u16::from_be_bytes([setting[0], setting[1]]) == 4 {
                            self.initial_windows.push(u32::from_be_bytes([
                                setting[2], setting[3], setting[4], setting[5],
                            ]));
                        }
                    }
                }
                6 if flags & 1 == 0 => self.pings += 1,
                7 => self.goaways += 1,
                8 if stream == 0 => {
                    let inc = u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]]);
                    self.connection_window_increments += u64::from(inc & 0x7FFF_FFFF);
                }
                _ => {}
            }
            at += 9 + len;
        }
        self.buf.drain(..at);
    }
}

#[derive(Debug)]
struct ProxyShared {
    delay: Duration,
    blackhole: AtomicBool,
    upstream_closed: Mutex<Option<Instant>>,
    to_server: Mutex<Sniffed>,
    to_client: Mutex<Sniffed>,
}

/// A TCP proxy to one upstream address, for one client connection at a time.
struct Proxy {
    addr: SocketAddr,
    shared: Arc<ProxyShared>,
}

impl Proxy {
    /// Forwards to `upstream`, adding `delay` in each direction.
    fn start(upstream: SocketAddr, delay: Duration) -> Proxy {
        let listener = Async::<TcpListener>::bind(([127, 0, 0, 1], 0)).expect("bind proxy");
        let addr = listener.get_ref().local_addr().expect("proxy address");
        let shared = Arc::new(ProxyShared {
            delay,
            blackhole: AtomicBool::new(false),
            upstream_closed: Mutex::new(None),
            to_server: Mutex::new(Sniffed::new(true)),
            to_client: Mutex::new(Sniffed::new(false)),
        });
        let state = shared.clone();
        smol::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = Async::<TcpStream>::connect(upstream).await else {
                    return;
                };
                let (client, server) = (Arc::new(client), Arc::new(server));
                pump(client.clone(), server.clone(), state.clone(), true);
                pump(server, client, state.clone(), false);
            }
        })
        .detach();
        Proxy { addr, shared }
    }

    /// Stops forwarding in both directions; bytes are read and dropped, as a dead network
    /// path would.
    fn blackhole(&self) {
        self.shared.blackhole.store(true, Ordering::SeqCst);
    }

    fn upstream_closed(&self) -> Option<Instant> {
        *self.shared.upstream_closed.lock().unwrap()
    }

    async fn wait_upstream_closed(&self) -> Instant {
        loop {
            if let Some(at) = self.upstream_closed() {
                return at;
            }
            Timer::after(5 * MS).await;
        }
    }

    fn to_server(&self) -> std::sync::MutexGuard<'_, Sniffed> {
        self.shared.to_server.lock().unwrap()
    }

    fn to_client(&self) -> std::sync::MutexGuard<'_, Sniffed> {
        self.shared.to_client.lock().unwrap()
    }
}

/// Copies `from` to `to` after the proxy's delay, sniffing frames on the way.
fn pump(
    from: Arc<Async<TcpStream>>,
    to: Arc<Async<TcpStream>>,
    shared: Arc<ProxyShared>,
    up: bool,
) {
    let (tx, rx) = async_channel::unbounded::<(Instant, Vec<u8>)>();
    let state = shared.clone();
    smol::spawn(async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match (&*from).read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if state.blackhole.load(Ordering::SeqCst) {
                continue;
            }
            let sniffed = if up {
                &state.to_server
            } else {
                &state.to_client
            };
            sniffed.lock().unwrap().feed(&buf[..n]);
            if tx
                .send((Instant::now() + state.delay, buf[..n].to_vec()))
                .await
                .is_err()
            {
                break;
            }
        }
        if !up {
            *state.upstream_closed.lock().unwrap() = Some(Instant::now());
        }
    })
    .detach();
    smol::spawn(async move {
        while let Ok((at, bytes)) = rx.recv().await {
            Timer::at(at).await;
            if shared.blackhole.load(Ordering::SeqCst) {
                continue;
            }
            if (&*to).write_all(&bytes).await.is_err() {
                break;
            }
        }
        let _ = to.get_ref().shutdown(Shutdown::Write);
    })
    .detach();
}

// ===== Server and raw h2 client =====

/// 64 messages of 64 KiB: 4 MiB.
const CHUNKS: usize = 64;
const CHUNK: usize = 64 * 1024;

fn serve(builder: ServerBuilder) -> (Server, SocketAddr) {
    let server = builder
        .server_streaming("/t.T/Hang", BytesCodec, |_req, sink| async move {
            sink.send(Bytes::from_static(b"hello")).await?;
            std::future::pending::<()>().await;
            Ok(())
        })
        .server_streaming("/t.T/Download", BytesCodec, |_req, sink| async move {
            for _ in 0..CHUNKS {
                sink.send(Bytes::from(vec![7u8; CHUNK])).await?;
            }
            Ok(())
        })
        .client_streaming(
            "/t.T/Upload",
            BytesCodec,
            |req: plexus::Request<RequestStream<Bytes>>| async move {
                let mut stream = req.into_message();
                let mut total = 0u64;
                while let Some(message) = stream.message().await? {
                    total += message.len() as u64;
                }
                Ok(Response::new(Bytes::from(total.to_string())))
            },
        )
        .build()
        .expect("valid server settings");
    let listener = Listener::bind_tcp("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("address");
    let s = server.clone();
    smol::spawn(async move {
        let _ = s.serve(listener).await;
    })
    .detach();
    (server, addr)
}

/// A channel to `addr` (through a proxy) with `configure`'s options.
fn channel(addr: SocketAddr, configure: impl FnOnce(ChannelBuilder) -> ChannelBuilder) -> Channel {
    configure(Channel::builder(&format!("http://{addr}")))
        .build()
        .expect("valid channel options")
}

/// Options for a client that checks a silent server after 200 ms, waiting 300 ms.
fn keepalive(builder: ChannelBuilder) -> ChannelBuilder {
    builder.keepalive_time(200 * MS).keepalive_timeout(300 * MS)
}

/// Downloads 4 MiB; returns the byte count.
async fn download(channel: &Channel) -> usize {
    let mut stream = channel
        .server_streaming("/t.T/Download", Bytes::new(), CallOptions::new())
        .await
        .expect("call starts");
    let mut total = 0;
    while let Some(message) = stream.message().await.expect("message") {
        total += message.len();
    }
    total
}

/// Uploads 4 MiB and returns the byte count the server saw.
async fn upload(channel: &Channel) -> u64 {
    let (sender, response) = channel
        .client_streaming("/t.T/Upload", CallOptions::new())
        .await
        .expect("call starts");
    for _ in 0..CHUNKS {
        sender
            .send(Bytes::from(vec![3u8; CHUNK]))
            .await
            .expect("send");
    }
    drop(sender);
    let reply = response.await.expect("reply");
    std::str::from_utf8(reply.message())
        .unwrap()
        .parse()
        .unwrap()
}

/// A plain h2 client connection to `addr`, driven on smol; h2 answers the server's PINGs.
async fn raw_client(addr: SocketAddr) -> h2::client::SendRequest<Bytes> {
    let tcp = Async::<TcpStream>::connect(addr).await.expect("connect");
    let (send, conn) = h2::client::handshake(Compat::new(tcp))
        .await
        .expect("handshake");
    smol::spawn(conn).detach();
    send
}

// ===== Keepalive =====

#[test]
fn client_keepalive_fails_calls_when_the_server_goes_silent() {
    run(Duration::from_secs(8), async {
        let (_server, addr) = serve(Server::builder().keepalive_min_ping_interval(50 * MS));
        let proxy = Proxy::start(addr, Duration::ZERO);
        let channel = channel(proxy.addr, keepalive);
        let mut call = channel
            .server_streaming("/t.T/Hang", Bytes::new(), CallOptions::new())
            .await
            .expect("call starts");
        let first = call.message().await.expect("a message").expect("data");
        assert_eq!(first.as_ref(), b"hello");

        // While the server answers, the idle call's keepalive PINGs keep the connection up.
        until(|| proxy.to_server().pings >= 2).await;
        assert_eq!(channel.state(), ConnectivityState::Ready);

        proxy.blackhole();
        let silent = Instant::now();
        let status = call.message().await.expect_err("the call fails");
        let took = silent.elapsed();
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
        assert!(
            status.message().contains("keepalive timed out"),
            "{status:?}"
        );
        // A PING goes out at most 200 ms after the last frame; 300 ms later the call fails,
        // and not before (no upper bound: a loaded machine may take longer to notice, and the
        // test's limit catches a hang).
        assert!(took >= 250 * MS, "detected after {took:?}");
        assert_eq!(channel.stats().calls_failed, 1);
        // The dead connection leaves the pool: the channel is no longer READY.
        if channel.state() == ConnectivityState::Ready {
            channel
                .wait_for_state_change(ConnectivityState::Ready)
                .await;
        }
    });
}

#[test]
fn client_keepalive_without_calls_only_when_permitted() {
    run(Duration::from_secs(8), async {
        let (_server, addr) = serve(
            Server::builder()
                .keepalive_min_ping_interval(50 * MS)
                .keepalive_permit_without_calls(true),
        );
        let quiet_proxy = Proxy::start(addr, Duration::ZERO);
        let eager_proxy = Proxy::start(addr, Duration::ZERO);
        let quiet = channel(quiet_proxy.addr, keepalive);
        let eager = channel(eager_proxy.addr, |b| {
            keepalive(b).keepalive_permit_without_calls(true)
        });
        quiet.connect().await.expect("connects");
        eager.connect().await.expect("connects");
        quiet_proxy.blackhole();
        eager_proxy.blackhole();
        let silent = Instant::now();

        // An idle connection is checked too: the channel notices and leaves READY.
        let next = eager.wait_for_state_change(ConnectivityState::Ready).await;
        assert_ne!(next, ConnectivityState::Ready);

        // Without calls and without permission, no PING goes out, so nothing is noticed.
        Timer::at(silent + 1200 * MS).await;
        assert_eq!(quiet_proxy.to_server().pings, 0);
        assert_eq!(quiet.state(), ConnectivityState::Ready);
    });
}

#[test]
fn server_keepalive_closes_connections_to_silent_clients() {
    run(Duration::from_secs(6), async {
        let (_server, addr) = serve(
            Server::builder()
                .keepalive_time(200 * MS)
                .keepalive_timeout(300 * MS),
        );
        let proxy = Proxy::start(addr, Duration::ZERO);
        let client = raw_client(proxy.addr).await;

        // The client's h2 answers the server's keepalive PINGs: the connection stays.
        until(|| proxy.to_client().pings >= 2).await;
        assert!(proxy.upstream_closed().is_none());

        proxy.blackhole();
        let silent = Instant::now();
        let closed = proxy.wait_upstream_closed().await;
        let took = closed - silent;
        // Not before the timeout; no upper bound (the test's limit catches a hang).
        assert!(took >= 250 * MS, "closed after {took:?}");
        drop(client);
    });
}

// ===== Ping policing =====

/// Pings the server at `addr` every `interval`, up to `count` times, on a plain h2 client;
/// returns how many were answered and the connection's task (which ends once the returned
/// request handle is dropped).
async fn ping_every(
    addr: SocketAddr,
    interval: Duration,
    count: usize,
) -> (
    usize,
    smol::Task<Result<(), h2::Error>>,
    h2::client::SendRequest<Bytes>,
) {
    let tcp = Async::<TcpStream>::connect(addr).await.expect("connect");
    let (send, mut conn) = h2::client::handshake(Compat::new(tcp))
        .await
        .expect("handshake");
    let mut pings = conn.ping_pong().expect("ping_pong");
    let conn = smol::spawn(conn);
    let mut answered = 0;
    for _ in 0..count {
        if pings.ping(h2::Ping::opaque()).await.is_err() {
            break;
        }
        answered += 1;
        Timer::after(interval).await;
    }
    (answered, conn, send)
}

#[test]
fn pinging_too_often_gets_goaway_enhance_your_calm() {
    run(Duration::from_secs(6), async {
        let (_server, addr) =
            serve(Server::builder().keepalive_min_ping_interval(Duration::from_secs(1)));
        let (answered, conn, _send) = ping_every(addr, 10 * MS, 50).await;
        // The first PING sets the clock; the next three are strikes, and the third closes.
        assert!(answered <= 5, "{answered} pings answered before the GOAWAY");
        let err = conn.await.expect_err("the server closes the connection");
        assert!(err.is_go_away(), "{err:?}");
        assert_eq!(err.reason(), Some(h2::Reason::ENHANCE_YOUR_CALM), "{err:?}");
        assert!(err.to_string().contains("too_many_pings"), "{err}");
    });
}

#[test]
fn pinging_within_the_policy_is_fine() {
    run(Duration::from_secs(6), async {
        let (_server, addr) = serve(
            Server::builder()
                .keepalive_min_ping_interval(5 * MS)
                .keepalive_permit_without_calls(true),
        );
        // Ten times the minimum interval apart, so scheduling delays on a loaded machine
        // cannot bunch them into strikes.
        let (answered, conn, _send) = ping_every(addr, 50 * MS, 12).await;
        if conn.is_finished() {
            panic!("the server closed the connection: {:?}", conn.await);
        }
        assert_eq!(answered, 12);
    });
}

// ===== Adaptive windows =====

/// The SETTINGS_INITIAL_WINDOW_SIZE values in `sniffed`, which must not be empty.
fn windows(sniffed: &Sniffed) -> &[u32] {
    assert!(!sniffed.initial_windows.is_empty(), "{sniffed:?}");
    &sniffed.initial_windows
}

#[test]
fn client_windows_follow_the_bandwidth_delay_product() {
    run(Duration::from_secs(20), async {
        // The default server polices pings (5 minutes between them): the client's BDP pings
        // must pass because each answers DATA the server sent.
        let (_server, addr) = serve(Server::builder());

        let proxy = Proxy::start(addr, 20 * MS);
        let adaptive = channel(proxy.addr, |b| b);
        assert_eq!(download(&adaptive).await, CHUNKS * CHUNK);
        {
            let sent = proxy.to_server();
            assert!(windows(&sent).iter().any(|&w| w > START_WINDOW), "{sent:?}");
            assert!(sent.pings > 0, "BDP probes go out: {sent:?}");
            assert!(sent.connection_window_increments > CHUNKS as u64 * CHUNK as u64 / 2);
        }
        assert_eq!(proxy.to_client().goaways, 0, "the server allows BDP pings");
        assert_eq!(adaptive.state(), ConnectivityState::Ready);

        let proxy = Proxy::start(addr, 20 * MS);
        let fixed = channel(proxy.addr, |b| b.adaptive_window(false));
        assert_eq!(download(&fixed).await, CHUNKS * CHUNK);
        let sent = proxy.to_server();
        assert!(
            windows(&sent)
                .iter()
                .all(|&w| w == plexus::client::DEFAULT_STREAM_WINDOW),
            "{sent:?}"
        );
        assert_eq!(sent.pings, 0, "no BDP probes with fixed windows");
    });
}

#[test]
fn server_windows_follow_the_bandwidth_delay_product() {
    run(Duration::from_secs(20), async {
        let (_server, addr) = serve(Server::builder().adaptive_window(true));
        let proxy = Proxy::start(addr, 20 * MS);
        let client = channel(proxy.addr, |b| b.adaptive_window(false));
        assert_eq!(upload(&client).await, (CHUNKS * CHUNK) as u64);
        {
            let sent = proxy.to_client();
            assert!(windows(&sent).iter().any(|&w| w > START_WINDOW), "{sent:?}");
            assert!(
                windows(&sent).iter().all(|&w| w >= START_WINDOW),
                "{sent:?}"
            );
        }

        let (_server, addr) = serve(Server::builder().adaptive_window(false));
        let proxy = Proxy::start(addr, 20 * MS);
        let client = channel(proxy.addr, |b| b.adaptive_window(false));
        assert_eq!(upload(&client).await, (CHUNKS * CHUNK) as u64);
        let sent = proxy.to_client();
        assert!(
            windows(&sent)
                .iter()
                .all(|&w| w == plexus::client::DEFAULT_STREAM_WINDOW),
            "{sent:?}"
        );
        assert_eq!(sent.pings, 0, "no BDP probes with fixed windows");
    });
}
