//! The interop server: `grpc.testing.TestService` with every feature the interop cases use
//! (Echo Metadata, Echo Status, response sizes, `interval_us`, CompressedRequest,
//! CompressedResponse) and `grpc.testing.BenchmarkService`, on one [`Server`], each
//! implementing its generated server trait.
//!
//! `TestService/UnimplementedCall` answers UNIMPLEMENTED, and `UnimplementedService` is
//! deliberately not registered, so calling it gives UNIMPLEMENTED from the router.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_util::future::{Either, select};
use plexus::{
    CallContext, Code, Metadata, MetadataValue, Request, RequestStream, Response, ResponseSink,
    Server, ServerBuilder, Status,
};

use crate::features;
use crate::grpc::testing::benchmark_service_server::{self, BenchmarkServiceServer};
use crate::grpc::testing::test_service_server::{self, TestServiceServer};
use crate::grpc::testing::*;
use crate::payload::{body_len, zeros};

/// Request key the server echoes in its initial metadata (Echo Metadata).
pub const ECHO_INITIAL_KEY: &str = "x-grpc-test-echo-initial";
/// Request key the server echoes in its trailing metadata (Echo Metadata).
pub const ECHO_TRAILING_KEY: &str = "x-grpc-test-echo-trailing-bin";
/// What `fill_server_id` puts in `SimpleResponse.server_id`.
pub const SERVER_ID: &str = "plexus-interop";
/// Cache lifetime CacheableUnaryCall advertises: the 60 s the interop description names.
const CACHE_CONTROL: &str = "public, max-age=60";

/// Builds the server with both services registered.
pub fn build() -> Result<Server, plexus::Error> {
    builder().build()
}

/// A server builder with both services registered, for further settings (TLS; the benchmark
/// harness raises the stream limit for its memory probe).
pub fn builder() -> ServerBuilder {
    Server::builder()
        .add_service(TestServiceServer::new(Interop))
        .add_service(BenchmarkServiceServer::new(Benchmark))
}

/// `grpc.testing.TestService` as the interop test description specifies it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Interop;

/// `grpc.testing.BenchmarkService`: responses of the size asked for, as fast as they go.
#[derive(Debug, Clone, Copy, Default)]
pub struct Benchmark;

// ---- features shared by the methods ----

/// Echo Metadata: the `x-grpc-test-echo-initial` entries of the request, for the response
/// headers.
fn echo_initial(ctx: &CallContext) -> Metadata {
    echo(ctx, ECHO_INITIAL_KEY)
}

/// Echo Metadata: the `x-grpc-test-echo-trailing-bin` entries of the request, for the trailers.
fn echo_trailing(ctx: &CallContext) -> Metadata {
    echo(ctx, ECHO_TRAILING_KEY)
}

fn echo(ctx: &CallContext, wanted: &str) -> Metadata {
    let mut md = Metadata::new();
    for (key, value) in ctx.metadata().iter() {
        if key != wanted {
            continue;
        }
        // The key and value came in as valid metadata, so they go out again.
        let _ = match value {
            MetadataValue::Ascii(v) => md.append(key, v),
            MetadataValue::Binary(v) => md.append_bin(key, &v),
        };
    }
    md
}

/// Echo Status: the status the request asks for, carrying the echoed trailers; `None` for no
/// status or code 0.
fn echo_status(status: &Option<EchoStatus>, ctx: &CallContext) -> Option<Status> {
    let status = status.as_ref().filter(|s| s.code != 0)?;
    Some(
        Status::new(Code::from_i32(status.code), status.message.clone())
            .with_metadata(echo_trailing(ctx)),
    )
}

/// CompressedRequest: INVALID_ARGUMENT when `expect_compressed` is set and the message (whose
/// Compressed-Flag is `compressed`) was not.
fn check_expect_compressed(
    expect: Option<BoolValue>,
    compressed: bool,
    ctx: &CallContext,
) -> Result<(), Status> {
    if expect.is_some_and(|e| e.value) && !compressed {
        return Err(Status::invalid_argument(
            "expected a compressed request message (expect_compressed), got an uncompressed one",
        )
        .with_metadata(echo_trailing(ctx)));
    }
    Ok(())
}

/// Only COMPRESSABLE payloads exist; anything else is INVALID_ARGUMENT, as the description says.
fn check_payload_type(response_type: i32) -> Result<(), Status> {
    if PayloadType::try_from(response_type).is_err() {
        return Err(Status::invalid_argument(format!(
            "unsupported response_type {response_type}"
        )));
    }
    Ok(())
}

fn check_size(size: i32) -> Result<(), Status> {
    if size < 0 {
        return Err(Status::invalid_argument(format!(
            "response size {size} is negative"
        )));
    }
    Ok(())
}

/// Waits `interval_us` microseconds, or fails with CANCELLED if the call ends first.
async fn pause(interval_us: i32, ctx: &CallContext) -> Result<(), Status> {
    if interval_us > 0 {
        let timer = async_io::Timer::after(Duration::from_micros(interval_us as u64));
        let cancelled = std::pin::pin!(ctx.cancelled());
        if let Either::Right(_) = select(std::pin::pin!(timer), cancelled).await {
            return Err(Status::cancelled("the call ended while the server paused"));
        }
    }
    Ok(())
}

/// Sends the echoed initial metadata now, when there is any (otherwise the headers go out with
/// the first message or the status).
async fn start_stream<T>(ctx: &CallContext, sink: &ResponseSink<T>) -> Result<(), Status> {
    sink.set_trailers(echo_trailing(ctx));
    let initial = echo_initial(ctx);
    if !initial.is_empty() {
        sink.send_initial_metadata(initial).await?;
    }
    Ok(())
}

/// Sends the responses one StreamingOutputCallRequest asks for.
async fn send_responses(
    request: &StreamingOutputCallRequest,
    ctx: &CallContext,
    sink: &ResponseSink<StreamingOutputCallResponse>,
) -> Result<(), Status> {
    check_payload_type(request.response_type)?;
    for params in &request.response_parameters {
        check_size(params.size)?;
        pause(params.interval_us, ctx).await?;
        let response = StreamingOutputCallResponse {
            payload: Some(zeros(params.size)),
        };
        features::send_response(sink, response, params.compressed.map(|c| c.value)).await?;
    }
    Ok(())
}

fn simple_response(
    req: &SimpleRequest,
    compressed: bool,
    ctx: &CallContext,
) -> Result<SimpleResponse, Status> {
    check_expect_compressed(req.expect_compressed, compressed, ctx)?;
    if let Some(status) = echo_status(&req.response_status, ctx) {
        return Err(status);
    }
    check_payload_type(req.response_type)?;
    check_size(req.response_size)?;
    features::unary_response_compression(ctx, req.response_compressed.map(|c| c.value));
    Ok(SimpleResponse {
        payload: Some(zeros(req.response_size)),
        server_id: if req.fill_server_id {
            SERVER_ID.into()
        } else {
            String::new()
        },
        ..Default::default()
    })
}

// ---- TestService ----

impl test_service_server::TestService for Interop {
    async fn empty_call(&self, req: Request<Empty>) -> Result<Response<Empty>, Status> {
        let ctx = req.context();
        Ok(Response::from_parts(
            echo_initial(ctx),
            Empty {},
            echo_trailing(ctx),
        ))
    }

    async fn unary_call(
        &self,
        req: Request<SimpleRequest>,
    ) -> Result<Response<SimpleResponse>, Status> {
        let compressed = req.compressed();
        let (ctx, req) = req.into_parts();
        let response = simple_response(&req, compressed, &ctx)?;
        Ok(Response::from_parts(
            echo_initial(&ctx),
            response,
            echo_trailing(&ctx),
        ))
    }

    async fn cacheable_unary_call(
        &self,
        req: Request<SimpleRequest>,
    ) -> Result<Response<SimpleResponse>, Status> {
        let ctx = req.context();
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let response = SimpleResponse {
            payload: Some(Payload {
                r#type: PayloadType::Compressable as i32,
                body: Bytes::from(nanos.to_string()),
            }),
            ..Default::default()
        };
        let mut initial = echo_initial(ctx);
        initial.insert("cache-control", CACHE_CONTROL)?;
        Ok(Response::from_parts(initial, response, echo_trailing(ctx)))
    }

    async fn streaming_output_call(
        &self,
        req: Request<StreamingOutputCallRequest>,
        sink: ResponseSink<StreamingOutputCallResponse>,
    ) -> Result<(), Status> {
        let (ctx, req) = req.into_parts();
        features::compress_stream(&ctx);
        start_stream(&ctx, &sink).await?;
        if let Some(status) = echo_status(&req.response_status, &ctx) {
            return Err(status);
        }
        send_responses(&req, &ctx, &sink).await
    }

    async fn streaming_input_call(
        &self,
        req: Request<RequestStream<StreamingInputCallRequest>>,
    ) -> Result<Response<StreamingInputCallResponse>, Status> {
        let (ctx, mut stream) = req.into_parts();
        let mut total: usize = 0;
        while let Some(msg) = stream.message().await? {
            check_expect_compressed(
                msg.expect_compressed,
                stream.last_message_compressed(),
                &ctx,
            )?;
            total = total.saturating_add(body_len(&msg.payload));
        }
        let aggregated_payload_size = i32::try_from(total).map_err(|_| {
            Status::invalid_argument(format!(
                "aggregated payload size {total} does not fit an int32"
            ))
        })?;
        let response = StreamingInputCallResponse {
            aggregated_payload_size,
        };
        Ok(Response::from_parts(
            echo_initial(&ctx),
            response,
            echo_trailing(&ctx),
        ))
    }

    async fn full_duplex_call(
        &self,
        req: Request<RequestStream<StreamingOutputCallRequest>>,
        sink: ResponseSink<StreamingOutputCallResponse>,
    ) -> Result<(), Status> {
        let (ctx, mut stream) = req.into_parts();
        features::compress_stream(&ctx);
        start_stream(&ctx, &sink).await?;
        while let Some(msg) = stream.message().await? {
            if let Some(status) = echo_status(&msg.response_status, &ctx) {
                return Err(status);
            }
            send_responses(&msg, &ctx, &sink).await?;
        }
        Ok(())
    }

    async fn half_duplex_call(
        &self,
        req: Request<RequestStream<StreamingOutputCallRequest>>,
        sink: ResponseSink<StreamingOutputCallResponse>,
    ) -> Result<(), Status> {
        let (ctx, mut stream) = req.into_parts();
        features::compress_stream(&ctx);
        start_stream(&ctx, &sink).await?;
        let mut buffered = Vec::new();
        while let Some(msg) = stream.message().await? {
            buffered.push(msg);
        }
        for msg in &buffered {
            if let Some(status) = echo_status(&msg.response_status, &ctx) {
                return Err(status);
            }
            send_responses(msg, &ctx, &sink).await?;
        }
        Ok(())
    }

    /// The interop description's unimplemented_method case calls this and wants UNIMPLEMENTED.
    async fn unimplemented_call(&self, _req: Request<Empty>) -> Result<Response<Empty>, Status> {
        Err(Status::unimplemented(
            "grpc.testing.TestService/UnimplementedCall is not implemented, on purpose",
        ))
    }
}

// ---- BenchmarkService ----

fn bench_response(req: &SimpleRequest) -> Result<SimpleResponse, Status> {
    check_payload_type(req.response_type)?;
    check_size(req.response_size)?;
    Ok(SimpleResponse {
        payload: Some(zeros(req.response_size)),
        ..Default::default()
    })
}

impl benchmark_service_server::BenchmarkService for Benchmark {
    async fn unary_call(
        &self,
        req: Request<SimpleRequest>,
    ) -> Result<Response<SimpleResponse>, Status> {
        Ok(Response::new(bench_response(req.message())?))
    }

    async fn streaming_call(
        &self,
        req: Request<RequestStream<SimpleRequest>>,
        sink: ResponseSink<SimpleResponse>,
    ) -> Result<(), Status> {
        let mut stream = req.into_message();
        while let Some(msg) = stream.message().await? {
            sink.send(bench_response(&msg)?).await?;
        }
        Ok(())
    }

    async fn streaming_from_client(
        &self,
        req: Request<RequestStream<SimpleRequest>>,
    ) -> Result<Response<SimpleResponse>, Status> {
        let mut stream = req.into_message();
        let mut last = SimpleRequest::default();
        while let Some(msg) = stream.message().await? {
            last = msg;
        }
        Ok(Response::new(bench_response(&last)?))
    }

    async fn streaming_from_server(
        &self,
        req: Request<SimpleRequest>,
        sink: ResponseSink<SimpleResponse>,
    ) -> Result<(), Status> {
        let (ctx, req) = req.into_parts();
        let response = bench_response(&req)?;
        // Until the client cancels: then `send` fails with CANCELLED and the call is over anyway.
        while !ctx.is_cancelled() {
            sink.send(response.clone()).await?;
        }
        Ok(())
    }

    async fn streaming_both_ways(
        &self,
        req: Request<RequestStream<SimpleRequest>>,
        sink: ResponseSink<SimpleResponse>,
    ) -> Result<(), Status> {
        let (ctx, mut stream) = req.into_parts();
        let Some(first) = stream.message().await? else {
            return Ok(());
        };
        let response = bench_response(&first)?;
        let drain = async {
            while stream.message().await?.is_some() {}
            Ok::<(), Status>(())
        };
        let send = async {
            while !ctx.is_cancelled() {
                sink.send(response.clone()).await?;
            }
            Ok::<(), Status>(())
        };
        // Ends when the client half-closes (or either side fails).
        match select(std::pin::pin!(drain), std::pin::pin!(send)).await {
            Either::Left((result, _)) | Either::Right((result, _)) => result,
        }
    }
}
