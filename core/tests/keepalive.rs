//! Keepalive, ping policing and adaptive flow-control windows, over TCP on 127.0.0.1 with a
//! proxy in the middle that can add latency, stop forwarding ("black-hole" the peer) and read
//! the frames going each way. The client side is a raw h2 connection driven by plexus's
//! connection driver, so these tests do not depend on the channel.

use std::future::{Future, poll_fn};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_io::{Async, Timer};
use bytes::{BufMut, Bytes, BytesMut};
use futures_util::future::{Either, select};
use plexus::__private::{ConnectionEvents, PingConfig, WindowConfig, client_io, drive_client};
use plexus::rt::Compat;
use plexus::{BytesCodec, Code, Listener, RequestStream, Response, Server, ServerBuilder, Status};
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

/// A raw h2 client connection driven by `drive_client`.
struct Client {
    addr: SocketAddr,
    send: h2::client::SendRequest<Bytes>,
    events: Arc<ConnectionEvents>,
    driver: smol::Task<Result<(), Status>>,
    active: Arc<AtomicUsize>,
}

async fn connect(addr: SocketAddr, config: PingConfig) -> Client {
    let tcp = Async::<TcpStream>::connect(addr).await.expect("connect");
    let (io, events) = client_io(tcp);
    let (send, conn) = h2::client::Builder::new()
        .initial_window_size(config.windows.stream)
        .initial_connection_window_size(config.windows.connection)
        .handshake::<_, Bytes>(io)
        .await
        .expect("handshake");
    let active = Arc::new(AtomicUsize::new(0));
    let calls = active.clone();
    let driver = smol::spawn(drive_client(conn, config, events.clone(), move || {
        calls.load(Ordering::SeqCst)
    }));
    Client {
        addr,
        send,
        events,
        driver,
        active,
    }
}

fn keepalive(time: Duration, timeout: Duration) -> PingConfig {
    PingConfig {
        keepalive_time: Some(time),
        keepalive_timeout: timeout,
        ..PingConfig::client()
    }
}

fn adaptive_windows() -> PingConfig {
    PingConfig {
        windows: WindowConfig::resolve(None, None, Some(true)),
        ..PingConfig::client()
    }
}

fn fixed_windows() -> PingConfig {
    PingConfig {
        windows: WindowConfig::resolve(None, None, Some(false)),
        ..PingConfig::client()
    }
}

fn grpc_frame(message: &[u8]) -> Bytes {
    let mut buf = BytesMut::with_capacity(5 + message.len());
    buf.put_u8(0);
    buf.put_u32(message.len() as u32);
    buf.put_slice(message);
    buf.freeze()
}

/// Starts a call to `/t.T/{method}`; the request stream is left open.
async fn start(
    client: &Client,
    method: &str,
) -> (h2::client::ResponseFuture, h2::SendStream<Bytes>) {
    let request = http::Request::builder()
        .method("POST")
        .uri(format!("http://{}/t.T/{method}", client.addr))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .unwrap();
    let mut send = client.send.clone().ready().await.expect("connection ready");
    send.send_request(request, false).expect("send request")
}

/// Starts a call with one empty request message and returns the response body.
async fn call(client: &Client, method: &str) -> h2::RecvStream {
    let (response, mut body) = start(client, method).await;
    body.send_data(grpc_frame(b""), true).unwrap();
    let response = response.await.expect("response headers");
    assert_eq!(response.status(), 200);
    response.into_body()
}

/// Reads a response body to its end, giving flow-control credit back as a real client does.
async fn read_body(body: &mut h2::RecvStream) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.expect("response data");
        body.flow_control().release_capacity(chunk.len()).unwrap();
        out.extend_from_slice(&chunk);
    }
    let trailers = body.trailers().await.expect("trailers").expect("trailers");
    assert_eq!(trailers.get("grpc-status").unwrap(), "0", "{trailers:?}");
    out
}

async fn download(client: &Client) -> usize {
    let mut body = call(client, "Download").await;
    read_body(&mut body).await.len()
}

/// Uploads 4 MiB and returns the byte count the server saw.
async fn upload(client: &Client) -> u64 {
    let (response, mut body) = start(client, "Upload").await;
    for _ in 0..CHUNKS {
        let mut frame = grpc_frame(&[3u8; CHUNK]);
        while !frame.is_empty() {
            body.reserve_capacity(frame.len());
            let granted = poll_fn(|cx| body.poll_capacity(cx))
                .await
                .expect("stream open")
                .expect("capacity");
            let chunk = frame.split_to(granted.min(frame.len()));
            body.send_data(chunk, false).unwrap();
        }
    }
    body.send_data(Bytes::new(), true).unwrap();
    let response = response.await.expect("response headers");
    let mut body = response.into_body();
    let reply = read_body(&mut body).await;
    std::str::from_utf8(&reply[5..]).unwrap().parse().unwrap()
}

// ===== Keepalive =====

#[test]
fn client_keepalive_fails_calls_when_the_server_goes_silent() {
    run(Duration::from_secs(6), async {
        let (_server, addr) = serve(Server::builder().keepalive_min_ping_interval(50 * MS));
        let proxy = Proxy::start(addr, Duration::ZERO);
        let client = connect(proxy.addr, keepalive(200 * MS, 300 * MS)).await;
        client.active.store(1, Ordering::SeqCst);
        let mut body = call(&client, "Hang").await;
        let first = body.data().await.expect("a message").expect("data");
        assert!(!first.is_empty());

        // While the server answers, the idle call's keepalive PINGs keep the connection up.
        Timer::after(700 * MS).await;
        assert!(
            client.events.pings_sent() >= 2,
            "only {} keepalive pings",
            client.events.pings_sent()
        );
        assert!(!client.driver.is_finished());

        proxy.blackhole();
        let silent = Instant::now();
        let err = body
            .data()
            .await
            .expect("the call ends with an error")
            .expect_err("the call fails");
        let took = silent.elapsed();
        assert!(err.is_io(), "{err:?}");
        assert!(err.to_string().contains("keepalive timed out"), "{err}");
        // A PING goes out at most 200 ms after the last frame; 300 ms later the call fails.
        assert!(
            took >= 250 * MS && took <= 1500 * MS,
            "detected after {took:?}"
        );

        let status = client
            .driver
            .await
            .expect_err("the driver reports the failure");
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
        assert!(
            status.message().contains("keepalive timed out"),
            "{status:?}"
        );
    });
}

#[test]
fn client_keepalive_without_calls_only_when_permitted() {
    run(Duration::from_secs(6), async {
        let (_server, addr) = serve(
            Server::builder()
                .keepalive_min_ping_interval(50 * MS)
                .keepalive_permit_without_calls(true),
        );
        let quiet_proxy = Proxy::start(addr, Duration::ZERO);
        let eager_proxy = Proxy::start(addr, Duration::ZERO);
        let quiet = connect(quiet_proxy.addr, keepalive(200 * MS, 300 * MS)).await;
        let eager = connect(
            eager_proxy.addr,
            PingConfig {
                keepalive_permit_without_calls: true,
                ..keepalive(200 * MS, 300 * MS)
            },
        )
        .await;
        quiet_proxy.blackhole();
        eager_proxy.blackhole();
        let silent = Instant::now();

        let status = eager
            .driver
            .await
            .expect_err("an idle connection is checked too");
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
        assert!(
            status.message().contains("keepalive timed out"),
            "{status:?}"
        );
        assert!(silent.elapsed() <= 1500 * MS, "took {:?}", silent.elapsed());

        // Without calls and without permission, no PING goes out, so nothing is noticed.
        Timer::at(silent + 1200 * MS).await;
        assert_eq!(quiet.events.pings_sent(), 0);
        assert!(!quiet.driver.is_finished());
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
        let client = connect(proxy.addr, PingConfig::client()).await;

        // The client's h2 answers the server's keepalive PINGs: the connection stays.
        Timer::after(700 * MS).await;
        assert!(proxy.upstream_closed().is_none());
        assert!(proxy.to_client().pings >= 2, "{:?}", proxy.to_client());

        proxy.blackhole();
        let silent = Instant::now();
        let closed = proxy.wait_upstream_closed().await;
        let took = closed - silent;
        assert!(
            took >= 250 * MS && took <= 1500 * MS,
            "closed after {took:?}"
        );
        drop(client);
    });
}

// ===== Ping policing =====

/// Pings the server at `addr` every `interval`, up to `count` times, on a plain h2 client;
/// returns how many were answered and the connection's task.
async fn ping_every(
    addr: SocketAddr,
    interval: Duration,
    count: usize,
) -> (usize, smol::Task<Result<(), h2::Error>>) {
    let tcp = Async::<TcpStream>::connect(addr).await.expect("connect");
    let (_send, mut conn) = h2::client::handshake(Compat(tcp)).await.expect("handshake");
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
    (answered, conn)
}

#[test]
fn pinging_too_often_gets_goaway_enhance_your_calm() {
    run(Duration::from_secs(6), async {
        let (_server, addr) =
            serve(Server::builder().keepalive_min_ping_interval(Duration::from_secs(1)));
        let (answered, conn) = ping_every(addr, 10 * MS, 50).await;
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
        let (answered, conn) = ping_every(addr, 50 * MS, 12).await;
        assert_eq!(answered, 12);
        assert!(!conn.is_finished());
    });
}

// ===== Adaptive windows =====

#[test]
fn client_windows_follow_the_bandwidth_delay_product() {
    run(Duration::from_secs(15), async {
        // The default server polices pings (5 minutes between them): the client's BDP pings
        // must pass because each answers DATA the server sent.
        let (_server, addr) = serve(Server::builder());

        let proxy = Proxy::start(addr, 20 * MS);
        let client = connect(proxy.addr, adaptive_windows()).await;
        assert_eq!(download(&client).await, CHUNKS * (5 + CHUNK));
        assert!(client.events.window_updates() > 0);
        assert!(
            client.events.stream_window() > START_WINDOW,
            "window {}",
            client.events.stream_window()
        );
        assert!(client.events.connection_window() >= client.events.stream_window());
        {
            let sent = proxy.to_server();
            assert!(
                sent.initial_windows.iter().any(|&w| w > START_WINDOW),
                "{sent:?}"
            );
            assert!(sent.connection_window_increments > CHUNKS as u64 * CHUNK as u64 / 2);
        }
        assert_eq!(proxy.to_client().goaways, 0);
        assert!(!client.driver.is_finished());

        let proxy = Proxy::start(addr, 20 * MS);
        let client = connect(proxy.addr, fixed_windows()).await;
        assert_eq!(download(&client).await, CHUNKS * (5 + CHUNK));
        assert_eq!(client.events.window_updates(), 0);
        assert_eq!(
            client.events.stream_window(),
            plexus::client::DEFAULT_STREAM_WINDOW
        );
        assert_eq!(
            client.events.pings_sent(),
            0,
            "no BDP probes with fixed windows"
        );
        let sent = proxy.to_server();
        assert!(!sent.initial_windows.is_empty());
        assert!(
            sent.initial_windows
                .iter()
                .all(|&w| w == plexus::client::DEFAULT_STREAM_WINDOW),
            "{sent:?}"
        );
    });
}

#[test]
fn server_windows_follow_the_bandwidth_delay_product() {
    run(Duration::from_secs(15), async {
        let (_server, addr) = serve(Server::builder().adaptive_window(true));
        let proxy = Proxy::start(addr, 20 * MS);
        let client = connect(proxy.addr, fixed_windows()).await;
        assert_eq!(upload(&client).await, (CHUNKS * CHUNK) as u64);
        {
            let sent = proxy.to_client();
            assert!(
                sent.initial_windows.iter().any(|&w| w > START_WINDOW),
                "{sent:?}"
            );
            assert!(
                sent.initial_windows.iter().all(|&w| w >= START_WINDOW),
                "{sent:?}"
            );
        }

        let (_server, addr) = serve(Server::builder().adaptive_window(false));
        let proxy = Proxy::start(addr, 20 * MS);
        let client = connect(proxy.addr, fixed_windows()).await;
        assert_eq!(upload(&client).await, (CHUNKS * CHUNK) as u64);
        let sent = proxy.to_client();
        assert!(!sent.initial_windows.is_empty());
        assert!(
            sent.initial_windows
                .iter()
                .all(|&w| w == plexus::client::DEFAULT_STREAM_WINDOW),
            "{sent:?}"
        );
        assert_eq!(sent.pings, 0, "no BDP probes with fixed windows");
    });
}
