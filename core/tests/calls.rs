//! End-to-end call tests: every scenario runs under three executors (plexus's default
//! `DefaultExecutor`, smol's via `SmolExecutor`, and a `futures_executor::ThreadPool`) and
//! over three transports (in-memory
//! pipes, TCP loopback and Unix domain sockets). Tests are named
//! `<executor>::<transport>::<scenario>`, and each body has a hard 30 s timeout.

mod support;

use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use async_io::Timer;
use bytes::Bytes;
use futures_util::future::{Either, join, select};
use plexus::{
    BytesCodec, CallOptions, Channel, Code, Metadata, ProstCodec, Request, RequestStream, Response,
    ResponseSink, Sender, Server, Status, Streaming,
};

use support::{Env, probe, try_within, within};

matrix!(
    call_kinds,
    metadata_and_status,
    deadline,
    cancellation,
    concurrent_senders,
    concurrent_response_senders,
    flow_control,
    message_size_limits,
    handler_panic,
    unknown_routes,
    graceful_shutdown,
    many_concurrent_calls,
    channel_basics,
);

const SECOND: Duration = Duration::from_secs(1);

// ---------------------------------------------------------------------------------------------
// Messages and helpers
// ---------------------------------------------------------------------------------------------

/// A typed request for the prost codec.
#[derive(Clone, PartialEq, prost::Message)]
struct EchoRequest {
    #[prost(string, tag = "1")]
    text: String,
    #[prost(uint32, tag = "2")]
    count: u32,
    #[prost(bytes = "vec", tag = "3")]
    payload: Vec<u8>,
}

/// A typed reply for the prost codec.
#[derive(Clone, PartialEq, prost::Message)]
struct EchoReply {
    #[prost(string, tag = "1")]
    text: String,
    #[prost(uint32, tag = "2")]
    index: u32,
    #[prost(bytes = "vec", tag = "3")]
    payload: Vec<u8>,
}

type ServerCodec = ProstCodec<EchoReply, EchoRequest>;
type ClientCodec = ProstCodec<EchoRequest, EchoReply>;

/// 64-bit FNV-1a.
fn fnv1a(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Deterministic bytes of length `len`, different for every `seed`.
fn pattern(seed: u64, len: usize) -> Bytes {
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect::<Vec<u8>>()
        .into()
}

fn text(bytes: &Bytes) -> &str {
    std::str::from_utf8(bytes).expect("utf-8 message")
}

async fn collect<T>(stream: &mut Streaming<T>) -> Result<Vec<T>, Status> {
    let mut out = Vec::new();
    while let Some(msg) = stream.message().await? {
        out.push(msg);
    }
    Ok(out)
}

fn err_of<T: std::fmt::Debug, E: Into<Status>>(result: Result<T, E>, what: &str) -> Status {
    match result.map_err(Into::into) {
        Ok(v) => {
            let shown: String = format!("{v:?}").chars().take(300).collect();
            panic!("{what}: expected an error status, got Ok({shown})")
        }
        Err(status) => status,
    }
}

// ---------------------------------------------------------------------------------------------
// 1. The four call kinds, untyped and typed
// ---------------------------------------------------------------------------------------------

const UNARY: &str = "/test.Echo/Unary";
const SERVER_STREAM: &str = "/test.Echo/ServerStream";
const CLIENT_STREAM: &str = "/test.Echo/ClientStream";
const BIDI: &str = "/test.Echo/Bidi";
const T_UNARY: &str = "/test.Typed/Unary";
const T_SERVER_STREAM: &str = "/test.Typed/ServerStream";
const T_CLIENT_STREAM: &str = "/test.Typed/ClientStream";
const T_BIDI: &str = "/test.Typed/Bidi";

/// Echo routes in all four kinds, both untyped (Bytes) and typed (prost).
fn echo_server() -> plexus::ServerBuilder {
    Server::builder()
        .unary(UNARY, BytesCodec, |req: Request<Bytes>| async move {
            let mut out = b"echo:".to_vec();
            out.extend_from_slice(req.message());
            Ok(Response::new(Bytes::from(out)))
        })
        .server_streaming(
            SERVER_STREAM,
            BytesCodec,
            |req: Request<Bytes>, sink: ResponseSink<Bytes>| async move {
                let n: usize = text(req.message()).parse().map_err(|_| Status::invalid_argument("n"))?;
                for i in 0..n {
                    sink.send(Bytes::from(format!("item-{i}"))).await?;
                }
                Ok(())
            },
        )
        .client_streaming(
            CLIENT_STREAM,
            BytesCodec,
            |mut req: Request<RequestStream<Bytes>>| async move {
                let mut parts = Vec::new();
                while let Some(msg) = req.message_mut().message().await? {
                    parts.push(format!("{}:{:016x}", msg.len(), fnv1a(&msg)));
                }
                Ok(Response::new(Bytes::from(parts.join(","))))
            },
        )
        .bidi_streaming(
            BIDI,
            BytesCodec,
            |mut req: Request<RequestStream<Bytes>>, sink: ResponseSink<Bytes>| async move {
                while let Some(msg) = req.message_mut().message().await? {
                    let mut out = msg.to_vec();
                    out.reverse();
                    sink.send(Bytes::from(out)).await?;
                }
                sink.send(Bytes::from_static(b"bye")).await?;
                Ok(())
            },
        )
        .unary(T_UNARY, ServerCodec::new(), |req: Request<EchoRequest>| async move {
            let m = req.into_message();
            Ok(Response::new(EchoReply {
                text: format!("hello, {}", m.text),
                index: m.count * 2,
                payload: m.payload.iter().rev().copied().collect(),
            }))
        })
        .server_streaming(
            T_SERVER_STREAM,
            ServerCodec::new(),
            |req: Request<EchoRequest>, sink: ResponseSink<EchoReply>| async move {
                let m = req.into_message();
                for i in 0..m.count {
                    sink.send(EchoReply {
                        text: format!("{}#{i}", m.text),
                        index: i,
                        payload: vec![i as u8; i as usize],
                    })
                    .await?;
                }
                Ok(())
            },
        )
        .client_streaming(
            T_CLIENT_STREAM,
            ServerCodec::new(),
            |mut req: Request<RequestStream<EchoRequest>>| async move {
                let mut texts = Vec::new();
                let mut total = 0u32;
                let mut payload = Vec::new();
                while let Some(m) = req.message_mut().message().await? {
                    texts.push(m.text);
                    total += m.count;
                    payload.extend(m.payload);
                }
                Ok(Response::new(EchoReply {
                    text: texts.join("+"),
                    index: total,
                    payload,
                }))
            },
        )
        .bidi_streaming(
            T_BIDI,
            ServerCodec::new(),
            |mut req: Request<RequestStream<EchoRequest>>, sink: ResponseSink<EchoReply>| async move {
                let mut i = 0;
                while let Some(m) = req.message_mut().message().await? {
                    sink.send(EchoReply {
                        text: m.text.to_uppercase(),
                        index: i,
                        payload: m.payload,
                    })
                    .await?;
                    i += 1;
                }
                Ok(())
            },
        )
}

async fn call_kinds(env: Env) {
    let running = env.serve(echo_server());
    let channel = running.channel();

    // Unary, untyped: empty, small and multi-frame messages.
    for (i, len) in [0usize, 5, 16 * 1024, 300 * 1024].into_iter().enumerate() {
        let body = pattern(i as u64, len);
        let reply = channel
            .unary(UNARY, body.clone(), CallOptions::new())
            .await
            .unwrap_or_else(|s| panic!("unary of {len} bytes: {s}"));
        assert_eq!(&reply.message()[..5], b"echo:");
        assert_eq!(
            &reply.message()[5..],
            &body[..],
            "unary echo of {len} bytes"
        );
    }

    // Server streaming, untyped.
    let mut stream = channel
        .server_streaming(SERVER_STREAM, Bytes::from("7"), CallOptions::new())
        .await
        .expect("server streaming starts");
    let items = collect(&mut stream)
        .await
        .expect("server streaming ends OK");
    let expected: Vec<String> = (0..7).map(|i| format!("item-{i}")).collect();
    assert_eq!(items.iter().map(text).collect::<Vec<_>>(), expected);
    assert_eq!(stream.status().map(Status::code), Some(Code::Ok));
    // After the end the stream keeps saying "done".
    assert!(stream.message().await.unwrap().is_none());

    // Server streaming with zero responses.
    let mut stream = channel
        .server_streaming(SERVER_STREAM, Bytes::from("0"), CallOptions::new())
        .await
        .unwrap();
    assert!(collect(&mut stream).await.unwrap().is_empty());

    // Client streaming, untyped.
    let (tx, response) = channel
        .client_streaming(CLIENT_STREAM, CallOptions::new())
        .await
        .expect("client streaming starts");
    let sent: Vec<Bytes> = [3usize, 0, 70_000, 1]
        .iter()
        .enumerate()
        .map(|(i, &len)| pattern(100 + i as u64, len))
        .collect();
    for msg in &sent {
        tx.send(msg.clone()).await.expect("client streaming send");
    }
    tx.close().await.expect("close");
    let reply = response.await.expect("client streaming response");
    let expected: Vec<String> = sent
        .iter()
        .map(|m| format!("{}:{:016x}", m.len(), fnv1a(m)))
        .collect();
    assert_eq!(text(reply.message()), expected.join(","));

    // Client streaming with no messages at all.
    let (tx, response) = channel
        .client_streaming(CLIENT_STREAM, CallOptions::new())
        .await
        .unwrap();
    drop(tx);
    assert_eq!(response.await.unwrap().message().as_ref(), b"");

    // Bidi, untyped: ping-pong, then a burst, then half-close.
    let (tx, mut rx) = channel
        .bidi_streaming(BIDI, CallOptions::new())
        .await
        .expect("bidi starts");
    for word in ["abc", "hello", ""] {
        tx.send(Bytes::from(word)).await.unwrap();
        let got = rx.message().await.unwrap().expect("one reply per message");
        assert_eq!(text(&got), word.chars().rev().collect::<String>());
    }
    let burst: Vec<Bytes> = (0..20)
        .map(|i| pattern(200 + i, 1000 * i as usize))
        .collect();
    // Read while sending: the burst and its echo (190 KB each way) need not fit in the
    // flow-control windows, which start at 64 KiB when they adapt.
    let send_all = async {
        for msg in &burst {
            tx.send(msg.clone()).await.unwrap();
        }
        tx.close().await.unwrap();
    };
    let (_, rest) = futures_util::future::join(send_all, collect(&mut rx)).await;
    let rest = rest.expect("bidi ends OK");
    assert_eq!(rest.len(), burst.len() + 1);
    for (got, sent) in rest.iter().zip(&burst) {
        let mut rev = sent.to_vec();
        rev.reverse();
        assert_eq!(got.as_ref(), &rev[..]);
    }
    assert_eq!(rest.last().unwrap().as_ref(), b"bye");

    // The same four kinds through the prost codec.
    let typed = channel.typed(ClientCodec::new());
    let reply = typed
        .unary(
            T_UNARY,
            &EchoRequest {
                text: "prost".into(),
                count: 21,
                payload: vec![1, 2, 3],
            },
            CallOptions::new(),
        )
        .await
        .expect("typed unary");
    assert_eq!(
        reply.message(),
        &EchoReply {
            text: "hello, prost".into(),
            index: 42,
            payload: vec![3, 2, 1],
        }
    );

    let mut stream = typed
        .server_streaming(
            T_SERVER_STREAM,
            &EchoRequest {
                text: "s".into(),
                count: 4,
                payload: vec![],
            },
            CallOptions::new(),
        )
        .await
        .expect("typed server streaming");
    let items = collect(&mut stream)
        .await
        .expect("typed server stream ends OK");
    let expected: Vec<EchoReply> = (0..4)
        .map(|i| EchoReply {
            text: format!("s#{i}"),
            index: i,
            payload: vec![i as u8; i as usize],
        })
        .collect();
    assert_eq!(items, expected);

    let (tx, response) = typed
        .client_streaming(T_CLIENT_STREAM, CallOptions::new())
        .await
        .expect("typed client streaming");
    for (i, name) in ["ada", "grace", "linus"].iter().enumerate() {
        tx.send(EchoRequest {
            text: (*name).into(),
            count: i as u32 + 1,
            payload: vec![i as u8],
        })
        .await
        .unwrap();
    }
    drop(tx);
    let reply = response.await.expect("typed client streaming response");
    assert_eq!(
        reply.message(),
        &EchoReply {
            text: "ada+grace+linus".into(),
            index: 6,
            payload: vec![0, 1, 2],
        }
    );

    let (tx, mut rx) = typed
        .bidi_streaming(T_BIDI, CallOptions::new())
        .await
        .expect("typed bidi");
    for (i, word) in ["ping", "pong"].iter().enumerate() {
        tx.send(EchoRequest {
            text: (*word).into(),
            count: 0,
            payload: word.as_bytes().to_vec(),
        })
        .await
        .unwrap();
        let got = rx.message().await.unwrap().expect("typed bidi reply");
        assert_eq!(
            got,
            EchoReply {
                text: word.to_uppercase(),
                index: i as u32,
                payload: word.as_bytes().to_vec(),
            }
        );
    }
    tx.close().await.unwrap();
    assert!(rx.message().await.unwrap().is_none());
    assert_eq!(rx.status().map(Status::code), Some(Code::Ok));
}

// ---------------------------------------------------------------------------------------------
// 2. Metadata, trailers and rich statuses
// ---------------------------------------------------------------------------------------------

const MD_UNARY: &str = "/test.Meta/Unary";
const MD_STREAM: &str = "/test.Meta/Stream";
const MD_FAIL: &str = "/test.Meta/Fail";
const MD_STREAM_FAIL: &str = "/test.Meta/StreamFail";

const BIN_REQ: &[u8] = &[0, 1, 2, 0xfe, 0xff, b',', b' '];
const BIN_INIT: &[u8] = &[0xde, 0xad, 0xbe, 0xef];
const BIN_TRAIL: &[u8] = &[0xff; 33];
const DETAILS: &[u8] = &[0x08, 0x05, 0x12, 0x00, 0xff, 0x00];
const UNICODE_MESSAGE: &str = "nicht gefunden: café ☃ 100% {\"x\": 1}\n\tend";

async fn metadata_and_status(env: Env) {
    let (seen_tx, seen) = probe::<Metadata>();
    let builder = Server::builder()
        .unary(MD_UNARY, BytesCodec, {
            let seen_tx = seen_tx.clone();
            move |req: Request<Bytes>| {
                let seen_tx = seen_tx.clone();
                async move {
                    seen_tx.report(req.context().metadata().clone());
                    let mut response = Response::new(req.into_message());
                    response.metadata_mut().append("x-initial", "first")?;
                    response
                        .metadata_mut()
                        .append_bin("x-initial-bin", BIN_INIT)?;
                    response.trailers_mut().append("x-trailer", "last")?;
                    response
                        .trailers_mut()
                        .append_bin("x-trailer-bin", BIN_TRAIL)?;
                    Ok(response)
                }
            }
        })
        .server_streaming(MD_STREAM, BytesCodec, {
            let seen_tx = seen_tx.clone();
            move |req: Request<Bytes>, sink: ResponseSink<Bytes>| {
                let seen_tx = seen_tx.clone();
                async move {
                    seen_tx.report(req.metadata().clone());
                    let mut initial = Metadata::new();
                    initial.append("x-stream-initial", "hi")?;
                    initial.append_bin("x-stream-initial-bin", BIN_INIT)?;
                    sink.send_initial_metadata(initial).await?;
                    sink.send(Bytes::from_static(b"one")).await?;
                    sink.send(Bytes::from_static(b"two")).await?;
                    let mut trailers = Metadata::new();
                    trailers.append("x-stream-trailer", "bye")?;
                    trailers.append_bin("x-stream-trailer-bin", BIN_TRAIL)?;
                    sink.set_trailers(trailers);
                    Ok(())
                }
            }
        })
        .unary(MD_FAIL, BytesCodec, |_req: Request<Bytes>| async move {
            let mut md = Metadata::new();
            md.append("x-error-info", "see details")?;
            md.append_bin("x-error-bin", BIN_TRAIL)?;
            Err::<Response<Bytes>, _>(
                Status::new(Code::NotFound, UNICODE_MESSAGE)
                    .with_details(Bytes::from_static(DETAILS))
                    .with_metadata(md),
            )
        })
        .server_streaming(
            MD_STREAM_FAIL,
            BytesCodec,
            |_req: Request<Bytes>, sink: ResponseSink<Bytes>| async move {
                sink.send(Bytes::from_static(b"partial")).await?;
                let mut trailers = Metadata::new();
                trailers.append("x-sink-trailer", "from-sink")?;
                sink.set_trailers(trailers);
                let mut md = Metadata::new();
                md.append("x-status-trailer", "from-status")?;
                Err(Status::new(Code::FailedPrecondition, UNICODE_MESSAGE)
                    .with_details(Bytes::from_static(DETAILS))
                    .with_metadata(md))
            },
        );
    let running = env.serve(builder);
    let channel = running.channel();

    let mut request_md = Metadata::new();
    request_md.append("x-ascii", "hello world").unwrap();
    request_md.append("x-multi", "a").unwrap();
    request_md.append("x-multi", "b").unwrap();
    request_md.append_bin("x-trace-bin", BIN_REQ).unwrap();
    request_md.append_bin("x-empty-bin", b"").unwrap();
    let check_request_md = |md: &Metadata| {
        assert_eq!(md.get("x-ascii"), Some("hello world"), "{md:?}");
        assert_eq!(md.get_all("x-multi"), vec!["a", "b"], "{md:?}");
        assert_eq!(
            md.get_bin("x-trace-bin").as_deref(),
            Some(BIN_REQ),
            "{md:?}"
        );
        assert_eq!(md.get_all_bin("x-trace-bin").len(), 1, "{md:?}");
        assert_eq!(
            md.get_bin("x-empty-bin").as_deref(),
            Some(&b""[..]),
            "{md:?}"
        );
        for framing in ["content-type", "te", "grpc-timeout", ":path"] {
            assert!(
                !md.contains_key(framing),
                "{framing} leaked into metadata: {md:?}"
            );
        }
    };

    // Unary: request metadata in, initial metadata and trailers out.
    let reply = channel
        .unary(
            MD_UNARY,
            Bytes::from_static(b"m"),
            CallOptions::new().metadata(request_md.clone()),
        )
        .await
        .expect("metadata unary");
    check_request_md(&seen.next(5 * SECOND, "unary handler metadata").await);
    assert_eq!(reply.message().as_ref(), b"m");
    assert_eq!(
        reply.metadata().get("x-initial"),
        Some("first"),
        "{:?}",
        reply.metadata()
    );
    assert_eq!(
        reply.metadata().get_bin("x-initial-bin").as_deref(),
        Some(BIN_INIT)
    );
    assert!(
        !reply.metadata().contains_key("x-trailer"),
        "trailer among headers"
    );
    assert_eq!(
        reply.trailers().get("x-trailer"),
        Some("last"),
        "{:?}",
        reply.trailers()
    );
    assert_eq!(
        reply.trailers().get_bin("x-trailer-bin").as_deref(),
        Some(BIN_TRAIL)
    );
    assert!(!reply.trailers().contains_key("grpc-status"));

    // Server streaming: send_initial_metadata and set_trailers.
    let mut options = CallOptions::new();
    *options.metadata_mut() = request_md.clone();
    let mut stream = channel
        .server_streaming(MD_STREAM, Bytes::new(), options)
        .await
        .expect("metadata stream");
    let initial = stream.initial_metadata().await.expect("initial metadata");
    assert_eq!(initial.get("x-stream-initial"), Some("hi"), "{initial:?}");
    assert_eq!(
        initial.get_bin("x-stream-initial-bin").as_deref(),
        Some(BIN_INIT)
    );
    assert!(stream.trailers().is_none(), "trailers before the end");
    let items = collect(&mut stream).await.expect("stream ends OK");
    assert_eq!(
        items,
        vec![Bytes::from_static(b"one"), Bytes::from_static(b"two")]
    );
    let trailers = stream.trailers().expect("trailers after the end");
    assert_eq!(
        trailers.get("x-stream-trailer"),
        Some("bye"),
        "{trailers:?}"
    );
    assert_eq!(
        trailers.get_bin("x-stream-trailer-bin").as_deref(),
        Some(BIN_TRAIL)
    );
    check_request_md(&seen.next(5 * SECOND, "stream handler metadata").await);

    // A failing unary (trailers-only): code, exact unicode message, details and metadata.
    let status = err_of(
        channel
            .unary(MD_FAIL, Bytes::new(), CallOptions::new())
            .await,
        "failing unary",
    );
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    assert_eq!(status.message(), UNICODE_MESSAGE);
    assert_eq!(status.details().as_ref(), DETAILS);
    assert_eq!(
        status.metadata().get("x-error-info"),
        Some("see details"),
        "{status:?}"
    );
    assert_eq!(
        status.metadata().get_bin("x-error-bin").as_deref(),
        Some(BIN_TRAIL)
    );

    // A stream that fails after a message: trailers from the sink and from the status merge.
    let mut stream = channel
        .server_streaming(MD_STREAM_FAIL, Bytes::new(), CallOptions::new())
        .await
        .unwrap();
    assert_eq!(
        stream.message().await.unwrap().as_deref(),
        Some(&b"partial"[..])
    );
    let status = err_of(stream.message().await, "failing stream");
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert_eq!(status.message(), UNICODE_MESSAGE);
    assert_eq!(status.details().as_ref(), DETAILS);
    assert_eq!(
        status.metadata().get("x-sink-trailer"),
        Some("from-sink"),
        "{status:?}"
    );
    assert_eq!(
        status.metadata().get("x-status-trailer"),
        Some("from-status"),
        "{status:?}"
    );
    assert_eq!(
        stream.status().map(Status::code),
        Some(Code::FailedPrecondition)
    );
    assert_eq!(
        stream.trailers().and_then(|t| t.get("x-sink-trailer")),
        Some("from-sink")
    );
}

// ---------------------------------------------------------------------------------------------
// 3. Deadlines
// ---------------------------------------------------------------------------------------------

const WAIT_FOR_CANCEL: &str = "/test.Deadline/Wait";

#[derive(Debug)]
enum DeadlineEvent {
    Started(Option<Instant>),
    Cancelled { observed: bool, flag: bool },
}

async fn deadline(env: Env) {
    let (events_tx, events) = probe::<DeadlineEvent>();
    let running = env.serve(Server::builder().unary(
        WAIT_FOR_CANCEL,
        BytesCodec,
        move |req: Request<Bytes>| {
            let events_tx = events_tx.clone();
            async move {
                let ctx = req.context().clone();
                events_tx.report(DeadlineEvent::Started(ctx.deadline()));
                let observed = try_within(5 * SECOND, ctx.cancelled()).await.is_some();
                events_tx.report(DeadlineEvent::Cancelled {
                    observed,
                    flag: ctx.is_cancelled(),
                });
                Ok(Response::new(Bytes::from_static(b"too late")))
            }
        },
    ));
    let channel = running.channel();
    // Connect first so the measured time is the call's alone.
    channel.connect().await.expect("connect");

    let started = Instant::now();
    let result = channel
        .unary(
            WAIT_FOR_CANCEL,
            Bytes::new(),
            CallOptions::new().timeout(Duration::from_millis(200)),
        )
        .await;
    let elapsed = started.elapsed();
    let status = err_of(result, "call past its deadline");
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(
        elapsed >= Duration::from_millis(180),
        "deadline fired early: {elapsed:?}"
    );
    assert!(elapsed < SECOND, "deadline fired late: {elapsed:?}");

    match events.next(2 * SECOND, "handler start").await {
        DeadlineEvent::Started(Some(at)) => {
            let budget = at.saturating_duration_since(started);
            assert!(
                budget >= Duration::from_millis(150) && budget <= Duration::from_millis(400),
                "server deadline is {budget:?} after the call started, expected ~200ms"
            );
        }
        other => panic!("handler saw no deadline: {other:?}"),
    }
    match events.next(2 * SECOND, "handler cancellation").await {
        DeadlineEvent::Cancelled { observed, flag } => {
            assert!(observed, "ctx.cancelled() never completed");
            assert!(flag, "ctx.is_cancelled() is false after cancellation");
        }
        other => panic!("unexpected event {other:?}"),
    }
    assert!(
        started.elapsed() < 2 * SECOND,
        "handler took {:?} to notice",
        started.elapsed()
    );

    // An already expired deadline fails at once.
    let status = err_of(
        channel
            .unary(
                WAIT_FOR_CANCEL,
                Bytes::new(),
                CallOptions::new().deadline(Instant::now() - Duration::from_millis(1)),
            )
            .await,
        "expired deadline",
    );
    assert_eq!(status.code(), Code::DeadlineExceeded);
}

// ---------------------------------------------------------------------------------------------
// 4. Cancellation
// ---------------------------------------------------------------------------------------------

const ENDLESS: &str = "/test.Cancel/Endless";
const ECHO_UNTIL_CANCEL: &str = "/test.Cancel/Echo";

/// How a handler's work loop ended, and whether `ctx.cancelled()` completed within 2 s.
#[derive(Debug)]
struct CancelReport {
    ended: String,
    ctx_cancelled: bool,
}

async fn cancellation(env: Env) {
    let (report_tx, reports) = probe::<CancelReport>();
    let builder = Server::builder()
        .server_streaming(ENDLESS, BytesCodec, {
            let report_tx = report_tx.clone();
            move |req: Request<Bytes>, sink: ResponseSink<Bytes>| {
                let report_tx = report_tx.clone();
                async move {
                    let ctx = req.context().clone();
                    let work = async {
                        for i in 0u64.. {
                            if let Err(status) = sink.send(Bytes::from(format!("n{i}"))).await {
                                return format!("send failed: {:?}", status.code());
                            }
                            Timer::after(Duration::from_millis(2)).await;
                        }
                        unreachable!()
                    };
                    let ended = match select(pin!(ctx.cancelled()), pin!(work)).await {
                        Either::Left(_) => "ctx.cancelled()".to_string(),
                        Either::Right((how, _)) => how,
                    };
                    let ctx_cancelled = try_within(2 * SECOND, ctx.cancelled()).await.is_some();
                    report_tx.report(CancelReport {
                        ended,
                        ctx_cancelled,
                    });
                    Ok(())
                }
            }
        })
        .bidi_streaming(ECHO_UNTIL_CANCEL, BytesCodec, {
            let report_tx = report_tx.clone();
            move |mut req: Request<RequestStream<Bytes>>, sink: ResponseSink<Bytes>| {
                let report_tx = report_tx.clone();
                async move {
                    let ctx = req.context().clone();
                    let work = async {
                        loop {
                            match req.message_mut().message().await {
                                Ok(Some(msg)) => {
                                    if let Err(s) = sink.send(msg).await {
                                        return format!("send failed: {:?}", s.code());
                                    }
                                }
                                Ok(None) => return "request stream ended cleanly".to_string(),
                                Err(s) => return format!("read failed: {:?}", s.code()),
                            }
                        }
                    };
                    let ended = match select(pin!(ctx.cancelled()), pin!(work)).await {
                        Either::Left(_) => "ctx.cancelled()".to_string(),
                        Either::Right((how, _)) => how,
                    };
                    let ctx_cancelled = try_within(2 * SECOND, ctx.cancelled()).await.is_some();
                    report_tx.report(CancelReport {
                        ended,
                        ctx_cancelled,
                    });
                    Ok(())
                }
            }
        });
    let running = env.serve(builder);
    let channel = running.channel();

    // Dropping a server stream mid-way.
    let mut stream = channel
        .server_streaming(ENDLESS, Bytes::new(), CallOptions::new())
        .await
        .expect("endless stream");
    for i in 0..3 {
        let msg = stream.message().await.unwrap().expect("a message");
        assert_eq!(text(&msg), format!("n{i}"));
    }
    let dropped = Instant::now();
    drop(stream);
    let report = reports
        .next(2 * SECOND, "server-streaming handler after drop")
        .await;
    assert!(
        report.ctx_cancelled,
        "ctx.cancelled() not observed: {report:?}"
    );
    assert!(
        report.ended == "ctx.cancelled()" || report.ended == "send failed: Cancelled",
        "{report:?}"
    );
    assert!(dropped.elapsed() < 2 * SECOND);

    // Streaming::cancel on a bidi call.
    let (tx, mut rx) = channel
        .bidi_streaming(ECHO_UNTIL_CANCEL, CallOptions::new())
        .await
        .expect("bidi");
    tx.send(Bytes::from_static(b"hello")).await.unwrap();
    assert_eq!(rx.message().await.unwrap().as_deref(), Some(&b"hello"[..]));
    let cancelled = Instant::now();
    rx.cancel();
    let report = reports
        .next(2 * SECOND, "bidi handler after cancel()")
        .await;
    assert!(
        report.ctx_cancelled,
        "ctx.cancelled() not observed: {report:?}"
    );
    assert_ne!(report.ended, "request stream ended cleanly", "{report:?}");
    assert!(cancelled.elapsed() < 2 * SECOND);
    // The client side reports the cancellation too.
    let status = err_of(rx.message().await, "read after cancel");
    assert_eq!(status.code(), Code::Cancelled, "{status:?}");
    let status = err_of(
        tx.send(Bytes::from_static(b"more")).await,
        "send after cancel",
    );
    assert_eq!(status.code(), Code::Cancelled, "{status:?}");

    // The channel is still fine for other calls.
    let (tx, mut rx) = channel
        .bidi_streaming(ECHO_UNTIL_CANCEL, CallOptions::new())
        .await
        .unwrap();
    tx.send(Bytes::from_static(b"again")).await.unwrap();
    assert_eq!(rx.message().await.unwrap().as_deref(), Some(&b"again"[..]));
    tx.close().await.unwrap();
    assert!(rx.message().await.unwrap().is_none());
    let report = reports.next(2 * SECOND, "bidi handler after close").await;
    assert_eq!(report.ended, "request stream ended cleanly");
}

// ---------------------------------------------------------------------------------------------
// 5. One call fed by many tasks through cloned Senders
// ---------------------------------------------------------------------------------------------

const COLLECT: &str = "/test.Many/Collect";
const TASKS: u32 = 8;
const PER_TASK: u32 = 50;
const MAX_PAYLOAD: usize = 100 * 1024;

/// Payload size for a message: a spread from 0 to 100 KiB, mostly small, some huge.
fn payload_len(task: u32, seq: u32) -> usize {
    let n = u64::from(task * PER_TASK + seq);
    match (task, seq) {
        (0, 0) | (3, 17) => return 0,
        (1, 0) | (7, 49) => return MAX_PAYLOAD,
        _ => {}
    }
    let r = fnv1a(&n.to_le_bytes()) as usize;
    if n % 4 == 0 {
        r % (MAX_PAYLOAD + 1)
    } else {
        r % 2048
    }
}

/// `task | seq | len | payload | fnv1a(everything before)`, all big-endian.
fn tagged_message(task: u32, seq: u32) -> Bytes {
    let len = payload_len(task, seq);
    let mut buf = Vec::with_capacity(12 + len + 8);
    buf.extend_from_slice(&task.to_be_bytes());
    buf.extend_from_slice(&seq.to_be_bytes());
    buf.extend_from_slice(&(len as u32).to_be_bytes());
    buf.extend_from_slice(&pattern(u64::from(task) << 32 | u64::from(seq), len));
    let sum = fnv1a(&buf);
    buf.extend_from_slice(&sum.to_be_bytes());
    buf.into()
}

/// Checks one message is whole and from the expected place; returns (task, seq).
fn check_tagged(msg: &[u8]) -> Result<(u32, u32), String> {
    if msg.len() < 20 {
        return Err(format!("message of {} bytes is too short", msg.len()));
    }
    let word = |at: usize| u32::from_be_bytes(msg[at..at + 4].try_into().unwrap());
    let (task, seq, len) = (word(0), word(4), word(8) as usize);
    if msg.len() != 12 + len + 8 {
        return Err(format!(
            "task {task} seq {seq}: {} bytes, header says {}",
            msg.len(),
            12 + len + 8
        ));
    }
    let sum = u64::from_be_bytes(msg[12 + len..].try_into().unwrap());
    if fnv1a(&msg[..12 + len]) != sum {
        return Err(format!("task {task} seq {seq}: checksum mismatch"));
    }
    if task >= TASKS || seq >= PER_TASK || len != payload_len(task, seq) {
        return Err(format!(
            "task {task} seq {seq} len {len}: not a message we sent"
        ));
    }
    if msg[12..12 + len] != pattern(u64::from(task) << 32 | u64::from(seq), len)[..] {
        return Err(format!("task {task} seq {seq}: payload corrupted"));
    }
    Ok((task, seq))
}

async fn concurrent_senders(env: Env) {
    let running = env.serve(Server::builder().client_streaming(
        COLLECT,
        BytesCodec,
        |mut req: Request<RequestStream<Bytes>>| async move {
            let mut next = vec![0u32; TASKS as usize];
            let mut count = 0u32;
            let mut multi_frame = 0u32;
            while let Some(msg) = req.message_mut().message().await? {
                let (task, seq) = check_tagged(&msg)
                    .map_err(|e| Status::new(Code::DataLoss, format!("message #{count}: {e}")))?;
                if seq != next[task as usize] {
                    return Err(Status::new(
                        Code::DataLoss,
                        format!(
                            "task {task}: got seq {seq}, expected {}",
                            next[task as usize]
                        ),
                    ));
                }
                next[task as usize] += 1;
                count += 1;
                if msg.len() > 16 * 1024 {
                    multi_frame += 1;
                }
            }
            if let Some(task) = next.iter().position(|&n| n != PER_TASK) {
                return Err(Status::new(
                    Code::DataLoss,
                    format!("task {task}: {} of {PER_TASK} messages", next[task]),
                ));
            }
            Ok(Response::new(Bytes::from(format!("{count} {multi_frame}"))))
        },
    ));
    let channel = running.channel();
    let (tx, response) = channel
        .client_streaming(COLLECT, CallOptions::new())
        .await
        .expect("client streaming");
    let tasks: Vec<_> = (0..TASKS)
        .map(|task| {
            let tx: Sender<Bytes> = tx.clone();
            env.spawn(async move {
                for seq in 0..PER_TASK {
                    tx.send(tagged_message(task, seq))
                        .await
                        .map_err(|s| format!("task {task} seq {seq}: {s}"))?;
                    if seq % 8 == task % 8 {
                        // Let the other tasks get a turn in between.
                        Timer::after(Duration::from_micros(200)).await;
                    }
                }
                Ok::<_, String>(())
            })
        })
        .collect();
    // The tasks hold the only remaining clones: the request ends when the last one is done.
    drop(tx);
    within(15 * SECOND, "8 sender tasks", async {
        for task in tasks {
            task.join().await.expect("sender task");
        }
    })
    .await;
    let reply = within(10 * SECOND, "response to 400 messages", response.response())
        .await
        .expect("collector verified every message");
    let reply = text(reply.message()).to_string();
    let (count, multi_frame) = reply.split_once(' ').unwrap();
    assert_eq!(count, "400", "messages received");
    assert!(
        multi_frame.parse::<u32>().unwrap() >= 20,
        "only {multi_frame} messages spanned several DATA frames"
    );
}

const FAN_OUT: &str = "/test.Many/FanOut";

/// The server side of the above: a handler hands clones of its `ResponseSink` to 8 tasks that
/// send 50 messages each (up to 100 KiB) at once; the client gets all 400 whole and in order
/// per task. A clone kept past the end of the call fails with CANCELLED instead of waiting.
async fn concurrent_response_senders(env: Env) {
    let (late_tx, late_rx) = async_channel::bounded::<Result<(), Status>>(1);
    let spawner = env.clone();
    let running = env.serve(Server::builder().server_streaming(
        FAN_OUT,
        BytesCodec,
        move |_req: Request<Bytes>, sink: ResponseSink<Bytes>| {
            let (env, late_tx) = (spawner.clone(), late_tx.clone());
            async move {
                let tasks: Vec<_> = (0..TASKS)
                    .map(|task| {
                        let sink = sink.clone();
                        env.spawn(async move {
                            for seq in 0..PER_TASK {
                                sink.send(tagged_message(task, seq)).await?;
                                if seq % 8 == task % 8 {
                                    Timer::after(Duration::from_micros(200)).await;
                                }
                            }
                            Ok::<_, Status>(())
                        })
                    })
                    .collect();
                for task in tasks {
                    task.join().await?;
                }
                // This clone outlives the call: once the call is over, a send must fail.
                let kept = sink.clone();
                env.spawn(async move {
                    let ended = Instant::now() + 10 * SECOND;
                    let result = loop {
                        match kept.send(Bytes::from_static(b"late")).await {
                            Ok(()) if Instant::now() < ended => {
                                Timer::after(Duration::from_millis(5)).await;
                            }
                            other => break other,
                        }
                    };
                    let _ = late_tx.send(result).await;
                });
                Ok(())
            }
        },
    ));
    let channel = running.channel();
    let mut stream = channel
        .server_streaming(FAN_OUT, Bytes::new(), CallOptions::new())
        .await
        .expect("server streaming");
    let mut next = vec![0u32; TASKS as usize];
    let mut count = 0u32;
    within(20 * SECOND, "400 messages from 8 sender tasks", async {
        loop {
            match stream.message().await {
                Ok(Some(msg)) if msg.as_ref() == b"late" => {}
                Ok(Some(msg)) => {
                    let (task, seq) =
                        check_tagged(&msg).unwrap_or_else(|e| panic!("#{count}: {e}"));
                    assert_eq!(seq, next[task as usize], "task {task} out of order");
                    next[task as usize] += 1;
                    count += 1;
                }
                Ok(None) => break,
                Err(status) => panic!("the stream failed: {status}"),
            }
        }
    })
    .await;
    assert_eq!(count, TASKS * PER_TASK, "messages received");
    let late = within(15 * SECOND, "a send after the call ended", late_rx.recv())
        .await
        .expect("the late sender reports");
    assert_eq!(
        err_of(late, "a send after the call ended").code(),
        Code::Cancelled
    );
}

// ---------------------------------------------------------------------------------------------
// 6. Flow control backpressure
// ---------------------------------------------------------------------------------------------

const HOLD: &str = "/test.Flow/Hold";
const FLOOD: &str = "/test.Flow/Flood";
const WINDOW: u32 = 65_535;
const FLOW_MESSAGES: usize = 64;
const BLOCKED_AFTER: Duration = Duration::from_millis(300);

/// 1 KiB, 2 KiB, ... 16 KiB, 1 KiB, ...
fn flow_message(i: usize) -> Bytes {
    pattern(5000 + i as u64, 1024 * (i % 16 + 1))
}

fn flow_summary(msgs: impl Iterator<Item = Bytes>) -> String {
    let (mut count, mut bytes, mut hash) = (0usize, 0usize, 0u64);
    for m in msgs {
        count += 1;
        bytes += m.len();
        hash = hash.rotate_left(5) ^ fnv1a(&m);
    }
    format!("{count} {bytes} {hash:016x}")
}

async fn flow_control(env: Env) {
    let (go_tx, go) = async_channel::bounded::<()>(1);
    let (flood_tx, flood_reports) = probe::<(usize, usize)>();
    let builder = Server::builder()
        .initial_stream_window_size(WINDOW)
        .initial_connection_window_size(WINDOW)
        .bidi_streaming(
            HOLD,
            BytesCodec,
            move |mut req: Request<RequestStream<Bytes>>, sink: ResponseSink<Bytes>| {
                let go = go.clone();
                async move {
                    // Don't read a thing until the test says so.
                    go.recv()
                        .await
                        .map_err(|_| Status::internal("no go signal"))?;
                    let mut got = Vec::new();
                    while let Some(msg) = req.message_mut().message().await? {
                        got.push(msg);
                    }
                    sink.send(Bytes::from(flow_summary(got.into_iter())))
                        .await?;
                    Ok(())
                }
            },
        )
        .server_streaming(
            FLOOD,
            BytesCodec,
            move |_req: Request<Bytes>, sink: ResponseSink<Bytes>| {
                let flood_tx = flood_tx.clone();
                async move {
                    let mut reported = false;
                    let mut done = 0usize;
                    for i in 0..FLOW_MESSAGES {
                        let msg = flow_message(i);
                        let len = msg.len();
                        let send = pin!(sink.send(msg));
                        if reported {
                            send.await?;
                        } else {
                            match select(send, Timer::after(BLOCKED_AFTER)).await {
                                Either::Left((r, _)) => r?,
                                Either::Right((_, send)) => {
                                    flood_tx.report((i, done));
                                    reported = true;
                                    send.await?;
                                }
                            }
                        }
                        done += len;
                    }
                    if !reported {
                        flood_tx.report((FLOW_MESSAGES, done));
                    }
                    Ok(())
                }
            },
        );
    let running = env.serve(builder);
    let channel = running
        .channel_builder()
        .initial_stream_window_size(WINDOW)
        .initial_connection_window_size(WINDOW)
        .build()
        .expect("small windows are valid");

    // Client to server: the handler does not read, so sends must stall near the window.
    let (tx, mut rx) = channel
        .bidi_streaming(HOLD, CallOptions::new())
        .await
        .expect("bidi");
    let mut blocked = None;
    let mut sent_bytes = 0usize;
    for i in 0..FLOW_MESSAGES {
        let msg = flow_message(i);
        let len = msg.len();
        if blocked.is_some() {
            within(
                5 * SECOND,
                "send after the handler started reading",
                tx.send(msg),
            )
            .await
            .expect("send");
        } else {
            let send = pin!(tx.send(msg));
            match select(send, Timer::after(BLOCKED_AFTER)).await {
                Either::Left((r, _)) => r.expect("send"),
                Either::Right((_, send)) => {
                    blocked = Some((i, sent_bytes));
                    go_tx.send(()).await.unwrap();
                    within(5 * SECOND, "the blocked send once the handler reads", send)
                        .await
                        .expect("blocked send completes");
                }
            }
        }
        sent_bytes += len;
    }
    tx.close().await.expect("close");
    let (blocked_at, before) = blocked.unwrap_or_else(|| {
        panic!("all {FLOW_MESSAGES} sends ({sent_bytes} bytes) completed with nobody reading")
    });
    // Completed sends went into the 64 KiB window; nothing more may be buffered.
    let wire_before = before + 5 * blocked_at;
    assert!(
        wire_before <= WINDOW as usize,
        "{wire_before} bytes ({blocked_at} messages) were accepted before a send blocked, \
         with a {WINDOW}-byte window"
    );
    let summary = within(5 * SECOND, "summary", rx.message())
        .await
        .expect("summary")
        .expect("one summary message");
    assert_eq!(
        text(&summary),
        flow_summary((0..FLOW_MESSAGES).map(flow_message)),
        "the handler did not receive every message intact"
    );
    assert!(rx.message().await.unwrap().is_none());

    // Server to client: the client does not read, so the handler's sends must stall.
    let mut stream = channel
        .server_streaming(FLOOD, Bytes::new(), CallOptions::new())
        .await
        .expect("flood");
    let (blocked_at, before) = flood_reports.next(5 * SECOND, "flood handler report").await;
    assert!(
        blocked_at < FLOW_MESSAGES,
        "the handler sent all {before} bytes with nobody reading"
    );
    let max_buffered = WINDOW as usize + 2 * (16 * 1024 + 5);
    assert!(
        before + 5 * blocked_at <= max_buffered,
        "{before} bytes were accepted from the handler before a send blocked"
    );
    let got = within(5 * SECOND, "reading the flood", collect(&mut stream))
        .await
        .expect("flood ends OK");
    assert_eq!(
        flow_summary(got.into_iter()),
        flow_summary((0..FLOW_MESSAGES).map(flow_message))
    );
}

// ---------------------------------------------------------------------------------------------
// 7. Message size limits
// ---------------------------------------------------------------------------------------------

const BIG: &str = "/test.Size/Big";
const COUNT_SIZES: &str = "/test.Size/Count";
const SMALL_ECHO: &str = "/test.Size/Echo";
const SIZED_STREAM: &str = "/test.Size/Sized";
const FIVE_MIB: usize = 5 * 1024 * 1024;

async fn message_size_limits(env: Env) {
    let handled = Arc::new(AtomicUsize::new(0));
    let running = env.serve(
        Server::builder()
            .unary(BIG, BytesCodec, {
                let handled = handled.clone();
                move |req: Request<Bytes>| {
                    handled.fetch_add(1, Ordering::SeqCst);
                    async move {
                        let n: usize = text(req.message())
                            .parse()
                            .map_err(|_| Status::invalid_argument("n"))?;
                        Ok(Response::new(pattern(n as u64, n)))
                    }
                }
            })
            .client_streaming(COUNT_SIZES, BytesCodec, {
                let handled = handled.clone();
                move |mut req: Request<RequestStream<Bytes>>| {
                    handled.fetch_add(1, Ordering::SeqCst);
                    async move {
                        let mut sizes = Vec::new();
                        while let Some(m) = req.message_mut().message().await? {
                            sizes.push(m.len().to_string());
                        }
                        Ok(Response::new(Bytes::from(sizes.join(","))))
                    }
                }
            }),
    );
    let channel = running.channel();

    // A 5 MiB response over the default 4 MiB receive limit.
    let status = err_of(
        channel
            .unary(BIG, Bytes::from(FIVE_MIB.to_string()), CallOptions::new())
            .await,
        "5 MiB response",
    );
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        status.message().contains("5242880") && status.message().contains("4194304"),
        "message should name both sizes: {status:?}"
    );

    // The same with a per-call limit of 8 MiB.
    let reply = channel
        .unary(
            BIG,
            Bytes::from(FIVE_MIB.to_string()),
            CallOptions::new().max_receive_message_size(8 * 1024 * 1024),
        )
        .await
        .expect("5 MiB response under an 8 MiB limit");
    assert_eq!(reply.message().len(), FIVE_MIB);
    assert!(
        reply.message() == &pattern(FIVE_MIB as u64, FIVE_MIB),
        "5 MiB response corrupted"
    );

    // Sending over the per-call send limit fails before anything is sent.
    let before = handled.load(Ordering::SeqCst);
    let status = err_of(
        channel
            .unary(
                BIG,
                Bytes::from(vec![b'1'; 20]),
                CallOptions::new().max_send_message_size(10),
            )
            .await,
        "20-byte request with a 10-byte send limit",
    );
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        status.message().contains("20") && status.message().contains("10"),
        "{status:?}"
    );
    // On a stream, the oversized message is refused and the call goes on.
    let (tx, response) = channel
        .client_streaming(COUNT_SIZES, CallOptions::new().max_send_message_size(10))
        .await
        .unwrap();
    let status = err_of(
        tx.send(Bytes::from(vec![7u8; 20])).await,
        "oversized stream send",
    );
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    tx.send(Bytes::from(vec![7u8; 10]))
        .await
        .expect("a message at the limit");
    tx.close().await.unwrap();
    let reply = response.await.expect("stream after a refused message");
    assert_eq!(
        text(reply.message()),
        "10",
        "only the 10-byte message went out"
    );
    assert_eq!(
        handled.load(Ordering::SeqCst),
        before + 1,
        "the oversized unary reached the server"
    );

    // A server with a 1 KiB receive limit and a 1500-byte send limit.
    let strict = env.serve(
        Server::builder()
            .max_receive_message_size(1024)
            .max_send_message_size(1500)
            .unary(SMALL_ECHO, BytesCodec, |req: Request<Bytes>| async move {
                Ok(Response::new(req.into_message()))
            })
            .server_streaming(
                SIZED_STREAM,
                BytesCodec,
                |req: Request<Bytes>, sink: ResponseSink<Bytes>| async move {
                    for size in text(req.message()).split(',') {
                        let n: usize = size.parse().map_err(|_| Status::invalid_argument("n"))?;
                        sink.send(pattern(n as u64, n)).await?;
                    }
                    Ok(())
                },
            ),
    );
    let channel = strict.channel();
    let status = err_of(
        channel
            .unary(SMALL_ECHO, pattern(1, 2048), CallOptions::new())
            .await,
        "2 KiB request to a 1 KiB server",
    );
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        status.message().contains("2048") && status.message().contains("1024"),
        "{status:?}"
    );
    let reply = channel
        .unary(SMALL_ECHO, pattern(2, 1024), CallOptions::new())
        .await
        .expect("a request at the limit");
    assert_eq!(reply.message(), &pattern(2, 1024));

    // The server's send limit: a response over it ends the call with RESOURCE_EXHAUSTED.
    let mut stream = channel
        .server_streaming(
            SIZED_STREAM,
            Bytes::from("1500,1501,10"),
            CallOptions::new(),
        )
        .await
        .unwrap();
    assert_eq!(stream.message().await.unwrap(), Some(pattern(1500, 1500)));
    let status = err_of(
        stream.message().await,
        "1501-byte response from a 1500-byte server",
    );
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        status.message().contains("1501") && status.message().contains("1500"),
        "{status:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// 8. Panicking handlers
// ---------------------------------------------------------------------------------------------

const MAYBE_PANIC: &str = "/test.Panic/Unary";
const PANIC_STREAM: &str = "/test.Panic/Stream";

async fn handler_panic(env: Env) {
    let running = env.serve(
        Server::builder()
            .unary(MAYBE_PANIC, BytesCodec, |req: Request<Bytes>| async move {
                if req.message().as_ref() == b"boom" {
                    panic!("deliberate panic in a unary handler (expected by the test)");
                }
                Ok(Response::new(req.into_message()))
            })
            .server_streaming(
                PANIC_STREAM,
                BytesCodec,
                |_req: Request<Bytes>, sink: ResponseSink<Bytes>| async move {
                    sink.send(Bytes::from_static(b"first")).await?;
                    panic!("deliberate panic in a streaming handler (expected by the test)");
                },
            ),
    );
    let channel = running.channel();
    for round in 0..2 {
        let status = err_of(
            channel
                .unary(MAYBE_PANIC, Bytes::from_static(b"boom"), CallOptions::new())
                .await,
            "panicking handler",
        );
        assert_eq!(status.code(), Code::Internal, "round {round}: {status:?}");
        let reply = channel
            .unary(MAYBE_PANIC, Bytes::from_static(b"fine"), CallOptions::new())
            .await
            .unwrap_or_else(|s| panic!("round {round}: call after a panic failed: {s:?}"));
        assert_eq!(reply.message().as_ref(), b"fine");
    }

    let mut stream = channel
        .server_streaming(PANIC_STREAM, Bytes::new(), CallOptions::new())
        .await
        .unwrap();
    assert_eq!(
        stream.message().await.unwrap().as_deref(),
        Some(&b"first"[..])
    );
    let status = err_of(stream.message().await, "stream whose handler panicked");
    assert_eq!(status.code(), Code::Internal, "{status:?}");
    let reply = channel
        .unary(
            MAYBE_PANIC,
            Bytes::from_static(b"still fine"),
            CallOptions::new(),
        )
        .await
        .expect("call after a streaming panic");
    assert_eq!(reply.message().as_ref(), b"still fine");
}

// ---------------------------------------------------------------------------------------------
// 9. Unknown methods and services
// ---------------------------------------------------------------------------------------------

const KNOWN: &str = "/test.Known/Method";

async fn unknown_routes(env: Env) {
    let running = env.serve(Server::builder().unary(
        KNOWN,
        BytesCodec,
        |req: Request<Bytes>| async move { Ok(Response::new(req.into_message())) },
    ));
    let channel = running.channel();
    for path in [
        "/test.Known/Missing",
        "/test.Unknown/Method",
        "/other.Service/Method",
        "/test.Known",
    ] {
        let status = err_of(
            channel
                .unary(path, Bytes::from_static(b"x"), CallOptions::new())
                .await,
            path,
        );
        assert_eq!(status.code(), Code::Unimplemented, "{path}: {status:?}");
        assert!(status.message().contains(path), "{path}: {status:?}");
    }
    // Streaming kinds learn it from the stream.
    let (_tx, mut rx) = channel
        .bidi_streaming("/test.Known/MissingBidi", CallOptions::new())
        .await
        .expect("the stream opens");
    let status = err_of(rx.message().await, "unknown bidi method");
    assert_eq!(status.code(), Code::Unimplemented, "{status:?}");
    let mut stream = channel
        .server_streaming("/nope.Svc/Stream", Bytes::new(), CallOptions::new())
        .await
        .unwrap();
    let status = err_of(stream.message().await, "unknown service stream");
    assert_eq!(status.code(), Code::Unimplemented, "{status:?}");

    let reply = channel
        .unary(KNOWN, Bytes::from_static(b"ok"), CallOptions::new())
        .await
        .expect("the known method still works");
    assert_eq!(reply.message().as_ref(), b"ok");
}

// ---------------------------------------------------------------------------------------------
// 10. Graceful and bounded shutdown
// ---------------------------------------------------------------------------------------------

const SLOW: &str = "/test.Shutdown/Slow";
const FOREVER: &str = "/test.Shutdown/Forever";

async fn graceful_shutdown(env: Env) {
    let (started_tx, started) = probe::<()>();
    let running =
        env.serve(
            Server::builder().unary(SLOW, BytesCodec, move |req: Request<Bytes>| {
                let started_tx = started_tx.clone();
                async move {
                    started_tx.report(());
                    Timer::after(Duration::from_millis(300)).await;
                    let mut out = b"slow:".to_vec();
                    out.extend_from_slice(req.message());
                    Ok(Response::new(Bytes::from(out)))
                }
            }),
        );
    let channel = running.channel();
    let call = env.spawn({
        let channel = channel.clone();
        async move {
            channel
                .unary(SLOW, Bytes::from_static(b"in flight"), CallOptions::new())
                .await
        }
    });
    started.next(5 * SECOND, "slow handler start").await;
    let t0 = Instant::now();
    let (result, shutdown_took) = join(call.join(), async {
        running.server.shutdown(Duration::from_secs(5)).await;
        t0.elapsed()
    })
    .await;
    let reply = result.expect("the in-flight call completes during graceful shutdown");
    assert_eq!(reply.message().as_ref(), b"slow:in flight");
    assert!(
        shutdown_took < 2 * SECOND,
        "shutdown took {shutdown_took:?}; the only call finished after 300ms"
    );

    // Nothing is served any more: a new channel, and the old one, get UNAVAILABLE.
    let fresh = running.channel();
    for (name, ch) in [("new channel", &fresh), ("old channel", &channel)] {
        let status = err_of(
            ch.unary(
                SLOW,
                Bytes::from_static(b"late"),
                CallOptions::new().timeout(5 * SECOND),
            )
            .await,
            name,
        );
        assert_eq!(status.code(), Code::Unavailable, "{name}: {status:?}");
    }
    assert!(started.try_next().is_none(), "a handler ran after shutdown");

    // Bounded: a handler that never finishes does not hold shutdown past its grace period.
    let (events_tx, events) = probe::<&'static str>();
    let stuck =
        env.serve(
            Server::builder().unary(FOREVER, BytesCodec, move |req: Request<Bytes>| {
                let events_tx = events_tx.clone();
                async move {
                    events_tx.report("started");
                    req.context().cancelled().await;
                    events_tx.report("cancelled");
                    std::future::pending::<()>().await;
                    Ok(Response::new(Bytes::new()))
                }
            }),
        );
    let channel = stuck.channel();
    let call = env.spawn({
        let channel = channel.clone();
        async move {
            channel
                .unary(FOREVER, Bytes::new(), CallOptions::new())
                .await
        }
    });
    assert_eq!(
        events.next(5 * SECOND, "stuck handler start").await,
        "started"
    );
    let t0 = Instant::now();
    within(
        2 * SECOND,
        "shutdown(200ms) with a stuck handler",
        stuck.server.shutdown(Duration::from_millis(200)),
    )
    .await;
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(190),
        "returned before the grace period: {took:?}"
    );
    let result = within(2 * SECOND, "the stuck call after shutdown", call.join()).await;
    let status = err_of(result, "call cut off by shutdown");
    assert_ne!(status.code(), Code::Ok);
    assert_eq!(
        events.next(2 * SECOND, "stuck handler cancellation").await,
        "cancelled"
    );
}

// ---------------------------------------------------------------------------------------------
// 11. Many concurrent calls on one channel
// ---------------------------------------------------------------------------------------------

const GAUGE: &str = "/test.Load/Gauge";
const CONCURRENT_CALLS: usize = 200;

async fn many_concurrent_calls(env: Env) {
    let active = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let running = env.serve(Server::builder().unary(GAUGE, BytesCodec, {
        let (active, peak) = (active.clone(), peak.clone());
        move |req: Request<Bytes>| {
            let (active, peak) = (active.clone(), peak.clone());
            async move {
                let now = active.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(now, Ordering::SeqCst);
                Timer::after(Duration::from_millis(50)).await;
                active.fetch_sub(1, Ordering::SeqCst);
                Ok(Response::new(req.into_message()))
            }
        }
    }));
    // A fresh channel, so the burst races the server's first SETTINGS (which carry
    // MAX_CONCURRENT_STREAMS); then the same where the network has 100 ms of latency, so the
    // burst always goes out first.
    // By default the channel opens a second connection once the first has 100 streams.
    let pooled = running.channel();
    burst(&env, pooled.clone(), "fresh channel", &peak).await;
    assert_eq!(pooled.stats().connections(), 2, "{:?}", pooled.stats());
    burst(
        &env,
        running.channel_with_latency(Duration::from_millis(100)),
        "fresh channel, 100 ms latency",
        &peak,
    )
    .await;
    // With multiple connections off, the calls beyond the limit queue on the one connection.
    let single = running
        .channel_builder()
        .multiple_connections(false)
        .build()
        .expect("valid");
    burst(&env, single.clone(), "one connection", &peak).await;
    assert_eq!(single.stats().connections(), 1, "{:?}", single.stats());
    let peak = peak.load(Ordering::SeqCst);
    assert!(
        peak <= 100,
        "one connection: {peak} handlers ran at once; max_concurrent_streams is 100"
    );
}

/// Makes [`CONCURRENT_CALLS`] unary calls at once, a channel clone per task.
async fn burst(env: &Env, channel: Channel, what: &str, peak: &AtomicUsize) {
    peak.store(0, Ordering::SeqCst);
    // Every task waits at the gate, so all calls start together.
    let (gate, gate_rx) = async_channel::bounded::<()>(1);
    let waiting = Arc::new(AtomicUsize::new(0));
    let calls: Vec<_> = (0..CONCURRENT_CALLS)
        .map(|i| {
            let channel = channel.clone();
            let (gate_rx, waiting) = (gate_rx.clone(), waiting.clone());
            env.spawn(async move {
                waiting.fetch_add(1, Ordering::SeqCst);
                let _ = gate_rx.recv().await;
                let body = Bytes::from(format!("call-{i}"));
                let reply = channel.unary(GAUGE, body.clone(), CallOptions::new()).await;
                (i, reply.map(|r| r.into_message() == body))
            })
        })
        .collect();
    within(5 * SECOND, "all call tasks at the gate", async {
        while waiting.load(Ordering::SeqCst) < CONCURRENT_CALLS {
            Timer::after(Duration::from_millis(1)).await;
        }
    })
    .await;
    drop(gate);
    let mut failures = Vec::new();
    for call in calls {
        match call.join().await {
            (_, Ok(true)) => {}
            (i, Ok(false)) => failures.push(format!("call {i}: wrong reply")),
            (i, Err(status)) => failures.push(format!("call {i}: {status}")),
        }
    }
    assert!(
        failures.is_empty(),
        "{what}: {} of {CONCURRENT_CALLS} calls failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    let peak = peak.load(Ordering::SeqCst);
    assert!(
        peak > 10,
        "{what}: calls did not overlap (peak {peak} in flight)"
    );
    let connections = channel.stats().connections();
    assert!(
        peak <= 100 * connections,
        "{what}: {peak} handlers ran at once over {connections} connections of 100 streams"
    );
}

// ---------------------------------------------------------------------------------------------
// 12. Channel basics
// ---------------------------------------------------------------------------------------------

fn assert_clone_send_sync<T: Clone + Send + Sync + 'static>() {}

const _: () = {
    let _ = assert_clone_send_sync::<Channel>;
    let _ = assert_clone_send_sync::<Server>;
    let _ = assert_clone_send_sync::<Sender<Bytes>>;
};

fn assert_send<T: Send>(_: &T) {}

async fn channel_basics(env: Env) {
    for target in [
        "",
        "http://",
        "https://example.com:443/path",
        "unix:",
        "localhost:notaport",
        "localhost:70000",
        "ftp://x:1",
        "dns://ns.example/foo:1",
        "::1:50051",
    ] {
        let status = err_of(Channel::new(target), target);
        assert_eq!(
            status.code(),
            Code::InvalidArgument,
            "{target:?}: {status:?}"
        );
        let status = err_of(
            Channel::builder(target).executor(env.executor()).build(),
            target,
        );
        assert_eq!(
            status.code(),
            Code::InvalidArgument,
            "{target:?}: {status:?}"
        );
    }
    let running = env.serve(echo_server());
    for (what, builder) in [
        (
            "zero stream window",
            running.channel_builder().initial_stream_window_size(0),
        ),
        (
            "connection window below stream window",
            running
                .channel_builder()
                .initial_stream_window_size(100_000)
                .initial_connection_window_size(65_535),
        ),
        (
            "tiny frame size",
            running.channel_builder().max_frame_size(1024),
        ),
    ] {
        let status = err_of(builder.build(), what);
        assert_eq!(status.code(), Code::InvalidArgument, "{what}: {status:?}");
    }

    // A clone works from another OS thread, concurrently with the original.
    let channel = running.channel();
    let other = channel.clone();
    let exec = env.exec;
    let (done_tx, done) = async_channel::bounded(1);
    let thread = std::thread::spawn(move || {
        let reply = exec.block_on(async move {
            other
                .unary(
                    UNARY,
                    Bytes::from_static(b"from a thread"),
                    CallOptions::new(),
                )
                .await
                .map(Response::into_message)
        });
        let _ = done_tx.send_blocking(reply);
    });
    let here = channel
        .unary(
            UNARY,
            Bytes::from_static(b"from the test"),
            CallOptions::new(),
        )
        .await
        .expect("call on the original");
    assert_eq!(here.message().as_ref(), b"echo:from the test");
    let there = within(10 * SECOND, "call from another thread", done.recv())
        .await
        .expect("the thread reports before exiting")
        .expect("call from a thread");
    thread.join().expect("thread");
    assert_eq!(there.as_ref(), b"echo:from a thread");

    // Call futures are Send, so they can be spawned anywhere.
    let fut = channel.unary(UNARY, Bytes::new(), CallOptions::new());
    assert_send(&fut);
    assert_eq!(fut.await.unwrap().message().as_ref(), b"echo:");
}
