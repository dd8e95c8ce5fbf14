//! `interop-server --port=N [--use_tls=true [--tls_cert_file=PEM --tls_key_file=PEM]]`: serves
//! the gRPC interop TestService and the BenchmarkService, with server reflection (v1 and
//! v1alpha) describing them, until killed. `--port=0` picks a free port; the port in use is
//! printed as `interop-server: listening on port N`.
//!
//! It also serves `grpc.health.v1.Health`, SERVING for "" and every service, so any standard
//! client can discover it. SIGTERM or SIGINT shuts it down gracefully: every health status
//! turns NOT_SERVING, then calls in flight get [`SHUTDOWN_GRACE`] to finish; a second signal
//! cuts them off.
//!
//! With `--use_tls=true` the server presents the certificate chain and key given, by default
//! `server.pem` and `server.key` in the directory `$PLEXUS_INTEROP_CERTS` names (see
//! `plexus_interop::features`).

use std::io::Write as _;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use async_signal::{Signal, Signals};
use futures_util::StreamExt as _;
use futures_util::future::{Either, join, select};

use plexus::{Listener, ServerTlsConfig};
use plexus_interop::{features, flags::Flags, reflection, server};

/// How long calls in flight may run on after SIGTERM or SIGINT.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

const USAGE: &str = "usage: interop-server --port=PORT [--use_tls=false] \
[--tls_cert_file=PEM --tls_key_file=PEM (default: $PLEXUS_INTEROP_CERTS/server.pem, server.key)]";

/// The flags: the port, and the TLS settings when `--use_tls=true`.
fn options(args: &[String]) -> Result<(u16, Option<ServerTlsConfig>), String> {
    let known = ["port", "use_tls", "tls_cert_file", "tls_key_file"];
    let flags = Flags::parse(args, &known, &["use_tls"])?;
    let port = flags.port("port")?;
    if !flags.bool("use_tls", false)? {
        return Ok((port, None));
    }
    let tls = features::server_tls(
        flags.get("tls_cert_file").map(Path::new),
        flags.get("tls_key_file").map(Path::new),
    )?;
    Ok((port, Some(tls)))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if Flags::wants_help(&args) {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    let (port, tls) = match options(&args) {
        Ok(parsed) => parsed,
        Err(why) => {
            eprintln!("interop-server: {why}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match smol::block_on(serve(port, tls)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(why) => {
            eprintln!("interop-server: {why}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(port: u16, tls: Option<ServerTlsConfig>) -> Result<(), Box<dyn std::error::Error>> {
    let scheme = if tls.is_some() { "TLS" } else { "plaintext" };
    let (mut builder, health) = plexus_health::install(reflection::add(server::builder())?);
    for service in SERVICES {
        health.set_serving(service);
    }
    if let Some(tls) = tls {
        builder = builder.tls(tls);
    }
    let server = builder.build()?;
    // Every interface, as interop servers do: IPv6 (dual-stack on Linux), else IPv4 alone.
    let listener = match Listener::bind_tcp(("::", port)) {
        Ok(listener) => listener,
        Err(_) => Listener::bind_tcp(("0.0.0.0", port))?,
    };
    // Caught from before the port is printed, so a signal sent once it is cannot kill us.
    let mut signals = Signals::new([Signal::Term, Signal::Int])?;
    let bound = listener.local_addr().map_or(port, |addr| addr.port());
    println!("interop-server: listening on port {bound} ({scheme})");
    std::io::stdout().flush()?;
    let serving = std::pin::pin!(server.serve(listener));
    let served = match select(serving, signals.next()).await {
        Either::Left((served, _)) => served,
        Either::Right((_, serving)) => {
            eprintln!("interop-server: shutting down");
            let graceful = std::pin::pin!(server.shutdown(SHUTDOWN_GRACE));
            let again = std::pin::pin!(async {
                signals.next().await;
                server.shutdown(Duration::ZERO).await;
            });
            let stop = select(graceful, again);
            join(serving, stop).await.0
        }
    };
    served?;
    Ok(())
}

/// The services the health service reports SERVING (the whole server, "", is from the start).
const SERVICES: [&str; 5] = [
    plexus_interop::grpc::testing::test_service_server::SERVICE_NAME,
    plexus_interop::grpc::testing::benchmark_service_server::SERVICE_NAME,
    plexus_health::v1::health_server::SERVICE_NAME,
    plexus_reflection::v1::server_reflection_server::SERVICE_NAME,
    plexus_reflection::v1alpha::server_reflection_server::SERVICE_NAME,
];
