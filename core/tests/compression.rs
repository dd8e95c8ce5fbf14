//! Message compression end to end: gzip and deflate per channel, per call and per message over
//! all four call kinds; server response compression; negotiation through grpc-encoding and
//! grpc-accept-encoding; and hostile payloads (corrupt data, a 1 GiB zip bomb) in both
//! directions, with the memory they cost measured by a counting allocator.

#[allow(
    dead_code,
    reason = "the shared harness has helpers only other suites use"
)]
mod support;

use std::alloc::{GlobalAlloc, Layout, System};
use std::future::Future;
use std::io::Write as _;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use futures_util::StreamExt;
use h2::RecvStream;
use h2::server::SendResponse;
use http::{HeaderMap, HeaderValue};
use plexus::rt::Compat;
use plexus::transport::{Address, memory};
use plexus::{
    BytesCodec, CallOptions, Channel, ChannelBuilder, Code, Compression, Metadata, Request,
    RequestStream, Response, ResponseSink, SendOptions, Server, ServerBuilder, StaticResolver,
};
use support::{Env, ExecKind, Transport, within};

matrix!(all_kinds_compress);

const SECOND: Duration = Duration::from_secs(1);
const CODECS: [Compression; 2] = [Compression::Gzip, Compression::Deflate];

// ---------------------------------------------------------------------------------------------
// A counting allocator, so the zip-bomb tests can bound the memory a bomb costs
// ---------------------------------------------------------------------------------------------

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(by: usize) {
    let now = LIVE.fetch_add(by, Ordering::Relaxed) + by;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

// SAFETY: every method forwards to `System` with the caller's arguments unchanged; the
// counters are only bookkeeping.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract, which we pass on.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as for `alloc`.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from this allocator (so from `System`) with `layout`.
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `ptr` came from `System` with `layout`; the caller upholds the rest.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
            grew(new_size);
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Runs `fut` and returns its output with the peak of live heap bytes above the level at the
/// start. Other tests of this binary run at the same time, so this is an upper bound.
async fn peak_growth<F: Future>(fut: F) -> (F::Output, usize) {
    let base = LIVE.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let out = fut.await;
    (out, PEAK.load(Ordering::Relaxed).saturating_sub(base))
}

/// One GiB of zeros, gzip-compressed at the best level (about 1 MiB; a few seconds): built
/// once, streamed through the encoder so it never holds the gigabyte itself.
fn gzip_bomb() -> &'static Bytes {
    static BOMB: OnceLock<Bytes> = OnceLock::new();
    BOMB.get_or_init(|| {
        let zeros = vec![0u8; 1 << 20];
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        for _ in 0..1024 {
            enc.write_all(&zeros).unwrap();
        }
        Bytes::from(enc.finish().unwrap())
    })
}

const BOMB_LIMIT: usize = 4 * 1024 * 1024;

/// Live memory a bomb may add: the 4 MiB limit, the ~1 MiB message, buffers, and what
/// concurrent tests allocate. Inflating the whole bomb would add 1 GiB.
const BOMB_MEMORY_BOUND: usize = 64 * 1024 * 1024;

// ---------------------------------------------------------------------------------------------
// The server under test: four echo routes that report how each request message arrived
// ---------------------------------------------------------------------------------------------

/// Sets the call's response compression from the `x-respond` request header, if any.
fn respond_as_asked(ctx: &plexus::CallContext) {
    if let Some(name) = ctx.metadata().get("x-respond") {
        ctx.set_response_compression(name.parse().unwrap());
    }
}

/// `<flags> <grpc-encoding>`: one 0/1 per request message, then the call's request encoding.
fn seen(flags: &[bool], ctx: &plexus::CallContext) -> Metadata {
    let flags: Vec<&str> = flags.iter().map(|f| if *f { "1" } else { "0" }).collect();
    let mut md = Metadata::new();
    md.append(
        "x-seen",
        &format!("{} {}", flags.join(","), ctx.request_compression()),
    )
    .unwrap();
    md
}

fn echo_server() -> ServerBuilder {
    Server::builder()
        .unary("/c.S/Unary", BytesCodec, |req: Request<Bytes>| async move {
            respond_as_asked(req.context());
            let md = seen(&[req.compressed()], req.context());
            Ok(Response::from_parts(
                md,
                req.into_message(),
                Metadata::new(),
            ))
        })
        .server_streaming(
            "/c.S/ServerStream",
            BytesCodec,
            |req: Request<Bytes>, sink: ResponseSink<Bytes>| async move {
                respond_as_asked(req.context());
                sink.set_trailers(seen(&[req.compressed()], req.context()));
                // Four copies; the odd ones opt out of compression.
                for i in 0..4 {
                    let options = SendOptions::new().compress(i % 2 == 0);
                    sink.send_with(req.message().clone(), options).await?;
                }
                Ok(())
            },
        )
        .client_streaming(
            "/c.S/ClientStream",
            BytesCodec,
            |req: Request<RequestStream<Bytes>>| async move {
                let (ctx, mut stream) = req.into_parts();
                respond_as_asked(&ctx);
                let (mut all, mut flags) = (BytesMut::new(), Vec::new());
                while let Some(msg) = stream.message().await? {
                    flags.push(stream.last_message_compressed());
                    all.extend_from_slice(&msg);
                }
                Ok(Response::from_parts(
                    seen(&flags, &ctx),
                    all.freeze(),
                    Metadata::new(),
                ))
            },
        )
        .bidi_streaming(
            "/c.S/Bidi",
            BytesCodec,
            |req: Request<RequestStream<Bytes>>, sink: ResponseSink<Bytes>| async move {
                let (ctx, mut stream) = req.into_parts();
                // Answer in the request's encoding, each message compressed as it arrived.
                ctx.set_response_compression(ctx.request_compression());
                let mut flags = Vec::new();
                while let Some(msg) = stream.message().await? {
                    let compressed = stream.last_message_compressed();
                    flags.push(compressed);
                    sink.send_with(msg, SendOptions::new().compress(compressed))
                        .await?;
                }
                sink.set_trailers(seen(&flags, &ctx));
                Ok(())
            },
        )
}

/// Compressible but not trivial: text-like bytes.
fn payload(len: usize) -> Bytes {
    let words = [
        &b"compress "[..],
        b"gzip ",
        b"deflate ",
        b"plexus ",
        b"message ",
    ];
    let mut out = Vec::with_capacity(len + 16);
    let mut x: u32 = 7;
    while out.len() < len {
        x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        out.extend_from_slice(words[(x >> 16) as usize % words.len()]);
    }
    out.truncate(len);
    out.into()
}

fn respond_with(c: Compression) -> CallOptions {
    let mut md = Metadata::new();
    md.append("x-respond", c.name()).unwrap();
    CallOptions::new().metadata(md)
}

// ---------------------------------------------------------------------------------------------
// All four call kinds, compressed per channel and per call
// ---------------------------------------------------------------------------------------------

/// Runs every call kind with requests compressed by `c` (configured on the channel when
/// `on_channel`, else per call) and checks what the server saw and what came back.
async fn every_kind(channel: &Channel, c: Compression, on_channel: bool) {
    let options = |respond: Option<Compression>| {
        let base = match respond {
            Some(r) => respond_with(r),
            None => CallOptions::new(),
        };
        if on_channel {
            base
        } else {
            base.compression(c)
        }
    };
    let msg = payload(40_000);

    // Unary, response left uncompressed (the server default).
    let r = channel
        .unary("/c.S/Unary", msg.clone(), options(None))
        .await
        .unwrap();
    assert_eq!(r.message(), &msg);
    assert_eq!(r.metadata().get("x-seen"), Some(&*format!("1 {c}")));
    assert!(!r.compressed());

    // Unary, response compressed on request.
    let r = channel
        .unary("/c.S/Unary", msg.clone(), options(Some(c)))
        .await
        .unwrap();
    assert_eq!(r.message(), &msg);
    assert!(r.compressed(), "{c}: response should be compressed");

    // Server streaming: four responses, the odd ones sent uncompressed.
    let mut s = channel
        .server_streaming("/c.S/ServerStream", msg.clone(), options(Some(c)))
        .await
        .unwrap();
    let mut flags = Vec::new();
    while let Some(m) = s.message().await.unwrap() {
        assert_eq!(m, msg);
        flags.push(s.last_message_compressed());
    }
    assert_eq!(flags, [true, false, true, false], "{c}");
    assert_eq!(
        s.trailers().unwrap().get("x-seen"),
        Some(&*format!("1 {c}"))
    );

    // Client streaming: the middle message opts out of compression.
    let (tx, response) = channel
        .client_streaming("/c.S/ClientStream", options(None))
        .await
        .unwrap();
    tx.send(msg.clone()).await.unwrap();
    tx.send_with(msg.clone(), SendOptions::new().compress(false))
        .await
        .unwrap();
    tx.send(Bytes::from_static(b"tail")).await.unwrap();
    drop(tx);
    let r = response.await.unwrap();
    assert_eq!(r.message().len(), 2 * msg.len() + 4);
    assert_eq!(r.metadata().get("x-seen"), Some(&*format!("1,0,1 {c}")));

    // Bidi: the server echoes each message compressed as it arrived.
    let (tx, mut rx) = channel
        .bidi_streaming("/c.S/Bidi", options(None))
        .await
        .unwrap();
    for compress in [true, false, false, true] {
        tx.send_with(msg.clone(), SendOptions::new().compress(compress))
            .await
            .unwrap();
        let m = rx.message().await.unwrap().unwrap();
        assert_eq!(m, msg);
        assert_eq!(rx.last_message_compressed(), compress, "{c}");
    }
    tx.close().await.unwrap();
    assert!(rx.message().await.unwrap().is_none());
    assert_eq!(
        rx.trailers().unwrap().get("x-seen"),
        Some(&*format!("1,0,0,1 {c}"))
    );
}

async fn all_kinds_compress(env: Env) {
    let server = env.serve(echo_server());
    for c in CODECS {
        let per_channel = server.channel_builder().compression(c).build().unwrap();
        within(
            20 * SECOND,
            "per channel",
            every_kind(&per_channel, c, true),
        )
        .await;
        let per_call = server.channel();
        within(20 * SECOND, "per call", every_kind(&per_call, c, false)).await;
    }
}

fn smol_memory<F, Fut>(scenario: F)
where
    F: FnOnce(Env) -> Fut,
    Fut: Future<Output = ()>,
{
    support::run(ExecKind::Smol, Transport::Memory, scenario);
}

#[test]
fn call_options_override_the_channel() {
    smol_memory(|env| async move {
        let server = env.serve(echo_server());
        let gzip = server
            .channel_builder()
            .compression(Compression::Gzip)
            .build()
            .unwrap();
        let msg = payload(1000);
        let seen = |r: &Response<Bytes>| r.metadata().get("x-seen").unwrap().to_string();
        let r = gzip
            .unary("/c.S/Unary", msg.clone(), CallOptions::new())
            .await
            .unwrap();
        assert_eq!(seen(&r), "1 gzip");
        let off = CallOptions::new().compression(Compression::Identity);
        let r = gzip.unary("/c.S/Unary", msg.clone(), off).await.unwrap();
        assert_eq!(seen(&r), "0 identity");
        let deflate = CallOptions::new().compression(Compression::Deflate);
        let r = gzip
            .unary("/c.S/Unary", msg.clone(), deflate)
            .await
            .unwrap();
        assert_eq!(seen(&r), "1 deflate");
        // The default channel does not compress.
        let plain = server.channel();
        let r = plain
            .unary("/c.S/Unary", msg, CallOptions::new())
            .await
            .unwrap();
        assert_eq!(seen(&r), "0 identity");
        assert!(!r.compressed());
    });
}

#[test]
fn server_wide_response_compression() {
    smol_memory(|env| async move {
        let server = env.serve(echo_server().response_compression(Compression::Deflate));
        let channel = server.channel();
        let msg = payload(10_000);
        let r = channel
            .unary("/c.S/Unary", msg.clone(), CallOptions::new())
            .await
            .unwrap();
        assert!(r.compressed());
        assert_eq!(r.message(), &msg);
        // A handler overrides it per call.
        let r = channel
            .unary(
                "/c.S/Unary",
                msg.clone(),
                respond_with(Compression::Identity),
            )
            .await
            .unwrap();
        assert!(!r.compressed());
        assert_eq!(r.message(), &msg);
    });
}

#[test]
fn typed_messages_and_large_messages_compress() {
    #[derive(Clone, PartialEq, prost::Message)]
    struct Blob {
        #[prost(bytes = "vec", tag = "1")]
        data: Vec<u8>,
    }
    smol_memory(|env| async move {
        let server = env.serve(echo_server().unary(
            "/c.S/Typed",
            plexus::ProstCodec::<Blob, Blob>::new(),
            |req: Request<Blob>| async move {
                req.context().set_response_compression(Compression::Gzip);
                let compressed = req.compressed();
                let mut blob = req.into_message();
                blob.data.push(u8::from(compressed));
                Ok(Response::new(blob))
            },
        ));
        let channel = server
            .channel_builder()
            .compression(Compression::Gzip)
            .build()
            .unwrap();
        let client = channel.typed(plexus::ProstCodec::<Blob, Blob>::new());
        let data = payload(3 << 20).to_vec();
        let r = client
            .unary(
                "/c.S/Typed",
                &Blob { data: data.clone() },
                CallOptions::new(),
            )
            .await
            .unwrap();
        assert!(r.compressed());
        assert_eq!(r.message().data.len(), data.len() + 1);
        assert_eq!(r.message().data[..data.len()], data[..]);
        assert_eq!(
            r.message().data[data.len()],
            1,
            "request arrived compressed"
        );

        // 3 MiB of raw bytes each way, deflate, over many DATA frames.
        let big = payload(3 << 20);
        let options = respond_with(Compression::Deflate).compression(Compression::Deflate);
        let r = channel
            .unary("/c.S/Unary", big.clone(), options)
            .await
            .unwrap();
        assert_eq!(r.message(), &big);
        assert!(r.compressed());
    });
}

#[test]
fn decompressed_size_is_bounded_by_the_receive_limit() {
    smol_memory(|env| async move {
        let server = env.serve(echo_server().max_receive_message_size(100_000));
        let channel = server
            .channel_builder()
            .compression(Compression::Gzip)
            .max_receive_message_size(50_000)
            .build()
            .unwrap();
        // Compresses to far less than 100 KB, inflates past it: the server refuses.
        let status = channel
            .unary(
                "/c.S/Unary",
                Bytes::from(vec![0u8; 200_000]),
                CallOptions::new(),
            )
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::ResourceExhausted, "{status}");
        assert!(status.message().contains("100000"), "{status}");
        // The server's 80 KB answer inflates past the client's 50 KB limit.
        let status = channel
            .unary(
                "/c.S/Unary",
                Bytes::from(vec![0u8; 80_000]),
                respond_with(Compression::Gzip),
            )
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::ResourceExhausted, "{status}");
        assert!(status.message().contains("50000"), "{status}");
    });
}

// ---------------------------------------------------------------------------------------------
// Raw HTTP/2 peers: what goes over the wire, and hostile payloads
// ---------------------------------------------------------------------------------------------

fn framed(flag: u8, payload: &[u8]) -> Bytes {
    let mut buf = BytesMut::with_capacity(5 + payload.len());
    buf.put_u8(flag);
    buf.put_u32(payload.len() as u32);
    buf.put_slice(payload);
    buf.freeze()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

struct RawResponse {
    headers: HeaderMap,
    body: Bytes,
    trailers: Option<HeaderMap>,
}

impl RawResponse {
    fn grpc_status(&self) -> (String, String) {
        let source = self
            .trailers
            .as_ref()
            .filter(|t| t.contains_key("grpc-status"))
            .unwrap_or(&self.headers);
        let get = |k: &str| {
            source
                .get(k)
                .map(|v| v.to_str().unwrap().to_string())
                .unwrap_or_default()
        };
        (get("grpc-status"), get("grpc-message"))
    }
}

/// Sends one raw request to `server` over an in-memory connection.
async fn raw_call(
    server: Server,
    path: &str,
    headers: &[(&'static str, &'static str)],
    body: Bytes,
) -> RawResponse {
    let (client_io, server_io) = memory::duplex();
    ::smol::spawn(async move {
        let _ = server.serve_connection(server_io).await;
    })
    .detach();
    let (mut send, conn) = h2::client::Builder::new()
        .initial_window_size(8 << 20)
        .handshake::<_, Bytes>(Compat::new(client_io))
        .await
        .unwrap();
    ::smol::spawn(async move {
        let _ = conn.await;
    })
    .detach();
    let mut request = http::Request::post(format!("http://local{path}"))
        .body(())
        .unwrap();
    request
        .headers_mut()
        .insert("content-type", HeaderValue::from_static("application/grpc"));
    for (k, v) in headers {
        request
            .headers_mut()
            .insert(*k, HeaderValue::from_static(v));
    }
    let (response, mut stream) = send.send_request(request, false).unwrap();
    // Write the body as the window allows; the server may answer (and reset) before the end.
    let mut rest = body;
    while !rest.is_empty() {
        stream.reserve_capacity(rest.len());
        let Some(Ok(n)) = std::future::poll_fn(|cx| stream.poll_capacity(cx)).await else {
            break;
        };
        let chunk = rest.split_to(n.min(rest.len()));
        if stream.send_data(chunk, rest.is_empty()).is_err() {
            break;
        }
    }
    let (parts, mut recv) = response.await.unwrap().into_parts();
    let mut data = BytesMut::new();
    while let Some(Ok(chunk)) = recv.data().await {
        let _ = recv.flow_control().release_capacity(chunk.len());
        data.extend_from_slice(&chunk);
    }
    let trailers = recv.trailers().await.ok().flatten();
    RawResponse {
        headers: parts.headers,
        body: data.freeze(),
        trailers,
    }
}

#[test]
fn unknown_request_encoding_is_unimplemented_listing_what_is_supported() {
    smol_memory(|_env| async move {
        let server = echo_server().build().unwrap();
        let r = raw_call(
            server,
            "/c.S/Unary",
            &[("grpc-encoding", "br")],
            framed(1, b"whatever"),
        )
        .await;
        let (code, message) = r.grpc_status();
        assert_eq!(code, "12", "{message}");
        assert!(message.contains("br"), "{message}");
        let accept = r.headers["grpc-accept-encoding"].to_str().unwrap();
        assert_eq!(accept, "identity, deflate, gzip");
        assert!(!accept.contains("br"));
    });
}

#[test]
fn server_compresses_only_what_the_client_accepts() {
    smol_memory(|_env| async move {
        let server = || {
            echo_server()
                .response_compression(Compression::Gzip)
                .build()
                .unwrap()
        };
        let msg = payload(5000);
        // No grpc-accept-encoding: the client may not inflate anything, so nothing is compressed.
        let r = raw_call(server(), "/c.S/Unary", &[], framed(0, &msg)).await;
        assert_eq!(r.grpc_status().0, "0");
        assert!(!r.headers.contains_key("grpc-encoding"));
        assert_eq!(r.body, framed(0, &msg));
        // Every response advertises what the server accepts.
        assert_eq!(r.headers["grpc-accept-encoding"], "identity, deflate, gzip");

        // Accepting deflate only: still no gzip.
        let r = raw_call(
            server(),
            "/c.S/Unary",
            &[("grpc-accept-encoding", "deflate")],
            framed(0, &msg),
        )
        .await;
        assert_eq!(r.body, framed(0, &msg));

        // Accepting gzip: compressed, flagged and announced.
        let r = raw_call(
            server(),
            "/c.S/Unary",
            &[("grpc-accept-encoding", "identity,gzip")],
            framed(0, &msg),
        )
        .await;
        assert_eq!(r.grpc_status().0, "0");
        assert_eq!(r.headers["grpc-encoding"], "gzip");
        assert_eq!(r.body[0], 1);
        let mut plain = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&r.body[5..]), &mut plain)
            .unwrap();
        assert_eq!(plain, msg);
    });
}

#[test]
fn corrupt_compressed_request_is_internal() {
    smol_memory(|_env| async move {
        let mut z = gzip(&payload(10_000));
        let mid = z.len() / 2;
        z[mid] ^= 0x55;
        let r = raw_call(
            echo_server().build().unwrap(),
            "/c.S/Unary",
            &[("grpc-encoding", "gzip")],
            framed(1, &z),
        )
        .await;
        let (code, message) = r.grpc_status();
        assert_eq!(code, "13", "{message}");
        assert!(message.contains("corrupt gzip"), "{message}");
    });
}

#[test]
fn zip_bomb_request_fails_early_with_resource_exhausted() {
    smol_memory(|_env| async move {
        let bomb = gzip_bomb();
        assert!(bomb.len() < BOMB_LIMIT, "{}", bomb.len());
        let server = echo_server()
            .max_receive_message_size(BOMB_LIMIT)
            .build()
            .unwrap();
        let body = framed(1, bomb);
        let (r, growth) = peak_growth(raw_call(
            server,
            "/c.S/Unary",
            &[("grpc-encoding", "gzip")],
            body,
        ))
        .await;
        let (code, message) = r.grpc_status();
        assert_eq!(code, "8", "{message}");
        assert!(message.contains("4194304"), "{message}");
        assert!(
            growth < BOMB_MEMORY_BOUND,
            "the bomb cost {growth} bytes of heap"
        );
    });
}

/// A channel whose every call is answered by `script`, a raw h2 server.
fn scripted<F, Fut>(builder: impl FnOnce(&str) -> ChannelBuilder, script: F) -> Channel
where
    F: Fn(http::Request<RecvStream>, SendResponse<Bytes>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let (connector, mut listener) = memory::channel();
    let script = Arc::new(script);
    ::smol::spawn(async move {
        while let Some(Ok(io)) = listener.next().await {
            let script = script.clone();
            ::smol::spawn(async move {
                let Ok(mut conn) = h2::server::handshake(Compat::new(io)).await else {
                    return;
                };
                while let Some(Ok((request, respond))) = conn.accept().await {
                    ::smol::spawn(script(request, respond)).detach();
                }
            })
            .detach();
        }
    })
    .detach();
    builder("http://scripted.test:80")
        .connector(connector)
        .resolver(StaticResolver::new([Address::Unix("scripted".into())]))
        .build()
        .unwrap()
}

/// A script that records the request headers and answers with `encoding` (if any), `body` as
/// one or more DATA frames, and OK.
fn answering(
    encoding: Option<&'static str>,
    body: Bytes,
    seen: Arc<Mutex<Vec<HeaderMap>>>,
) -> impl Fn(
    http::Request<RecvStream>,
    SendResponse<Bytes>,
) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send>>
+ Send
+ Sync
+ 'static {
    move |request, mut respond| {
        let (body, seen) = (body.clone(), seen.clone());
        Box::pin(async move {
            seen.lock().unwrap().push(request.headers().clone());
            let mut response = http::Response::new(());
            let headers = response.headers_mut();
            headers.insert("content-type", HeaderValue::from_static("application/grpc"));
            if let Some(e) = encoding {
                headers.insert("grpc-encoding", HeaderValue::from_static(e));
            }
            let Ok(mut stream) = respond.send_response(response, false) else {
                return;
            };
            let mut rest = body;
            while !rest.is_empty() {
                stream.reserve_capacity(rest.len());
                let Some(Ok(n)) = std::future::poll_fn(|cx| stream.poll_capacity(cx)).await else {
                    return;
                };
                let chunk = rest.split_to(n.min(rest.len()));
                if stream.send_data(chunk, false).is_err() {
                    return;
                }
            }
            let mut trailers = HeaderMap::new();
            trailers.insert("grpc-status", HeaderValue::from_static("0"));
            let _ = stream.send_trailers(trailers);
        })
    }
}

#[test]
fn requests_name_their_encoding_and_advertise_what_they_accept() {
    smol_memory(|_env| async move {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let channel = scripted(
            |t| Channel::builder(t).compression(Compression::Deflate),
            answering(None, framed(0, b"ok"), seen.clone()),
        );
        let r = channel
            .unary("/c.S/M", Bytes::from_static(b"x"), CallOptions::new())
            .await
            .unwrap();
        assert_eq!(r.message().as_ref(), b"ok");
        let off = CallOptions::new().compression(Compression::Identity);
        channel
            .unary("/c.S/M", Bytes::from_static(b"x"), off)
            .await
            .unwrap();
        let seen = seen.lock().unwrap();
        assert_eq!(seen[0]["grpc-encoding"], "deflate");
        assert_eq!(seen[0]["grpc-accept-encoding"], "identity, deflate, gzip");
        assert!(!seen[1].contains_key("grpc-encoding"));
        assert_eq!(seen[1]["grpc-accept-encoding"], "identity, deflate, gzip");
    });
}

#[test]
fn bad_compressed_responses_are_internal() {
    smol_memory(|_env| async move {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let z = Bytes::from(gzip(b"hello"));
        let cases: Vec<(&str, Option<&'static str>, Bytes, &str)> = vec![
            (
                "unsupported encoding",
                Some("snappy"),
                framed(1, &z),
                "snappy",
            ),
            (
                "flag without encoding",
                None,
                framed(1, &z),
                "grpc-encoding",
            ),
            (
                "flag with identity",
                Some("identity"),
                framed(1, &z),
                "grpc-encoding",
            ),
            (
                "deflate header on gzip data",
                Some("deflate"),
                framed(1, &z),
                "corrupt deflate",
            ),
            (
                "truncated gzip",
                Some("gzip"),
                framed(1, &z[..z.len() - 3]),
                "corrupt gzip",
            ),
        ];
        for (what, encoding, body, needle) in cases {
            let channel = scripted(Channel::builder, answering(encoding, body, seen.clone()));
            let status = channel
                .unary("/c.S/M", Bytes::new(), CallOptions::new())
                .await
                .unwrap_err();
            assert_eq!(status.code(), Code::Internal, "{what}: {status}");
            assert!(status.message().contains(needle), "{what}: {status}");
        }
        // An unsupported encoding is harmless while messages arrive uncompressed.
        let channel = scripted(
            Channel::builder,
            answering(Some("snappy"), framed(0, b"plain"), seen.clone()),
        );
        let r = channel
            .unary("/c.S/M", Bytes::new(), CallOptions::new())
            .await
            .unwrap();
        assert_eq!(r.message().as_ref(), b"plain");
        // A good gzip response is inflated and flagged.
        let channel = scripted(
            Channel::builder,
            answering(Some("gzip"), framed(1, &z), seen.clone()),
        );
        let r = channel
            .unary("/c.S/M", Bytes::new(), CallOptions::new())
            .await
            .unwrap();
        assert_eq!(r.message().as_ref(), b"hello");
        assert!(r.compressed());
    });
}

#[test]
fn zip_bomb_response_fails_early_with_resource_exhausted() {
    smol_memory(|_env| async move {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let channel = scripted(
            |t| {
                Channel::builder(t)
                    .max_receive_message_size(BOMB_LIMIT)
                    .initial_stream_window_size(8 << 20)
            },
            answering(Some("gzip"), framed(1, gzip_bomb()), seen),
        );
        let call = channel.unary("/c.S/M", Bytes::new(), CallOptions::new());
        let (result, growth) = peak_growth(within(20 * SECOND, "bomb response", call)).await;
        let status = result.unwrap_err();
        assert_eq!(status.code(), Code::ResourceExhausted, "{status}");
        assert!(status.message().contains("4194304"), "{status}");
        assert!(
            growth < BOMB_MEMORY_BOUND,
            "the bomb cost {growth} bytes of heap"
        );
    });
}
