//! plexus through a real L7 proxy: nginx with `grpc_pass` in front of two plexus servers.
//! Every call kind passes through it, statuses and trailers survive, and calls spread over
//! both backends.
//!
//! Needs nginx, so it is ignored by a plain `cargo test`; `scripts/test-nginx.sh` installs
//! nginx and runs it with `--ignored`. Without nginx it fails; it never skips itself.

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::{Either, join_all, select};
use plexus::{CallOptions, Channel, Code, Metadata, Status};
use plexus_nginx::{
    BACKEND_HEADER, CHAT, COUNT, FAIL, FAIL_MESSAGE, GATHER, Nginx, SEEN_PROXY_HEADER, UNARY,
    nginx_binary, start_backend,
};

/// Hard limit on the whole test (it takes about a second).
const TEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Unary calls whose spread over the backends is measured.
const UNARY_CALLS: usize = 100;

/// Unary calls in flight at once (they share the client's one HTTP/2 connection to nginx).
const UNARY_CONCURRENCY: usize = 10;

/// Calls of each streaming kind, and messages per call.
const STREAM_CALLS: usize = 10;
const STREAM_MESSAGES: usize = 20;

const BACKENDS: [&str; 2] = ["alpha", "beta"];

fn options() -> CallOptions {
    CallOptions::new().timeout(Duration::from_secs(20))
}

/// Runs `fut` on smol, failing if it takes longer than [`TEST_TIMEOUT`].
fn run<F: Future>(fut: F) -> F::Output {
    smol::block_on(async {
        match select(
            Box::pin(fut),
            Box::pin(async_io::Timer::after(TEST_TIMEOUT)),
        )
        .await
        {
            Either::Left((out, _)) => out,
            Either::Right(_) => panic!("the test took longer than {TEST_TIMEOUT:?}"),
        }
    })
}

/// Tallies which backend served each call.
#[derive(Default, Debug)]
struct Tally([usize; 2]);

impl Tally {
    /// Checks that `headers` name a backend and that the call came through nginx; counts it.
    fn count(&mut self, headers: &Metadata) -> Result<&'static str, String> {
        let name = headers
            .get(BACKEND_HEADER)
            .ok_or_else(|| format!("no {BACKEND_HEADER} in {headers:?}"))?;
        if headers.get(SEEN_PROXY_HEADER) != Some("nginx") {
            return Err(format!(
                "the backend did not see nginx's header: {headers:?}"
            ));
        }
        let i = BACKENDS
            .iter()
            .position(|b| *b == name)
            .ok_or_else(|| format!("unknown backend {name:?}"))?;
        self.0[i] += 1;
        Ok(BACKENDS[i])
    }

    /// Both backends served at least `min` calls.
    fn assert_spread(&self, what: &str, min: usize) {
        assert!(
            self.0.iter().all(|&n| n >= min),
            "{what}: calls per backend {:?} = {:?}, expected at least {min} each",
            BACKENDS,
            self.0
        );
    }
}

fn text(bytes: &Bytes) -> &str {
    std::str::from_utf8(bytes).expect("replies are text")
}

#[test]
#[ignore = "needs nginx: scripts/test-nginx.sh installs it and runs this test"]
fn grpc_through_nginx() {
    let binary = nginx_binary().unwrap_or_else(|e| panic!("{e}"));
    let mut servers = Vec::new();
    let mut addrs = Vec::new();
    for name in BACKENDS {
        let (server, addr) = start_backend(name).expect("backend starts");
        servers.push(server);
        addrs.push(addr);
    }
    let nginx = Nginx::start(&binary, &addrs).unwrap_or_else(|e| panic!("nginx: {e}"));
    println!(
        "nginx {:?} on {} in front of {:?}",
        plexus_nginx::nginx_version(&binary).unwrap(),
        nginx.addr(),
        addrs
    );
    let target = format!("http://{}", nginx.addr());
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        run(async {
            calls(&target).await;
            // With every backend gone, nginx answers HTTP 502 itself: UNAVAILABLE, per the
            // spec's HTTP-to-gRPC mapping, so clients retry rather than give up.
            for server in &servers {
                server.shutdown(Duration::from_secs(5)).await;
            }
            let channel = Channel::new(&target).expect("valid target");
            let err = channel
                .unary(UNARY, Bytes::from_static(b"anyone?"), options())
                .await
                .expect_err("no backend is left");
            assert_eq!(err.code(), Code::Unavailable, "{err}");
            println!("no backend: {err}");
        })
    }));
    if let Err(panic) = outcome {
        eprintln!(
            "nginx error log:\n{}\nnginx access log:\n{}",
            nginx.error_log(),
            nginx.access_log()
        );
        std::panic::resume_unwind(panic);
    }
    let log = nginx.access_log();
    for addr in &addrs {
        assert!(
            log.contains(&format!("upstream={addr}")),
            "nginx's access log names no call to {addr}:\n{log}"
        );
    }
}

async fn calls(target: &str) {
    let channel = Channel::new(target).expect("valid target");
    let mut total = Tally::default();

    // Unary: 100 calls, 10 at a time over one connection to nginx, spread by its round robin.
    let mut unary = Tally::default();
    for batch in 0..UNARY_CALLS / UNARY_CONCURRENCY {
        let replies = join_all((0..UNARY_CONCURRENCY).map(|i| {
            let msg = Bytes::from(format!("call {batch}/{i}"));
            let channel = channel.clone();
            async move { (msg.clone(), channel.unary(UNARY, msg, options()).await) }
        }))
        .await;
        for (msg, reply) in replies {
            let reply = reply.unwrap_or_else(|e| panic!("unary call through nginx: {e}"));
            let backend = unary.count(reply.metadata()).unwrap();
            total.count(reply.metadata()).unwrap();
            assert_eq!(
                text(reply.message()),
                format!("{backend}:{}", text(&msg)),
                "reply body"
            );
            assert_eq!(
                reply.trailers().get(BACKEND_HEADER),
                Some(backend),
                "trailers pass through nginx"
            );
        }
    }
    println!(
        "unary: {UNARY_CALLS} calls, per backend {BACKENDS:?} = {:?}",
        unary.0
    );
    unary.assert_spread("unary", UNARY_CALLS * 3 / 10);

    // A 1 MiB message each way: nginx's buffers are far smaller, so flow control is exercised.
    let big = Bytes::from((0..1 << 20).map(|i| (i % 251) as u8).collect::<Vec<u8>>());
    let reply = channel
        .unary(UNARY, big.clone(), options())
        .await
        .expect("1 MiB unary through nginx");
    let backend = total.count(reply.metadata()).unwrap();
    assert_eq!(
        &reply.message()[..backend.len() + 1],
        format!("{backend}:").as_bytes()
    );
    assert!(
        reply.message()[backend.len() + 1..] == big[..],
        "1 MiB echo differs"
    );

    // Server streaming.
    let mut tally = Tally::default();
    for _ in 0..STREAM_CALLS {
        let mut stream = channel
            .server_streaming(COUNT, Bytes::from(STREAM_MESSAGES.to_string()), options())
            .await
            .expect("server streaming call");
        let headers = stream.initial_metadata().await.expect("response headers");
        let backend = tally.count(&headers).unwrap();
        total.count(&headers).unwrap();
        let mut got = Vec::new();
        while let Some(msg) = stream.message().await.expect("server streaming message") {
            got.push(text(&msg).to_string());
        }
        let want: Vec<String> = (0..STREAM_MESSAGES)
            .map(|i| format!("{backend}:{i}"))
            .collect();
        assert_eq!(got, want, "server streaming messages");
        assert_eq!(stream.status().map(Status::code), Some(Code::Ok));
    }
    println!("server streaming: per backend {:?}", tally.0);
    tally.assert_spread("server streaming", 2);

    // Client streaming.
    let mut tally = Tally::default();
    for _ in 0..STREAM_CALLS {
        let (tx, response) = channel
            .client_streaming(GATHER, options())
            .await
            .expect("client streaming call");
        let mut bytes = 0;
        for i in 0..STREAM_MESSAGES {
            let msg = Bytes::from(format!("message {i}"));
            bytes += msg.len();
            tx.send(msg).await.expect("client streaming send");
        }
        tx.close().await.expect("half-close");
        let reply = response.response().await.expect("client streaming reply");
        let backend = tally.count(reply.metadata()).unwrap();
        total.count(reply.metadata()).unwrap();
        assert_eq!(
            text(reply.message()),
            format!("{backend}:{STREAM_MESSAGES}:{bytes}")
        );
    }
    println!("client streaming: per backend {:?}", tally.0);
    tally.assert_spread("client streaming", 2);

    // Bidi: strict ping-pong, so each reply must cross nginx before the next request is sent
    // (a proxy that buffered the request stream would hang here until the timeout).
    let mut tally = Tally::default();
    for call in 0..STREAM_CALLS {
        let (tx, mut rx) = channel
            .bidi_streaming(CHAT, options())
            .await
            .expect("bidi call");
        let mut backend = None;
        for i in 0..STREAM_MESSAGES {
            let msg = format!("ping {call}/{i}");
            tx.send(Bytes::from(msg.clone())).await.expect("bidi send");
            if backend.is_none() {
                let headers = rx.initial_metadata().await.expect("bidi headers");
                backend = Some(tally.count(&headers).unwrap());
                total.count(&headers).unwrap();
            }
            let reply = rx
                .message()
                .await
                .expect("bidi reply")
                .expect("one reply per ping");
            assert_eq!(text(&reply), format!("{}:{msg}", backend.unwrap()));
        }
        tx.close().await.expect("half-close");
        assert!(rx.message().await.expect("bidi end").is_none());
        assert_eq!(rx.status().map(Status::code), Some(Code::Ok));
    }
    println!("bidi streaming: per backend {:?}", tally.0);
    tally.assert_spread("bidi streaming", 2);

    // An error status (a trailers-only response) keeps its code, message and trailers.
    for _ in 0..2 {
        let err = channel
            .unary(FAIL, Bytes::new(), options())
            .await
            .expect_err("FAIL fails");
        assert_eq!(err.code(), Code::NotFound, "{err}");
        assert_eq!(err.message(), FAIL_MESSAGE);
        assert!(err.metadata().get(BACKEND_HEADER).is_some(), "{err:?}");
    }

    let calls: usize = total.0.iter().sum();
    println!(
        "all kinds: {calls} calls, per backend {BACKENDS:?} = {:?}",
        total.0
    );
    total.assert_spread("all kinds", calls * 3 / 10);
    channel.shutdown();
}
