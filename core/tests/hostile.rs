//! Hostile clients against a plexus server on loopback TCP, each attack while a well-behaved
//! channel keeps calling the same server. Every test checks that the good client's calls all
//! succeed during the attack, that the attacker is cut off or contained, and that the
//! process's resident memory stays bounded. Attackers speak raw bytes (hand-built frames and
//! HPACK literals) or drive the h2 crate directly.
//!
//! The tests run one at a time (a lock), so the memory figures are the attack's own. Run with
//! `--nocapture` to see each attack's report line: memory before and after, and the good
//! client's calls/s before and during the attack.

use std::future::Future;
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_io::{Async, Timer};
use bytes::Bytes;
use futures_util::future::{Either, join_all, select};
use plexus::rt::Compat;
use plexus::{BytesCodec, CallOptions, Channel, Code, Listener, Response, Server, ServerBuilder};
use smol::io::{AsyncReadExt, AsyncWriteExt};

/// Hard limit on one test body.
const TEST_TIMEOUT: Duration = Duration::from_secs(60);

/// How much the process's resident memory may grow during one attack.
const MEMORY_LIMIT_KIB: u64 = 64 * 1024;

/// Calls the good client keeps in flight.
const GOOD_CONCURRENCY: usize = 8;

/// One attack at a time, so resident-memory readings belong to it.
static SERIAL: Mutex<()> = Mutex::new(());

fn run<F: Future>(fut: F) -> F::Output {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    smol::block_on(async {
        match select(std::pin::pin!(fut), Timer::after(TEST_TIMEOUT)).await {
            Either::Left((out, _)) => out,
            Either::Right(_) => panic!("test did not finish within {TEST_TIMEOUT:?}"),
        }
    })
}

/// The process's resident set size in KiB (Linux; 0 where /proc is missing).
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

const ECHO: &str = "/hostile.H/Echo";
const FLOOD: &str = "/hostile.H/Flood";

/// A server with an echo method and a method that streams 64 KiB messages until cancelled.
fn serve(builder: ServerBuilder) -> (Server, SocketAddr) {
    let server = builder
        .unary(ECHO, BytesCodec, |req: plexus::Request<Bytes>| async move {
            Ok(Response::new(req.into_message()))
        })
        .server_streaming(FLOOD, BytesCodec, |_req, sink| async move {
            let chunk = Bytes::from(vec![0x55u8; 64 * 1024]);
            loop {
                sink.send(chunk.clone()).await?;
            }
        })
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

/// A well-behaved client calling the server in a loop until stopped.
struct GoodClient {
    ok: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    first_failure: Arc<Mutex<Option<String>>>,
    stop: Arc<AtomicBool>,
    tasks: Vec<smol::Task<()>>,
}

impl GoodClient {
    fn start(addr: SocketAddr) -> GoodClient {
        let channel = Channel::new(&format!("http://{addr}")).expect("channel");
        let ok = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let first_failure = Arc::new(Mutex::new(None));
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = (0..GOOD_CONCURRENCY)
            .map(|_| {
                let (channel, ok, failed, first_failure, stop) = (
                    channel.clone(),
                    ok.clone(),
                    failed.clone(),
                    first_failure.clone(),
                    stop.clone(),
                );
                smol::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        let call = channel.unary(
                            ECHO,
                            Bytes::from_static(b"good"),
                            CallOptions::new().timeout(Duration::from_secs(10)),
                        );
                        match call.await {
                            Ok(reply) if reply.message().as_ref() == b"good" => {
                                ok.fetch_add(1, Ordering::Relaxed);
                            }
                            other => {
                                failed.fetch_add(1, Ordering::Relaxed);
                                first_failure
                                    .lock()
                                    .unwrap()
                                    .get_or_insert_with(|| format!("{other:?}"));
                            }
                        }
                    }
                })
            })
            .collect();
        GoodClient {
            ok,
            failed,
            first_failure,
            stop,
            tasks,
        }
    }

    /// Calls per second over `window`.
    async fn rate(&self, window: Duration) -> f64 {
        let before = self.ok.load(Ordering::Relaxed);
        Timer::after(window).await;
        (self.ok.load(Ordering::Relaxed) - before) as f64 / window.as_secs_f64()
    }

    async fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        join_all(self.tasks).await;
        assert_eq!(
            self.failed.load(Ordering::Relaxed),
            0,
            "good calls failed: {:?}",
            self.first_failure.lock().unwrap()
        );
        assert!(
            self.ok.load(Ordering::Relaxed) > 0,
            "no good call succeeded"
        );
    }
}

/// Runs `attack` against a fresh server built from `builder` while a good client calls it;
/// reports and checks the good client's calls and the memory growth.
async fn under_attack<F, Fut>(name: &str, builder: ServerBuilder, attack: F)
where
    F: FnOnce(SocketAddr) -> Fut,
    Fut: Future<Output = ()>,
{
    let (server, addr) = serve(builder);
    let good = GoodClient::start(addr);
    let baseline = good.rate(Duration::from_millis(500)).await;
    let rss_before = rss_kib();
    let ok_before = good.ok.load(Ordering::Relaxed);
    let started = Instant::now();
    attack(addr).await;
    // At least a second of good traffic counts as "during".
    let min = Duration::from_secs(1);
    if let Some(left) = min.checked_sub(started.elapsed()) {
        Timer::after(left).await;
    }
    let during =
        (good.ok.load(Ordering::Relaxed) - ok_before) as f64 / started.elapsed().as_secs_f64();
    let rss_after = rss_kib();
    good.stop().await;
    server.shutdown(Duration::from_millis(100)).await;
    eprintln!(
        "hostile {name}: rss {rss_before} KiB -> {rss_after} KiB (+{} KiB); good client \
         {baseline:.0} calls/s before, {during:.0} calls/s during",
        rss_after.saturating_sub(rss_before)
    );
    assert!(
        rss_after.saturating_sub(rss_before) < MEMORY_LIMIT_KIB,
        "{name}: memory grew from {rss_before} KiB to {rss_after} KiB"
    );
}

// ===== Raw HTTP/2 bytes =====

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const DATA: u8 = 0;
const HEADERS: u8 = 1;
const RST_STREAM: u8 = 3;
const SETTINGS: u8 = 4;
const PING: u8 = 6;
const GOAWAY: u8 = 7;
const WINDOW_UPDATE: u8 = 8;
const CONTINUATION: u8 = 9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut out = Vec::with_capacity(9 + payload.len());
    out.extend_from_slice(&len.to_be_bytes()[1..]);
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

fn settings(pairs: &[(u16, u32)]) -> Vec<u8> {
    let payload: Vec<u8> = pairs
        .iter()
        .flat_map(|(id, value)| id.to_be_bytes().into_iter().chain(value.to_be_bytes()))
        .collect();
    frame(SETTINGS, 0, 0, &payload)
}

/// An HPACK integer with an `n`-bit prefix (RFC 7541 §5.1).
fn hpack_int(out: &mut Vec<u8>, n: u8, value: usize) {
    let max = (1usize << n) - 1;
    if value < max {
        out.push(value as u8);
        return;
    }
    out.push(max as u8);
    let mut rest = value - max;
    while rest >= 128 {
        out.push((rest % 128 + 128) as u8);
        rest /= 128;
    }
    out.push(rest as u8);
}

/// A literal header field without indexing, new name (RFC 7541 §6.2.2), no Huffman.
fn hpack_literal(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    out.push(0);
    hpack_int(out, 7, name.len());
    out.extend_from_slice(name.as_bytes());
    hpack_int(out, 7, value.len());
    out.extend_from_slice(value);
}

/// A gRPC request's header block for `path`, plus `extra` headers.
fn request_block(path: &str, extra: &[(&str, &[u8])]) -> Vec<u8> {
    let mut block = Vec::new();
    for (name, value) in [
        (":method", &b"POST"[..]),
        (":scheme", b"http"),
        (":path", path.as_bytes()),
        (":authority", b"hostile.test"),
        ("content-type", b"application/grpc"),
        ("te", b"trailers"),
    ]
    .into_iter()
    .chain(extra.iter().copied())
    {
        hpack_literal(&mut block, name, value);
    }
    block
}

/// A gRPC message: the 5-byte prefix and `payload`.
fn grpc_message(payload: &[u8]) -> Vec<u8> {
    let mut out = vec![0];
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// A raw connection that has sent the preface and an empty SETTINGS frame.
async fn raw_connect(addr: SocketAddr, extra_settings: &[(u16, u32)]) -> Async<TcpStream> {
    let mut tcp = Async::<TcpStream>::connect(addr).await.expect("connect");
    let mut hello = PREFACE.to_vec();
    hello.extend(settings(extra_settings));
    tcp.write_all(&hello).await.expect("preface");
    tcp
}

/// What a raw connection received until the server closed it or `limit` passed.
#[derive(Debug, Default)]
struct Received {
    /// GOAWAY error codes, in order.
    goaways: Vec<u32>,
    /// RST_STREAM error codes, in order.
    resets: Vec<u32>,
    /// Header blocks completed (responses and trailers).
    header_blocks: usize,
    /// Streams the server ended (END_STREAM on HEADERS or DATA).
    ended: usize,
    bytes: usize,
    closed: bool,
}

/// Reads frames until EOF, an error or `limit`, acknowledging nothing.
async fn read_frames(tcp: &mut Async<TcpStream>, limit: Duration) -> Received {
    read_frames_until(tcp, limit, |_| false).await
}

/// Reads frames until `done` says so, EOF, an error or `limit`, acknowledging nothing.
async fn read_frames_until(
    tcp: &mut Async<TcpStream>,
    limit: Duration,
    done: impl Fn(&Received) -> bool,
) -> Received {
    let mut got = Received::default();
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    let give_up = Instant::now() + limit;
    loop {
        let read = std::pin::pin!(tcp.read(&mut chunk));
        let n = match select(read, Timer::at(give_up)).await {
            Either::Left((Ok(0), _)) | Either::Left((Err(_), _)) => {
                got.closed = true;
                break;
            }
            Either::Left((Ok(n), _)) => n,
            Either::Right(_) => break,
        };
        got.bytes += n;
        buf.extend_from_slice(&chunk[..n]);
        let mut at = 0;
        while buf.len() - at >= 9 {
            let len = u32::from_be_bytes([0, buf[at], buf[at + 1], buf[at + 2]]) as usize;
            if buf.len() - at < 9 + len {
                break;
            }
            let (kind, flags) = (buf[at + 3], buf[at + 4]);
            let payload = &buf[at + 9..at + 9 + len];
            match kind {
                GOAWAY if len >= 8 => got.goaways.push(u32::from_be_bytes([
                    payload[4], payload[5], payload[6], payload[7],
                ])),
                RST_STREAM if len == 4 => got.resets.push(u32::from_be_bytes([
                    payload[0], payload[1], payload[2], payload[3],
                ])),
                HEADERS | CONTINUATION if flags & END_HEADERS != 0 => got.header_blocks += 1,
                _ => {}
            }
            if matches!(kind, HEADERS | DATA) && flags & END_STREAM != 0 {
                got.ended += 1;
            }
            at += 9 + len;
        }
        buf.drain(..at);
        if done(&got) {
            break;
        }
    }
    got
}

const ENHANCE_YOUR_CALM: u32 = 0xb;

// ===== The attacks =====

#[test]
fn malformed_grpc_framing_gets_errors_and_the_server_keeps_serving() {
    run(under_attack(
        "malformed framing",
        Server::builder(),
        |addr| async move {
            // Per round, on one connection: a bad compressed flag, a 4 GiB length prefix, a
            // message cut short by END_STREAM, and garbage shorter than a prefix.
            let bad_bodies: [Vec<u8>; 4] = [
                vec![7, 0, 0, 0, 1, b'x'],
                vec![0, 0xff, 0xff, 0xff, 0xff, 1, 2, 3],
                grpc_message(b"hello")[..7].to_vec(),
                vec![0x42, 0x42],
            ];
            let expected = [
                Code::Internal,
                Code::ResourceExhausted,
                Code::Internal,
                Code::Internal,
            ];
            for _round in 0..50 {
                let tcp = Async::<TcpStream>::connect(addr).await.expect("connect");
                let (send, conn) = h2::client::handshake(Compat::new(tcp))
                    .await
                    .expect("handshake");
                let conn = smol::spawn(conn);
                let calls = bad_bodies.iter().map(|body| {
                    let send = send.clone();
                    async move {
                        let mut send = send.ready().await.expect("connection open");
                        let request = http::Request::builder()
                            .method("POST")
                            .uri(format!("http://hostile.test{ECHO}"))
                            .header("content-type", "application/grpc")
                            .header("te", "trailers")
                            .body(())
                            .unwrap();
                        let (response, mut stream) =
                            send.send_request(request, false).expect("request");
                        stream
                            .send_data(Bytes::from(body.clone()), true)
                            .expect("data");
                        let response = response.await.expect("response");
                        assert_eq!(response.status(), 200);
                        let status = response.headers().get("grpc-status").cloned();
                        let status = match status {
                            Some(status) => status,
                            None => {
                                let mut body = response.into_body();
                                while let Some(chunk) = body.data().await {
                                    chunk.expect("data");
                                }
                                let trailers = body.trailers().await.expect("trailers");
                                trailers.expect("trailers")["grpc-status"].clone()
                            }
                        };
                        Code::from_i32(status.to_str().unwrap().parse().unwrap())
                    }
                });
                let codes = join_all(calls).await;
                assert_eq!(codes, expected);
                assert!(!conn.is_finished(), "the connection stays up");
            }
        },
    ));
}

#[test]
fn huge_metadata_is_refused_and_a_continuation_flood_is_cut_off() {
    run(under_attack(
        "huge metadata / CONTINUATION flood",
        Server::builder(),
        |addr| async move {
            // 1) One request with 64 KiB of metadata, four times the default limit.
            let mut tcp = raw_connect(addr, &[]).await;
            let big = vec![b'a'; 64 * 1024];
            let block = request_block(ECHO, &[("x-big", &big)]);
            let mut out = Vec::new();
            let mut chunks = block.chunks(16 * 1024).peekable();
            let first = chunks.next().unwrap();
            out.extend(frame(HEADERS, 0, 1, first));
            while let Some(chunk) = chunks.next() {
                let flags = if chunks.peek().is_none() {
                    END_HEADERS
                } else {
                    0
                };
                out.extend(frame(CONTINUATION, flags, 1, chunk));
            }
            out.extend(frame(DATA, END_STREAM, 1, &grpc_message(b"x")));
            let _ = tcp.write_all(&out).await;
            let got = read_frames(&mut tcp, Duration::from_millis(500)).await;
            assert!(
                !got.resets.is_empty() || !got.goaways.is_empty() || got.header_blocks > 0,
                "the oversized request got no answer: {got:?}"
            );

            // 2) A HEADERS frame followed by CONTINUATION frames that never end: 64 MiB offered.
            let mut tcp = raw_connect(addr, &[]).await;
            let mut block = request_block(ECHO, &[]);
            block.truncate(block.len() - 1);
            tcp.write_all(&frame(HEADERS, 0, 1, &block))
                .await
                .expect("write");
            let filler = {
                let mut f = Vec::new();
                hpack_literal(&mut f, "x-flood", &vec![b'f'; 16 * 1024 - 20]);
                frame(CONTINUATION, 0, 1, &f)
            };
            let mut sent = 0usize;
            while sent < 64 << 20 {
                if tcp.write_all(&filler).await.is_err() {
                    break;
                }
                sent += filler.len();
            }
            let got = read_frames(&mut tcp, Duration::from_secs(2)).await;
            assert!(
                sent < 64 << 20 || got.closed,
                "the flood was never cut off: {got:?}"
            );
            assert!(got.closed, "connection still open after the flood: {got:?}");
        },
    ));
}

#[test]
fn rapid_reset_does_not_exhaust_the_server() {
    let handled = Arc::new(AtomicU64::new(0));
    let counter = handled.clone();
    let builder = Server::builder().unary(
        "/hostile.H/Slow",
        BytesCodec,
        move |req: plexus::Request<Bytes>| {
            counter.fetch_add(1, Ordering::Relaxed);
            async move {
                Timer::after(Duration::from_millis(200)).await;
                Ok(Response::new(req.into_message()))
            }
        },
    );
    run(under_attack("rapid reset", builder, |addr| async move {
        // HEADERS + RST_STREAM(CANCEL), 20,000 times, without waiting for anything.
        let mut tcp = raw_connect(addr, &[]).await;
        let block = request_block("/hostile.H/Slow", &[]);
        let mut batch = Vec::new();
        let mut stream = 1u32;
        let mut written = 0;
        for _ in 0..20_000 {
            batch.extend(frame(HEADERS, END_HEADERS, stream, &block));
            batch.extend(frame(RST_STREAM, 0, stream, &8u32.to_be_bytes()));
            stream += 2;
            if batch.len() > 64 * 1024 {
                if tcp.write_all(&batch).await.is_err() {
                    break;
                }
                written += batch.len();
                batch.clear();
            }
        }
        let _ = tcp.write_all(&batch).await;
        let got = read_frames(&mut tcp, Duration::from_secs(2)).await;
        eprintln!("rapid reset: {written} bytes written; attacker saw {got:?}");
    }));
    let handled = handled.load(Ordering::Relaxed);
    eprintln!("rapid reset: handlers started {handled} of 20000");
}

#[test]
fn a_ping_flood_gets_goaway_enhance_your_calm() {
    run(under_attack(
        "ping flood",
        Server::builder(),
        |addr| async move {
            let tcp = raw_connect(addr, &[]).await;
            let ping = frame(PING, 0, 0, &[1, 2, 3, 4, 5, 6, 7, 8]);
            let batch: Vec<u8> = ping
                .iter()
                .copied()
                .cycle()
                .take(ping.len() * 1000)
                .collect();
            // Up to 100,000 PINGs, as fast as the socket takes them, while reading the replies
            // so the server is never blocked on us.
            let (mut reader, mut writer) = smol::io::split(tcp);
            let writing = smol::spawn(async move {
                for _ in 0..100 {
                    if writer.write_all(&batch).await.is_err() {
                        break;
                    }
                }
            });
            let mut sink = vec![0u8; 64 * 1024];
            let give_up = Instant::now() + Duration::from_secs(5);
            let mut tail = Vec::new();
            loop {
                let read = std::pin::pin!(reader.read(&mut sink));
                match select(read, Timer::at(give_up)).await {
                    Either::Left((Ok(0), _)) | Either::Left((Err(_), _)) => break,
                    Either::Left((Ok(n), _)) => tail.extend_from_slice(&sink[..n]),
                    Either::Right(_) => panic!("the server never closed the flooding connection"),
                }
                // Keep only the end, where the GOAWAY is.
                if tail.len() > 1 << 20 {
                    tail.drain(..tail.len() - 4096);
                }
            }
            writing.cancel().await;
            let calm = tail
                .windows(4)
                .any(|w| w == ENHANCE_YOUR_CALM.to_be_bytes());
            assert!(calm, "no GOAWAY ENHANCE_YOUR_CALM before the close");
        },
    ));
}

#[test]
fn a_client_that_never_reads_is_bounded_by_flow_control() {
    run(under_attack(
        "never reads",
        Server::builder(),
        |addr| async move {
            // Four connections, each opening 100 streams of endless 64 KiB messages with windows
            // as large as HTTP/2 allows, then never reading a byte.
            let mut held = Vec::new();
            for _ in 0..4 {
                let mut tcp = raw_connect(addr, &[(4, 0x7fff_ffff)]).await;
                let mut out = frame(WINDOW_UPDATE, 0, 0, &0x7fff_0000u32.to_be_bytes());
                for i in 0..100u32 {
                    let stream = 1 + 2 * i;
                    out.extend(frame(
                        HEADERS,
                        END_HEADERS,
                        stream,
                        &request_block(FLOOD, &[]),
                    ));
                    out.extend(frame(DATA, END_STREAM, stream, &grpc_message(b"")));
                }
                tcp.write_all(&out).await.expect("write");
                held.push(tcp);
            }
            Timer::after(Duration::from_secs(2)).await;
            drop(held);
        },
    ));
}

#[test]
fn connections_that_never_send_the_preface_are_closed() {
    let builder = Server::builder().handshake_timeout(Duration::from_millis(300));
    run(under_attack("no preface", builder, |addr| async move {
        let mut silent = Vec::new();
        for _ in 0..200 {
            silent.push(Async::<TcpStream>::connect(addr).await.expect("connect"));
        }
        let started = Instant::now();
        for mut tcp in silent {
            let got = read_frames(&mut tcp, Duration::from_secs(5)).await;
            assert!(got.closed, "a silent connection was left open");
        }
        let took = started.elapsed();
        assert!(took < Duration::from_secs(5), "closing took {took:?}");
    }));
}

#[test]
fn a_stalled_handshake_does_not_block_other_clients() {
    // h2's own client, to check a real client is unaffected by the preface timeout setting.
    let builder = Server::builder().handshake_timeout(Duration::from_millis(300));
    run(async {
        let (server, addr) = serve(builder);
        let _silent = Async::<TcpStream>::connect(addr).await.expect("connect");
        let tcp = Async::<TcpStream>::connect(addr).await.expect("connect");
        let (mut send, conn) = h2::client::handshake(Compat::new(tcp))
            .await
            .expect("handshake");
        let conn = smol::spawn(conn);
        let request = http::Request::builder()
            .method("POST")
            .uri(format!("http://{addr}{ECHO}"))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(())
            .unwrap();
        // Past the handshake timeout: a connection that did its handshake stays.
        Timer::after(Duration::from_millis(600)).await;
        send = send.ready().await.expect("still open");
        let (response, mut body) = send.send_request(request, false).expect("request");
        body.send_data(Bytes::from(grpc_message(b"hi")), true)
            .expect("data");
        let response = response.await.expect("response");
        assert_eq!(response.status(), 200);
        let mut body = response.into_body();
        let mut got = Vec::new();
        while let Some(chunk) = body.data().await {
            got.extend_from_slice(&chunk.expect("data"));
        }
        assert_eq!(got, grpc_message(b"hi"));
        let trailers = body.trailers().await.expect("trailers").expect("trailers");
        assert_eq!(trailers["grpc-status"], "0");
        assert!(!conn.is_finished());
        server.shutdown(Duration::from_millis(100)).await;
    });
}
