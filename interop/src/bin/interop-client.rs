//! `interop-client --server_host=H --server_port=N --test_case=NAME [--use_tls=true
//! --use_test_ca=true [--ca_file=PEM] --server_host_override=NAME]`: runs one gRPC interop case
//! against a server of `grpc.testing.TestService`.
//!
//! With `--use_tls=true` the client trusts the system roots, or with `--use_test_ca=true` only
//! the CA in `--ca_file` (default `ca.pem` in the directory `$PLEXUS_INTEROP_CERTS` names, see
//! `plexus_interop::features`); `--server_host_override` is the name verified, sent as SNI and
//! used as `:authority`.
//!
//! Prints `PASS <case>` and exits 0, or prints why and exits 1 (failed) or 2 (bad flags or
//! settings).

use std::net::ToSocketAddrs;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use futures_util::future::{Either, select};
use plexus::{Channel, StaticResolver};
use plexus_interop::client::{self, CaseError};
use plexus_interop::{features, flags::Flags};

const USAGE: &str = "usage: interop-client --server_host=HOST --server_port=PORT \
--test_case=NAME [--use_tls=false] [--use_test_ca=false] \
[--ca_file=PEM (default: $PLEXUS_INTEROP_CERTS/ca.pem)] [--server_host_override=NAME]";

/// Longest a case may take: generous for concurrent_large_unary against a slow peer on a
/// loaded two-core machine; a hang still ends in a failure.
const CASE_TIMEOUT: Duration = Duration::from_secs(120);

struct Options {
    host: String,
    port: u16,
    case: String,
    use_tls: bool,
    use_test_ca: bool,
    ca_file: Option<PathBuf>,
    host_override: Option<String>,
}

fn options(args: &[String]) -> Result<Options, String> {
    let known = [
        "server_host",
        "server_port",
        "test_case",
        "use_tls",
        "use_test_ca",
        "ca_file",
        "server_host_override",
    ];
    let flags = Flags::parse(args, &known, &["use_tls", "use_test_ca"])?;
    Ok(Options {
        host: flags.get("server_host").unwrap_or("localhost").to_string(),
        port: flags.port("server_port")?,
        case: flags
            .get("test_case")
            .ok_or("--test_case is required")?
            .to_string(),
        use_tls: flags.bool("use_tls", false)?,
        use_test_ca: flags.bool("use_test_ca", false)?,
        ca_file: flags.get("ca_file").map(PathBuf::from),
        host_override: flags
            .get("server_host_override")
            .filter(|h| !h.is_empty())
            .map(str::to_string),
    })
}

/// `host:port`, with an IPv6 literal in brackets.
fn host_port(host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// The channel: to `server_host`, or, with `--server_host_override`, to a target naming the
/// override (which sets `:authority`) whose addresses are `server_host`'s. Over TLS the
/// override is the TLS server name, which sets `:authority` too.
fn channel(opts: &Options) -> Result<Channel, String> {
    let target = host_port(&opts.host, opts.port);
    if opts.use_tls {
        let tls = features::client_tls(
            opts.use_test_ca,
            opts.ca_file.as_deref(),
            opts.host_override.as_deref(),
        )?;
        return Channel::builder(&format!("dns:///{target}"))
            .tls(tls)
            .build()
            .map_err(|s| s.to_string());
    }
    match &opts.host_override {
        None => Channel::new(&format!("dns:///{target}")).map_err(|s| s.to_string()),
        Some(name) => {
            let addresses: Vec<_> = target
                .to_socket_addrs()
                .map_err(|e| format!("cannot resolve {target}: {e}"))?
                .map(plexus::transport::Address::from)
                .collect();
            Channel::builder(&format!("dns:///{}", host_port(name, opts.port)))
                .resolver(StaticResolver::new(addresses))
                .build()
                .map_err(|s| s.to_string())
        }
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if Flags::wants_help(&args) {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    let opts = match options(&args) {
        Ok(opts) => opts,
        Err(why) => {
            eprintln!("interop-client: {why}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    if !client::CASES.contains(&opts.case.as_str()) {
        eprintln!(
            "interop-client: unknown test case {:?}; known: {}",
            opts.case,
            client::CASES.join(", ")
        );
        return ExitCode::from(2);
    }
    let channel = match channel(&opts) {
        Ok(channel) => channel,
        Err(why) => {
            eprintln!("interop-client: {why}");
            return ExitCode::from(2);
        }
    };
    let outcome = smol::block_on(async {
        let case = std::pin::pin!(client::run(&opts.case, &channel));
        let timeout = std::pin::pin!(async_io::Timer::after(CASE_TIMEOUT));
        match select(case, timeout).await {
            Either::Left((outcome, _)) => outcome,
            Either::Right(_) => Err(CaseError::Failed(format!(
                "timed out after {} s",
                CASE_TIMEOUT.as_secs()
            ))),
        }
    });
    match outcome {
        Ok(()) => {
            println!("PASS {}", opts.case);
            ExitCode::SUCCESS
        }
        Err(CaseError::Failed(why)) => {
            println!("FAIL {}: {why}", opts.case);
            ExitCode::FAILURE
        }
    }
}
