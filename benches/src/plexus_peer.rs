//! The plexus side: a load-generating client on a plexus [`Channel`] and the BenchmarkService
//! server of `plexus-interop`, each on plexus's default executor or on [`SmolExecutor`].

use std::io::Write as _;
use std::sync::Arc;
use std::time::Instant;

use plexus::{CallOptions, Channel, DefaultExecutor, Executor, Listener, SmolExecutor};
use plexus_interop::grpc::testing::SimpleRequest;
use plexus_interop::grpc::testing::benchmark_service_client::BenchmarkServiceClient;

use crate::load::{Phase, Recorder, Report, Rpc, Spec, drive};
use crate::{bench_request, check_response};

/// Which executor a plexus client or server runs everything on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ExecutorKind {
    /// [`DefaultExecutor`], plexus's own work-stealing pool.
    #[default]
    Default,
    /// [`SmolExecutor`], smol's `async-executor`.
    Smol,
}

impl ExecutorKind {
    /// Parses `default` or `smol`.
    pub fn parse(s: &str) -> Result<ExecutorKind, String> {
        match s {
            "default" => Ok(ExecutorKind::Default),
            "smol" => Ok(ExecutorKind::Smol),
            other => Err(format!("--executor must be default or smol, not {other:?}")),
        }
    }

    /// The client's name in reports: `plexus` or `plexus-smol`, as in the matrix.
    pub fn client_name(self) -> &'static str {
        match self {
            ExecutorKind::Default => "plexus",
            ExecutorKind::Smol => "plexus-smol",
        }
    }

    fn spawn(self, future: plexus::rt::BoxFuture<()>) {
        match self {
            ExecutorKind::Default => DefaultExecutor.spawn(future),
            ExecutorKind::Smol => SmolExecutor.spawn(future),
        }
    }
}

/// A retry policy on every benchmark method (`plexus-bench client --retries`): the servers
/// never fail, so it only costs what keeping calls retryable costs.
pub const RETRY_CONFIG: &str = r#"{"methodConfig": [{
    "name": [{"service": "grpc.testing.BenchmarkService"}],
    "retryPolicy": {"maxAttempts": 3, "initialBackoff": "0.1s", "maxBackoff": "1s",
                    "backoffMultiplier": 2, "retryableStatusCodes": ["UNAVAILABLE"]}
}]}"#;

/// Runs one load run against `target` (`host:port`) with a plexus channel: every worker shares
/// the one channel, as an application would. With [`ExecutorKind::Smol`] the channel's
/// connection tasks and the workers that make the calls both run on [`SmolExecutor`], so
/// nothing of the default pool is started. `service_config` is a config and whether retries
/// are enabled.
pub fn run_client(
    target: &str,
    spec: &Spec,
    executor: ExecutorKind,
    service_config: Option<(&str, bool)>,
) -> Result<Report, String> {
    let mut builder = Channel::builder(&format!("http://{target}"));
    if let Some((config, retries)) = service_config {
        builder = builder
            .default_service_config(config)
            .enable_retries(retries);
    }
    let builder = match executor {
        ExecutorKind::Default => builder.executor(DefaultExecutor),
        ExecutorKind::Smol => builder.executor(SmolExecutor),
    };
    let channel = builder.build().map_err(|e| e.to_string())?;
    let client = BenchmarkServiceClient::new(channel.clone());
    let request = bench_request(spec.payload);
    // Connect before the clock starts.
    let first = smol::block_on(client.unary_call(&request, CallOptions::new()))
        .map_err(|e| format!("first call to {target} failed: {e}"))?;
    check_response(first.message(), spec.payload)?;

    let phase = Arc::new(Phase::new());
    let (done_tx, done_rx) = async_channel::bounded(spec.concurrency.max(1));
    for _ in 0..spec.concurrency {
        let (client, request, phase, done) = (
            client.clone(),
            request.clone(),
            phase.clone(),
            done_tx.clone(),
        );
        let payload = spec.payload;
        let rpc = spec.rpc;
        executor.spawn(Box::pin(async move {
            let result = match rpc {
                Rpc::Unary => unary_worker(&client, &request, payload, &phase).await,
                Rpc::Streaming => streaming_worker(&client, &request, payload, &phase).await,
            };
            let _ = done.send(result).await;
        }));
    }
    drop(done_tx);
    let report = drive(executor.client_name(), spec, &phase, || {
        // futures-lite's block_on only parks: this thread leaves the reactor to the executor's
        // threads (both executors drive it while idle), so I/O wakes each task on the thread
        // that then runs it.
        smol::future::block_on(async {
            let mut records = Vec::with_capacity(spec.concurrency);
            while let Ok(result) = done_rx.recv().await {
                records.push(result?);
            }
            Ok(records)
        })
    });
    channel.shutdown();
    report
}

async fn unary_worker(
    client: &BenchmarkServiceClient,
    request: &SimpleRequest,
    payload: usize,
    phase: &Phase,
) -> Result<Recorder, String> {
    let mut record = Recorder::new();
    loop {
        let started = Instant::now();
        let response = client
            .unary_call(request, CallOptions::new())
            .await
            .map_err(|e| format!("unary call failed: {e}"))?;
        check_response(response.message(), payload)?;
        if !record.completed(phase, started) {
            return Ok(record);
        }
    }
}

async fn streaming_worker(
    client: &BenchmarkServiceClient,
    request: &SimpleRequest,
    payload: usize,
    phase: &Phase,
) -> Result<Recorder, String> {
    let mut record = Recorder::new();
    let (sender, mut responses) = client
        .streaming_call(CallOptions::new())
        .await
        .map_err(|e| format!("starting the stream failed: {e}"))?;
    loop {
        let started = Instant::now();
        sender
            .send(request.clone())
            .await
            .map_err(|e| format!("sending on the stream failed: {e}"))?;
        let response = responses
            .message()
            .await
            .map_err(|e| format!("receiving on the stream failed: {e}"))?
            .ok_or("the server ended the stream early")?;
        check_response(&response, payload)?;
        if !record.completed(phase, started) {
            break;
        }
    }
    sender
        .close()
        .await
        .map_err(|e| format!("half-closing the stream failed: {e}"))?;
    while responses
        .message()
        .await
        .map_err(|e| format!("the stream ended with an error: {e}"))?
        .is_some()
    {}
    Ok(record)
}

/// Serves the BenchmarkService (and the interop TestService beside it) on `listen` until the
/// process is killed; prints `listening on ADDR` once bound. `max_streams` overrides the
/// server's MAX_CONCURRENT_STREAMS (the memory probe opens more than the default 100).
/// Connections, handlers and the accept loop all run on `executor`.
pub fn serve(listen: &str, max_streams: Option<u32>, executor: ExecutorKind) -> Result<(), String> {
    let mut builder = match executor {
        ExecutorKind::Default => plexus_interop::server::builder().executor(DefaultExecutor),
        ExecutorKind::Smol => plexus_interop::server::builder().executor(SmolExecutor),
    };
    if let Some(n) = max_streams {
        builder = builder.max_concurrent_streams(n);
    }
    let server = builder.build().map_err(|e| e.to_string())?;
    let listener = Listener::bind_tcp(listen).map_err(|e| format!("bind {listen}: {e}"))?;
    let addr = listener
        .local_addr()
        .ok_or("the listener has no TCP address")?;
    println!("listening on {addr}");
    std::io::stdout().flush().map_err(|e| e.to_string())?;
    // Accepting runs on the executor too; this thread only waits (see `run_client`).
    let (done_tx, done_rx) = async_channel::bounded(1);
    executor.spawn(Box::pin(async move {
        let _ = done_tx.send(server.serve(listener).await).await;
    }));
    smol::future::block_on(done_rx.recv())
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())
}
