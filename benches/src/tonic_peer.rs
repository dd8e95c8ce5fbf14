//! The tonic side: a tonic client and a tonic server of the same BenchmarkService, with the
//! same prost message types. tonic's service glue is written by hand with its `codegen`,
//! `server::Grpc` and `client::Grpc` APIs (what tonic-build would generate), so no protoc is
//! needed. Only the two methods the harness drives are served; the other three answer
//! UNIMPLEMENTED.

use std::convert::Infallible;
use std::io::Write as _;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use futures_util::{Stream, StreamExt};
use plexus_interop::grpc::testing::{PayloadType, SimpleRequest, SimpleResponse};
use plexus_interop::payload::zeros;
use tonic::codegen::{BoxFuture, Service, http};

use crate::load::{Phase, Recorder, Report, Rpc, Spec, drive};
use crate::{STREAMING_PATH, UNARY_PATH, bench_request, check_response};

type Codec = tonic_prost::ProstCodec<SimpleRequest, SimpleResponse>;
type ServerCodec = tonic_prost::ProstCodec<SimpleResponse, SimpleRequest>;

/// A multi-threaded tokio runtime with tokio's default of one worker per core, as a tonic
/// application would use.
pub fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))
}

/// Runs one load run against `target` (`host:port`) with one tonic channel shared by every
/// worker.
pub fn run_client(target: &str, spec: &Spec) -> Result<Report, String> {
    let rt = runtime()?;
    let channel = rt
        .block_on(
            tonic::transport::Endpoint::from_shared(format!("http://{target}"))
                .map_err(|e| e.to_string())?
                .tcp_nodelay(true)
                .connect(),
        )
        .map_err(|e| format!("connect to {target}: {e}"))?;
    let request = bench_request(spec.payload);
    let first = rt.block_on(unary(
        &mut tonic::client::Grpc::new(channel.clone()),
        &request,
    ))?;
    check_response(&first, spec.payload)?;

    let phase = Arc::new(Phase::new());
    let mut workers = Vec::with_capacity(spec.concurrency);
    for _ in 0..spec.concurrency {
        let (channel, request, phase) = (channel.clone(), request.clone(), phase.clone());
        let payload = spec.payload;
        let rpc = spec.rpc;
        workers.push(rt.spawn(async move {
            let mut grpc = tonic::client::Grpc::new(channel);
            match rpc {
                Rpc::Unary => unary_worker(&mut grpc, &request, payload, &phase).await,
                Rpc::Streaming => streaming_worker(&mut grpc, &request, payload, &phase).await,
            }
        }));
    }
    drive("tonic", spec, &phase, || {
        rt.block_on(async {
            let mut records = Vec::with_capacity(workers.len());
            for w in workers {
                records.push(w.await.map_err(|e| format!("worker panicked: {e}"))??);
            }
            Ok(records)
        })
    })
}

type Grpc = tonic::client::Grpc<tonic::transport::Channel>;

async fn unary(grpc: &mut Grpc, request: &SimpleRequest) -> Result<SimpleResponse, String> {
    grpc.ready()
        .await
        .map_err(|e| format!("channel not ready: {e}"))?;
    let response = grpc
        .unary(
            tonic::Request::new(request.clone()),
            http::uri::PathAndQuery::from_static(UNARY_PATH),
            Codec::default(),
        )
        .await
        .map_err(|e| format!("unary call failed: {e}"))?;
    Ok(response.into_inner())
}

async fn unary_worker(
    grpc: &mut Grpc,
    request: &SimpleRequest,
    payload: usize,
    phase: &Phase,
) -> Result<Recorder, String> {
    let mut record = Recorder::new();
    loop {
        let started = Instant::now();
        let response = unary(grpc, request).await?;
        check_response(&response, payload)?;
        if !record.completed(phase, started) {
            return Ok(record);
        }
    }
}

async fn streaming_worker(
    grpc: &mut Grpc,
    request: &SimpleRequest,
    payload: usize,
    phase: &Phase,
) -> Result<Recorder, String> {
    let mut record = Recorder::new();
    let (tx, rx) = tokio::sync::mpsc::channel::<SimpleRequest>(1);
    // tonic's streaming call resolves on the response headers, which a server may hold back
    // until it answers the first request: queue that request before starting the call.
    let mut started = Instant::now();
    tx.send(request.clone())
        .await
        .map_err(|_| "the request stream closed")?;
    grpc.ready()
        .await
        .map_err(|e| format!("channel not ready: {e}"))?;
    let mut responses = grpc
        .streaming(
            tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx)),
            http::uri::PathAndQuery::from_static(STREAMING_PATH),
            Codec::default(),
        )
        .await
        .map_err(|e| format!("starting the stream failed: {e}"))?
        .into_inner();
    loop {
        let response = responses
            .message()
            .await
            .map_err(|e| format!("receiving on the stream failed: {e}"))?
            .ok_or("the server ended the stream early")?;
        check_response(&response, payload)?;
        if !record.completed(phase, started) {
            break;
        }
        started = Instant::now();
        tx.send(request.clone())
            .await
            .map_err(|_| "the request stream closed")?;
    }
    drop(tx);
    while responses
        .message()
        .await
        .map_err(|e| format!("the stream ended with an error: {e}"))?
        .is_some()
    {}
    Ok(record)
}

// ---- server ----

/// The response the plexus interop server gives, with the same checks.
fn bench_response(request: &SimpleRequest) -> Result<SimpleResponse, tonic::Status> {
    if PayloadType::try_from(request.response_type).is_err() {
        return Err(tonic::Status::invalid_argument(format!(
            "unsupported response_type {}",
            request.response_type
        )));
    }
    if request.response_size < 0 {
        return Err(tonic::Status::invalid_argument(format!(
            "response size {} is negative",
            request.response_size
        )));
    }
    Ok(SimpleResponse {
        payload: Some(zeros(request.response_size)),
        ..Default::default()
    })
}

/// `grpc.testing.BenchmarkService` for tonic's router.
#[derive(Debug, Clone, Copy, Default)]
pub struct BenchmarkService;

impl tonic::server::NamedService for BenchmarkService {
    const NAME: &'static str = "grpc.testing.BenchmarkService";
}

struct UnaryCall;

impl tonic::server::UnaryService<SimpleRequest> for UnaryCall {
    type Response = SimpleResponse;
    type Future = BoxFuture<tonic::Response<SimpleResponse>, tonic::Status>;

    fn call(&mut self, request: tonic::Request<SimpleRequest>) -> Self::Future {
        Box::pin(async move { Ok(tonic::Response::new(bench_response(request.get_ref())?)) })
    }
}

struct StreamingCall;

type ResponseStream = Pin<Box<dyn Stream<Item = Result<SimpleResponse, tonic::Status>> + Send>>;

impl tonic::server::StreamingService<SimpleRequest> for StreamingCall {
    type Response = SimpleResponse;
    type ResponseStream = ResponseStream;
    type Future = BoxFuture<tonic::Response<ResponseStream>, tonic::Status>;

    fn call(&mut self, request: tonic::Request<tonic::Streaming<SimpleRequest>>) -> Self::Future {
        Box::pin(async move {
            let responses = request
                .into_inner()
                .map(|request| bench_response(&request?));
            Ok(tonic::Response::new(Box::pin(responses) as ResponseStream))
        })
    }
}

impl Service<http::Request<tonic::body::Body>> for BenchmarkService {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Infallible>;

    fn poll_ready(
        &mut self,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Infallible>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(ServerCodec::default());
            Ok(match request.uri().path() {
                UNARY_PATH => grpc.unary(UnaryCall, request).await,
                STREAMING_PATH => grpc.streaming(StreamingCall, request).await,
                path => tonic::Status::unimplemented(format!(
                    "{path} is not served by this benchmark server"
                ))
                .into_http(),
            })
        })
    }
}

/// Serves the BenchmarkService with tonic on `listen` until the process is killed; prints
/// `listening on ADDR` once bound. `max_streams` sets MAX_CONCURRENT_STREAMS (unlimited by
/// default in tonic).
pub fn serve(listen: &str, max_streams: Option<u32>) -> Result<(), String> {
    let rt = runtime()?;
    rt.block_on(async {
        let addr = tokio::net::lookup_host(listen)
            .await
            .map_err(|e| format!("resolve {listen}: {e}"))?
            .next()
            .ok_or_else(|| format!("{listen} resolves to no address"))?;
        // TcpIncoming, not a plain listener stream: tonic applies TCP_NODELAY only to the
        // sockets it accepts itself (`Server::tcp_nodelay` is ignored by
        // `serve_with_incoming`), and without it small responses wait for delayed ACKs.
        let incoming = tonic::transport::server::TcpIncoming::bind(addr)
            .map_err(|e| format!("bind {listen}: {e}"))?
            .with_nodelay(Some(true));
        let addr = incoming.local_addr().map_err(|e| e.to_string())?;
        println!("listening on {addr}");
        std::io::stdout().flush().map_err(|e| e.to_string())?;
        tonic::transport::Server::builder()
            .max_concurrent_streams(max_streams)
            .add_service(BenchmarkService)
            .serve_with_incoming(incoming)
            .await
            .map_err(|e| e.to_string())
    })
}
