//! `plexus-bench`: the benchmark harness's one binary.
//!
//! ```text
//! plexus-bench client --target HOST:PORT [--impl plexus|tonic] [--executor default|smol] [--retries on|off]
//!                     --rpc unary|streaming --concurrency N --payload BYTES --duration S
//!                     --warmup S [--json]
//! plexus-bench server [--impl plexus|tonic] [--executor default|smol] --listen ADDR
//!                     [--max-streams N]
//! plexus-bench matrix [options]          (see `plexus-bench matrix --help`)
//! plexus-bench memory [--impl plexus|tonic] [--channels N] [--streams N]
//! plexus-bench spin [--parent PID]       (one CPU hog of `matrix --load N`)
//! plexus-bench hedge [options]           (see `plexus-bench hedge --help`)
//! ```

use std::process::ExitCode;
use std::time::Duration;

use plexus_benches::args::Args;
use plexus_benches::load::{Rpc, Spec};
use plexus_benches::plexus_peer::ExecutorKind;
use plexus_benches::{hedge, hogs, matrix, memory, plexus_peer, tonic_peer};

const USAGE: &str = "usage:
  plexus-bench client --target HOST:PORT [--impl plexus|tonic] [--executor default|smol] [--retries on|off]
                      [--rpc unary|streaming] [--concurrency N] [--payload BYTES]
                      [--duration S] [--warmup S] [--json]
  plexus-bench server [--impl plexus|tonic] [--executor default|smol] --listen ADDR
                      [--max-streams N]
  plexus-bench matrix [--help for its options]
  plexus-bench memory [--impl plexus|tonic] [--channels N] [--streams N] [--json]
  plexus-bench spin [--parent PID]
  plexus-bench hedge [--help for its options]

--executor (plexus only): default runs the channel or server and the client's call loops on
plexus's own pool, smol on SmolExecutor (smol's async-executor). --retries on|off (plexus
only) gives the channel a service-config retry policy on the benchmark methods, never needed,
with retries enabled (on) or disabled by enable_retries(false) (off): the cost of retries being on. spin burns one core until
the process PID (default: its parent) is gone; `matrix --load N` runs N of them.";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((command, rest)) = args.split_first() else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    let result = match command.as_str() {
        "client" => client(rest),
        "server" => server(rest),
        "matrix" => matrix::main(rest),
        "memory" => memory::main(rest),
        "spin" => hogs::spin_main(rest),
        "hedge" => hedge::main(rest),
        "help" | "--help" | "-h" => {
            println!("{USAGE}");
            Ok(())
        }
        other => Err(format!("unknown command {other:?}\n{USAGE}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(why) => {
            eprintln!("plexus-bench {command}: {why}");
            ExitCode::FAILURE
        }
    }
}

fn seconds(args: &Args, name: &str, default: f64) -> Result<Duration, String> {
    let s: f64 = args.parsed(name, default)?;
    Duration::try_from_secs_f64(s).map_err(|_| format!("--{name}: {s} is not a duration"))
}

fn client(raw: &[String]) -> Result<(), String> {
    let args = Args::parse(
        raw,
        &[
            "target",
            "impl",
            "rpc",
            "concurrency",
            "payload",
            "duration",
            "warmup",
            "executor",
            "retries",
        ],
        &["json"],
    )?;
    let target = args.required("target")?;
    let spec = Spec {
        rpc: Rpc::parse(args.get("rpc").unwrap_or("unary"))?,
        concurrency: args.parsed("concurrency", 1usize)?,
        payload: args.parsed("payload", 0usize)?,
        duration: seconds(&args, "duration", 5.0)?,
        warmup: seconds(&args, "warmup", 1.0)?,
    };
    if spec.concurrency == 0 {
        return Err("--concurrency must be at least 1".into());
    }
    let retries = match args.get("retries") {
        None => None,
        Some("on") => Some(true),
        Some("off") => Some(false),
        Some(other) => return Err(format!("--retries must be on or off, not {other:?}")),
    };
    let report = match (args.get("impl").unwrap_or("plexus"), executor(&args)?) {
        ("plexus", kind) => {
            let config = retries.map(|on| (plexus_peer::RETRY_CONFIG, on));
            plexus_peer::run_client(target, &spec, kind.unwrap_or_default(), config)?
        }
        ("tonic", _) if retries.is_some() => {
            return Err("--retries is for --impl plexus only".into());
        }
        ("tonic", None) => tonic_peer::run_client(target, &spec)?,
        ("tonic", Some(_)) => return Err("--executor is for --impl plexus only".into()),
        (other, _) => return Err(format!("--impl must be plexus or tonic, not {other:?}")),
    };
    if args.switch("json") {
        println!("{}", report.to_json());
    } else {
        println!("{}", report.human());
    }
    Ok(())
}

fn server(raw: &[String]) -> Result<(), String> {
    let args = Args::parse(raw, &["impl", "listen", "max-streams", "executor"], &[])?;
    let listen = args.get("listen").unwrap_or("127.0.0.1:0");
    // The memory probe opens a thousand connections to one server.
    plexus_benches::sys::raise_fd_limit(65_536);
    let max_streams = match args.get("max-streams") {
        None => None,
        Some(_) => Some(args.parsed("max-streams", 0u32)?),
    };
    match (args.get("impl").unwrap_or("plexus"), executor(&args)?) {
        ("plexus", kind) => plexus_peer::serve(listen, max_streams, kind.unwrap_or_default()),
        ("tonic", None) => tonic_peer::serve(listen, max_streams),
        ("tonic", Some(_)) => Err("--executor is for --impl plexus only".into()),
        (other, _) => Err(format!("--impl must be plexus or tonic, not {other:?}")),
    }
}

/// The `--executor` flag, if given.
fn executor(args: &Args) -> Result<Option<ExecutorKind>, String> {
    args.get("executor").map(ExecutorKind::parse).transpose()
}
