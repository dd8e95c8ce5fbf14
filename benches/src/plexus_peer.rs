//! The plexus side: a load-generating client on a plexus [`Channel`] and the BenchmarkService
//! server of `plexus-interop`.

use std::io::Write as _;
use std::sync::Arc;
use std::time::Instant;

use plexus::{CallOptions, Channel, Client, DefaultExecutor, Executor, Listener, ProstCodec};
use plexus_interop::messages::{SimpleRequest, SimpleResponse};

use crate::load::{Phase, Recorder, Report, Rpc, Spec, drive};
use crate::{STREAMING_PATH, UNARY_PATH, bench_request, check_response};

type BenchClient = Client<ProstCodec<SimpleRequest, SimpleResponse>>;

/// Runs one load run against `target` (`host:port`) with a plexus channel: every worker shares
/// the one channel, as an application would.
pub fn run_client(target: &str, spec: &Spec) -> Result<Report, String> {
    let channel = Channel::new(&format!("http://{target}")).map_err(|e| e.to_string())?;
    let client: BenchClient = channel.typed(ProstCodec::new());
    let request = bench_request(spec.payload);
    // Connect before the clock starts.
    let first = smol::block_on(client.unary(UNARY_PATH, &request, CallOptions::new()))
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
        DefaultExecutor.spawn(Box::pin(async move {
            let result = match rpc {
                Rpc::Unary => unary_worker(&client, &request, payload, &phase).await,
                Rpc::Streaming => streaming_worker(&client, &request, payload, &phase).await,
            };
            let _ = done.send(result).await;
        }));
    }
    drop(done_tx);
    let report = drive("plexus", spec, &phase, || {
        // futures-lite's block_on only parks: this thread leaves the reactor to the pool's
        // workers, so I/O wakes each task on the worker that then runs it.
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
    client: &BenchClient,
    request: &SimpleRequest,
    payload: usize,
    phase: &Phase,
) -> Result<Recorder, String> {
    let mut record = Recorder::new();
    loop {
        let started = Instant::now();
        let response = client
            .unary(UNARY_PATH, request, CallOptions::new())
            .await
            .map_err(|e| format!("unary call failed: {e}"))?;
        check_response(response.message(), payload)?;
        if !record.completed(phase, started) {
            return Ok(record);
        }
    }
}

async fn streaming_worker(
    client: &BenchClient,
    request: &SimpleRequest,
    payload: usize,
    phase: &Phase,
) -> Result<Recorder, String> {
    let mut record = Recorder::new();
    let (sender, mut responses) = client
        .bidi_streaming(STREAMING_PATH, CallOptions::new())
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
pub fn serve(listen: &str, max_streams: Option<u32>) -> Result<(), String> {
    let mut builder = plexus_interop::server::builder();
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
    // Accepting runs on the pool too; this thread only waits (see `run_client`).
    let (done_tx, done_rx) = async_channel::bounded(1);
    DefaultExecutor.spawn(Box::pin(async move {
        let _ = done_tx.send(server.serve(listener).await).await;
    }));
    smol::future::block_on(done_rx.recv())
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())
}
