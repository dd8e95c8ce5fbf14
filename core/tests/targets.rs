//! Target forms end to end: a real server reached through every kind of target the naming doc
//! defines (`unix:` relative and absolute, `unix-abstract:`, `ipv4:`, `ipv6:`, `dns:` and bare
//! `host:port`), DNS failures, and a user-supplied [`Resolver`]. Every test has a hard timeout.

use std::future::Future;
use std::io;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::future::{Either, select};
use plexus::rt::BoxFuture;
use plexus::transport::{Address, Connector, SocketConnector};
use plexus::{
    BytesCodec, CallOptions, Channel, Code, Listener, Resolver, Response, Server, StaticResolver,
    Status,
};

/// Hard limit on one test body.
const TEST_TIMEOUT: Duration = Duration::from_secs(20);

/// How long a failing DNS lookup may take before the test calls it a hang.
const DNS_FAILURE_LIMIT: Duration = Duration::from_secs(10);

const ECHO: &str = "/targets.Echo/Say";

/// Runs `fut` on smol, failing the test if it takes longer than [`TEST_TIMEOUT`].
fn run<F: Future>(fut: F) -> F::Output {
    smol::block_on(async {
        match select(std::pin::pin!(fut), async_io::Timer::after(TEST_TIMEOUT)).await {
            Either::Left((out, _)) => out,
            Either::Right(_) => panic!("test did not finish within {TEST_TIMEOUT:?}"),
        }
    })
}

/// An echo server serving `listener` until the returned handle is dropped.
fn serve(listener: Listener) -> Serving {
    let server = Server::builder()
        .unary(ECHO, BytesCodec, |req: plexus::Request<Bytes>| async move {
            Ok(Response::new(req.into_message()))
        })
        .build()
        .expect("server settings are valid");
    let s = server.clone();
    smol::spawn(async move { s.serve(listener).await }).detach();
    Serving(server)
}

/// Shuts its server down when dropped.
struct Serving(Server);

impl Drop for Serving {
    fn drop(&mut self) {
        let server = self.0.clone();
        smol::spawn(async move { server.shutdown(Duration::from_millis(100)).await }).detach();
    }
}

/// One echo call through a channel built from `target`; panics naming the target on failure.
async fn echo_through(channel: &Channel, target: &str) {
    let reply = channel
        .unary(
            ECHO,
            Bytes::from_static(b"hello"),
            CallOptions::new().timeout(Duration::from_secs(5)),
        )
        .await
        .unwrap_or_else(|status| panic!("{target}: {status}"));
    assert_eq!(reply.message().as_ref(), b"hello", "{target}");
}

async fn echo(target: &str) {
    let channel = Channel::new(target).unwrap_or_else(|status| panic!("{target}: {status}"));
    echo_through(&channel, target).await;
}

/// A directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("plexus-targets-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir(&path).expect("create temp dir");
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `to` (absolute) as a path relative to the current directory: up to the root, then down.
fn relative_to_cwd(to: &Path) -> PathBuf {
    let cwd = std::env::current_dir().expect("current dir");
    let ups = cwd
        .components()
        .filter(|c| matches!(c, Component::Normal(_)))
        .count();
    let mut rel: PathBuf = std::iter::repeat_n("..", ups).collect();
    rel.extend(
        to.components()
            .filter(|c| !matches!(c, Component::RootDir | Component::Prefix(_))),
    );
    rel
}

#[cfg(unix)]
#[test]
fn unix_relative_path() {
    let dir = TempDir::new();
    let path = dir.0.join("grpc.sock");
    let _server = serve(Listener::bind_unix(&path).expect("bind unix"));
    let rel = relative_to_cwd(&path);
    assert!(rel.is_relative());
    run(echo(&format!("unix:{}", rel.display())));
}

#[cfg(unix)]
#[test]
fn unix_absolute_paths() {
    let dir = TempDir::new();
    let path = dir.0.join("grpc.sock");
    let _server = serve(Listener::bind_unix(&path).expect("bind unix"));
    run(async {
        echo(&format!("unix://{}", path.display())).await;
        echo(&format!("unix:{}", path.display())).await;
    });
}

#[cfg(target_os = "linux")]
#[test]
fn unix_abstract_name() {
    // A space and a byte that is not UTF-8: the target carries them percent-encoded.
    let mut name = format!("plexus targets {}-", std::process::id()).into_bytes();
    name.push(0xff);
    let _server = serve(Listener::bind_unix_abstract(&name).expect("bind abstract"));
    let target = Address::UnixAbstract(name).to_string();
    assert!(
        target.contains("%20") && target.ends_with("%FF"),
        "{target}"
    );
    run(echo(&target));
}

#[cfg(target_os = "linux")]
#[test]
fn unix_abstract_name_nobody_listens_on_is_unavailable() {
    let target = format!("unix-abstract:plexus-nobody-{}", std::process::id());
    run(async {
        let status = Channel::new(&target).unwrap().connect().await.unwrap_err();
        assert_eq!(status.code(), Code::Unavailable, "{status}");
        assert!(status.message().contains(&target), "{status}");
    });
}

#[test]
fn ipv4_list() {
    let listener = Listener::bind_tcp("127.0.0.1:0").expect("bind tcp");
    let port = listener.local_addr().unwrap().port();
    let _server = serve(listener);
    run(async {
        echo(&format!("ipv4:127.0.0.1:{port}")).await;
        echo(&format!("ipv4:127.0.0.1:{port},127.0.0.1:{port}")).await;
        echo(&format!("127.0.0.1:{port}")).await;
        echo(&format!("http://127.0.0.1:{port}")).await;
    });
}

#[test]
fn ipv6_list() {
    let listener = match Listener::bind_tcp("[::1]:0") {
        Ok(listener) => listener,
        Err(err) if err.kind() == io::ErrorKind::AddrNotAvailable => {
            println!("SKIPPED ipv6_list: this host has no IPv6 loopback ({err})");
            return;
        }
        Err(err) => panic!("bind [::1]:0: {err}"),
    };
    let port = listener.local_addr().unwrap().port();
    let _server = serve(listener);
    run(async {
        echo(&format!("ipv6:[::1]:{port}")).await;
        echo(&format!("[::1]:{port}")).await;
    });
}

#[test]
fn dns_and_bare_host_names() {
    let listener = Listener::bind_tcp("127.0.0.1:0").expect("bind tcp");
    let port = listener.local_addr().unwrap().port();
    let _server = serve(listener);
    run(async {
        echo(&format!("dns:///localhost:{port}")).await;
        echo(&format!("dns:localhost:{port}")).await;
        echo(&format!("localhost:{port}")).await;
        echo(&format!("http://localhost:{port}/")).await;
    });
}

#[test]
fn unresolvable_name_is_unavailable_quickly() {
    run(async {
        let channel = Channel::new("dns:///nonexistent.invalid:50051").unwrap();
        let started = Instant::now();
        let status = channel.connect().await.unwrap_err();
        assert!(
            started.elapsed() < DNS_FAILURE_LIMIT,
            "took {:?}",
            started.elapsed()
        );
        assert_eq!(status.code(), Code::Unavailable, "{status}");
        assert!(
            status
                .message()
                .contains("DNS resolution of nonexistent.invalid failed"),
            "{status}"
        );
        let status = channel
            .unary(ECHO, Bytes::new(), CallOptions::new())
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unavailable, "{status}");
    });
}

/// A resolver that answers a fixed list and counts how often it was asked.
struct Counting {
    answer: Result<Vec<Address>, Status>,
    calls: Arc<AtomicUsize>,
}

impl Resolver for Counting {
    fn resolve(&self) -> BoxFuture<Result<Vec<Address>, Status>> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let answer = self.answer.clone();
        Box::pin(async move { answer })
    }
}

#[test]
fn custom_resolver_replaces_dns() {
    let listener = Listener::bind_tcp("127.0.0.1:0").expect("bind tcp");
    let live = Address::Tcp(listener.local_addr().unwrap());
    let _server = serve(listener);
    // A port nothing listens on (just released), tried first: the channel moves on.
    let dead = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        Address::Tcp(probe.local_addr().unwrap())
    };
    let calls = Arc::new(AtomicUsize::new(0));
    // The name cannot resolve: only the custom resolver's answer can make this work.
    let target = "dns:///my-service.invalid:443";
    let channel = Channel::builder(target)
        .resolver(Counting {
            answer: Ok(vec![dead, live]),
            calls: calls.clone(),
        })
        .build()
        .unwrap();
    run(echo_through(&channel, target));
    assert_eq!(calls.load(Ordering::Relaxed), 1);
}

#[test]
fn custom_resolver_failures_reach_the_caller() {
    run(async {
        for (answer, code, text) in [
            (Ok(vec![]), Code::Unavailable, "no addresses"),
            (
                Err(Status::unavailable("registry is down")),
                Code::Unavailable,
                "registry is down",
            ),
            (
                Err(Status::not_found("no such service")),
                Code::NotFound,
                "no such service",
            ),
        ] {
            let channel = Channel::builder("dns:///svc.invalid")
                .resolver(Counting {
                    answer,
                    calls: Arc::default(),
                })
                .build()
                .unwrap();
            let status = channel.connect().await.unwrap_err();
            assert_eq!(status.code(), code, "{status}");
            assert!(status.message().contains(text), "{status}");
        }
    });
}

#[test]
fn static_resolver_works_with_any_target() {
    let dir = TempDir::new();
    let path = dir.0.join("grpc.sock");
    let _server = serve(Listener::bind_unix(&path).expect("bind unix"));
    let channel = Channel::builder("http://backend.invalid")
        .resolver(StaticResolver::new([Address::Unix(path)]))
        .build()
        .unwrap();
    run(echo_through(&channel, "static resolver"));
}

#[test]
fn socket_connector_reports_refused_addresses() {
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    run(async {
        let err = match SocketConnector.connect(&Address::Tcp(dead)).await {
            Ok(_) => panic!("connected to a closed port"),
            Err(err) => err,
        };
        assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused, "{err}");
    });
}

#[test]
fn malformed_targets_fail_at_build() {
    for target in [
        "unix://host/path",
        "ipv4:1.2.3",
        "ipv6:::1:80:x",
        "dns://ns.example/x",
        "https://example.com/path",
        "unix-abstract:",
    ] {
        let err = Channel::new(target).unwrap_err();
        assert!(err.is_config(), "{target}: {err}");
        let status = plexus::Status::from(err);
        assert_eq!(status.code(), Code::InvalidArgument, "{target}: {status}");
        assert!(status.message().contains(target), "{target}: {status}");
    }
}

/// A resolver whose answer the test changes, counting how often it was asked.
#[derive(Clone, Default)]
struct Switchable {
    answer: Arc<std::sync::Mutex<Vec<Address>>>,
    calls: Arc<AtomicUsize>,
}

impl Switchable {
    fn set(&self, addresses: Vec<Address>) {
        *self.answer.lock().unwrap() = addresses;
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

impl Resolver for Switchable {
    fn resolve(&self) -> BoxFuture<Result<Vec<Address>, Status>> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let answer = self.answer.lock().unwrap().clone();
        Box::pin(async move { Ok(answer) })
    }
}

/// A server answering every call to [`ECHO`] with `name`.
fn serve_named(name: &'static str) -> (Serving, Address) {
    let listener = Listener::bind_tcp("127.0.0.1:0").expect("bind tcp");
    let address = Address::Tcp(listener.local_addr().unwrap());
    let server = Server::builder()
        .unary(
            ECHO,
            BytesCodec,
            move |_req: plexus::Request<Bytes>| async move {
                Ok(Response::new(Bytes::from_static(name.as_bytes())))
            },
        )
        .build()
        .expect("server settings are valid");
    let s = server.clone();
    smol::spawn(async move { s.serve(listener).await }).detach();
    (Serving(server), address)
}

/// Waits (polling every 10 ms) until `done` holds, failing after 5 s.
async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let give_up = Instant::now() + Duration::from_secs(5);
    while !done() {
        assert!(Instant::now() < give_up, "gave up waiting: {what}");
        async_io::Timer::after(Duration::from_millis(10)).await;
    }
}

#[test]
fn resolution_repeats_on_a_timer_while_connected_and_stops_when_idle() {
    run(async {
        let (_a, a) = serve_named("a");
        let (_b, b) = serve_named("b");
        let resolver = Switchable::default();
        resolver.set(vec![a]);
        let channel = Channel::builder("dns:///svc.invalid")
            .resolver(resolver.clone())
            .resolve_interval(Duration::from_millis(100))
            .idle_timeout(Duration::from_millis(600))
            .build()
            .unwrap();
        let who = || async {
            let reply = channel
                .unary(ECHO, Bytes::new(), CallOptions::new())
                .await
                .expect("call succeeds");
            reply.message().clone()
        };
        assert_eq!(who().await.as_ref(), b"a");

        // No call is made while the addresses change: only the timer can notice.
        resolver.set(vec![b]);
        let before = resolver.calls();
        eventually("two timed resolutions", || resolver.calls() >= before + 2).await;
        assert_eq!(
            who().await.as_ref(),
            b"b",
            "new calls follow the new address"
        );
        assert_eq!(channel.stats().endpoints.len(), 1);

        // Once idle, the channel stops resolving.
        eventually("the channel goes idle", || {
            channel.state() == plexus::ConnectivityState::Idle
        })
        .await;
        async_io::Timer::after(Duration::from_millis(150)).await;
        let idle = resolver.calls();
        async_io::Timer::after(Duration::from_millis(500)).await;
        assert_eq!(resolver.calls(), idle, "an idle channel does not resolve");
    });
}
