//! The interop server and client in one process: every case, and the server features the
//! standard cases do not reach (HalfDuplexCall, CacheableUnaryCall, interval_us, bad
//! parameters, the other BenchmarkService methods). The same cases run between the built
//! binaries and against grpcio and grpc-js in scripts/test-interop.sh. Over TLS, the settings
//! the binaries build from their `--use_tls` flags, with certificates made here.

use std::time::{Duration, Instant};

use std::path::{Path, PathBuf};

use futures_util::future::{Either, select};
use plexus::{CallOptions, Channel, Code, Listener, Metadata, Server};
use plexus_interop::client::{self, CaseError};
use plexus_interop::features;
use plexus_interop::grpc::testing::benchmark_service_client::BenchmarkServiceClient;
use plexus_interop::grpc::testing::test_service_client::TestServiceClient;
use plexus_interop::grpc::testing::*;
use plexus_interop::payload::{body_len, zeros};
use plexus_interop::server;

/// Starts the interop server on a loopback port; returns it and a channel to it.
fn start() -> (Server, Channel) {
    let server = server::build().expect("server builds");
    let listener = Listener::bind_tcp("127.0.0.1:0").expect("bind loopback");
    let addr = listener.local_addr().expect("tcp address");
    let serving = server.clone();
    smol::spawn(async move { serving.serve(listener).await }).detach();
    let channel = Channel::new(&format!("http://{addr}")).expect("channel");
    (server, channel)
}

/// Fails the test instead of hanging when `fut` takes over a minute.
async fn bounded<T>(what: &str, fut: impl std::future::Future<Output = T>) -> T {
    let timer = async_io::Timer::after(Duration::from_secs(60));
    match select(std::pin::pin!(fut), std::pin::pin!(timer)).await {
        Either::Left((out, _)) => out,
        Either::Right(_) => panic!("{what} did not finish within 60 s"),
    }
}

#[test]
fn every_case_against_the_plexus_server() {
    smol::block_on(async {
        let (server, channel) = start();
        for &case in client::CASES {
            // Run by scripts/test-interop.sh; 1000 large calls are slow in a debug build.
            if case == "concurrent_large_unary" {
                continue;
            }
            let outcome = bounded(case, client::run(case, &channel)).await;
            assert_eq!(outcome, Ok(()), "{case}");
        }
        let unknown = client::run("no_such_case", &channel).await;
        assert!(
            matches!(unknown, Err(CaseError::Failed(why)) if why.contains("unknown test case"))
        );
        server.shutdown(Duration::from_secs(1)).await;
    });
}

/// A fresh directory holding `ca.pem`, and `server.pem`/`server.key` for `*.test.google.fr`
/// (no IP address), like `plexus-peer certs` writes for the matrix.
fn write_test_certs(name: &str) -> PathBuf {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
        KeyUsagePurpose,
    };
    let dir = std::env::temp_dir().join(format!("plexus-interop-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.distinguished_name
        .push(DnType::CommonName, "interop test CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_key = KeyPair::generate().unwrap();
    let ca = ca.self_signed(&ca_key).unwrap();
    let mut leaf = CertificateParams::new(vec!["*.test.google.fr".to_string()]).unwrap();
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let key = KeyPair::generate().unwrap();
    let leaf = leaf.signed_by(&key, &ca, &ca_key).unwrap();
    std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
    std::fs::write(dir.join("server.pem"), leaf.pem()).unwrap();
    std::fs::write(dir.join("server.key"), key.serialize_pem()).unwrap();
    dir
}

/// `interop-client --use_tls=true --use_test_ca=true --ca_file=... --server_host_override=NAME`'s
/// channel to `addr`.
fn tls_channel(addr: std::net::SocketAddr, ca: &Path, host_override: Option<&str>) -> Channel {
    let tls = features::client_tls(true, Some(ca), host_override).expect("client TLS settings");
    Channel::builder(&format!("dns:///{addr}"))
        .tls(tls)
        .build()
        .expect("channel")
}

#[test]
fn cases_over_tls_with_a_server_host_override() {
    let dir = write_test_certs("tls");
    smol::block_on(async {
        let tls =
            features::server_tls(Some(&dir.join("server.pem")), Some(&dir.join("server.key")))
                .expect("server TLS settings");
        let server = server::builder().tls(tls).build().expect("server builds");
        let listener = Listener::bind_tcp("127.0.0.1:0").expect("bind loopback");
        let addr = listener.local_addr().expect("tcp address");
        let serving = server.clone();
        smol::spawn(async move { serving.serve(listener).await }).detach();

        let channel = tls_channel(addr, &dir.join("ca.pem"), Some("foo.test.google.fr"));
        for &case in client::CASES {
            // As above: run by scripts/test-interop.sh (over TLS too), slow in a debug build.
            if case == "concurrent_large_unary" {
                continue;
            }
            let outcome = bounded(case, client::run(case, &channel)).await;
            assert_eq!(outcome, Ok(()), "{case} over TLS");
        }

        // Without the override the name checked is 127.0.0.1, which the certificate lacks.
        let unverified = tls_channel(addr, &dir.join("ca.pem"), None);
        let outcome = bounded("no override", client::run("empty_unary", &unverified)).await;
        let name_refused =
            |why: &str| why.contains("UNAVAILABLE") && why.contains("not valid for name");
        assert!(
            matches!(&outcome, Err(CaseError::Failed(why)) if name_refused(why)),
            "{outcome:?}"
        );
        // A plaintext client gets nowhere either.
        let plaintext = Channel::new(&format!("http://{addr}")).expect("channel");
        let outcome = bounded("plaintext", client::run("empty_unary", &plaintext)).await;
        assert!(outcome.is_err(), "a plaintext call to a TLS server passed");
        server.shutdown(Duration::from_secs(1)).await;
    });
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn tls_flags_name_the_file_that_is_missing() {
    let dir = std::env::temp_dir().join(format!("plexus-interop-none-{}", std::process::id()));
    let missing = dir.join("server.pem");
    let why = features::server_tls(Some(&missing), Some(&dir.join("server.key"))).unwrap_err();
    assert!(why.contains(&missing.display().to_string()), "{why}");
    let ca = dir.join("ca.pem");
    let why = features::client_tls(true, Some(&ca), None).unwrap_err();
    assert!(why.contains(&ca.display().to_string()), "{why}");
    // Without --use_test_ca the client trusts the system roots and reads no file.
    assert!(features::client_tls(false, Some(&ca), None).is_ok());
}

fn params(sizes: &[(i32, i32)]) -> StreamingOutputCallRequest {
    StreamingOutputCallRequest {
        response_parameters: sizes
            .iter()
            .map(|&(size, interval_us)| ResponseParameters {
                size,
                interval_us,
                compressed: None,
            })
            .collect(),
        ..Default::default()
    }
}

#[test]
fn server_features_beyond_the_standard_cases() {
    smol::block_on(async {
        let (server, channel) = start();
        let client = TestServiceClient::new(channel.clone());

        // HalfDuplexCall answers only after the half-close, in request order.
        let (tx, mut rx) = client.half_duplex_call(CallOptions::new()).await.unwrap();
        tx.send(params(&[(3, 0)])).await.unwrap();
        tx.send(params(&[(5, 0), (7, 0)])).await.unwrap();
        tx.close().await.unwrap();
        let mut sizes = Vec::new();
        while let Some(msg) = bounded("HalfDuplexCall", rx.message()).await.unwrap() {
            sizes.push(body_len(&msg.payload));
        }
        assert_eq!(sizes, [3, 5, 7]);

        // interval_us: three responses 100 ms apart take at least 300 ms.
        let started = Instant::now();
        let mut stream = client
            .streaming_output_call(&params(&[(1, 100_000); 3]), CallOptions::new())
            .await
            .unwrap();
        let mut count = 0;
        while bounded("interval_us", stream.message())
            .await
            .unwrap()
            .is_some()
        {
            count += 1;
        }
        assert_eq!(count, 3);
        assert!(
            started.elapsed() >= Duration::from_millis(300),
            "{:?}",
            started.elapsed()
        );

        // CacheableUnaryCall: a timestamp payload and a cache-control header.
        let reply = client
            .cacheable_unary_call(&SimpleRequest::default(), CallOptions::new())
            .await
            .unwrap();
        let body = &reply.message().payload.as_ref().unwrap().body;
        assert!(
            !body.is_empty() && body.iter().all(u8::is_ascii_digit),
            "{body:?}"
        );
        assert_eq!(
            reply.metadata().get("cache-control"),
            Some("public, max-age=60")
        );

        // Echo Status on StreamingOutputCall, with the echoed trailer.
        let mut md = Metadata::new();
        md.append_bin("x-grpc-test-echo-trailing-bin", b"\x01\x02")
            .unwrap();
        let request = StreamingOutputCallRequest {
            response_status: Some(EchoStatus {
                code: 9,
                message: "nope".into(),
            }),
            ..params(&[(1, 0)])
        };
        let mut stream = client
            .streaming_output_call(&request, CallOptions::new().metadata(md))
            .await
            .unwrap();
        let status = bounded("echo status", stream.message()).await.unwrap_err();
        assert_eq!(
            (status.code(), status.message()),
            (Code::FailedPrecondition, "nope")
        );
        assert_eq!(
            status
                .metadata()
                .get_bin("x-grpc-test-echo-trailing-bin")
                .as_deref(),
            Some(&b"\x01\x02"[..])
        );

        // Bad parameters are INVALID_ARGUMENT.
        let bad_type = SimpleRequest {
            response_type: 7,
            ..Default::default()
        };
        let status = client
            .unary_call(&bad_type, CallOptions::new())
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{status}");
        let negative = SimpleRequest {
            response_size: -1,
            ..Default::default()
        };
        let status = client
            .unary_call(&negative, CallOptions::new())
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{status}");

        // CompressedRequest on StreamingInputCall: an uncompressed message expecting otherwise.
        let (tx, response) = client
            .streaming_input_call(CallOptions::new())
            .await
            .unwrap();
        let probe = StreamingInputCallRequest {
            payload: Some(zeros(10)),
            expect_compressed: Some(BoolValue { value: true }),
        };
        let _ = tx.send(probe).await;
        let _ = tx.close().await;
        let status = bounded("compressed probe", response.response())
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{status}");

        // CompressedRequest: a compressed message that was not expected to be is fine, and
        // so is an expected one; only "expected but uncompressed" fails (above).
        let (tx, response) = client
            .streaming_input_call(CallOptions::new().compression(plexus::Compression::Gzip))
            .await
            .unwrap();
        for expect in [false, true] {
            let msg = StreamingInputCallRequest {
                payload: Some(zeros(1000)),
                expect_compressed: Some(BoolValue { value: expect }),
            };
            tx.send(msg).await.unwrap();
        }
        tx.close().await.unwrap();
        let total = bounded("compressed input", response.response())
            .await
            .unwrap();
        assert_eq!(total.message().aggregated_payload_size, 2000);

        // CompressedResponse: compressed on request, also with a server-streaming request
        // whose parameters leave `compressed` unset (then the message goes out uncompressed).
        for want in [true, false] {
            let request = SimpleRequest {
                response_compressed: Some(BoolValue { value: want }),
                response_size: 1000,
                ..Default::default()
            };
            let response = client
                .unary_call(&request, CallOptions::new())
                .await
                .unwrap();
            assert_eq!(response.compressed(), want);
        }
        let mut stream = client
            .streaming_output_call(&params(&[(500, 0)]), CallOptions::new())
            .await
            .unwrap();
        assert!(stream.message().await.unwrap().is_some());
        assert!(!stream.last_message_compressed());
        assert!(stream.message().await.unwrap().is_none());

        server.shutdown(Duration::from_secs(1)).await;
    });
}

#[test]
fn benchmark_service_methods() {
    smol::block_on(async {
        let (server, channel) = start();
        let bench = BenchmarkServiceClient::new(channel.clone());
        // The two unbounded streams send 1 KiB responses: h2 0.4.20 closes a connection with
        // GOAWAY ENHANCE_YOUR_CALM once about 130 unread DATA frames under 256 bytes are
        // buffered (its DATA-frame budget), which a server flooding tiny messages reaches.
        let sized = |n| SimpleRequest {
            response_size: n,
            ..Default::default()
        };

        // StreamingFromClient answers the last request's size after the half-close.
        let (tx, response) = bench
            .streaming_from_client(CallOptions::new())
            .await
            .unwrap();
        for n in [1, 2, 3] {
            tx.send(sized(n)).await.unwrap();
        }
        tx.close().await.unwrap();
        let reply = bounded("StreamingFromClient", response.response())
            .await
            .unwrap();
        assert_eq!(body_len(&reply.message().payload), 3);

        // StreamingFromServer streams until the client cancels.
        let mut stream = bench
            .streaming_from_server(&sized(1024), CallOptions::new())
            .await
            .unwrap();
        for _ in 0..50 {
            let msg = bounded("StreamingFromServer", stream.message())
                .await
                .unwrap()
                .unwrap();
            assert_eq!(body_len(&msg.payload), 1024);
        }
        stream.cancel();
        assert_eq!(stream.message().await.unwrap_err().code(), Code::Cancelled);

        // StreamingBothWays streams while the client does, and ends at its half-close.
        let (tx, mut rx) = bench.streaming_both_ways(CallOptions::new()).await.unwrap();
        tx.send(sized(1024)).await.unwrap();
        for _ in 0..20 {
            let msg = bounded("StreamingBothWays", rx.message())
                .await
                .unwrap()
                .unwrap();
            assert_eq!(body_len(&msg.payload), 1024);
        }
        tx.send(sized(1024)).await.unwrap();
        tx.close().await.unwrap();
        loop {
            match bounded("StreamingBothWays end", rx.message()).await {
                Ok(Some(_)) => continue,
                Ok(None) => break,
                Err(status) => panic!("StreamingBothWays ended with {status}"),
            }
        }
        server.shutdown(Duration::from_secs(1)).await;
    });
}
