//! `interop-server --port=N [--use_tls=true]`: serves the gRPC interop TestService and the
//! BenchmarkService until killed. `--port=0` picks a free port; the port in use is printed as
//! `interop-server: listening on port N`.

use std::io::Write as _;
use std::process::ExitCode;

use plexus::Listener;
use plexus_interop::{features, flags::Flags, server};

const USAGE: &str = "usage: interop-server --port=PORT [--use_tls=false]";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let parsed = Flags::parse(&args, &["port", "use_tls"], &["use_tls"])
        .and_then(|flags| Ok((flags.port("port")?, flags.bool("use_tls", false)?)));
    let (port, use_tls) = match parsed {
        Ok(parsed) => parsed,
        Err(why) => {
            eprintln!("interop-server: {why}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    if use_tls {
        if let Err(unsupported) = features::server_tls() {
            eprintln!("interop-server: {unsupported}");
            return ExitCode::from(3);
        }
    }
    match smol::block_on(serve(port)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(why) => {
            eprintln!("interop-server: {why}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(port: u16) -> Result<(), Box<dyn std::error::Error>> {
    let server = server::build()?;
    // Every interface, as interop servers do: IPv6 (dual-stack on Linux), else IPv4 alone.
    let listener = match Listener::bind_tcp(("::", port)) {
        Ok(listener) => listener,
        Err(_) => Listener::bind_tcp(("0.0.0.0", port))?,
    };
    let bound = listener.local_addr().map_or(port, |addr| addr.port());
    println!("interop-server: listening on port {bound}");
    std::io::stdout().flush()?;
    server.serve(listener).await?;
    Ok(())
}
