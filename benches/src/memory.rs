//! `plexus-bench memory`: resident memory per idle channel, per idle server connection and
//! per active stream, from VmRSS deltas (/proc/PID/status).
//!
//! The server runs in a child process (`plexus-bench server`, stream limit raised so every
//! stream fits one connection), so the client's and the server's growth are read apart:
//! 1. baseline after one warm-up channel and call (runtime threads and allocator arenas exist);
//! 2. `--channels` more channels, each connected and past one unary call, then idle: the
//!    client's growth ÷ N is the cost of an idle channel, the server's of an idle connection;
//! 3. `--streams` StreamingCall streams on one channel, each past one ping-pong and left open:
//!    growth ÷ N on each side is the cost of an active stream.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use plexus::{CallOptions, Channel};
use plexus_interop::grpc::testing::benchmark_service_client::BenchmarkServiceClient;
use plexus_interop::grpc::testing::{SimpleRequest, SimpleResponse};
use serde_json::json;

use crate::args::Args;
use crate::sys::{process_rss_bytes, raise_fd_limit, rss_bytes};
use crate::{STREAMING_PATH, UNARY_PATH, bench_request, tonic_peer};

/// Time for freed pages and background tasks to settle before a reading.
const SETTLE: Duration = Duration::from_millis(500);

/// Entry point of `plexus-bench memory`.
pub fn main(raw: &[String]) -> Result<(), String> {
    let args = Args::parse(raw, &["impl", "channels", "streams"], &["json"])?;
    let which = args.get("impl").unwrap_or("plexus").to_string();
    let channels: usize = args.parsed("channels", 1000)?;
    let streams: usize = args.parsed("streams", 1000)?;
    if channels == 0 || streams == 0 {
        return Err("--channels and --streams must be at least 1".into());
    }
    let want_fds = (channels as u64) * 2 + 256;
    let limit = raise_fd_limit(want_fds);
    if limit < want_fds {
        return Err(format!(
            "the open-file limit is {limit}, {want_fds} are needed for {channels} channels"
        ));
    }
    let mut server = Spawned::server(&which, streams)?;
    let result = match which.as_str() {
        "plexus" => measure_plexus(&server, channels, streams),
        "tonic" => measure_tonic(&server, channels, streams),
        other => Err(format!("--impl must be plexus or tonic, not {other:?}")),
    };
    server.stop();
    let m = result?;
    let kib = |bytes: f64| bytes / 1024.0;
    if args.switch("json") {
        println!(
            "{}",
            json!({
                "impl": which, "channels": channels, "streams": streams,
                "client_kib_per_idle_channel": kib(m.client_channels / channels as f64),
                "server_kib_per_idle_connection": kib(m.server_channels / channels as f64),
                "client_kib_per_active_stream": kib(m.client_streams / streams as f64),
                "server_kib_per_active_stream": kib(m.server_streams / streams as f64),
            })
        );
    } else {
        println!("{which}: resident memory (VmRSS deltas)");
        println!(
            "  per idle channel (client, {channels} channels, each connected): {:.1} KiB",
            kib(m.client_channels / channels as f64)
        );
        println!(
            "  per idle server connection ({channels} connections):          {:.1} KiB",
            kib(m.server_channels / channels as f64)
        );
        println!(
            "  per active stream, client ({streams} open streams):           {:.1} KiB",
            kib(m.client_streams / streams as f64)
        );
        println!(
            "  per active stream, server:                                 {:.1} KiB",
            kib(m.server_streams / streams as f64)
        );
    }
    Ok(())
}

/// Growth in bytes on each side.
struct Growth {
    client_channels: f64,
    server_channels: f64,
    client_streams: f64,
    server_streams: f64,
}

struct Spawned {
    child: Child,
    addr: String,
}

impl Spawned {
    fn server(which: &str, streams: usize) -> Result<Spawned, String> {
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let mut child = Command::new(exe)
            .args(["server", "--impl", which, "--listen", "127.0.0.1:0"])
            .args(["--max-streams", &(streams + 100).to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("starting the server: {e}"))?;
        let mut line = String::new();
        let stdout = child.stdout.take().expect("piped");
        BufReader::new(stdout)
            .read_line(&mut line)
            .map_err(|e| e.to_string())?;
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .ok_or_else(|| format!("the server printed {line:?}"))?
            .to_string();
        Ok(Spawned { child, addr })
    }

    fn rss(&self) -> Result<f64, String> {
        process_rss_bytes(self.child.id())
            .map(|b| b as f64)
            .ok_or_else(|| "cannot read the server's VmRSS".into())
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn own_rss() -> Result<f64, String> {
    rss_bytes()
        .map(|b| b as f64)
        .ok_or_else(|| "cannot read /proc/self/status".into())
}

/// Both sides' VmRSS after letting things settle.
fn reading(server: &Spawned) -> Result<(f64, f64), String> {
    std::thread::sleep(SETTLE);
    Ok((own_rss()?, server.rss()?))
}

fn measure_plexus(server: &Spawned, channels: usize, streams: usize) -> Result<Growth, String> {
    let target = format!("http://{}", server.addr);
    let request = bench_request(0);
    let call = |channel: &Channel| {
        smol::block_on(
            BenchmarkServiceClient::new(channel.clone()).unary_call(&request, CallOptions::new()),
        )
        .map(|_| ())
        .map_err(|e| format!("unary call: {e}"))
    };
    let warm = Channel::new(&target).map_err(|e| e.to_string())?;
    call(&warm)?;
    let base = reading(server)?;
    let mut kept = Vec::with_capacity(channels);
    for _ in 0..channels {
        let ch = Channel::new(&target).map_err(|e| e.to_string())?;
        call(&ch)?;
        kept.push(ch);
    }
    let after_channels = reading(server)?;
    let client = BenchmarkServiceClient::new(warm.clone());
    let mut open = Vec::with_capacity(streams);
    for _ in 0..streams {
        let (tx, mut rx) = smol::block_on(client.streaming_call(CallOptions::new()))
            .map_err(|e| format!("starting a stream: {e}"))?;
        smol::block_on(tx.send(request.clone())).map_err(|e| format!("sending: {e}"))?;
        smol::block_on(rx.message())
            .map_err(|e| format!("receiving: {e}"))?
            .ok_or("the stream ended early")?;
        open.push((tx, rx));
    }
    let after_streams = reading(server)?;
    drop(open);
    drop(kept);
    Ok(Growth {
        client_channels: after_channels.0 - base.0,
        server_channels: after_channels.1 - base.1,
        client_streams: after_streams.0 - after_channels.0,
        server_streams: after_streams.1 - after_channels.1,
    })
}

fn measure_tonic(server: &Spawned, channels: usize, streams: usize) -> Result<Growth, String> {
    let rt = tonic_peer::runtime()?;
    let target = format!("http://{}", server.addr);
    let request = bench_request(0);
    type Codec = tonic_prost::ProstCodec<SimpleRequest, SimpleResponse>;
    let connect = || {
        rt.block_on(async {
            let channel = tonic::transport::Endpoint::from_shared(target.clone())
                .map_err(|e| e.to_string())?
                .tcp_nodelay(true)
                .connect()
                .await
                .map_err(|e| format!("connect: {e}"))?;
            let mut grpc = tonic::client::Grpc::new(channel.clone());
            grpc.ready().await.map_err(|e| e.to_string())?;
            grpc.unary(
                tonic::Request::new(request.clone()),
                tonic::codegen::http::uri::PathAndQuery::from_static(UNARY_PATH),
                Codec::default(),
            )
            .await
            .map_err(|e| format!("unary call: {e}"))?;
            Ok::<_, String>(channel)
        })
    };
    let warm = connect()?;
    let base = reading(server)?;
    let mut kept = Vec::with_capacity(channels);
    for _ in 0..channels {
        kept.push(connect()?);
    }
    let after_channels = reading(server)?;
    let mut open = Vec::with_capacity(streams);
    for _ in 0..streams {
        let pair = rt.block_on(async {
            let (tx, rx) = tokio::sync::mpsc::channel::<SimpleRequest>(1);
            tx.send(request.clone()).await.map_err(|e| e.to_string())?;
            let mut grpc = tonic::client::Grpc::new(warm.clone());
            grpc.ready().await.map_err(|e| e.to_string())?;
            let mut inbound = grpc
                .streaming(
                    tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx)),
                    tonic::codegen::http::uri::PathAndQuery::from_static(STREAMING_PATH),
                    Codec::default(),
                )
                .await
                .map_err(|e| format!("starting a stream: {e}"))?
                .into_inner();
            inbound
                .message()
                .await
                .map_err(|e| format!("receiving: {e}"))?
                .ok_or("the stream ended early")?;
            Ok::<_, String>((tx, inbound))
        })?;
        open.push(pair);
    }
    let after_streams = reading(server)?;
    drop(open);
    drop(kept);
    Ok(Growth {
        client_channels: after_channels.0 - base.0,
        server_channels: after_channels.1 - base.1,
        client_streams: after_streams.0 - after_channels.0,
        server_streams: after_streams.1 - after_channels.1,
    })
}
