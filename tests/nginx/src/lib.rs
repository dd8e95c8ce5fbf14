//! plexus behind nginx: starts nginx (the system's binary) as a gRPC proxy with `grpc_pass`
//! in front of plexus servers, with a config written into a private temporary directory, and
//! the plexus echo backends the test calls through it.
//!
//! Used by `tests/nginx.rs`, which `scripts/test-nginx.sh` runs after installing nginx.

use std::fmt::Write as _;
use std::io::{self, ErrorKind};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use std::{env, fs, thread};

use bytes::Bytes;
use plexus::{
    BytesCodec, Listener, Metadata, Request, RequestStream, Response, ResponseSink, Server, Status,
};

/// Environment variable naming the nginx binary (default: `nginx` on `PATH`, then
/// `/usr/sbin/nginx`, where Debian puts it).
pub const NGINX_ENV: &str = "PLEXUS_NGINX";

/// How long nginx may take to accept connections after it starts (generous for a loaded
/// 2-core machine; it usually takes a few milliseconds).
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// How long nginx may take to exit after `nginx -s stop` before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// Attempts at finding a free port for nginx (another process may take the one we picked
/// between our probe and nginx's bind).
const PORT_ATTEMPTS: usize = 5;

/// Request header nginx adds to every proxied call, so backends can tell it went through nginx.
pub const PROXY_HEADER: &str = "x-proxied-by";

/// Response header and trailer in which a backend names itself.
pub const BACKEND_HEADER: &str = "x-backend";

/// Response header in which a backend repeats the [`PROXY_HEADER`] it received.
pub const SEEN_PROXY_HEADER: &str = "x-seen-proxy";

/// Unary echo: the reply is `<backend>:` followed by the request.
pub const UNARY: &str = "/nginx.Echo/Unary";
/// Server streaming: the request is a decimal count `n`; the replies are `<backend>:0` to
/// `<backend>:<n-1>`.
pub const COUNT: &str = "/nginx.Echo/Count";
/// Client streaming: the reply is `<backend>:<messages>:<total bytes>`.
pub const GATHER: &str = "/nginx.Echo/Gather";
/// Bidi streaming: one reply `<backend>:` + message per message, sent as it arrives.
pub const CHAT: &str = "/nginx.Echo/Chat";
/// Always fails with NOT_FOUND and [`FAIL_MESSAGE`], with a trailer naming the backend.
pub const FAIL: &str = "/nginx.Echo/Fail";
/// The status message of [`FAIL`]: non-ASCII and a `%`, so percent-encoding must survive.
pub const FAIL_MESSAGE: &str = "nothing here: caf\u{e9} 100%";

/// Finds the nginx binary: [`NGINX_ENV`], else `nginx` on `PATH`, else `/usr/sbin/nginx`.
pub fn nginx_binary() -> io::Result<PathBuf> {
    if let Some(path) = env::var_os(NGINX_ENV) {
        return Ok(PathBuf::from(path));
    }
    let on_path: Vec<PathBuf> = env::var_os("PATH")
        .map(|p| env::split_paths(&p).map(|d| d.join("nginx")).collect())
        .unwrap_or_default();
    on_path
        .into_iter()
        .chain([PathBuf::from("/usr/sbin/nginx")])
        .find(|p| p.is_file())
        .ok_or_else(|| {
            io::Error::new(
                ErrorKind::NotFound,
                format!(
                    "nginx not found (set {NGINX_ENV}, or run scripts/test-nginx.sh, which \
                     installs it)"
                ),
            )
        })
}

/// The version of an nginx binary, from `nginx -v` (`nginx version: nginx/1.22.1`).
pub fn nginx_version(binary: &Path) -> io::Result<(u32, u32, u32)> {
    let out = Command::new(binary).arg("-v").output()?;
    let text =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    let bad = || io::Error::other(format!("cannot read the version of nginx in {text:?}"));
    let version = text.split("nginx/").nth(1).ok_or_else(bad)?;
    let version = version.split_whitespace().next().ok_or_else(bad)?;
    let mut parts = version
        .split('.')
        .map(|p| p.parse::<u32>().map_err(|_| bad()));
    let mut next = || parts.next().unwrap_or(Ok(0));
    Ok((next()?, next()?, next()?))
}

/// A running nginx, stopped (and its directory removed) on drop.
pub struct Nginx {
    child: Child,
    binary: PathBuf,
    version: (u32, u32, u32),
    dir: PathBuf,
    addr: SocketAddr,
}

impl Nginx {
    /// Starts `binary` with `grpc_pass` to an upstream of `backends` (round robin), listening
    /// for plaintext HTTP/2 on a free loopback port; returns once it accepts connections.
    pub fn start(binary: &Path, backends: &[SocketAddr]) -> io::Result<Nginx> {
        let version = nginx_version(binary)?;
        let mut last_error = None;
        for _ in 0..PORT_ATTEMPTS {
            match Nginx::try_start(binary, version, backends) {
                Ok(nginx) => return Ok(nginx),
                Err(e) if e.kind() == ErrorKind::AddrInUse => last_error = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last_error.expect("at least one attempt"))
    }

    /// The address nginx listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The error log so far (for failure messages).
    pub fn error_log(&self) -> String {
        fs::read_to_string(self.dir.join("error.log")).unwrap_or_default()
    }

    /// The access log so far: one line per proxied call, with the upstream that served it.
    pub fn access_log(&self) -> String {
        fs::read_to_string(self.dir.join("access.log")).unwrap_or_default()
    }

    fn try_start(
        binary: &Path,
        version: (u32, u32, u32),
        backends: &[SocketAddr],
    ) -> io::Result<Nginx> {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let dir = env::temp_dir().join(format!(
            "plexus-nginx-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir)?;
        let as_root = fs::metadata(&dir)?.uid() == 0;
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let conf = dir.join("nginx.conf");
        fs::write(&conf, config(&dir, addr, backends, version, as_root))?;
        let child = command(binary, version, &dir).spawn()?;
        let mut nginx = Nginx {
            child,
            binary: binary.to_path_buf(),
            version,
            dir,
            addr,
        };
        nginx.wait_ready()?;
        Ok(nginx)
    }

    /// Waits until nginx accepts TCP connections, or fails with its error log if it exits.
    fn wait_ready(&mut self) -> io::Result<()> {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait()? {
                let log = self.error_log();
                let kind = if log.contains("Address already in use") {
                    ErrorKind::AddrInUse
                } else {
                    ErrorKind::Other
                };
                return Err(io::Error::new(
                    kind,
                    format!("nginx exited at start-up ({status}); error log:\n{log}"),
                ));
            }
            if TcpStream::connect_timeout(&self.addr, Duration::from_secs(1)).is_ok() {
                return Ok(());
            }
            if started.elapsed() > START_TIMEOUT {
                return Err(io::Error::new(
                    ErrorKind::TimedOut,
                    format!(
                        "nginx did not accept connections on {} within {START_TIMEOUT:?}; \
                         error log:\n{}",
                        self.addr,
                        self.error_log()
                    ),
                ));
            }
            // Polling a port has no event to wait on; nginx is usually up within a few ms.
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // `nginx -s stop` signals the master (from the pid file), which stops its worker and
        // exits; killing the master outright would leave the worker behind.
        let _ = command(&self.binary, self.version, &self.dir)
            .args(["-s", "stop"])
            .status();
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            match self.child.try_wait() {
                Ok(Some(_)) | Err(_) => break,
                Ok(None) => thread::sleep(Duration::from_millis(20)),
            }
        }
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// `nginx` with its prefix, configuration and start-up error log in `dir`, without a terminal.
fn command(binary: &Path, version: (u32, u32, u32), dir: &Path) -> Command {
    let mut cmd = Command::new(binary);
    cmd.arg("-p").arg(dir).arg("-c").arg(dir.join("nginx.conf"));
    // Before the configuration is read nginx logs to its built-in path, which a user other
    // than root cannot write; `-e` (nginx 1.19.5) moves that log too.
    if version >= (1, 19, 5) {
        cmd.arg("-e").arg(dir.join("error.log"));
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    cmd
}

/// The nginx configuration: one worker, every path in `dir`, an upstream of `backends`
/// behind `grpc_pass`, plaintext HTTP/2 on `addr`.
fn config(
    dir: &Path,
    addr: SocketAddr,
    backends: &[SocketAddr],
    version: (u32, u32, u32),
    as_root: bool,
) -> String {
    let d = dir.display();
    let mut upstream = String::new();
    for b in backends {
        let _ = writeln!(upstream, "        server {b};");
    }
    // nginx 1.25.1 replaced `listen ... http2` with the `http2` directive.
    let listen = if version >= (1, 25, 1) {
        format!("listen {addr};\n        http2 on;")
    } else {
        format!("listen {addr} http2;")
    };
    // Run as root (as CI does), the worker would switch to an unprivileged user that cannot
    // enter the private temporary directory; it stays root here, on loopback only.
    let user = if as_root { "user root root;\n" } else { "" };
    format!(
        r#"# Written by plexus's nginx test (tests/nginx).
{user}worker_processes 1;
daemon off;
pid "{d}/nginx.pid";
error_log "{d}/error.log" warn;

events {{
    worker_connections 256;
}}

http {{
    log_format grpc '$request_uri $status upstream=$upstream_addr grpc-status=$sent_trailer_grpc_status';
    access_log "{d}/access.log" grpc;
    client_body_temp_path "{d}/client_body";
    proxy_temp_path "{d}/proxy";
    fastcgi_temp_path "{d}/fastcgi";
    uwsgi_temp_path "{d}/uwsgi";
    scgi_temp_path "{d}/scgi";
    # gRPC streams are long: the default 1m cap on a request body would end any call that
    # sends more than 1 MiB in total with HTTP 413.
    client_max_body_size 0;

    upstream plexus_backends {{
{upstream}        keepalive 8;
    }}

    server {{
        {listen}
        location / {{
            grpc_set_header {PROXY_HEADER} nginx;
            grpc_pass grpc://plexus_backends;
        }}
    }}
}}
"#
    )
}

/// A plexus server that answers the echo methods above as backend `name`, listening on a
/// free loopback port; returns the server (for shutdown) and its address.
pub fn start_backend(name: &'static str) -> Result<(Server, SocketAddr), Status> {
    let identity = move |md: &Metadata| -> Result<Metadata, Status> {
        let mut out = Metadata::new();
        out.append(BACKEND_HEADER, name)?;
        out.append(SEEN_PROXY_HEADER, md.get(PROXY_HEADER).unwrap_or("none"))?;
        Ok(out)
    };
    let tagged = move |msg: &[u8]| -> Bytes {
        let mut out = format!("{name}:").into_bytes();
        out.extend_from_slice(msg);
        out.into()
    };
    let server = Server::builder()
        .unary(UNARY, BytesCodec, move |req: Request<Bytes>| async move {
            let headers = identity(req.metadata())?;
            let mut trailers = Metadata::new();
            trailers.append(BACKEND_HEADER, name)?;
            Ok(Response::from_parts(
                headers,
                tagged(req.message()),
                trailers,
            ))
        })
        .server_streaming(
            COUNT,
            BytesCodec,
            move |req: Request<Bytes>, sink: ResponseSink<Bytes>| async move {
                let n: usize = std::str::from_utf8(req.message())
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| Status::invalid_argument("expected a decimal count"))?;
                sink.send_initial_metadata(identity(req.metadata())?)
                    .await?;
                for i in 0..n {
                    sink.send(tagged(i.to_string().as_bytes())).await?;
                }
                Ok(())
            },
        )
        .client_streaming(
            GATHER,
            BytesCodec,
            move |mut req: Request<RequestStream<Bytes>>| async move {
                let headers = identity(req.metadata())?;
                let (mut count, mut bytes) = (0usize, 0usize);
                while let Some(msg) = req.message_mut().message().await? {
                    count += 1;
                    bytes += msg.len();
                }
                let reply = tagged(format!("{count}:{bytes}").as_bytes());
                Ok(Response::from_parts(headers, reply, Metadata::new()))
            },
        )
        .bidi_streaming(
            CHAT,
            BytesCodec,
            move |mut req: Request<RequestStream<Bytes>>, sink: ResponseSink<Bytes>| async move {
                sink.send_initial_metadata(identity(req.metadata())?)
                    .await?;
                while let Some(msg) = req.message_mut().message().await? {
                    sink.send(tagged(&msg)).await?;
                }
                Ok(())
            },
        )
        .unary(FAIL, BytesCodec, move |_req: Request<Bytes>| async move {
            let mut trailers = Metadata::new();
            trailers.append(BACKEND_HEADER, name)?;
            Err::<Response<Bytes>, _>(Status::not_found(FAIL_MESSAGE).with_metadata(trailers))
        })
        .build()?;
    let listener =
        Listener::bind_tcp("127.0.0.1:0").map_err(|e| Status::internal(e.to_string()))?;
    let addr = listener
        .local_addr()
        .ok_or_else(|| Status::internal("a TCP listener has an address"))?;
    let serving = server.clone();
    smol::spawn(async move { serving.serve(listener).await }).detach();
    Ok((server, addr))
}
