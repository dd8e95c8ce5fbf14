//! Scale-out against a real DNS server (issue 17): dnsmasq, unprivileged on a high port with
//! its own hosts file, answers `svc.plexus.test` with 127.0.0.1, .2 and .3, each running a
//! plexus server on the same port. Channels point at it with a `dns://127.0.0.1:PORT/`
//! authority.
//!
//! - round_robin spreads calls over the three; a fourth address and server (scale up) gets
//!   calls once the channel resolves again; one removed (scale down: its server sends GOAWAY
//!   and stops) fails no call, and the rest share the load.
//! - pick_first with `shuffleAddressList` and servers with `max_connection_age`: connections
//!   move between the servers as they age (the L4 balancer case).
//!
//! Built only with `--features dnsmasq` (the test command installs dnsmasq first and runs it
//! so); `PLEXUS_DNSMASQ` names the binary if it is not `dnsmasq` on PATH or in /usr/sbin.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::pin::pin;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use async_io::Timer;
use bytes::Bytes;
use futures_util::future::{Either, select};
use plexus::{
    BytesCodec, CallOptions, Channel, LbPolicy, Listener, Request, Response, Server, ServerBuilder,
    Status,
};

const NAME: &str = "svc.plexus.test";
const WHO: &str = "/dns.Test/Who";
/// Limit on each phase's wait for something to happen.
const PHASE_LIMIT: Duration = Duration::from_secs(30);

/// dnsmasq answering from a hosts file of ours; killed on drop.
struct Dnsmasq {
    child: Child,
    hosts: PathBuf,
    port: u16,
    dir: PathBuf,
}

impl Dnsmasq {
    fn start(addresses: &[u8]) -> Dnsmasq {
        let binary = dnsmasq_binary();
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "plexus-dns-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let hosts = dir.join("hosts");
        write_hosts(&hosts, addresses);
        // A free UDP port (dnsmasq takes TCP on the same one); another process could take it
        // meanwhile, so a failed start is tried again on a new port.
        for _ in 0..5 {
            let port = UdpSocket::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let user = whoami();
            let mut child = Command::new(&binary)
                .args([
                    "--keep-in-foreground",
                    "--conf-file=/dev/null",
                    "--no-resolv",
                    "--no-hosts",
                    "--bind-interfaces",
                    "--listen-address=127.0.0.1",
                    "--pid-file=",
                    "--log-facility=-",
                    "--local-ttl=0",
                ])
                .arg(format!("--port={port}"))
                .arg(format!("--addn-hosts={}", hosts.display()))
                .arg(format!("--user={user}"))
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
            let server: SocketAddr = ([127, 0, 0, 1], port).into();
            if answers(server) {
                return Dnsmasq {
                    child,
                    hosts,
                    port,
                    dir,
                };
            }
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            eprintln!(
                "dnsmasq on port {port} did not start: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        panic!("dnsmasq did not start (see above)");
    }

    /// Rewrites the hosts file and makes dnsmasq read it again.
    fn set(&self, addresses: &[u8]) {
        write_hosts(&self.hosts, addresses);
        let pid = self.child.id().to_string();
        let status = Command::new("kill").args(["-HUP", &pid]).status().unwrap();
        assert!(status.success(), "kill -HUP dnsmasq failed");
    }

    fn target(&self, port: u16) -> String {
        format!("dns://127.0.0.1:{}/{NAME}:{port}", self.port)
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn dnsmasq_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("PLEXUS_DNSMASQ") {
        return path.into();
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|dir| dir.join("dnsmasq"))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| {
            panic!(
                "dnsmasq is not installed (apt-get install dnsmasq-base; the test command \
                 does it) and PLEXUS_DNSMASQ is not set"
            )
        })
}

fn whoami() -> String {
    let out = Command::new("id").arg("-un").output().unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// Writes `127.0.0.N svc.plexus.test` for each N, through a rename so dnsmasq never reads
/// half a file.
fn write_hosts(path: &Path, addresses: &[u8]) {
    let staged = path.with_extension("new");
    let mut file = std::fs::File::create(&staged).unwrap();
    for n in addresses {
        writeln!(file, "127.0.0.{n} {NAME}").unwrap();
    }
    file.sync_all().unwrap();
    std::fs::rename(&staged, path).unwrap();
}

/// Whether a DNS server answers at `server` (any answer to a query for the name).
fn answers(server: SocketAddr) -> bool {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut query = vec![0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in NAME.split('.') {
        query.push(label.len() as u8);
        query.extend_from_slice(label.as_bytes());
    }
    query.extend_from_slice(&[0, 0, 1, 0, 1]);
    let limit = Instant::now() + Duration::from_secs(10);
    let mut buf = [0u8; 512];
    while Instant::now() < limit {
        let _ = socket.send_to(&query, server);
        if let Ok((n, _)) = socket.recv_from(&mut buf) {
            return n >= 12 && buf[..2] == [0x12, 0x34];
        }
    }
    false
}

/// A plexus server on 127.0.0.N that answers WHO with N.
struct Backend {
    n: u8,
    server: Server,
}

fn backend(n: u8, port: u16, builder: ServerBuilder) -> std::io::Result<Backend> {
    let listener = Listener::bind_tcp(SocketAddr::from(([127, 0, 0, n], port)))?;
    let server = builder
        .unary(WHO, BytesCodec, move |_req: Request<Bytes>| async move {
            Ok(Response::new(Bytes::from(vec![n])))
        })
        .build()
        .unwrap();
    let serving = server.clone();
    std::thread::spawn(move || smol::block_on(serving.serve(listener)));
    Ok(Backend { n, server })
}

/// Backends 1..=count on one port free on every address.
fn backends(count: u8, builder: impl Fn() -> ServerBuilder) -> (u16, Vec<Backend>) {
    'port: for _ in 0..20 {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut started = Vec::new();
        for n in 1..=count {
            match backend(n, port, builder()) {
                Ok(b) => started.push(b),
                Err(_) => {
                    for b in started {
                        smol::block_on(b.server.shutdown(Duration::ZERO));
                    }
                    continue 'port;
                }
            }
        }
        return (port, started);
    }
    panic!("no port free on 127.0.0.1-{count}");
}

/// Which backend answered one call.
async fn who(channel: &Channel) -> Result<u8, Status> {
    let options = CallOptions::new().timeout(Duration::from_secs(20));
    let reply = channel.unary(WHO, Bytes::new(), options).await?;
    Ok(reply.into_message()[0])
}

/// Calls until `done` says the answers so far are enough; every call must succeed.
async fn call_until(
    channel: &Channel,
    what: &str,
    mut done: impl FnMut(&BTreeMap<u8, usize>) -> bool,
) -> BTreeMap<u8, usize> {
    let limit = Instant::now() + PHASE_LIMIT;
    let mut seen = BTreeMap::new();
    let mut calls = 0;
    while !done(&seen) {
        assert!(
            Instant::now() < limit,
            "{what}: not within {PHASE_LIMIT:?} (answers so far {seen:?})"
        );
        let n = who(channel)
            .await
            .unwrap_or_else(|status| panic!("{what}: call {calls} failed: {status:?}"));
        *seen.entry(n).or_default() += 1;
        calls += 1;
        if calls % 20 == 0 {
            // Let the resolver's timer and the servers' tasks run on a busy machine.
            Timer::after(Duration::from_millis(5)).await;
        }
    }
    seen
}

/// Answers of `count` calls in a row.
async fn batch(channel: &Channel, count: usize) -> BTreeMap<u8, usize> {
    let mut seen = BTreeMap::new();
    for i in 0..count {
        let n = who(channel)
            .await
            .unwrap_or_else(|status| panic!("batch call {i} failed: {status:?}"));
        *seen.entry(n).or_default() += 1;
    }
    seen
}

fn run(fut: impl std::future::Future<Output = ()>) {
    smol::block_on(async {
        let limit = Duration::from_secs(120);
        if let Either::Right(_) = select(pin!(fut), Timer::after(limit)).await {
            panic!("test did not finish within {limit:?}");
        }
    })
}

#[test]
fn round_robin_follows_dns_as_servers_come_and_go() {
    let (port, mut servers) = backends(3, Server::builder);
    let dns = Dnsmasq::start(&[1, 2, 3]);
    let channel = Channel::builder(&dns.target(port))
        .lb_policy(LbPolicy::RoundRobin)
        .resolve_interval(Duration::from_millis(200))
        .min_resolve_interval(Duration::from_millis(50))
        .build()
        .unwrap();
    run(async {
        // Spread over the three.
        call_until(&channel, "all three answering", |seen| seen.len() == 3).await;
        let spread = batch(&channel, 60).await;
        assert_eq!(
            spread.keys().copied().collect::<Vec<_>>(),
            [1, 2, 3],
            "{spread:?}"
        );

        // Scale up: a fourth server, then its address.
        servers.push(backend(4, port, Server::builder()).expect("127.0.0.4 on the same port"));
        dns.set(&[1, 2, 3, 4]);
        call_until(&channel, "the new server answering", |seen| {
            seen.contains_key(&4)
        })
        .await;

        // Scale down: the address goes, its server says GOAWAY and stops, and no call fails.
        dns.set(&[1, 2, 4]);
        let leaving = servers.remove(2);
        assert_eq!(leaving.n, 3);
        let stopping = std::thread::spawn(move || {
            smol::block_on(leaving.server.shutdown(Duration::from_secs(10)));
        });
        let mut stopped = false;
        call_until(&channel, "the old server gone", |_| {
            stopped = stopped || stopping.is_finished();
            stopped
        })
        .await;
        stopping.join().unwrap();
        // Once the channel has resolved again, the other three share the calls.
        let rest = call_until(&channel, "calls back to the rest", |seen| {
            seen.values().sum::<usize>() >= 60
        })
        .await;
        assert!(
            !rest.contains_key(&3),
            "the removed server got calls: {rest:?}"
        );
        let spread = batch(&channel, 60).await;
        assert_eq!(
            spread.keys().copied().collect::<Vec<_>>(),
            [1, 2, 4],
            "{spread:?}"
        );
    });
    for backend in servers {
        smol::block_on(backend.server.shutdown(Duration::ZERO));
    }
}

#[test]
fn pick_first_with_aging_connections_moves_between_servers() {
    let aging = || Server::builder().max_connection_age(Duration::from_millis(100));
    let (port, servers) = backends(3, aging);
    let dns = Dnsmasq::start(&[1, 2, 3]);
    let config = r#"{"loadBalancingConfig": [{"pick_first": {"shuffleAddressList": true}}]}"#;
    let channel = Channel::builder(&dns.target(port))
        .default_service_config(config)
        .min_resolve_interval(Duration::from_millis(20))
        .build()
        .unwrap();
    run(async {
        let seen = call_until(&channel, "every server used in turn", |seen| {
            seen.len() == 3
        })
        .await;
        assert_eq!(seen.keys().copied().collect::<Vec<_>>(), [1, 2, 3]);
    });
    for backend in servers {
        smol::block_on(backend.server.shutdown(Duration::ZERO));
    }
}
