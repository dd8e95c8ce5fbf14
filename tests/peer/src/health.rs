//! `plexus-peer health --target HOST:PORT [--service NAME] [--watch]`: plexus's generated
//! `HealthClient` (crate plexus-health) against any `grpc.health.v1.Health` server, grpcio's
//! included. It prints one line per answer, flushed at once so a test can react to each:
//! `STATUS <SERVING|NOT_SERVING|...>` for a status, `ERROR <code>: <message>` when the call
//! fails, and with `--watch` every status the stream sends, then `END <code>` when it ends.

use std::io::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use plexus::{CallOptions, Channel, Status};
use plexus_health::{HealthCheckRequest, HealthClient};

/// How long a Check may take; a watch has no deadline (it ends when the server ends it).
const CHECK_TIMEOUT: Duration = Duration::from_secs(10);

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn error_line(status: &Status) -> String {
    format!("ERROR {:?}: {}", status.code(), status.message())
}

/// Runs one Check, or a Watch with `watch`, on `service` at `target`.
pub(crate) async fn run(target: &str, service: String, watch: bool) -> ExitCode {
    let channel = match Channel::builder(target).build() {
        Ok(channel) => channel,
        Err(err) => {
            eprintln!("bad target {target:?}: {err}");
            return ExitCode::from(2);
        }
    };
    let client = HealthClient::new(channel);
    let request = HealthCheckRequest { service };
    if !watch {
        let options = CallOptions::new().timeout(CHECK_TIMEOUT);
        match client.check(&request, options).await {
            Ok(reply) => say(&format!(
                "STATUS {}",
                reply.message().status().as_str_name()
            )),
            Err(status) => say(&error_line(&status)),
        }
        return ExitCode::SUCCESS;
    }
    let mut stream = match client.watch(&request, CallOptions::new()).await {
        Ok(stream) => stream,
        Err(status) => {
            say(&error_line(&status));
            return ExitCode::SUCCESS;
        }
    };
    loop {
        match stream.message().await {
            Ok(Some(reply)) => say(&format!("STATUS {}", reply.status().as_str_name())),
            Ok(None) => {
                say("END Ok");
                return ExitCode::SUCCESS;
            }
            Err(status) => {
                say(&format!("END {:?}", status.code()));
                return ExitCode::SUCCESS;
            }
        }
    }
}
