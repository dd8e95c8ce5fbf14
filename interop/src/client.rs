//! The interop client cases, each following the procedure and the assertions of the public
//! interop test description, plus two cases of our own for the benchmark service.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use futures_util::future::join_all;
use plexus::{CallOptions, Channel, Code, Metadata, Status};

use crate::features;
use crate::grpc::testing::benchmark_service_client::BenchmarkServiceClient;
use crate::grpc::testing::test_service_client::TestServiceClient;
use crate::grpc::testing::unimplemented_service_client::UnimplementedServiceClient;
use crate::grpc::testing::*;
use crate::payload::{body_len, zeros};
use crate::server::{ECHO_INITIAL_KEY, ECHO_TRAILING_KEY};

/// Every case name the client knows, in the order the interop description lists them; the
/// last two are plexus's own (BenchmarkService).
pub const CASES: &[&str] = &[
    "empty_unary",
    "large_unary",
    "client_compressed_unary",
    "server_compressed_unary",
    "client_streaming",
    "client_compressed_streaming",
    "server_streaming",
    "server_compressed_streaming",
    "ping_pong",
    "empty_stream",
    "custom_metadata",
    "status_code_and_message",
    "special_status_message",
    "unimplemented_method",
    "unimplemented_service",
    "cancel_after_begin",
    "cancel_after_first_response",
    "timeout_on_sleeping_server",
    "concurrent_large_unary",
    "benchmark_unary",
    "benchmark_streaming",
];

/// How a case went wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CaseError {
    /// An assertion failed or a call failed unexpectedly.
    Failed(String),
}

impl std::fmt::Display for CaseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CaseError::Failed(why) => f.write_str(why),
        }
    }
}

impl From<String> for CaseError {
    fn from(why: String) -> CaseError {
        CaseError::Failed(why)
    }
}

type CaseResult = Result<(), CaseError>;

/// Runs the case `name` over `channel`.
pub async fn run(name: &str, channel: &Channel) -> CaseResult {
    let t = Tester::new(channel);
    let case: Pin<Box<dyn Future<Output = CaseResult> + '_>> = match name {
        "empty_unary" => Box::pin(t.empty_unary()),
        "large_unary" => Box::pin(t.large_unary()),
        "client_compressed_unary" => Box::pin(t.client_compressed_unary()),
        "server_compressed_unary" => Box::pin(t.server_compressed_unary()),
        "client_streaming" => Box::pin(t.client_streaming()),
        "client_compressed_streaming" => Box::pin(t.client_compressed_streaming()),
        "server_streaming" => Box::pin(t.server_streaming()),
        "server_compressed_streaming" => Box::pin(t.server_compressed_streaming()),
        "ping_pong" => Box::pin(t.ping_pong()),
        "empty_stream" => Box::pin(t.empty_stream()),
        "custom_metadata" => Box::pin(t.custom_metadata()),
        "status_code_and_message" => Box::pin(t.status_code_and_message()),
        "special_status_message" => Box::pin(t.special_status_message()),
        "unimplemented_method" => Box::pin(t.unimplemented_method()),
        "unimplemented_service" => Box::pin(t.unimplemented_service()),
        "cancel_after_begin" => Box::pin(t.cancel_after_begin()),
        "cancel_after_first_response" => Box::pin(t.cancel_after_first_response()),
        "timeout_on_sleeping_server" => Box::pin(t.timeout_on_sleeping_server()),
        "concurrent_large_unary" => Box::pin(t.concurrent_large_unary()),
        "benchmark_unary" => Box::pin(t.benchmark_unary()),
        "benchmark_streaming" => Box::pin(t.benchmark_streaming()),
        other => {
            return Err(CaseError::Failed(format!(
                "unknown test case {other:?}; known: {}",
                CASES.join(", ")
            )));
        }
    };
    case.await
}

// ---- sizes from the interop description ----

const LARGE_REQUEST: i32 = 271_828;
const LARGE_RESPONSE: i32 = 314_159;
/// Request sizes of client_streaming and ping_pong.
const REQUEST_SIZES: [i32; 4] = [27_182, 8, 1_828, 45_904];
/// Response sizes of server_streaming and ping_pong.
const RESPONSE_SIZES: [i32; 4] = [31_415, 9, 2_653, 58_979];
const ECHO_INITIAL_VALUE: &str = "test_initial_metadata_value";
const ECHO_TRAILING_VALUE: &[u8] = &[0xab, 0xab, 0xab];
/// Calls concurrent_large_unary makes at once on one channel.
const CONCURRENT_CALLS: usize = 1000;

struct Tester {
    test: TestServiceClient,
    unimplemented: UnimplementedServiceClient,
    bench: BenchmarkServiceClient,
}

fn fail<T>(why: impl Into<String>) -> Result<T, CaseError> {
    Err(CaseError::Failed(why.into()))
}

fn check(cond: bool, why: impl FnOnce() -> String) -> CaseResult {
    if cond { Ok(()) } else { fail(why()) }
}

/// Turns a call's unexpected error into a failure naming the step.
fn call<T>(step: &str, result: Result<T, Status>) -> Result<T, CaseError> {
    result.map_err(|s| CaseError::Failed(format!("{step}: call failed: {s}")))
}

/// Asserts that `result` failed with `code` (and `message`, when given).
fn expect_status<T>(
    step: &str,
    result: Result<T, Status>,
    code: Code,
    message: Option<&str>,
) -> CaseResult {
    match result {
        Err(status) if status.code() == code => match message {
            Some(want) if status.message() != want => fail(format!(
                "{step}: status message {:?}, want {want:?}",
                status.message()
            )),
            _ => Ok(()),
        },
        Err(status) => fail(format!("{step}: got {status}, want {code}")),
        Ok(_) => fail(format!("{step}: succeeded, want {code}")),
    }
}

/// Asserts that a payload is `size` zero bytes of type COMPRESSABLE.
fn check_payload(step: &str, payload: &Option<Payload>, size: i32) -> CaseResult {
    let Some(payload) = payload else {
        // An empty payload message and none at all look the same to some peers.
        return check(size == 0, || {
            format!("{step}: response has no payload, want {size} bytes")
        });
    };
    check(payload.r#type == PayloadType::Compressable as i32, || {
        format!("{step}: payload type {}", payload.r#type)
    })?;
    check(payload.body.len() == size as usize, || {
        format!(
            "{step}: payload body is {} bytes, want {size}",
            payload.body.len()
        )
    })?;
    check(payload.body.iter().all(|&b| b == 0), || {
        format!("{step}: payload body is not all zeros")
    })
}

fn large_request() -> SimpleRequest {
    SimpleRequest {
        response_type: PayloadType::Compressable as i32,
        response_size: LARGE_RESPONSE,
        payload: Some(zeros(LARGE_REQUEST)),
        ..Default::default()
    }
}

fn output_request(sizes: &[i32], payload: Option<i32>) -> StreamingOutputCallRequest {
    StreamingOutputCallRequest {
        response_type: PayloadType::Compressable as i32,
        response_parameters: sizes
            .iter()
            .map(|&size| ResponseParameters {
                size,
                ..Default::default()
            })
            .collect(),
        payload: payload.map(zeros),
        ..Default::default()
    }
}

fn input_request(size: i32) -> StreamingInputCallRequest {
    StreamingInputCallRequest {
        payload: Some(zeros(size)),
        expect_compressed: None,
    }
}

fn echo_metadata() -> Metadata {
    let mut md = Metadata::new();
    md.append(ECHO_INITIAL_KEY, ECHO_INITIAL_VALUE)
        .expect("a valid ASCII entry");
    md.append_bin(ECHO_TRAILING_KEY, ECHO_TRAILING_VALUE)
        .expect("a valid binary entry");
    md
}

fn check_echoed(step: &str, initial: &Metadata, trailers: &Metadata) -> CaseResult {
    check(
        initial.get(ECHO_INITIAL_KEY) == Some(ECHO_INITIAL_VALUE),
        || {
            format!(
                "{step}: initial metadata {initial:?} lacks {ECHO_INITIAL_KEY}={ECHO_INITIAL_VALUE}"
            )
        },
    )?;
    check(
        trailers.get_bin(ECHO_TRAILING_KEY).as_deref() == Some(ECHO_TRAILING_VALUE),
        || format!("{step}: trailing metadata {trailers:?} lacks {ECHO_TRAILING_KEY}=0xababab"),
    )
}

impl Tester {
    fn new(channel: &Channel) -> Tester {
        Tester {
            test: TestServiceClient::new(channel.clone()),
            unimplemented: UnimplementedServiceClient::new(channel.clone()),
            bench: BenchmarkServiceClient::new(channel.clone()),
        }
    }

    async fn empty_unary(&self) -> CaseResult {
        let response = call(
            "EmptyCall",
            self.test.empty_call(&Empty {}, CallOptions::new()).await,
        )?;
        check(*response.message() == Empty {}, || {
            "EmptyCall: the response is not empty".into()
        })
    }

    async fn large_unary(&self) -> CaseResult {
        let response = call(
            "UnaryCall",
            self.test
                .unary_call(&large_request(), CallOptions::new())
                .await,
        )?;
        check_payload("UnaryCall", &response.message().payload, LARGE_RESPONSE)
    }

    async fn client_compressed_unary(&self) -> CaseResult {
        let request = |expect| SimpleRequest {
            expect_compressed: Some(BoolValue { value: expect }),
            ..large_request()
        };
        // 1. The feature probe: an uncompressed request that claims to be compressed.
        let probe = self
            .test
            .unary_call(&request(true), CallOptions::new())
            .await;
        expect_status(
            "probe (uncompressed, expect_compressed=true)",
            probe,
            Code::InvalidArgument,
            None,
        )?;
        // 2. Compressed, expect_compressed=true.
        let options = features::compressed_call(CallOptions::new());
        let response = call(
            "compressed call",
            self.test.unary_call(&request(true), options).await,
        )?;
        check_payload(
            "compressed call",
            &response.message().payload,
            LARGE_RESPONSE,
        )?;
        // 3. Uncompressed, expect_compressed=false.
        let response = call(
            "uncompressed call",
            self.test
                .unary_call(&request(false), CallOptions::new())
                .await,
        )?;
        check_payload(
            "uncompressed call",
            &response.message().payload,
            LARGE_RESPONSE,
        )
    }

    async fn server_compressed_unary(&self) -> CaseResult {
        for compressed in [true, false] {
            let step = format!("response_compressed={compressed}");
            let request = SimpleRequest {
                response_compressed: Some(BoolValue { value: compressed }),
                ..large_request()
            };
            let response = call(
                &step,
                self.test.unary_call(&request, CallOptions::new()).await,
            )?;
            check_payload(&step, &response.message().payload, LARGE_RESPONSE)?;
            check(response.compressed() == compressed, || {
                format!(
                    "{step}: the response's compressed flag is {}",
                    response.compressed()
                )
            })?;
        }
        Ok(())
    }

    async fn client_streaming(&self) -> CaseResult {
        let (tx, response) = call(
            "StreamingInputCall",
            self.test.streaming_input_call(CallOptions::new()).await,
        )?;
        for size in REQUEST_SIZES {
            call("send", tx.send(input_request(size)).await)?;
        }
        call("half-close", tx.close().await)?;
        let response = call("StreamingInputCall", response.await)?;
        let total = response.message().aggregated_payload_size;
        check(total == 74_922, || {
            format!("aggregated_payload_size {total}, want 74922")
        })
    }

    async fn client_compressed_streaming(&self) -> CaseResult {
        let expecting = |size, expect| StreamingInputCallRequest {
            payload: Some(zeros(size)),
            expect_compressed: Some(BoolValue { value: expect }),
        };
        // 1. The probe: an uncompressed message with expect_compressed=true must fail the call.
        let (tx, response) = call(
            "probe",
            self.test.streaming_input_call(CallOptions::new()).await,
        )?;
        // The server may fail the call before this send or the close lands; the status decides.
        let _ = tx.send(expecting(27_182, true)).await;
        let _ = tx.close().await;
        expect_status(
            "probe (uncompressed, expect_compressed=true)",
            response.await,
            Code::InvalidArgument,
            None,
        )?;
        // 2. One compressed and one uncompressed message on a compressing call.
        let options = features::compressed_call(CallOptions::new());
        let (tx, response) = call(
            "StreamingInputCall",
            self.test.streaming_input_call(options).await,
        )?;
        call("send compressed", tx.send(expecting(27_182, true)).await)?;
        call(
            "send uncompressed",
            features::send_uncompressed(&tx, expecting(45_904, false)).await,
        )?;
        call("half-close", tx.close().await)?;
        let response = call("StreamingInputCall", response.await)?;
        let total = response.message().aggregated_payload_size;
        check(total == 73_086, || {
            format!("aggregated_payload_size {total}, want 73086")
        })
    }

    async fn server_streaming(&self) -> CaseResult {
        let request = output_request(&RESPONSE_SIZES, None);
        let mut stream = call(
            "StreamingOutputCall",
            self.test
                .streaming_output_call(&request, CallOptions::new())
                .await,
        )?;
        let mut count = 0;
        while let Some(msg) = call("StreamingOutputCall", stream.message().await)? {
            let Some(&size) = RESPONSE_SIZES.get(count) else {
                return fail(format!("more than {} responses", RESPONSE_SIZES.len()));
            };
            check_payload(&format!("response {count}"), &msg.payload, size)?;
            count += 1;
        }
        check(count == RESPONSE_SIZES.len(), || {
            format!("{count} responses, want {}", RESPONSE_SIZES.len())
        })
    }

    async fn server_compressed_streaming(&self) -> CaseResult {
        let sizes = [(true, 31_415), (false, 92_653)];
        let request = StreamingOutputCallRequest {
            response_parameters: sizes
                .iter()
                .map(|&(compressed, size)| ResponseParameters {
                    size,
                    interval_us: 0,
                    compressed: Some(BoolValue { value: compressed }),
                })
                .collect(),
            ..Default::default()
        };
        let mut stream = call(
            "StreamingOutputCall",
            self.test
                .streaming_output_call(&request, CallOptions::new())
                .await,
        )?;
        let mut count = 0;
        while let Some(msg) = call("StreamingOutputCall", stream.message().await)? {
            let Some(&(compressed, size)) = sizes.get(count) else {
                return fail("more than 2 responses");
            };
            check_payload(&format!("response {count}"), &msg.payload, size)?;
            let flag = stream.last_message_compressed();
            check(flag == compressed, || {
                format!("response {count}: compressed flag {flag}, want {compressed}")
            })?;
            count += 1;
        }
        check(count == 2, || format!("{count} responses, want 2"))
    }

    async fn ping_pong(&self) -> CaseResult {
        let (tx, mut rx) = call(
            "FullDuplexCall",
            self.test.full_duplex_call(CallOptions::new()).await,
        )?;
        for (i, (&request_size, &response_size)) in
            REQUEST_SIZES.iter().zip(&RESPONSE_SIZES).enumerate()
        {
            let step = format!("ping {i}");
            call(
                &step,
                tx.send(output_request(&[response_size], Some(request_size)))
                    .await,
            )?;
            let Some(msg) = call(&step, rx.message().await)? else {
                return fail(format!("{step}: the stream ended without a response"));
            };
            check_payload(&step, &msg.payload, response_size)?;
        }
        call("half-close", tx.close().await)?;
        match call("end of stream", rx.message().await)? {
            None => Ok(()),
            Some(extra) => fail(format!(
                "a fifth response ({} bytes)",
                body_len(&extra.payload)
            )),
        }
    }

    async fn empty_stream(&self) -> CaseResult {
        let (tx, mut rx) = call(
            "FullDuplexCall",
            self.test.full_duplex_call(CallOptions::new()).await,
        )?;
        call("half-close", tx.close().await)?;
        match call("FullDuplexCall", rx.message().await)? {
            None => Ok(()),
            Some(msg) => fail(format!(
                "got a response ({} bytes), want none",
                body_len(&msg.payload)
            )),
        }
    }

    async fn custom_metadata(&self) -> CaseResult {
        // 1. UnaryCall.
        let options = CallOptions::new().metadata(echo_metadata());
        let response = call(
            "UnaryCall",
            self.test.unary_call(&large_request(), options).await,
        )?;
        check_payload("UnaryCall", &response.message().payload, LARGE_RESPONSE)?;
        check_echoed("UnaryCall", response.metadata(), response.trailers())?;

        // 2. FullDuplexCall.
        let options = CallOptions::new().metadata(echo_metadata());
        let (tx, mut rx) = call("FullDuplexCall", self.test.full_duplex_call(options).await)?;
        let request = output_request(&[LARGE_RESPONSE], Some(LARGE_REQUEST));
        call("FullDuplexCall send", tx.send(request).await)?;
        call("FullDuplexCall half-close", tx.close().await)?;
        let initial = call("FullDuplexCall headers", rx.initial_metadata().await)?;
        let mut count = 0;
        while let Some(msg) = call("FullDuplexCall", rx.message().await)? {
            check_payload("FullDuplexCall", &msg.payload, LARGE_RESPONSE)?;
            count += 1;
        }
        check(count == 1, || {
            format!("FullDuplexCall: {count} responses, want 1")
        })?;
        let trailers = rx.trailers().cloned().unwrap_or_default();
        check_echoed("FullDuplexCall", &initial, &trailers)
    }

    async fn echo_status_unary(&self, code: Code, message: &str) -> CaseResult {
        let request = SimpleRequest {
            response_status: Some(EchoStatus {
                code: code.as_i32(),
                message: message.into(),
            }),
            ..Default::default()
        };
        let result = self.test.unary_call(&request, CallOptions::new()).await;
        expect_status("UnaryCall", result, code, Some(message))
    }

    async fn status_code_and_message(&self) -> CaseResult {
        const MESSAGE: &str = "test status message";
        self.echo_status_unary(Code::Unknown, MESSAGE).await?;
        let (tx, mut rx) = call(
            "FullDuplexCall",
            self.test.full_duplex_call(CallOptions::new()).await,
        )?;
        let request = StreamingOutputCallRequest {
            response_status: Some(EchoStatus {
                code: Code::Unknown.as_i32(),
                message: MESSAGE.into(),
            }),
            ..Default::default()
        };
        // The server ends the call on this message; a send or close racing that end may fail.
        let _ = tx.send(request).await;
        let _ = tx.close().await;
        let mut result = rx.message().await;
        while let Ok(Some(_)) = result {
            result = rx.message().await;
        }
        expect_status("FullDuplexCall", result, Code::Unknown, Some(MESSAGE))
    }

    async fn special_status_message(&self) -> CaseResult {
        let message =
            "\t\ntest with whitespace\r\nand Unicode BMP \u{263a} and non-BMP \u{1f608}\t\n";
        self.echo_status_unary(Code::Unknown, message).await
    }

    async fn unimplemented_method(&self) -> CaseResult {
        let result = self
            .test
            .unimplemented_call(&Empty {}, CallOptions::new())
            .await;
        expect_status(
            "TestService/UnimplementedCall",
            result,
            Code::Unimplemented,
            None,
        )
    }

    async fn unimplemented_service(&self) -> CaseResult {
        let result = self
            .unimplemented
            .unimplemented_call(&Empty {}, CallOptions::new())
            .await;
        expect_status(
            "UnimplementedService/UnimplementedCall",
            result,
            Code::Unimplemented,
            None,
        )
    }

    async fn cancel_after_begin(&self) -> CaseResult {
        let (tx, mut response) = call(
            "StreamingInputCall",
            self.test.streaming_input_call(CallOptions::new()).await,
        )?;
        response.cancel();
        let result = response.await;
        drop(tx);
        expect_status("StreamingInputCall", result, Code::Cancelled, None)
    }

    async fn cancel_after_first_response(&self) -> CaseResult {
        let (tx, mut rx) = call(
            "FullDuplexCall",
            self.test.full_duplex_call(CallOptions::new()).await,
        )?;
        call(
            "send",
            tx.send(output_request(&[31_415], Some(27_182))).await,
        )?;
        let Some(msg) = call("first response", rx.message().await)? else {
            return fail("the stream ended without a response");
        };
        check_payload("first response", &msg.payload, 31_415)?;
        rx.cancel();
        expect_status("after cancel", rx.message().await, Code::Cancelled, None)
    }

    async fn timeout_on_sleeping_server(&self) -> CaseResult {
        let options = CallOptions::new().timeout(Duration::from_millis(1));
        let (tx, mut rx) = match self.test.full_duplex_call(options).await {
            Ok(call) => call,
            // The 1 ms may run out before the call even starts: the same outcome.
            Err(status) => {
                return expect_status(
                    "FullDuplexCall",
                    Err::<(), _>(status),
                    Code::DeadlineExceeded,
                    None,
                );
            }
        };
        // The send may or may not beat the deadline; only the call's status is asserted.
        let _ = tx.send(output_request(&[], Some(27_182))).await;
        let mut result = rx.message().await;
        while let Ok(Some(_)) = result {
            result = rx.message().await;
        }
        drop(tx);
        expect_status("FullDuplexCall", result, Code::DeadlineExceeded, None)
    }

    async fn concurrent_large_unary(&self) -> CaseResult {
        let request = large_request();
        let calls = (0..CONCURRENT_CALLS).map(|i| {
            let request = &request;
            async move {
                let step = format!("call {i}");
                let response = call(
                    &step,
                    self.test.unary_call(request, CallOptions::new()).await,
                )?;
                check_payload(&step, &response.message().payload, LARGE_RESPONSE)
            }
        });
        let results = join_all(calls).await;
        let failures: Vec<_> = results.into_iter().filter_map(Result::err).collect();
        match failures.first() {
            None => Ok(()),
            Some(first) => fail(format!(
                "{} of {CONCURRENT_CALLS} calls failed; first: {first}",
                failures.len()
            )),
        }
    }

    async fn benchmark_unary(&self) -> CaseResult {
        let request = SimpleRequest {
            response_size: 1024,
            payload: Some(zeros(512)),
            ..Default::default()
        };
        let step = "BenchmarkService/UnaryCall";
        let response = call(
            step,
            self.bench.unary_call(&request, CallOptions::new()).await,
        )?;
        check_payload(step, &response.message().payload, 1024)
    }

    async fn benchmark_streaming(&self) -> CaseResult {
        let path = "BenchmarkService/StreamingCall";
        let (tx, mut rx) = call(path, self.bench.streaming_call(CallOptions::new()).await)?;
        for size in [0, 1, 4096, 65_536] {
            let request = SimpleRequest {
                response_size: size,
                payload: Some(zeros(size / 2)),
                ..Default::default()
            };
            let step = format!("{path} ping {size}");
            call(&step, tx.send(request).await)?;
            let Some(msg) = call(&step, rx.message().await)? else {
                return fail(format!("{step}: the stream ended without a response"));
            };
            check_payload(&step, &msg.payload, size)?;
        }
        call("half-close", tx.close().await)?;
        match call(path, rx.message().await)? {
            None => Ok(()),
            Some(extra) => fail(format!(
                "{path}: an extra response ({} bytes)",
                body_len(&extra.payload)
            )),
        }
    }
}
