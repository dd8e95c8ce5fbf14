//! `plexus-bench matrix`: every server × every client × every case, in alternating rounds,
//! each client in a fresh process; medians to `latest.json`, `latest.md` and `latest.svg`
//! (`latest-loadN.*` when `--load N` runs N CPU hogs beside each pair).
//!
//! Order: for each case, `rounds` rounds; each round runs every (server, client) pair, and
//! every other round runs them in reverse order (A B C … C B A …), so slow drift in the
//! machine's load hits every pair alike. All servers stay up for the whole run; an idle one
//! costs nothing. The hogs of `--load` start before each pair's client and are killed when it
//! has finished, so they load the client's warm-up and measuring window and nothing else.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use crate::args::Args;
use crate::chart;
use crate::hogs::Hogs;
use crate::load::Rpc;
use crate::sys::{die_with_parent, process_cpu_time};

/// One benchmark case.
#[derive(Debug, Clone, Copy)]
pub struct Case {
    /// Short name, used in file keys and `--cases`.
    pub name: &'static str,
    /// What a reader sees.
    pub label: &'static str,
    /// The method.
    pub rpc: Rpc,
    /// Calls or streams in flight.
    pub concurrency: usize,
    /// Payload bytes each way.
    pub payload: usize,
}

impl Case {
    /// Whether the case is about bytes moved rather than calls made.
    pub fn is_throughput(&self) -> bool {
        self.payload >= 64 * 1024
    }
}

/// The five cases of the issue. Payloads are 0 bytes unless named, as in gRPC's own
/// ping-pong scenarios; every response asks for the request's size back.
pub const CASES: [Case; 5] = [
    Case {
        name: "unary-1",
        label: "unary, 1 in flight",
        rpc: Rpc::Unary,
        concurrency: 1,
        payload: 0,
    },
    Case {
        name: "unary-64",
        label: "unary, 64 in flight",
        rpc: Rpc::Unary,
        concurrency: 64,
        payload: 0,
    },
    Case {
        name: "unary-4k-64",
        label: "unary 4 KiB, 64 in flight",
        rpc: Rpc::Unary,
        concurrency: 64,
        payload: 4096,
    },
    Case {
        name: "stream-64",
        label: "streaming ping-pong, 64 streams",
        rpc: Rpc::Streaming,
        concurrency: 64,
        payload: 0,
    },
    Case {
        name: "stream-1m",
        label: "streaming 1 MiB messages, 1 stream",
        rpc: Rpc::Streaming,
        concurrency: 1,
        payload: 1024 * 1024,
    },
];

/// Servers, in table order: plexus on its default executor and on `SmolExecutor`, the C echo
/// server on the C ABI; the peers.
pub const SERVERS: [&str; 5] = ["plexus", "plexus-smol", "plexus-c", "tonic", "grpcio"];
/// Clients, in table order: plexus in Rust (default executor, then `SmolExecutor`), through
/// the C ABI and from Python; the peers.
pub const CLIENTS: [&str; 6] = [
    "plexus",
    "plexus-smol",
    "plexus-c",
    "plexus-py",
    "tonic",
    "grpcio",
];

/// Servers run only when `--servers` names them: the C echo server with its unary calls
/// through a completion queue to its threads (`plexus-c-queue`; `plexus-c` answers them in a
/// callback on plexus's worker); the Python servers, each running the same grpcio-generated
/// servicer: grpcio's thread-pool server (`grpcio` is its asyncio one), and plexus's
/// grpcio-shaped servers over the Rust server, asyncio (`plexus-py`) and thread-pool
/// (`plexus-py-sync`).
pub const EXTRA_SERVERS: [&str; 4] = [
    "plexus-c-queue",
    "grpcio-sync",
    "plexus-py",
    "plexus-py-sync",
];

/// Clients run only when `--clients` names them: plexus with a retry policy that never has
/// to retry, with retries on and off (the cost of retries being on).
pub const EXTRA_CLIENTS: [&str; 2] = ["plexus-retry", "plexus-retry-off"];

const USAGE: &str = "plexus-bench matrix
    [--servers plexus,plexus-smol,plexus-c,tonic,grpcio,plexus-c-queue,grpcio-sync,plexus-py,plexus-py-sync]
    [--clients plexus,plexus-smol,plexus-c,plexus-py,tonic,grpcio,plexus-retry,plexus-retry-off]
    [--cases unary-1,unary-64,unary-4k-64,stream-64,stream-1m] [--rounds 3] [--duration 3]
    [--warmup 1] [--load 0] [--out benches/results] [--root REPO] [--python PATH]
    [--update-readme] [--smoke]

Runs every server x client pair on every case, `--rounds` alternating rounds of `--duration`
seconds (after `--warmup`) per cell, each client in its own process. plexus-smol is the
plexus server or Rust client with everything (channel or server, and the client's call
loops) on SmolExecutor instead of plexus's own pool. The plexus-c server is the C echo server
on libplexus's server ABI (benches/c/echo_server.c), answering unary calls in a callback on
plexus's worker; plexus-c-queue (only when named) is the same server taking them from a
completion queue on its own threads. grpcio-sync, plexus-py and plexus-py-sync
(only when named) are Python servers running one grpcio-generated servicer: grpcio's
thread-pool server (grpcio is its asyncio one), plexus.aio.server and plexus.server.
plexus-retry and plexus-retry-off (only when
named) are the plexus client with a service-config retry policy on the benchmark methods,
which the servers never make it use, with retries enabled and disabled: the cost of having
retries on.

--load N starts N CPU hogs (`plexus-bench spin`, one busy loop each) before each pair's
client and kills them after it; the results record N.

Writes latest.json, latest.md and latest.svg into --out (latest-loadN.* under --load N, so
idle and loaded tables sit side by side); --update-readme also rewrites the README's table
between <!-- bench:begin --> and <!-- bench:end --> (idle) or <!-- bench-load:begin --> and
<!-- bench-load:end --> (--load N). --smoke: one round of 0.15 s cells, the test command's
check that the harness still runs; its figures mean nothing and are not checked. Clients or
servers that are not available are skipped with the reason in the results.";

/// Settings of one matrix run.
#[derive(Debug, Clone)]
struct Settings {
    root: PathBuf,
    out: PathBuf,
    python: PathBuf,
    rounds: usize,
    duration: f64,
    warmup: f64,
    cases: Vec<Case>,
    servers: Vec<String>,
    clients: Vec<String>,
    update_readme: bool,
    smoke: bool,
    /// CPU hogs beside each pair.
    load: usize,
}

impl Settings {
    /// File name of the outputs without extension: `latest`, or `latest-loadN` under load.
    fn stem(&self) -> String {
        output_stem(self.load)
    }
}

/// `latest` for an idle run, `latest-loadN` for a run with N hogs.
pub fn output_stem(load: usize) -> String {
    if load == 0 {
        "latest".into()
    } else {
        format!("latest-load{load}")
    }
}

/// Entry point of `plexus-bench matrix`.
pub fn main(raw: &[String]) -> Result<(), String> {
    if raw.iter().any(|a| a == "--help" || a == "-h") {
        println!("{USAGE}");
        return Ok(());
    }
    let args = Args::parse(
        raw,
        &[
            "servers", "clients", "cases", "rounds", "duration", "warmup", "out", "root", "python",
            "load",
        ],
        &["update-readme", "smoke"],
    )?;
    let smoke = args.switch("smoke");
    let root = match args.get("root") {
        Some(r) => PathBuf::from(r),
        None => default_root(),
    };
    let case_names = args.list("cases", &CASES.map(|c| c.name));
    let mut cases = Vec::new();
    for name in &case_names {
        let case = CASES
            .iter()
            .find(|c| c.name == name)
            .ok_or_else(|| format!("unknown case {name:?}"))?;
        cases.push(*case);
    }
    let servers = args.list("servers", &SERVERS);
    let clients = args.list("clients", &CLIENTS);
    for s in &servers {
        if !SERVERS.contains(&s.as_str()) && !EXTRA_SERVERS.contains(&s.as_str()) {
            return Err(format!(
                "unknown server {s:?} (known: {SERVERS:?} and {EXTRA_SERVERS:?})"
            ));
        }
    }
    for c in &clients {
        if !CLIENTS.contains(&c.as_str()) && !EXTRA_CLIENTS.contains(&c.as_str()) {
            return Err(format!(
                "unknown client {c:?} (known: {CLIENTS:?} and {EXTRA_CLIENTS:?})"
            ));
        }
    }
    let settings = Settings {
        out: args
            .get("out")
            .map_or_else(|| root.join("benches/results"), PathBuf::from),
        python: args
            .get("python")
            .map_or_else(|| root.join(".venv/bin/python"), PathBuf::from),
        rounds: args.parsed("rounds", if smoke { 1 } else { 3 })?,
        duration: args.parsed("duration", if smoke { 0.15 } else { 3.0 })?,
        warmup: args.parsed("warmup", if smoke { 0.05 } else { 1.0 })?,
        cases,
        servers,
        clients,
        update_readme: args.switch("update-readme"),
        smoke,
        load: args.parsed("load", 0usize)?,
        root,
    };
    if settings.rounds == 0 || settings.duration <= 0.0 || settings.warmup < 0.0 {
        return Err("--rounds and --duration must be positive, --warmup not negative".into());
    }
    if settings.load > MAX_LOAD {
        return Err(format!(
            "--load {} is more hogs than makes sense (at most {MAX_LOAD})",
            settings.load
        ));
    }
    run(&settings)
}

/// The most CPU hogs `--load` starts: far beyond any useful contention, and a typo like
/// `--load 200` should not fork-bomb the machine.
const MAX_LOAD: usize = 64;

/// The repository root: two levels above this crate's manifest, where it was built.
fn default_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

// ---- processes ----

/// How to start one kind of client or server, or why it cannot be.
#[derive(Debug, Clone)]
enum Peer {
    /// The command (program and leading arguments) and extra environment.
    Ready {
        program: PathBuf,
        args: Vec<String>,
        env: Vec<(String, String)>,
    },
    /// Not available in this checkout or on this machine.
    Skipped(String),
}

struct Env {
    rust: PathBuf,
    python: PathBuf,
    py_script: PathBuf,
    py_env: Vec<(String, String)>,
    grpcio: Result<(), String>,
}

impl Env {
    fn rust(&self, args: &[&str]) -> Peer {
        Peer::Ready {
            program: self.rust.clone(),
            args: args.iter().map(|s| s.to_string()).collect(),
            env: Vec::new(),
        }
    }

    fn python(&self, args: &[&str], extra: &[(String, String)]) -> Peer {
        let mut env = self.py_env.clone();
        env.extend(extra.iter().cloned());
        let mut all = vec![self.py_script.display().to_string()];
        all.extend(args.iter().map(|s| s.to_string()));
        Peer::Ready {
            program: self.python.clone(),
            args: all,
            env,
        }
    }

    fn server(&self, name: &str, root: &Path) -> Peer {
        let sync = ["server", "--api", "sync"];
        match name {
            "plexus" => self.rust(&["server", "--impl", "plexus"]),
            "plexus-smol" => self.rust(&["server", "--impl", "plexus", "--executor", "smol"]),
            "plexus-c" => c_program(root, "build-echo-server.sh", &["server"]),
            "plexus-c-queue" => c_program(root, "build-echo-server.sh", &["server", "--queue"]),
            "tonic" => self.rust(&["server", "--impl", "tonic"]),
            "grpcio" => match &self.grpcio {
                Ok(()) => self.python(&["server"], &[]),
                Err(why) => Peer::Skipped(why.clone()),
            },
            "grpcio-sync" => match &self.grpcio {
                Ok(()) => self.python(&sync, &[]),
                Err(why) => Peer::Skipped(why.clone()),
            },
            "plexus-py" => self.plexus_python(root, &["server", "--impl", "plexus"]),
            "plexus-py-sync" => {
                self.plexus_python(root, &["server", "--impl", "plexus", "--api", "sync"])
            }
            other => Peer::Skipped(format!("unknown server {other}")),
        }
    }

    fn client(&self, name: &str, root: &Path) -> Peer {
        match name {
            "plexus" => self.rust(&["client", "--impl", "plexus"]),
            "plexus-smol" => self.rust(&["client", "--impl", "plexus", "--executor", "smol"]),
            "plexus-retry" => self.rust(&["client", "--impl", "plexus", "--retries", "on"]),
            "plexus-retry-off" => self.rust(&["client", "--impl", "plexus", "--retries", "off"]),
            "tonic" => self.rust(&["client", "--impl", "tonic"]),
            "grpcio" => match &self.grpcio {
                Ok(()) => self.python(&["client", "--impl", "grpcio"], &[]),
                Err(why) => Peer::Skipped(why.clone()),
            },
            "plexus-py" => self.plexus_python(root, &["client", "--impl", "plexus"]),
            "plexus-c" => c_program(root, "build-bench-client.sh", &["client"]),
            other => Peer::Skipped(format!("unknown client {other}")),
        }
    }

    /// bench_peer.py with `args` on plexus's Python package (bindings/python): its client
    /// drives the same grpcio-tools stubs as the grpcio client, its servers run the same
    /// servicer as grpcio's.
    fn plexus_python(&self, root: &Path, args: &[&str]) -> Peer {
        if let Err(why) = &self.grpcio {
            return Peer::Skipped(why.clone());
        }
        let package = root.join("bindings/python");
        if !package.join("plexus").is_dir() {
            return Peer::Skipped(
                "plexus's Python package (bindings/python) is not in this checkout yet".into(),
            );
        }
        let mut env = vec![("PYTHONPATH".to_string(), package.display().to_string())];
        if std::env::var_os("PLEXUS_LIBRARY").is_none() {
            // benches/run.sh builds libplexus in the profile it names here.
            let profile =
                std::env::var("PLEXUS_BENCH_PROFILE").unwrap_or_else(|_| "release".into());
            for name in ["libplexus.so", "libplexus_ffi.so"] {
                let lib = root.join("target").join(&profile).join(name);
                if lib.is_file() {
                    env.push(("PLEXUS_LIBRARY".into(), lib.display().to_string()));
                    break;
                }
            }
        }
        let probe = Command::new(&self.python)
            .args(["-c", "import plexus.aio"])
            .envs(env.iter().cloned())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output();
        match probe {
            Ok(out) if out.status.success() => self.python(args, &env),
            Ok(out) => Peer::Skipped(format!(
                "`import plexus.aio` failed (benches/run.sh builds libplexus): {}",
                last_line(&String::from_utf8_lossy(&out.stderr))
            )),
            Err(e) => Peer::Skipped(format!("cannot run {}: {e}", self.python.display())),
        }
    }
}

/// Hook: the C client (benches/c/bench_client.c) or the C echo server (benches/c/echo_server.c)
/// through libplexus's C ABI. Each is built by its script in benches/c (`script`), which prints
/// the binary's path; the client takes the same flags and prints the same JSON as
/// `plexus-bench client`, the server takes `--listen` and prints the same line as
/// `plexus-bench server`. `command` is the first argument, `client` or `server`.
fn c_program(root: &Path, script: &str, args: &[&str]) -> Peer {
    if !root.join("include/plexus.h").is_file() {
        return Peer::Skipped("the C ABI (include/plexus.h) is not in this checkout yet".into());
    }
    let script = root.join("benches/c").join(script);
    if !script.is_file() {
        return Peer::Skipped(format!("no {} yet", script.display()));
    }
    match Command::new("bash")
        .arg(&script)
        .stderr(Stdio::inherit())
        .output()
    {
        Ok(out) if out.status.success() => {
            let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
            Peer::Ready {
                program: PathBuf::from(path),
                args: args.iter().map(|a| a.to_string()).collect(),
                env: Vec::new(),
            }
        }
        Ok(out) => Peer::Skipped(format!(
            "building with {} failed (exit {:?})",
            script.display(),
            out.status.code()
        )),
        Err(e) => Peer::Skipped(format!("cannot run {}: {e}", script.display())),
    }
}

fn last_line(text: &str) -> String {
    text.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .to_string()
}

/// Checks the Python side once: the interpreter, grpcio and grpcio-tools, and generates the
/// stubs every Python process of the run shares.
fn prepare_python(settings: &Settings, stubs: &Path) -> Result<(), String> {
    if !settings.python.is_file() {
        return Err(format!(
            "no Python at {} (benches/run.sh creates the venv)",
            settings.python.display()
        ));
    }
    let out = Command::new(&settings.python)
        .arg(settings.root.join("tests/interop/py/stubs.py"))
        .arg(stubs)
        .output()
        .map_err(|e| format!("cannot run {}: {e}", settings.python.display()))?;
    if !out.status.success() {
        return Err(format!(
            "generating grpcio stubs failed (pip install -r benches/python/requirements.txt): {}",
            last_line(&String::from_utf8_lossy(&out.stderr))
        ));
    }
    Ok(())
}

/// A server process of the run.
struct Server {
    name: String,
    child: Child,
    addr: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Time a server has to print its address: generous, for a Python start on a busy machine.
const SERVER_START_TIMEOUT: Duration = Duration::from_secs(60);

fn start_server(name: &str, peer: &Peer) -> Result<Server, String> {
    let Peer::Ready { program, args, env } = peer else {
        return Err("not available".into());
    };
    let mut child = die_with_parent(&mut Command::new(program))
        .args(args)
        .args(["--listen", "127.0.0.1:0"])
        .envs(env.iter().cloned())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", program.display()))?;
    let stdout = child.stdout.take().expect("stdout is piped");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        let _ = tx.send(reader.read_line(&mut line).map(|_| line));
        // Keep draining so the server never blocks on a full pipe.
        let _ = std::io::copy(&mut reader, &mut std::io::sink());
    });
    let line = match rx.recv_timeout(SERVER_START_TIMEOUT) {
        Ok(Ok(line)) => line,
        _ => {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("{name} server did not print its address"));
        }
    };
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .ok_or_else(|| format!("{name} server printed {line:?}"))?
        .to_string();
    Ok(Server {
        name: name.to_string(),
        child,
        addr,
    })
}

/// Runs one client process to completion; returns its JSON report with the server's CPU
/// time per call added.
fn run_client(
    peer: &Peer,
    server: &mut Server,
    case: &Case,
    settings: &Settings,
) -> Result<Value, String> {
    let Peer::Ready { program, args, env } = peer else {
        return Err("not available".into());
    };
    let server_cpu_before = process_cpu_time(server.child.id());
    let mut child = die_with_parent(&mut Command::new(program))
        .args(args)
        .args(["--target", &server.addr, "--rpc", case.rpc.name()])
        .args(["--concurrency", &case.concurrency.to_string()])
        .args(["--payload", &case.payload.to_string()])
        .args(["--duration", &settings.duration.to_string()])
        .args(["--warmup", &settings.warmup.to_string()])
        .arg("--json")
        .envs(env.iter().cloned())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", program.display()))?;
    let limit = Duration::from_secs_f64(settings.duration + settings.warmup + 60.0);
    let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
    let read = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_string(&mut text);
            }
            text
        })
    };
    let out_reader = read(stdout.map(|p| Box::new(p) as Box<dyn Read + Send>));
    let err_reader = read(stderr.map(|p| Box::new(p) as Box<dyn Read + Send>));
    let started = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if started.elapsed() > limit => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("client ran past {limit:?} and was killed"));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(format!("waiting for the client: {e}")),
        }
    };
    let server_cpu_after = process_cpu_time(server.child.id());
    let stdout = out_reader.join().unwrap_or_default();
    let stderr = err_reader.join().unwrap_or_default();
    if let Ok(Some(exit)) = server.child.try_wait() {
        return Err(format!("the {} server exited ({exit})", server.name));
    }
    if !status.success() {
        return Err(format!(
            "client exited with {status}: {}",
            last_line(&stderr)
        ));
    }
    let mut report: Value = serde_json::from_str(&last_line(&stdout))
        .map_err(|e| format!("client printed no JSON report ({e}): {stdout:?}"))?;
    let calls = report["calls"].as_u64().unwrap_or(0);
    // A smoke cell's window is a fraction of a second of a debug build: a pair whose 64 calls
    // all end just after it still works, so there a call completed during the warm-up counts.
    let total = report["calls_total"].as_u64().unwrap_or(0);
    if calls == 0 && !(settings.smoke && total > 0) {
        return Err("no call completed in the measuring window".into());
    }
    if let (Some(before), Some(after), Some(total)) = (
        server_cpu_before,
        server_cpu_after,
        report["calls_total"].as_u64().filter(|&t| t > 0),
    ) {
        let used = after.since(&before).total().as_secs_f64();
        report["server_cpu_us_per_call"] = json!(used * 1e6 / total as f64);
    }
    Ok(report)
}

/// Runs one cell with `settings.load` CPU hogs beside it; they are killed before this returns
/// (or unwinds), and the cell fails if one of them died early.
fn run_loaded(
    peer: &Peer,
    server: &mut Server,
    case: &Case,
    settings: &Settings,
) -> Result<Value, String> {
    if settings.load == 0 {
        return run_client(peer, server, case, settings);
    }
    let mut hogs = Hogs::start(settings.load)?;
    let report = run_client(peer, server, case, settings)?;
    hogs.check()?;
    Ok(report)
}

// ---- the run ----

/// Metrics taken as medians over the rounds.
pub const METRICS: [&str; 8] = [
    "calls_per_s",
    "p50_us",
    "p90_us",
    "p99_us",
    "bytes_per_s",
    "cpu_s",
    "cpu_us_per_call",
    "server_cpu_us_per_call",
];

fn median(mut values: Vec<f64>) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let n = values.len();
    Some(if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    })
}

fn run(settings: &Settings) -> Result<(), String> {
    let began = Instant::now();
    let work = std::env::temp_dir().join(format!("plexus-bench-{}", std::process::id()));
    std::fs::create_dir_all(&work).map_err(|e| format!("{}: {e}", work.display()))?;
    let result = run_in(settings, &work, began);
    let _ = std::fs::remove_dir_all(&work);
    result
}

fn run_in(settings: &Settings, work: &Path, began: Instant) -> Result<(), String> {
    let stubs = work.join("stubs");
    let grpcio = prepare_python(settings, &stubs);
    let env = Env {
        rust: std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?,
        python: settings.python.clone(),
        py_script: settings.root.join("benches/python/bench_peer.py"),
        py_env: vec![(
            "PLEXUS_INTEROP_STUBS".to_string(),
            stubs.display().to_string(),
        )],
        grpcio,
    };

    let mut skipped: Vec<Value> = Vec::new();
    let mut servers = Vec::new();
    for name in &settings.servers {
        let peer = env.server(name, &settings.root);
        match &peer {
            Peer::Skipped(why) => {
                println!("server {name}: skipped: {why}");
                skipped.push(json!({"side": "server", "name": name, "reason": why}));
            }
            Peer::Ready { .. } => {
                let server = start_server(name, &peer)?;
                println!("server {name}: listening on {}", server.addr);
                servers.push(server);
            }
        }
    }
    let mut clients = Vec::new();
    for name in &settings.clients {
        let peer = env.client(name, &settings.root);
        match &peer {
            Peer::Skipped(why) => {
                println!("client {name}: skipped: {why}");
                skipped.push(json!({"side": "client", "name": name, "reason": why}));
            }
            Peer::Ready { .. } => clients.push((name.clone(), peer)),
        }
    }
    if servers.is_empty() || clients.is_empty() {
        return Err("no server or no client is available".into());
    }

    let pairs: Vec<(usize, usize)> = (0..servers.len())
        .flat_map(|s| (0..clients.len()).map(move |c| (s, c)))
        .collect();
    let total_cells = settings.cases.len() * settings.rounds * pairs.len();
    if settings.smoke {
        println!("{}", chart::SMOKE_NOTE);
    }
    if settings.load > 0 {
        println!(
            "load: {} CPU hog(s) (plexus-bench spin) beside each pair",
            settings.load
        );
    }
    println!(
        "{} cases x {} pairs x {} rounds = {total_cells} cells of {} s (+{} s warm-up)",
        settings.cases.len(),
        pairs.len(),
        settings.rounds,
        settings.duration,
        settings.warmup
    );
    // cells[(case, server, client)] = one entry per round.
    let mut rounds: BTreeMap<(usize, usize, usize), Vec<Value>> = BTreeMap::new();
    let mut failures = Vec::new();
    let mut done = 0;
    for (ci, case) in settings.cases.iter().enumerate() {
        for round in 0..settings.rounds {
            let order: Vec<_> = if round % 2 == 0 {
                pairs.clone()
            } else {
                pairs.iter().rev().copied().collect()
            };
            for (si, ki) in order {
                done += 1;
                let (client_name, peer) = &clients[ki];
                let server = &mut servers[si];
                let outcome = run_loaded(peer, server, case, settings);
                let line = match &outcome {
                    Ok(r) => format!(
                        "{:>9.0} calls/s  p50 {:>8.1} µs  p99 {:>9.1} µs  {:>8.1} MiB/s",
                        r["calls_per_s"].as_f64().unwrap_or(0.0),
                        r["p50_us"].as_f64().unwrap_or(0.0),
                        r["p99_us"].as_f64().unwrap_or(0.0),
                        r["bytes_per_s"].as_f64().unwrap_or(0.0) / (1024.0 * 1024.0)
                    ),
                    Err(why) => format!("FAILED: {why}"),
                };
                println!(
                    "[{done:>3}/{total_cells}] {:<12} round {} {:>11} -> {:<11} {line}",
                    case.name,
                    round + 1,
                    client_name,
                    server.name
                );
                let entry = match outcome {
                    Ok(r) => r,
                    Err(why) => {
                        failures.push(format!(
                            "{} {} -> {} round {}: {why}",
                            case.name,
                            client_name,
                            server.name,
                            round + 1
                        ));
                        json!({ "error": why })
                    }
                };
                rounds.entry((ci, si, ki)).or_default().push(entry);
            }
        }
    }

    let mut cells = Vec::new();
    for ((ci, si, ki), entries) in &rounds {
        let mut med = serde_json::Map::new();
        for metric in METRICS {
            let values: Vec<f64> = entries.iter().filter_map(|e| e[metric].as_f64()).collect();
            if let Some(m) = median(values) {
                med.insert(metric.to_string(), json!(m));
            }
        }
        cells.push(json!({
            "case": settings.cases[*ci].name,
            "server": servers[*si].name,
            "client": clients[*ki].0,
            "rounds": entries,
            "median": med,
        }));
    }
    let elapsed = began.elapsed().as_secs_f64();
    let results = json!({
        "generated_by": "plexus-bench matrix",
        "unix_time": SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()),
        "git_commit": git_commit(&settings.root),
        "machine": machine(),
        "settings": {
            "rounds": settings.rounds,
            "duration_s": settings.duration,
            "warmup_s": settings.warmup,
            "smoke": settings.smoke,
            "load": settings.load,
        },
        "cases": settings.cases.iter().map(|c| json!({
            "name": c.name, "label": c.label, "rpc": c.rpc.name(),
            "concurrency": c.concurrency, "payload": c.payload,
        })).collect::<Vec<_>>(),
        "servers": servers.iter().map(|s| s.name.clone()).collect::<Vec<_>>(),
        "clients": clients.iter().map(|c| c.0.clone()).collect::<Vec<_>>(),
        "skipped": skipped,
        "cells": cells,
        "failures": failures,
        "elapsed_s": elapsed,
    });
    drop(servers);
    let results = chart::with_targets(results);
    write_outputs(settings, &results)?;
    println!(
        "\nmatrix done in {elapsed:.0} s; wrote {}/{}.{{json,md,svg}}",
        settings.out.display(),
        settings.stem()
    );
    print!("{}", chart::targets_markdown(&results));
    if !failures.is_empty() {
        return Err(format!(
            "{} cell(s) failed:\n  {}",
            failures.len(),
            failures.join("\n  ")
        ));
    }
    Ok(())
}

fn write_outputs(settings: &Settings, results: &Value) -> Result<(), String> {
    let out = &settings.out;
    std::fs::create_dir_all(out).map_err(|e| format!("{}: {e}", out.display()))?;
    let write = |name: &str, text: String| {
        let path = out.join(name);
        std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))
    };
    let stem = settings.stem();
    write(
        &format!("{stem}.json"),
        serde_json::to_string_pretty(results).map_err(|e| e.to_string())? + "\n",
    )?;
    write(&format!("{stem}.md"), chart::markdown(results))?;
    write(&format!("{stem}.svg"), chart::svg(results))?;
    if settings.update_readme {
        let readme = settings.root.join("README.md");
        let text =
            std::fs::read_to_string(&readme).map_err(|e| format!("{}: {e}", readme.display()))?;
        let markers = chart::readme_markers(settings.load);
        let updated =
            chart::replace_readme_section(&text, &chart::readme_section(results), markers)
                .ok_or_else(|| {
                    format!("README.md has no {} ... {} section", markers.0, markers.1)
                })?;
        std::fs::write(&readme, updated).map_err(|e| format!("{}: {e}", readme.display()))?;
    }
    Ok(())
}

fn git_commit(root: &Path) -> String {
    Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .current_dir(root)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map_or_else(
            || "unknown".into(),
            |o| String::from_utf8_lossy(&o.stdout).trim().to_string(),
        )
}

fn machine() -> Value {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_default();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    json!({ "cores": cores, "cpu": cpu, "kernel": kernel })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        assert_eq!(median(vec![]), None);
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0, 3.0, 2.0]), Some(2.5));
    }

    #[test]
    fn the_load_names_the_outputs_and_is_checked() {
        assert_eq!(output_stem(0), "latest");
        assert_eq!(output_stem(2), "latest-load2");
        let args = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let err = main(&args(&["--load", "x"])).unwrap_err();
        assert!(err.contains("--load"), "{err}");
        let err = main(&args(&["--load", "65"])).unwrap_err();
        assert!(err.contains("--load 65"), "{err}");
        let err = main(&args(&["--servers", "plexus-tokio"])).unwrap_err();
        assert!(err.contains("unknown server"), "{err}");
    }

    #[test]
    fn every_case_name_is_unique() {
        for (i, a) in CASES.iter().enumerate() {
            for b in &CASES[i + 1..] {
                assert_ne!(a.name, b.name);
            }
        }
    }
}
