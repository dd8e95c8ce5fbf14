//! The Rust side of plexus's peer tests (tests/peer/py): an echo server and a client that runs
//! every case against any echo server, grpcio's included. Both go through the code plexus-build
//! generates from tests/peer/proto/echo.proto, so these are also the wire tests of generated
//! clients and servers against grpcio.
//!
//! `plexus-peer server --listen 127.0.0.1:0` prints `LISTENING <port>` and serves until killed.
//! `plexus-peer client --target HOST:PORT` prints `PASS <case>` or `FAIL <case>: <why>` per case
//! and exits 0 only if every case passed.
//!
//! `plexus-peer call --target HOST:PORT --method /pkg.Svc/M ...` makes one unary call with raw
//! bytes and prints `STATUS <code>`: the Rust client in the comparisons of retry behaviour
//! with grpcio's (tests/python/test_retries.py).
//!
//! TLS: `plexus-peer certs --out DIR` writes a test CA and certificates (see [`write_certs`]);
//! `server --tls-cert PEM --tls-key PEM [--client-ca PEM]` serves over TLS (requiring client
//! certificates from that CA); `client --ca PEM [--server-name NAME] [--cert PEM --key PEM]`
//! connects over TLS.
//!
//! `plexus-peer health --target HOST:PORT [--service NAME] [--watch]` checks or watches a
//! `grpc.health.v1.Health` server with plexus-health's client (see `health.rs`).

use std::future::Future;
use std::pin::Pin;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::future::{Either, join_all, select};
use plexus::{
    CallContext, CallOptions, Certificate, Channel, ClientTlsConfig, Code, Compression, Identity,
    Metadata, MetadataValue, ProstCodec, Request, RequestStream, Response, ResponseSink,
    SendOptions, Server, ServerBuilder, ServerTlsConfig, Status,
};

/// The echo service's messages, `echo_client::EchoClient` and `echo_server::Echo`, generated
/// from tests/peer/proto/echo.proto by build.rs.
#[allow(missing_docs, unreachable_pub, dead_code)]
mod pb {
    plexus::include_proto!("plexus.peer");
}

use pb::echo_client::EchoClient;
use pb::echo_server::{self, EchoServer};
use pb::{EchoRequest, EchoResponse};

mod health;

const TRAILER_BIN: &[u8] = b"\xfe\x00\x01";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flag = |name: &str| args.windows(2).find(|w| w[0] == name).map(|w| w[1].clone());
    match args.first().map(String::as_str) {
        Some("server") => {
            let listen = flag("--listen").unwrap_or_else(|| "127.0.0.1:0".into());
            let tls = match server_tls(&flag) {
                Ok(tls) => tls,
                Err(err) => {
                    eprintln!("bad TLS flags: {err}");
                    return ExitCode::from(2);
                }
            };
            match smol::future::block_on(serve(&listen, tls)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(err) => {
                    eprintln!("server failed: {err}");
                    ExitCode::FAILURE
                }
            }
        }
        Some("client") => {
            let Some(target) = flag("--target") else {
                eprintln!("usage: plexus-peer client --target HOST:PORT");
                return ExitCode::from(2);
            };
            let tls = match client_tls(&flag) {
                Ok(tls) => tls,
                Err(err) => {
                    eprintln!("bad TLS flags: {err}");
                    return ExitCode::from(2);
                }
            };
            smol::block_on(run_client(&target, tls))
        }
        Some("certs") => {
            let Some(out) = flag("--out") else {
                eprintln!("usage: plexus-peer certs --out DIR");
                return ExitCode::from(2);
            };
            match write_certs(std::path::Path::new(&out)) {
                Ok(()) => {
                    println!(
                        "wrote ca.pem, other-ca.pem, server.{{pem,key}} (localhost, \
                         *.test.google.fr), client.{{pem,key}} and rogue.{{pem,key}} \
                         (signed by other-ca) to {out}"
                    );
                    ExitCode::SUCCESS
                }
                Err(err) => {
                    eprintln!("could not write certificates: {err}");
                    ExitCode::FAILURE
                }
            }
        }
        Some("call") => match call_once(&args[1..]) {
            Ok(code) => {
                println!("STATUS {}", code.name());
                ExitCode::SUCCESS
            }
            Err(usage) => {
                eprintln!("{usage}");
                ExitCode::from(2)
            }
        },
        Some("health") => {
            let Some(target) = flag("--target") else {
                eprintln!(
                    "usage: plexus-peer health --target HOST:PORT [--service NAME] [--watch]"
                );
                return ExitCode::from(2);
            };
            let service = flag("--service").unwrap_or_default();
            let watch = args.iter().any(|a| a == "--watch");
            smol::block_on(health::run(&target, service, watch))
        }
        _ => {
            eprintln!(
                "usage: plexus-peer server --listen ADDR [--tls-cert PEM --tls-key PEM \
                 [--client-ca PEM]] | client --target HOST:PORT [--ca PEM [--server-name NAME] \
                 [--cert PEM --key PEM]] | certs --out DIR | health --target HOST:PORT \
                 [--service NAME] [--watch] | {CALL_USAGE}"
            );
            ExitCode::from(2)
        }
    }
}

// ---- server ----

fn echo_metadata(ctx: &CallContext) -> Metadata {
    let mut md = Metadata::new();
    for (key, value) in ctx.metadata().iter() {
        if !key.starts_with("x-echo-") {
            continue;
        }
        let _ = match value {
            MetadataValue::Ascii(v) => md.append(key, v),
            MetadataValue::Binary(v) => md.append_bin(key, &v),
        };
    }
    // Over mutual TLS: the client's certificate, as the handler sees it.
    if let Some(leaf) = ctx.peer_certificates().and_then(|chain| chain.first()) {
        let _ = md.append_bin("x-peer-certificate-bin", leaf);
    }
    md
}

fn trailers() -> Metadata {
    let mut md = Metadata::new();
    md.append("x-trailer", "done").expect("valid");
    md.append_bin("x-trailer-bin", TRAILER_BIN).expect("valid");
    md
}

fn requested_status(req: &EchoRequest) -> Option<Status> {
    (req.status_code != 0).then(|| {
        Status::new(Code::from_i32(req.status_code), req.status_message.clone())
            .with_details(format!("details:{}", req.status_message).into_bytes())
            .with_metadata(trailers())
    })
}

/// Header asking the server to compress its responses (`gzip` or `deflate`); both peer servers
/// honour it.
const RESPONSE_COMPRESSION: &str = "x-response-compression";

/// Initial-metadata key in which the plexus server reports how a unary request arrived:
/// `<grpc-encoding> <0|1>` (the message's Compressed-Flag).
const REQUEST_COMPRESSION: &str = "x-request-compression";

/// Applies the client's `x-response-compression` to the call.
fn compress_as_asked(ctx: &CallContext) -> Result<(), Status> {
    if let Some(name) = ctx.metadata().get(RESPONSE_COMPRESSION) {
        ctx.set_response_compression(name.parse()?);
    }
    Ok(())
}

/// Naps begun, and naps cut short because the client cancelled (reported by `NapStats`).
static NAPS_STARTED: AtomicU64 = AtomicU64::new(0);
static NAPS_CANCELLED: AtomicU64 = AtomicU64::new(0);

/// Sleeps `ms`, or less if the call is cancelled first.
async fn nap(ms: i32, ctx: &CallContext) {
    if ms > 0 {
        NAPS_STARTED.fetch_add(1, Ordering::SeqCst);
        let sleep = async_io::Timer::after(Duration::from_millis(ms as u64));
        if let Either::Right(_) =
            select(std::pin::pin!(sleep), std::pin::pin!(ctx.cancelled())).await
        {
            NAPS_CANCELLED.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// The echo service of echo.proto with the semantics tests/peer/py/echo_server.py spells out
/// (grpcio's server implements the same), so one set of client tests runs against both.
struct EchoService;

impl echo_server::Echo for EchoService {
    async fn unary(&self, req: Request<EchoRequest>) -> Result<Response<EchoResponse>, Status> {
        let compressed = req.compressed();
        let (ctx, req) = req.into_parts();
        compress_as_asked(&ctx)?;
        nap(req.delay_ms, &ctx).await;
        if let Some(mut status) = requested_status(&req) {
            // A unary error goes out trailers-only, so the echoed keys ride in the trailers.
            status.metadata_mut().extend(echo_metadata(&ctx));
            return Err(status);
        }
        let reply = EchoResponse {
            message: req.message,
            index: 0,
            payload: req.payload,
        };
        let mut md = echo_metadata(&ctx);
        let seen = format!("{} {}", ctx.request_compression(), u8::from(compressed));
        md.append(REQUEST_COMPRESSION, &seen)?;
        Ok(Response::from_parts(md, reply, trailers()))
    }

    async fn server_stream(
        &self,
        req: Request<EchoRequest>,
        sink: ResponseSink<EchoResponse>,
    ) -> Result<(), Status> {
        let (ctx, req) = req.into_parts();
        compress_as_asked(&ctx)?;
        sink.send_initial_metadata(echo_metadata(&ctx)).await?;
        sink.set_trailers(trailers());
        for index in 0..req.count {
            if index > 0 {
                nap(req.delay_ms, &ctx).await;
            }
            let reply = EchoResponse {
                message: req.message.clone(),
                index,
                payload: req.payload.clone(),
            };
            sink.send(reply).await?;
        }
        requested_status(&req).map_or(Ok(()), Err)
    }

    async fn client_stream(
        &self,
        req: Request<RequestStream<EchoRequest>>,
    ) -> Result<Response<EchoResponse>, Status> {
        let (ctx, mut stream) = req.into_parts();
        compress_as_asked(&ctx)?;
        let (mut messages, mut payload, mut failure) = (Vec::new(), Vec::new(), None);
        while let Some(msg) = stream.message().await? {
            payload.extend_from_slice(&msg.payload);
            failure = failure.or_else(|| requested_status(&msg));
            messages.push(msg.message);
        }
        if let Some(status) = failure {
            return Err(status);
        }
        let reply = EchoResponse {
            message: messages.join(","),
            index: messages.len() as i32,
            payload: payload.into(),
        };
        Ok(Response::from_parts(echo_metadata(&ctx), reply, trailers()))
    }

    async fn bidi(
        &self,
        req: Request<RequestStream<EchoRequest>>,
        sink: ResponseSink<EchoResponse>,
    ) -> Result<(), Status> {
        let (ctx, mut stream) = req.into_parts();
        compress_as_asked(&ctx)?;
        sink.send_initial_metadata(echo_metadata(&ctx)).await?;
        sink.set_trailers(trailers());
        let mut index = 0;
        while let Some(msg) = stream.message().await? {
            if let Some(status) = requested_status(&msg) {
                return Err(status);
            }
            let reply = EchoResponse {
                message: msg.message,
                index,
                payload: msg.payload,
            };
            sink.send(reply).await?;
            index += 1;
        }
        Ok(())
    }
}

/// Not in echo.proto, so grpcio's peer server need not serve it: lets a client (the Python
/// package's tests) check that the server saw its cancellation. A plain route beside the
/// generated service, under the same service name.
const NAP_STATS: &str = "/plexus.peer.Echo/NapStats";

/// Answers message `"<naps started>,<naps cancelled>"` and index = naps cancelled.
async fn nap_stats(_req: Request<EchoRequest>) -> Result<Response<EchoResponse>, Status> {
    let started = NAPS_STARTED.load(Ordering::SeqCst);
    let cancelled = NAPS_CANCELLED.load(Ordering::SeqCst);
    Ok(Response::new(EchoResponse {
        message: format!("{started},{cancelled}"),
        index: cancelled as i32,
        payload: Bytes::new(),
    }))
}

fn echo_server() -> ServerBuilder {
    Server::builder()
        .add_service(EchoServer::new(EchoService))
        .unary(
            NAP_STATS,
            ProstCodec::<EchoResponse, EchoRequest>::new(),
            nap_stats,
        )
}

type Flags<'a> = dyn Fn(&str) -> Option<String> + 'a;

/// `--tls-cert`, `--tls-key` and `--client-ca` as a server TLS config (none without a cert).
fn server_tls(flag: &Flags<'_>) -> std::io::Result<Option<ServerTlsConfig>> {
    let (Some(cert), Some(key)) = (flag("--tls-cert"), flag("--tls-key")) else {
        return Ok(None);
    };
    let mut tls = ServerTlsConfig::new(Identity::from_pem_files(cert, key)?);
    if let Some(ca) = flag("--client-ca") {
        tls = tls.client_ca_certificate(Certificate::from_pem_file(ca)?);
    }
    Ok(Some(tls))
}

/// `--ca`, `--server-name`, `--cert` and `--key` as a channel TLS config (none without a CA).
fn client_tls(flag: &Flags<'_>) -> std::io::Result<Option<ClientTlsConfig>> {
    let Some(ca) = flag("--ca") else {
        return Ok(None);
    };
    let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem_file(ca)?);
    if let Some(name) = flag("--server-name") {
        tls = tls.server_name(name);
    }
    if let (Some(cert), Some(key)) = (flag("--cert"), flag("--key")) {
        tls = tls.identity(Identity::from_pem_files(cert, key)?);
    }
    Ok(Some(tls))
}

/// Writes a test PKI into `dir`: `ca.pem` (a CA), `server.pem`/`server.key` (for `localhost`
/// and `*.test.google.fr`, the names gRPC's interop tests use, and no IP address),
/// `client.pem`/`client.key` (a client certificate from the CA), and `other-ca.pem` with
/// `rogue.pem`/`rogue.key` (a CA nobody trusts and a client certificate from it).
fn write_certs(dir: &std::path::Path) -> Result<(), Box<dyn std::error::Error>> {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose as Eku, IsCa, KeyPair,
        KeyUsagePurpose,
    };
    let ca = |name: &str| -> Result<(rcgen::Certificate, KeyPair), rcgen::Error> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate()?;
        Ok((params.self_signed(&key)?, key))
    };
    let leaf = |names: &[&str], usage: Eku, issuer: &(rcgen::Certificate, KeyPair)| {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names.clone())?;
        params
            .distinguished_name
            .push(DnType::CommonName, &names[0]);
        params.extended_key_usages = vec![usage];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &issuer.0, &issuer.1)?;
        Ok::<_, rcgen::Error>((cert.pem(), key.serialize_pem()))
    };
    std::fs::create_dir_all(dir)?;
    let write = |name: &str, text: &str| std::fs::write(dir.join(name), text);
    let trusted = ca("plexus peer test CA")?;
    let other = ca("untrusted test CA")?;
    let (cert, key) = leaf(
        &["localhost", "*.test.google.fr"],
        Eku::ServerAuth,
        &trusted,
    )?;
    write("server.pem", &cert)?;
    write("server.key", &key)?;
    let (cert, key) = leaf(&["client.test"], Eku::ClientAuth, &trusted)?;
    write("client.pem", &cert)?;
    write("client.key", &key)?;
    let (cert, key) = leaf(&["rogue.test"], Eku::ClientAuth, &other)?;
    write("rogue.pem", &cert)?;
    write("rogue.key", &key)?;
    write("ca.pem", &trusted.0.pem())?;
    write("other-ca.pem", &other.0.pem())?;
    Ok(())
}

async fn serve(
    listen: &str,
    tls: Option<ServerTlsConfig>,
) -> Result<(), Box<dyn std::error::Error>> {
    let mut builder = echo_server();
    if let Some(tls) = tls {
        builder = builder.tls(tls);
    }
    let server = builder.build()?;
    let listener = plexus::Listener::bind_tcp(listen)?;
    let port = listener.local_addr().map_or(0, |a| a.port());
    println!("LISTENING {port}");
    use std::io::Write as _;
    std::io::stdout().flush()?;
    server.serve(listener).await?;
    Ok(())
}

// ---- client ----

type CaseFuture<'a> = Pin<Box<dyn Future<Output = Result<(), String>> + 'a>>;

async fn run_client(target: &str, tls: Option<ClientTlsConfig>) -> ExitCode {
    let mut builder = Channel::builder(target);
    if let Some(tls) = tls {
        builder = builder.tls(tls);
    }
    let channel = match builder.build() {
        Ok(channel) => channel,
        Err(err) => {
            eprintln!("bad target: {err}");
            return ExitCode::from(2);
        }
    };
    let echo = EchoClient::new(channel.clone());
    let cases: Vec<(&str, CaseFuture<'_>)> = vec![
        ("unary", Box::pin(case_unary(&echo))),
        ("metadata", Box::pin(case_metadata(&echo))),
        ("server_streaming", Box::pin(case_server_streaming(&echo))),
        ("client_streaming", Box::pin(case_client_streaming(&echo))),
        ("bidi", Box::pin(case_bidi(&echo))),
        ("error_status", Box::pin(case_error_status(&echo))),
        ("unicode_status", Box::pin(case_unicode_status(&echo))),
        ("deadline", Box::pin(case_deadline(&echo))),
        (
            "server_streaming_error",
            Box::pin(case_server_streaming_error(&echo)),
        ),
        ("cancel", Box::pin(case_cancel(&echo))),
        ("unimplemented", Box::pin(case_unimplemented(&channel))),
        ("concurrent", Box::pin(case_concurrent(&echo))),
        ("compressed_unary", Box::pin(case_compressed_unary(&echo))),
        (
            "compressed_streaming",
            Box::pin(case_compressed_streaming(&echo)),
        ),
    ];
    let mut failed = 0;
    for (name, case) in cases {
        let timeout = async_io::Timer::after(Duration::from_secs(30));
        let outcome = match select(case, std::pin::pin!(timeout)).await {
            Either::Left((outcome, _)) => outcome,
            Either::Right(_) => Err("timed out after 30 s".into()),
        };
        match outcome {
            Ok(()) => println!("PASS {name}"),
            Err(why) => {
                failed += 1;
                println!("FAIL {name}: {why}");
            }
        }
    }
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

type Echo = EchoClient;

fn req(message: &str) -> EchoRequest {
    EchoRequest {
        message: message.into(),
        ..Default::default()
    }
}

fn check(cond: bool, what: impl FnOnce() -> String) -> Result<(), String> {
    if cond { Ok(()) } else { Err(what()) }
}

fn expect_code<T: std::fmt::Debug>(
    result: Result<T, Status>,
    code: Code,
) -> Result<Status, String> {
    match result {
        Err(status) if status.code() == code => Ok(status),
        other => Err(format!("expected {code}, got {other:?}")),
    }
}

async fn case_unary(echo: &Echo) -> Result<(), String> {
    let payload: Bytes = (0..1024 * 1024)
        .map(|i| (i % 251) as u8)
        .collect::<Vec<u8>>()
        .into();
    let request = EchoRequest {
        payload: payload.clone(),
        ..req("hello")
    };
    let response = echo
        .unary(&request, CallOptions::new())
        .await
        .map_err(|s| s.to_string())?;
    check(response.message().message == "hello", || {
        format!("message {:?}", response.message().message)
    })?;
    check(response.message().payload == payload, || {
        "1 MiB payload did not round-trip".into()
    })
}

async fn case_metadata(echo: &Echo) -> Result<(), String> {
    let mut md = Metadata::new();
    md.append("x-echo-ascii", "hello")
        .map_err(|s| s.to_string())?;
    md.append_bin("x-echo-data-bin", b"\x00\x01\xff")
        .map_err(|s| s.to_string())?;
    let response = echo
        .unary(&req("md"), CallOptions::new().metadata(md))
        .await
        .map_err(|s| s.to_string())?;
    let initial = response.metadata();
    check(initial.get("x-echo-ascii") == Some("hello"), || {
        format!("initial metadata {initial:?}")
    })?;
    check(
        initial.get_bin("x-echo-data-bin").as_deref() == Some(&b"\x00\x01\xff"[..]),
        || format!("initial metadata {initial:?}"),
    )?;
    let trailers = response.trailers();
    check(trailers.get("x-trailer") == Some("done"), || {
        format!("trailers {trailers:?}")
    })?;
    check(
        trailers.get_bin("x-trailer-bin").as_deref() == Some(TRAILER_BIN),
        || format!("trailers {trailers:?}"),
    )
}

async fn case_server_streaming(echo: &Echo) -> Result<(), String> {
    let request = EchoRequest {
        count: 5,
        ..req("s")
    };
    let mut stream = echo
        .server_stream(&request, CallOptions::new())
        .await
        .map_err(|s| s.to_string())?;
    let mut indexes = Vec::new();
    while let Some(msg) = stream.message().await.map_err(|s| s.to_string())? {
        indexes.push(msg.index);
    }
    check(indexes == vec![0, 1, 2, 3, 4], || {
        format!("indexes {indexes:?}")
    })?;
    let trailers = stream.trailers().cloned().unwrap_or_default();
    check(trailers.get("x-trailer") == Some("done"), || {
        format!("trailers {trailers:?}")
    })
}

async fn case_client_streaming(echo: &Echo) -> Result<(), String> {
    let (tx, response) = echo
        .client_stream(CallOptions::new())
        .await
        .map_err(|s| s.to_string())?;
    for m in ["a", "b", "c"] {
        tx.send(req(m)).await.map_err(|s| s.to_string())?;
    }
    drop(tx);
    let response = response.await.map_err(|s| s.to_string())?;
    let msg = response.message();
    check(msg.message == "a,b,c" && msg.index == 3, || {
        format!("response {msg:?}")
    })
}

async fn case_bidi(echo: &Echo) -> Result<(), String> {
    let (tx, mut rx) = echo
        .bidi(CallOptions::new())
        .await
        .map_err(|s| s.to_string())?;
    for i in 0..4 {
        tx.send(req(&format!("m{i}")))
            .await
            .map_err(|s| s.to_string())?;
        let msg = rx
            .message()
            .await
            .map_err(|s| s.to_string())?
            .ok_or("stream ended early")?;
        check(msg.message == format!("m{i}") && msg.index == i, || {
            format!("response {msg:?}")
        })?;
    }
    tx.close().await.map_err(|s| s.to_string())?;
    let end = rx.message().await.map_err(|s| s.to_string())?;
    check(end.is_none(), || format!("unexpected message {end:?}"))
}

async fn case_error_status(echo: &Echo) -> Result<(), String> {
    let request = EchoRequest {
        status_code: 5,
        status_message: "no such thing".into(),
        ..req("e")
    };
    let status = expect_code(
        echo.unary(&request, CallOptions::new()).await,
        Code::NotFound,
    )?;
    check(status.message() == "no such thing", || {
        format!("message {:?}", status.message())
    })?;
    check(
        status.details().as_ref() == b"details:no such thing",
        || format!("details {:?}", status.details()),
    )?;
    check(status.metadata().get("x-trailer") == Some("done"), || {
        format!("trailers {:?}", status.metadata())
    })
}

async fn case_unicode_status(echo: &Echo) -> Result<(), String> {
    let text = "caf\u{e9} \u{2603} 100%";
    let request = EchoRequest {
        status_code: 3,
        status_message: text.into(),
        ..req("u")
    };
    let status = expect_code(
        echo.unary(&request, CallOptions::new()).await,
        Code::InvalidArgument,
    )?;
    check(status.message() == text, || {
        format!("message {:?}", status.message())
    })
}

async fn case_deadline(echo: &Echo) -> Result<(), String> {
    let started = Instant::now();
    let request = EchoRequest {
        delay_ms: 2000,
        ..req("slow")
    };
    let options = CallOptions::new().timeout(Duration::from_millis(300));
    expect_code(echo.unary(&request, options).await, Code::DeadlineExceeded)?;
    let took = started.elapsed();
    check(took < Duration::from_millis(1500), || {
        format!("took {took:?}")
    })
}

async fn case_server_streaming_error(echo: &Echo) -> Result<(), String> {
    let request = EchoRequest {
        count: 2,
        status_code: 9,
        status_message: "stop".into(),
        ..req("se")
    };
    let mut stream = echo
        .server_stream(&request, CallOptions::new())
        .await
        .map_err(|s| s.to_string())?;
    for _ in 0..2 {
        stream
            .message()
            .await
            .map_err(|s| s.to_string())?
            .ok_or("stream ended early")?;
    }
    expect_code(stream.message().await, Code::FailedPrecondition).map(drop)
}

async fn case_cancel(echo: &Echo) -> Result<(), String> {
    let request = EchoRequest {
        count: 100,
        delay_ms: 50,
        ..req("c")
    };
    let mut stream = echo
        .server_stream(&request, CallOptions::new())
        .await
        .map_err(|s| s.to_string())?;
    stream
        .message()
        .await
        .map_err(|s| s.to_string())?
        .ok_or("stream ended early")?;
    stream.cancel();
    expect_code(stream.message().await, Code::Cancelled).map(drop)
}

async fn case_unimplemented(channel: &Channel) -> Result<(), String> {
    // A method echo.proto does not have, so no generated client can call it: the untyped
    // channel does.
    let result = channel
        .unary("/plexus.peer.Echo/Nope", Bytes::new(), CallOptions::new())
        .await;
    expect_code(result, Code::Unimplemented).map(drop)
}

async fn case_concurrent(echo: &Echo) -> Result<(), String> {
    let calls = (0..50).map(|i| async move {
        let m = format!("c{i}");
        let r = echo
            .unary(&req(&m), CallOptions::new())
            .await
            .map_err(|s| s.to_string())?;
        check(r.message().message == m, || {
            format!("got {:?} for {m}", r.message().message)
        })
    });
    join_all(calls).await.into_iter().collect()
}

/// 64 KiB that compresses well, so every peer does compress it (C-core sends a message
/// uncompressed when compressing would not make it smaller).
fn compressible() -> Bytes {
    b"plexus compresses this payload; ".repeat(2048).into()
}

fn compressed_options(c: Compression) -> Result<CallOptions, String> {
    let mut md = Metadata::new();
    md.append(RESPONSE_COMPRESSION, c.name())
        .map_err(|s| s.to_string())?;
    Ok(CallOptions::new().compression(c).metadata(md))
}

async fn case_compressed_unary(echo: &Echo) -> Result<(), String> {
    for c in [Compression::Gzip, Compression::Deflate] {
        let request = EchoRequest {
            payload: compressible(),
            ..req("z")
        };
        let response = echo
            .unary(&request, compressed_options(c)?)
            .await
            .map_err(|s| format!("{c}: {s}"))?;
        check(response.message().payload == request.payload, || {
            format!("{c}: payload did not round-trip")
        })?;
        check(response.compressed(), || {
            format!("{c}: the response was not compressed")
        })?;
    }
    Ok(())
}

async fn case_compressed_streaming(echo: &Echo) -> Result<(), String> {
    // Client streaming: one compressed and one uncompressed message on a gzip call.
    let (tx, response) = echo
        .client_stream(compressed_options(Compression::Gzip)?)
        .await
        .map_err(|s| s.to_string())?;
    let one = EchoRequest {
        payload: compressible(),
        ..req("a")
    };
    tx.send(one.clone()).await.map_err(|s| s.to_string())?;
    tx.send_with(
        EchoRequest {
            message: "b".into(),
            ..one.clone()
        },
        SendOptions::new().compress(false),
    )
    .await
    .map_err(|s| s.to_string())?;
    tx.close().await.map_err(|s| s.to_string())?;
    let response = response.await.map_err(|s| s.to_string())?;
    let msg = response.message();
    check(
        msg.message == "a,b" && msg.payload.len() == 2 * one.payload.len(),
        || {
            format!(
                "response {:?} with {} payload bytes",
                msg.message,
                msg.payload.len()
            )
        },
    )?;
    check(response.compressed(), || "response not compressed".into())?;

    // Server streaming, deflate: every response compressed.
    let request = EchoRequest {
        count: 3,
        payload: compressible(),
        ..req("s")
    };
    let mut stream = echo
        .server_stream(&request, compressed_options(Compression::Deflate)?)
        .await
        .map_err(|s| s.to_string())?;
    let mut flags = Vec::new();
    while let Some(msg) = stream.message().await.map_err(|s| s.to_string())? {
        check(msg.payload == request.payload, || "payload changed".into())?;
        flags.push(stream.last_message_compressed());
    }
    check(flags == [true, true, true], || {
        format!("compressed flags {flags:?}")
    })
}

// ---- one call ----

const CALL_USAGE: &str = "call --target HOST:PORT --method /pkg.Svc/Method \
    [--service-config JSON] [--enable-retries 0|1] [--metadata KEY=VALUE]... [--timeout-ms N]";

/// Makes the unary call `args` describe (see [`CALL_USAGE`]) with an empty request; the call's
/// status code, or the usage text for bad arguments.
fn call_once(args: &[String]) -> Result<Code, String> {
    let mut target = None;
    let mut method = None;
    let mut builder_config = None;
    let mut enable_retries = true;
    let mut options = CallOptions::new();
    let usage = || format!("usage: plexus-peer {CALL_USAGE}");
    for pair in args.chunks(2) {
        let [name, value] = pair else {
            return Err(usage());
        };
        match name.as_str() {
            "--target" => target = Some(value.clone()),
            "--method" => method = Some(value.clone()),
            "--service-config" => builder_config = Some(value.clone()),
            "--enable-retries" => enable_retries = value != "0",
            "--metadata" => {
                let (key, value) = value.split_once('=').ok_or_else(usage)?;
                options
                    .metadata_mut()
                    .append(key, value)
                    .map_err(|err| format!("bad metadata {key:?}: {err}"))?;
            }
            "--timeout-ms" => {
                let ms = value.parse().map_err(|_| usage())?;
                options = options.timeout(Duration::from_millis(ms));
            }
            _ => return Err(usage()),
        }
    }
    let (Some(target), Some(method)) = (target, method) else {
        return Err(usage());
    };
    let mut builder = Channel::builder(&target).enable_retries(enable_retries);
    if let Some(config) = &builder_config {
        builder = builder.default_service_config(config);
    }
    let channel = builder.build().map_err(|err| err.to_string())?;
    let result = smol::block_on(channel.unary(&method, Bytes::new(), options));
    Ok(match result {
        Ok(_) => Code::Ok,
        Err(status) => {
            eprintln!("{status}");
            status.code()
        }
    })
}
