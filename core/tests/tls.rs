//! TLS end to end: certificates made at test time with rcgen (a CA, a server certificate for
//! `localhost` and `*.test.google.fr`, client certificates from a trusted and an untrusted CA),
//! plexus servers and channels over TCP and Unix sockets, and raw rustls peers for what plexus
//! itself never does (a server without ALPN h2, a client that never says hello). Every test has
//! a hard timeout.

#![cfg(feature = "tls")]

use std::future::Future;
use std::io;
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use async_io::{Async, Timer};
use bytes::Bytes;
use futures_util::future::{Either, join_all, select};
use plexus::rt::BoxFuture;
use plexus::transport::tls::rustls;
use plexus::transport::{Address, BoxedIo, Connector, SocketConnector};
use plexus::{
    BackoffConfig, BytesCodec, CallOptions, Certificate, Channel, ChannelBuilder, ClientTlsConfig,
    Code, ConnectivityState, Executor, Identity, Listener, Request, RequestStream, Response,
    ResponseSink, Server, ServerBuilder, ServerTlsConfig, SmolExecutor, StaticResolver, Status,
};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use smol::io::{AsyncReadExt, AsyncWriteExt};

/// Hard limit on one test body.
const TEST_TIMEOUT: Duration = Duration::from_secs(30);

const SAY: &str = "/tls.Echo/Say";
const PEER: &str = "/tls.Echo/Peer";
const CHAT: &str = "/tls.Echo/Chat";

// ---- certificates ----

/// A certificate authority that issues leaf certificates.
struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

/// A leaf certificate: PEM for plexus, DER to compare with what a handler sees.
struct Leaf {
    cert_pem: String,
    key_pem: String,
    der: Vec<u8>,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Ca { cert, key }
    }

    fn pem(&self) -> Certificate {
        Certificate::from_pem(self.cert.pem())
    }

    fn issue(&self, names: &[&str], usage: ExtendedKeyUsagePurpose) -> Leaf {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names.clone()).unwrap();
        params.distinguished_name.push(
            DnType::CommonName,
            names.first().cloned().unwrap_or_default(),
        );
        params.extended_key_usages = vec![usage];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().to_vec(),
        }
    }
}

impl Leaf {
    fn identity(&self) -> Identity {
        Identity::from_pem(&self.cert_pem, &self.key_pem)
    }
}

/// Everything the tests need, made once per test binary.
struct Pki {
    ca: Ca,
    other_ca: Ca,
    /// Valid for `localhost` and `*.test.google.fr`, not for any IP address.
    server: Leaf,
    client: Leaf,
    /// A client certificate from `other_ca`, which servers here do not trust.
    rogue_client: Leaf,
}

fn pki() -> &'static Pki {
    static PKI: OnceLock<Pki> = OnceLock::new();
    PKI.get_or_init(|| {
        let ca = Ca::new("plexus test CA");
        let other_ca = Ca::new("some other CA");
        Pki {
            server: ca.issue(
                &["localhost", "*.test.google.fr"],
                ExtendedKeyUsagePurpose::ServerAuth,
            ),
            client: ca.issue(&["client.test"], ExtendedKeyUsagePurpose::ClientAuth),
            rogue_client: other_ca.issue(&["rogue.test"], ExtendedKeyUsagePurpose::ClientAuth),
            ca,
            other_ca,
        }
    })
}

fn server_tls() -> ServerTlsConfig {
    ServerTlsConfig::new(pki().server.identity())
}

fn client_tls() -> ClientTlsConfig {
    ClientTlsConfig::new().ca_certificate(pki().ca.pem())
}

// ---- servers and channels ----

/// Runs `fut` on smol, failing the test if it takes longer than [`TEST_TIMEOUT`].
fn run<F: Future>(fut: F) -> F::Output {
    smol::block_on(async {
        match select(std::pin::pin!(fut), Timer::after(TEST_TIMEOUT)).await {
            Either::Left((out, _)) => out,
            Either::Right(_) => panic!("test did not finish within {TEST_TIMEOUT:?}"),
        }
    })
}

/// Echo routes: `Say` echoes, `Peer` answers the client's leaf certificate (empty without
/// one), `Chat` echoes every message of a bidi stream.
fn echo() -> ServerBuilder {
    Server::builder()
        .unary(SAY, BytesCodec, |req: Request<Bytes>| async move {
            Ok(Response::new(req.into_message()))
        })
        .unary(PEER, BytesCodec, |req: Request<Bytes>| async move {
            let leaf = req
                .context()
                .peer_certificates()
                .and_then(|chain| chain.first())
                .map(|c| Bytes::copy_from_slice(c))
                .unwrap_or_default();
            Ok(Response::new(leaf))
        })
        .bidi_streaming(
            CHAT,
            BytesCodec,
            |req: Request<RequestStream<Bytes>>, sink: ResponseSink<Bytes>| async move {
                let (_, mut stream) = req.into_parts();
                while let Some(msg) = stream.message().await? {
                    sink.send(msg).await?;
                }
                Ok(())
            },
        )
}

/// A server on 127.0.0.1, shut down on drop.
struct Serving {
    server: Server,
    addr: SocketAddr,
}

impl Drop for Serving {
    fn drop(&mut self) {
        let server = self.server.clone();
        SmolExecutor.spawn(Box::pin(async move {
            server.shutdown(Duration::from_millis(100)).await;
        }));
    }
}

fn serve(builder: ServerBuilder) -> Serving {
    let server = builder.build().expect("server settings are valid");
    let listener = Listener::bind_tcp("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let s = server.clone();
    SmolExecutor.spawn(Box::pin(async move {
        let _ = s.serve(listener).await;
    }));
    Serving { server, addr }
}

/// A channel to `target` whose every name resolves to the server's address.
fn channel_to(target: &str, server: &Serving) -> ChannelBuilder {
    Channel::builder(target).resolver(StaticResolver::new([Address::Tcp(server.addr)]))
}

async fn say(channel: &Channel, text: &str) -> Result<Bytes, Status> {
    channel
        .unary(
            SAY,
            Bytes::copy_from_slice(text.as_bytes()),
            CallOptions::new(),
        )
        .await
        .map(|r| r.into_message())
}

/// Asserts `result` failed with `code` and a message containing every one of `parts`.
fn expect_failure<T: std::fmt::Debug>(result: Result<T, Status>, code: Code, parts: &[&str]) {
    let status = result.expect_err("the call should have failed");
    assert_eq!(status.code(), code, "{status}");
    for part in parts {
        assert!(status.message().contains(part), "{part:?} not in: {status}");
    }
}

// ---- calls over TLS ----

#[test]
fn unary_and_streaming_over_tls() {
    let server = serve(echo().tls(server_tls()));
    run(async {
        let channel = channel_to(&format!("localhost:{}", server.addr.port()), &server)
            .tls(client_tls())
            .build()
            .unwrap();
        assert_eq!(say(&channel, "hello").await.unwrap(), "hello");

        // Messages far larger than a TLS record (16 KiB), both ways.
        let big: Bytes = (0..3 * 1024 * 1024).map(|i| (i % 253) as u8).collect();
        let reply = channel
            .unary(SAY, big.clone(), CallOptions::new())
            .await
            .unwrap();
        assert_eq!(reply.message(), &big);

        let (tx, mut rx) = channel
            .bidi_streaming(CHAT, CallOptions::new())
            .await
            .unwrap();
        for i in 0..50 {
            let msg = Bytes::from(format!("m{i}").repeat(i * 100 + 1));
            tx.send(msg.clone()).await.unwrap();
            assert_eq!(rx.message().await.unwrap(), Some(msg));
        }
        tx.close().await.unwrap();
        assert_eq!(rx.message().await.unwrap(), None);

        // Concurrent calls share the one TLS connection.
        let calls = (0..40).map(|i| {
            let channel = channel.clone();
            async move { say(&channel, &format!("c{i}")).await }
        });
        for (i, reply) in join_all(calls).await.into_iter().enumerate() {
            assert_eq!(reply.unwrap(), format!("c{i}"));
        }
        assert_eq!(channel.stats().endpoints[0].connections, 1);
    });
}

#[test]
fn https_target_uses_tls_on_port_443_by_default() {
    let server = serve(echo().tls(server_tls()));
    run(async {
        let channel = channel_to(
            &format!("https://localhost:{}/", server.addr.port()),
            &server,
        )
        .tls(client_tls())
        .build()
        .unwrap();
        assert_eq!(say(&channel, "via https").await.unwrap(), "via https");

        // No port: 443, which the resolver reports to the connector.
        let seen = Recorder::default();
        let channel = Channel::builder("https://localhost")
            .connector(seen.clone())
            .tls(client_tls())
            .build()
            .unwrap();
        let _ = say(&channel, "x").await;
        let addresses = seen.addresses.lock().unwrap().clone();
        assert!(
            !addresses.is_empty() && addresses.iter().all(|a| a.ends_with(":443")),
            "{addresses:?}"
        );
    });
}

#[test]
fn https_target_without_config_trusts_system_roots_only() {
    let server = serve(echo().tls(server_tls()));
    run(async {
        let target = format!("https://localhost:{}", server.addr.port());
        match channel_to(&target, &server).build() {
            // Our test CA is in no system store: the handshake must fail on it.
            Ok(channel) => expect_failure(
                say(&channel, "x").await,
                Code::Unavailable,
                &["TLS handshake failed", "unknown issuer"],
            ),
            // A machine without a CA bundle says so when the channel is built.
            Err(err) => {
                assert!(err.is_config(), "{err}");
                let status = plexus::Status::from(err);
                assert_eq!(status.code(), Code::InvalidArgument, "{status}");
                assert!(status.message().contains("no system root certificates"));
            }
        }
    });
}

#[test]
fn plaintext_targets_stay_plaintext_without_a_config() {
    let server = serve(echo());
    run(async {
        let channel = Channel::new(&format!("http://{}", server.addr)).unwrap();
        assert_eq!(say(&channel, "plain").await.unwrap(), "plain");
        // No TLS, no certificates for the handler.
        let leaf = channel
            .unary(PEER, Bytes::new(), CallOptions::new())
            .await
            .unwrap();
        assert!(leaf.message().is_empty());
    });
}

#[test]
fn tls_over_a_unix_socket() {
    let dir = std::env::temp_dir().join(format!("plexus-tls-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir(&dir).unwrap();
    let path = dir.join("tls.sock");
    let server = echo().tls(server_tls()).build().unwrap();
    let listener = Listener::bind_unix(&path).unwrap();
    let s = server.clone();
    SmolExecutor.spawn(Box::pin(async move {
        let _ = s.serve(listener).await;
    }));
    run(async {
        // A Unix target's host is `localhost`, which the certificate names.
        let channel = Channel::builder(&format!("unix:{}", path.display()))
            .tls(client_tls())
            .build()
            .unwrap();
        assert_eq!(say(&channel, "unix").await.unwrap(), "unix");
        server.shutdown(Duration::from_millis(100)).await;
    });
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn tls_on_a_thread_pool_executor() {
    #[derive(Clone)]
    struct Pool(futures_executor::ThreadPool);
    impl Executor for Pool {
        fn spawn(&self, future: BoxFuture<()>) {
            self.0.spawn_ok(future);
        }
    }
    let pool = Pool(
        futures_executor::ThreadPool::builder()
            .pool_size(2)
            .create()
            .unwrap(),
    );
    let server = serve(echo().tls(server_tls()).executor(pool.clone()));
    futures_executor::block_on(async {
        let channel = channel_to(&format!("localhost:{}", server.addr.port()), &server)
            .tls(client_tls())
            .executor(pool)
            .build()
            .unwrap();
        let calls = (0..20).map(|i| {
            let channel = channel.clone();
            async move { say(&channel, &format!("p{i}")).await }
        });
        for (i, reply) in join_all(calls).await.into_iter().enumerate() {
            assert_eq!(reply.unwrap(), format!("p{i}"));
        }
    });
}

// ---- server names ----

#[test]
fn server_name_override() {
    let server = serve(echo().tls(server_tls()));
    run(async {
        // The certificate has no IP address; the override names what it does cover.
        let channel = Channel::builder(&server.addr.to_string())
            .tls(client_tls().server_name("foo.test.google.fr"))
            .build()
            .unwrap();
        assert_eq!(say(&channel, "override").await.unwrap(), "override");
    });
}

#[test]
fn name_mismatch_fails_naming_the_cause() {
    let server = serve(echo().tls(server_tls()));
    run(async {
        // An IP target the certificate does not cover.
        let channel = Channel::builder(&server.addr.to_string())
            .tls(client_tls())
            .build()
            .unwrap();
        expect_failure(
            say(&channel, "x").await,
            Code::Unavailable,
            &["TLS handshake failed", "name mismatch", "127.0.0.1"],
        );
        // A host name it does not cover.
        let channel = channel_to(&format!("localhost:{}", server.addr.port()), &server)
            .tls(client_tls().server_name("wrong.example.com"))
            .build()
            .unwrap();
        expect_failure(
            say(&channel, "x").await,
            Code::Unavailable,
            &["name mismatch", "wrong.example.com"],
        );
    });
}

#[test]
fn unknown_ca_fails_naming_the_cause() {
    let server = serve(echo().tls(server_tls()));
    run(async {
        let channel = channel_to(&format!("localhost:{}", server.addr.port()), &server)
            .tls(ClientTlsConfig::new().ca_certificate(pki().other_ca.pem()))
            .build()
            .unwrap();
        expect_failure(
            say(&channel, "x").await,
            Code::Unavailable,
            &["TLS handshake failed", "not signed by a trusted CA"],
        );
    });
}

#[test]
fn handshake_failure_is_a_connection_failure_with_backoff() {
    let server = serve(echo().tls(server_tls()));
    run(async {
        let counter = Recorder::default();
        let channel = channel_to(&format!("localhost:{}", server.addr.port()), &server)
            .connector(counter.clone())
            .tls(ClientTlsConfig::new().ca_certificate(pki().other_ca.pem()))
            .backoff(BackoffConfig {
                initial: Duration::from_secs(60),
                ..BackoffConfig::default()
            })
            .build()
            .unwrap();
        expect_failure(
            say(&channel, "x").await,
            Code::Unavailable,
            &["unknown issuer"],
        );
        assert_eq!(channel.state(), ConnectivityState::TransientFailure);
        // Within the backoff, calls fail fast with the same cause and no new connection.
        expect_failure(
            say(&channel, "x").await,
            Code::Unavailable,
            &["unknown issuer"],
        );
        assert_eq!(counter.count(), 1);
    });
}

#[test]
fn tls_client_against_a_plaintext_server_fails_cleanly() {
    let server = serve(echo());
    run(async {
        let channel = channel_to(&format!("localhost:{}", server.addr.port()), &server)
            .tls(client_tls())
            .build()
            .unwrap();
        expect_failure(
            say(&channel, "x").await,
            Code::Unavailable,
            &["TLS handshake failed", "plaintext server"],
        );
    });
}

#[test]
fn plaintext_client_against_a_tls_server_fails_cleanly() {
    let server = serve(echo().tls(server_tls()));
    run(async {
        let channel = Channel::builder(&format!("http://{}", server.addr))
            .connect_timeout(Duration::from_secs(5))
            .build()
            .unwrap();
        // Not h2's reading of the TLS alert as an oversized frame (FRAME_SIZE_ERROR).
        expect_failure(
            say(&channel, "x").await,
            Code::Unavailable,
            &[
                &server.addr.to_string(),
                "the server seems to speak TLS",
                "use an https:// target or ChannelBuilder::tls",
            ],
        );
    });
}

#[test]
fn serve_connection_tells_a_failed_tls_handshake_from_a_timeout() {
    use std::error::Error as _;
    let server = echo().tls(server_tls()).build().unwrap();
    run(async {
        let listener = Async::<std::net::TcpListener>::bind(([127, 0, 0, 1], 0)).unwrap();
        let addr = listener.get_ref().local_addr().unwrap();
        let mut client = Async::<TcpStream>::connect(addr).await.unwrap();
        let (accepted, _) = listener.accept().await.unwrap();
        // A plaintext HTTP/2 client: its preface is no ClientHello.
        client
            .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            .await
            .unwrap();
        let err = server.serve_connection(accepted).await.unwrap_err();
        assert!(err.is_tls(), "{err:?}");
        assert!(
            !err.is_io() && !err.is_timeout() && !err.is_protocol(),
            "{err:?}"
        );
        assert!(err.to_string().contains("TLS handshake failed"), "{err}");
        assert!(err.source().unwrap().is::<Status>(), "{err:?}");
        let status = Status::from(err);
        assert_eq!(status.code(), Code::Unavailable, "{status}");

        // A client that says nothing: the handshake timeout's error.
        let timeout = Duration::from_millis(100);
        let server = echo()
            .tls(server_tls())
            .handshake_timeout(timeout)
            .build()
            .unwrap();
        let _silent = Async::<TcpStream>::connect(addr).await.unwrap();
        let (accepted, _) = listener.accept().await.unwrap();
        let err = server.serve_connection(accepted).await.unwrap_err();
        assert!(err.is_timeout(), "{err:?}");
        assert!(
            err.to_string().contains("TLS handshake not finished"),
            "{err}"
        );
        assert_eq!(Status::from(err).code(), Code::Unavailable);
    });
}

// ---- mutual TLS ----

fn mtls_server() -> Serving {
    serve(echo().tls(server_tls().client_ca_certificate(pki().ca.pem())))
}

#[test]
fn mtls_required_refuses_a_client_without_a_certificate() {
    let server = mtls_server();
    run(async {
        let channel = channel_to(&format!("localhost:{}", server.addr.port()), &server)
            .tls(client_tls())
            .build()
            .unwrap();
        // Over TLS 1.3 the client's side of the handshake completes; the server's alert
        // arrives as the connection opens, and the channel reports it.
        expect_failure(
            say(&channel, "x").await,
            Code::Unavailable,
            &["requires a client certificate and none is configured"],
        );
    });
}

#[test]
fn mtls_refuses_a_certificate_from_an_untrusted_ca() {
    let server = mtls_server();
    run(async {
        let channel = channel_to(&format!("localhost:{}", server.addr.port()), &server)
            .tls(client_tls().identity(pki().rogue_client.identity()))
            .build()
            .unwrap();
        expect_failure(
            say(&channel, "x").await,
            Code::Unavailable,
            &["refused our client certificate", "UnknownCA"],
        );
    });
}

#[test]
fn mtls_accepts_a_client_certificate_and_the_handler_sees_it() {
    let server = mtls_server();
    run(async {
        let channel = channel_to(&format!("localhost:{}", server.addr.port()), &server)
            .tls(client_tls().identity(pki().client.identity()))
            .build()
            .unwrap();
        let leaf = channel
            .unary(PEER, Bytes::new(), CallOptions::new())
            .await
            .unwrap();
        assert_eq!(leaf.message().as_ref(), pki().client.der.as_slice());
    });
}

#[test]
fn optional_client_auth_serves_clients_with_and_without_certificates() {
    let server = serve(
        echo().tls(
            server_tls()
                .client_ca_certificate(pki().ca.pem())
                .client_auth_optional(true),
        ),
    );
    run(async {
        let target = format!("localhost:{}", server.addr.port());
        let anonymous = channel_to(&target, &server)
            .tls(client_tls())
            .build()
            .unwrap();
        let leaf = anonymous
            .unary(PEER, Bytes::new(), CallOptions::new())
            .await
            .unwrap();
        assert!(leaf.message().is_empty());

        let known = channel_to(&target, &server)
            .tls(client_tls().identity(pki().client.identity()))
            .build()
            .unwrap();
        let leaf = known
            .unary(PEER, Bytes::new(), CallOptions::new())
            .await
            .unwrap();
        assert_eq!(leaf.message().as_ref(), pki().client.der.as_slice());

        // A certificate that is presented must still verify.
        let rogue = channel_to(&target, &server)
            .tls(client_tls().identity(pki().rogue_client.identity()))
            .build()
            .unwrap();
        expect_failure(
            say(&rogue, "x").await,
            Code::Unavailable,
            &["refused our client certificate"],
        );
    });
}

// ---- ALPN ----

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn raw_client_config(alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(pki().ca.cert.der().clone()).unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

async fn raw_tls_connect(
    addr: SocketAddr,
    alpn: &[&[u8]],
) -> io::Result<futures_rustls::client::TlsStream<Async<TcpStream>>> {
    let tcp = Async::<TcpStream>::connect(addr).await?;
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    futures_rustls::TlsConnector::from(raw_client_config(alpn))
        .connect(name, tcp)
        .await
}

#[test]
fn server_negotiates_h2_by_alpn() {
    let server = serve(echo().tls(server_tls()));
    run(async {
        let stream = raw_tls_connect(server.addr, &[b"http/1.1", b"h2"])
            .await
            .unwrap();
        assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));

        // A client offering only HTTP/1.1 is refused during the handshake.
        let Err(err) = raw_tls_connect(server.addr, &[b"http/1.1"]).await else {
            panic!("a client without h2 must be refused");
        };
        assert!(err.to_string().contains("NoApplicationProtocol"), "{err}");
    });
}

#[test]
fn client_requires_the_server_to_negotiate_h2() {
    // A TLS server that knows no ALPN protocol: the handshake completes without one.
    let (chain, key) = {
        use rustls::pki_types::pem::PemObject;
        let chain =
            rustls::pki_types::CertificateDer::pem_slice_iter(pki().server.cert_pem.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .unwrap();
        let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(pki().server.key_pem.as_bytes())
            .unwrap();
        (chain, key)
    };
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    let acceptor = futures_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = Async::<std::net::TcpListener>::bind(([127, 0, 0, 1], 0)).unwrap();
    let addr = listener.get_ref().local_addr().unwrap();
    SmolExecutor.spawn(Box::pin(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            SmolExecutor.spawn(Box::pin(async move {
                if let Ok(mut tls) = acceptor.accept(tcp).await {
                    let mut buf = [0u8; 1024];
                    while matches!(tls.read(&mut buf).await, Ok(n) if n > 0) {}
                }
            }));
        }
    }));
    run(async {
        let channel = Channel::builder(&format!("localhost:{}", addr.port()))
            .resolver(StaticResolver::new([Address::Tcp(addr)]))
            .tls(client_tls())
            .build()
            .unwrap();
        expect_failure(
            say(&channel, "x").await,
            Code::Unavailable,
            &["did not negotiate HTTP/2", "h2"],
        );
    });
}

#[test]
fn a_complete_rustls_client_config_can_be_supplied() {
    let server = serve(echo().tls(server_tls()));
    run(async {
        // No ALPN in the supplied config: plexus sets h2 itself.
        let channel = channel_to(&format!("localhost:{}", server.addr.port()), &server)
            .tls(ClientTlsConfig::from_rustls(raw_client_config(&[])))
            .build()
            .unwrap();
        assert_eq!(say(&channel, "custom").await.unwrap(), "custom");
    });
}

// ---- the handshake timeout ----

#[test]
fn a_client_that_never_says_hello_is_dropped_after_the_handshake_timeout() {
    let timeout = Duration::from_millis(500);
    let server = serve(echo().tls(server_tls()).handshake_timeout(timeout));
    run(async {
        let channel = channel_to(&format!("localhost:{}", server.addr.port()), &server)
            .tls(client_tls())
            .build()
            .unwrap();
        let started = Instant::now();
        let mut silent = Vec::new();
        for _ in 0..10 {
            silent.push(Async::<TcpStream>::connect(server.addr).await.unwrap());
        }
        // A client that sends half a ClientHello and stops is no better.
        let mut partial = Async::<TcpStream>::connect(server.addr).await.unwrap();
        partial
            .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
            .await
            .unwrap();
        silent.push(partial);

        // The good client works while they hang around...
        for i in 0..5 {
            assert_eq!(
                say(&channel, &format!("g{i}")).await.unwrap(),
                format!("g{i}")
            );
        }
        // ...and every silent connection is closed by the server, not before the timeout.
        for mut conn in silent {
            let mut buf = [0u8; 64];
            match within(Duration::from_secs(15), conn.read(&mut buf)).await {
                Some(Ok(0) | Err(_)) => {}
                Some(Ok(_)) => {
                    // An alert may come first; then the end of the stream.
                    let mut rest = Vec::new();
                    let _ = within(Duration::from_secs(15), conn.read_to_end(&mut rest)).await;
                }
                None => panic!("the server kept a silent connection open"),
            }
            assert!(started.elapsed() >= timeout, "closed before the timeout");
        }
        // The good client is still fine afterwards.
        assert_eq!(say(&channel, "after").await.unwrap(), "after");
    });
}

// ---- bad configurations ----

#[test]
fn bad_certificates_and_keys_are_clear_errors_at_build() {
    let garbage = Identity::from_pem("not a certificate", "not a key");
    let err = Server::builder()
        .tls(ServerTlsConfig::new(garbage))
        .build()
        .map_err(plexus::Status::from)
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("server certificate"), "{err}");

    // A key that is not the certificate's.
    let mismatched = Identity::from_pem(&pki().server.cert_pem, &pki().client.key_pem);
    let err = Server::builder()
        .tls(ServerTlsConfig::new(mismatched))
        .build()
        .map_err(plexus::Status::from)
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().contains("server certificate and key"),
        "{err}"
    );

    let err = Channel::builder("localhost:1")
        .tls(ClientTlsConfig::new().ca_certificate(Certificate::from_pem("nope")))
        .build()
        .map_err(plexus::Status::from)
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("CA certificate"), "{err}");

    let err = Channel::builder("http://localhost:1")
        .tls(client_tls())
        .build()
        .map_err(plexus::Status::from)
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("plaintext"), "{err}");

    let err = Channel::builder("localhost:1")
        .tls(client_tls().server_name("not a name"))
        .build()
        .map_err(plexus::Status::from)
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);

    let err = Server::builder()
        .handshake_timeout(Duration::ZERO)
        .build()
        .map_err(plexus::Status::from)
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
}

#[test]
fn pem_files_load() {
    let dir = std::env::temp_dir().join(format!("plexus-tls-pem-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key, ca) = (dir.join("s.pem"), dir.join("s.key"), dir.join("ca.pem"));
    std::fs::write(&cert, &pki().server.cert_pem).unwrap();
    std::fs::write(&key, &pki().server.key_pem).unwrap();
    std::fs::write(&ca, pki().ca.cert.pem()).unwrap();
    let identity = Identity::from_pem_files(&cert, &key).unwrap();
    let ca_cert = Certificate::from_pem_file(&ca).unwrap();
    let missing = Certificate::from_pem_file(dir.join("missing.pem")).unwrap_err();
    assert!(missing.to_string().contains("missing.pem"), "{missing}");
    let server = serve(echo().tls(ServerTlsConfig::new(identity)));
    run(async {
        let channel = channel_to(&format!("localhost:{}", server.addr.port()), &server)
            .tls(ClientTlsConfig::new().ca_certificate(ca_cert))
            .build()
            .unwrap();
        assert_eq!(say(&channel, "files").await.unwrap(), "files");
    });
    let _ = std::fs::remove_dir_all(&dir);
}

// ---- helpers ----

/// `fut`'s output if it completes within `limit`.
async fn within<F: Future>(limit: Duration, fut: F) -> Option<F::Output> {
    match select(std::pin::pin!(fut), Timer::after(limit)).await {
        Either::Left((out, _)) => Some(out),
        Either::Right(_) => None,
    }
}

/// A connector that records the addresses it is asked for, then connects with TCP.
#[derive(Default, Clone)]
struct Recorder {
    addresses: Arc<std::sync::Mutex<Vec<String>>>,
    connects: Arc<AtomicUsize>,
}

impl Recorder {
    fn count(&self) -> usize {
        self.connects.load(Ordering::SeqCst)
    }
}

impl Connector for Recorder {
    fn connect(&self, address: &Address) -> BoxFuture<io::Result<BoxedIo>> {
        self.connects.fetch_add(1, Ordering::SeqCst);
        self.addresses.lock().unwrap().push(address.to_string());
        SocketConnector.connect(address)
    }
}

/// One server, two listeners: TLS on the one that was given its own config, plaintext on the
/// other (grpcio's `add_secure_port` beside `add_insecure_port`), the same routes on both.
#[test]
fn a_listener_with_its_own_tls_beside_a_plaintext_one() {
    let server = echo().build().unwrap();
    let plain = Listener::bind_tcp("127.0.0.1:0").unwrap();
    let secure = Listener::bind_tcp("127.0.0.1:0")
        .unwrap()
        .tls(&server_tls())
        .unwrap();
    let plain_addr = plain.local_addr().unwrap();
    let secure_addr = secure.local_addr().unwrap();
    for listener in [plain, secure] {
        let s = server.clone();
        SmolExecutor.spawn(Box::pin(async move {
            let _ = s.serve(listener).await;
        }));
    }
    let by_addr = |target: &str, addr: SocketAddr| {
        Channel::builder(target).resolver(StaticResolver::new([Address::Tcp(addr)]))
    };
    run(async {
        let tls = by_addr("https://localhost", secure_addr)
            .tls(client_tls())
            .build()
            .unwrap();
        assert_eq!(say(&tls, "over tls").await.unwrap(), "over tls");
        let cleartext = by_addr("http://localhost", plain_addr).build().unwrap();
        assert_eq!(
            say(&cleartext, "in the clear").await.unwrap(),
            "in the clear"
        );
        // Plaintext against the TLS listener fails, and says why.
        let wrong = by_addr("http://localhost", secure_addr).build().unwrap();
        expect_failure(say(&wrong, "x").await, Code::Unavailable, &["TLS"]);
        server.shutdown(Duration::ZERO).await;
    });
}

/// A listener's TLS config that cannot load is a configuration error naming the problem.
#[test]
fn a_listener_tls_config_that_does_not_load_is_refused() {
    let bad = ServerTlsConfig::new(Identity::from_pem("not a pem", "nor this"));
    let err = Listener::bind_tcp("127.0.0.1:0")
        .unwrap()
        .tls(&bad)
        .unwrap_err();
    assert!(err.is_config(), "{err}");
    assert!(err.to_string().contains("TLS"), "{err}");
}
