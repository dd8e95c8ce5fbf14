//! `interop-server --port=N [--use_tls=true [--tls_cert_file=PEM --tls_key_file=PEM]]`: serves
//! the gRPC interop TestService and the BenchmarkService, with server reflection (v1 and
//! v1alpha) describing them, until killed. `--port=0` picks a free port; the port in use is
//! printed as `interop-server: listening on port N`.
//!
//! With `--use_tls=true` the server presents the certificate chain and key given, by default
//! `server.pem` and `server.key` in the directory `$PLEXUS_INTEROP_CERTS` names (see
//! `plexus_interop::features`).

use std::io::Write as _;
use std::path::Path;
use std::process::ExitCode;

use plexus::{Listener, ServerTlsConfig};
use plexus_interop::{features, flags::Flags, reflection, server};

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
    let mut builder = reflection::add(server::builder())?;
    if let Some(tls) = tls {
        builder = builder.tls(tls);
    }
    let server = builder.build()?;
    // Every interface, as interop servers do: IPv6 (dual-stack on Linux), else IPv4 alone.
    let listener = match Listener::bind_tcp(("::", port)) {
        Ok(listener) => listener,
        Err(_) => Listener::bind_tcp(("0.0.0.0", port))?,
    };
    let bound = listener.local_addr().map_or(port, |addr| addr.port());
    println!("interop-server: listening on port {bound} ({scheme})");
    std::io::stdout().flush()?;
    server.serve(listener).await?;
    Ok(())
}
