//! The service config's retry policy (gRFC A6) and method settings, end to end: attempts and
//! `grpc-previous-rpc-attempts` seen by the server, pushback, throttling, commit on response
//! headers and on a full retry buffer, replayed streams, timeouts, wait-for-ready and size
//! limits from the config. Every scenario runs under each executor and transport.

// The shared harness; this file uses only part of it.
#[allow(dead_code)]
mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use plexus::{
    BytesCodec, CallOptions, Channel, Code, Metadata, Request, RequestStream, Response,
    ResponseSink, Server, ServerBuilder, Status,
};

use support::Env;

matrix!(
    retries_until_success,
    gives_up_after_max_attempts,
    a_code_not_listed_is_not_retried,
    pushback_stops_or_delays_retries,
    throttling_stops_retries,
    a_streamed_request_is_replayed,
    response_headers_commit_the_call,
    a_full_retry_buffer_commits_the_call,
    retries_can_be_disabled,
    the_method_config_sets_timeouts_and_limits,
);

/// What the server saw of each key: the `grpc-previous-rpc-attempts` of every attempt.
#[derive(Clone, Default)]
struct Seen(Arc<Mutex<HashMap<String, Vec<u32>>>>);

impl Seen {
    fn record(&self, key: &str, previous: u32) -> usize {
        let mut map = self.0.lock().unwrap();
        let list = map.entry(key.to_string()).or_default();
        list.push(previous);
        list.len()
    }

    fn attempts(&self, key: &str) -> Vec<u32> {
        self.0.lock().unwrap().get(key).cloned().unwrap_or_default()
    }
}

/// How an attempt should fail, from the request metadata: the first `x-fail` attempts of key
/// `x-key` fail with `x-code` (default UNAVAILABLE), with `x-pushback` ms (or "stop").
fn verdict(md: &Metadata, attempt: usize, ctx: &plexus::CallContext) -> Result<(), Status> {
    let fail: usize = md.get("x-fail").map_or(0, |v| v.parse().unwrap());
    if attempt > fail {
        return Ok(());
    }
    match md.get("x-pushback") {
        Some("stop") => ctx.set_retry_pushback(None),
        Some(ms) => ctx.set_retry_pushback(Some(Duration::from_millis(ms.parse().unwrap()))),
        None => {}
    }
    let code = md
        .get("x-code")
        .map_or(Code::Unavailable, |c| Code::from_i32(c.parse().unwrap()));
    Err(Status::new(code, format!("attempt {attempt} fails")))
}

fn flaky_server(seen: &Seen) -> ServerBuilder {
    let unary = seen.clone();
    let collect = seen.clone();
    let stream = seen.clone();
    Server::builder()
        .unary(
            "/retry.Flaky/Unary",
            BytesCodec,
            move |req: Request<Bytes>| {
                let seen = unary.clone();
                async move {
                    let key = req.metadata().get("x-key").unwrap_or("").to_string();
                    let attempt = seen.record(&key, req.context().previous_attempts());
                    verdict(req.metadata(), attempt, req.context())?;
                    Ok(Response::new(req.into_message()))
                }
            },
        )
        .client_streaming(
            "/retry.Flaky/Collect",
            BytesCodec,
            move |req: Request<RequestStream<Bytes>>| {
                let seen = collect.clone();
                async move {
                    let md = req.metadata().clone();
                    let (ctx, mut messages) = req.into_parts();
                    let mut all = Vec::new();
                    while let Some(m) = messages.message().await? {
                        all.extend_from_slice(&m);
                    }
                    let key = md.get("x-key").unwrap_or("").to_string();
                    let attempt = seen.record(&key, ctx.previous_attempts());
                    verdict(&md, attempt, &ctx)?;
                    Ok(Response::new(Bytes::from(all)))
                }
            },
        )
        .server_streaming(
            "/retry.Flaky/HeadersThenFail",
            BytesCodec,
            move |req: Request<Bytes>, sink: ResponseSink<Bytes>| {
                let seen = stream.clone();
                async move {
                    let key = req.metadata().get("x-key").unwrap_or("").to_string();
                    seen.record(&key, req.context().previous_attempts());
                    sink.send_initial_metadata(Metadata::new()).await?;
                    Err(Status::unavailable("failed after the response headers"))
                }
            },
        )
        .unary(
            "/retry.Flaky/Hang",
            BytesCodec,
            |req: Request<Bytes>| async move {
                req.context().cancelled().await;
                Ok(Response::new(Bytes::new()))
            },
        )
}

/// A service config retrying every `retry.Flaky` method on UNAVAILABLE, quickly.
fn retry_config(max_attempts: u32, extra: &str) -> String {
    format!(
        r#"{{
            "methodConfig": [{{
                "name": [{{"service": "retry.Flaky"}}],
                "retryPolicy": {{
                    "maxAttempts": {max_attempts},
                    "initialBackoff": "0.001s",
                    "maxBackoff": "0.005s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE", "ABORTED"]
                }}
            }}]
            {extra}
        }}"#
    )
}

fn options(key: &str, pairs: &[(&str, &str)]) -> CallOptions {
    let mut md = Metadata::new();
    md.append("x-key", key).unwrap();
    for (k, v) in pairs {
        md.append(k, v).unwrap();
    }
    CallOptions::new()
        .metadata(md)
        .timeout(Duration::from_secs(20))
}

fn setup(env: &Env, config: &str) -> (Seen, Channel) {
    let seen = Seen::default();
    let running = env.serve(flaky_server(&seen));
    let channel = running
        .channel_builder()
        .default_service_config(config)
        .build()
        .unwrap();
    // The server lives as long as its tasks; the channel keeps reaching it.
    std::mem::forget(running);
    (seen, channel)
}

async fn unary(channel: &Channel, options: CallOptions) -> Result<Bytes, Status> {
    channel
        .unary("/retry.Flaky/Unary", Bytes::from_static(b"ping"), options)
        .await
        .map(Response::into_message)
}

async fn retries_until_success(env: Env) {
    let (seen, channel) = setup(&env, &retry_config(4, ""));
    let reply = unary(&channel, options("a", &[("x-fail", "2")]))
        .await
        .unwrap();
    assert_eq!(reply, "ping");
    assert_eq!(seen.attempts("a"), [0, 1, 2]);
}

async fn gives_up_after_max_attempts(env: Env) {
    let (seen, channel) = setup(&env, &retry_config(3, ""));
    let err = unary(&channel, options("a", &[("x-fail", "9")]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
    assert_eq!(err.message(), "attempt 3 fails");
    assert_eq!(seen.attempts("a"), [0, 1, 2]);
    // maxAttempts above 5 is cut to 5.
    let (seen, channel) = setup(&env, &retry_config(9, ""));
    unary(&channel, options("b", &[("x-fail", "9")]))
        .await
        .unwrap_err();
    assert_eq!(seen.attempts("b"), [0, 1, 2, 3, 4]);
}

async fn a_code_not_listed_is_not_retried(env: Env) {
    let (seen, channel) = setup(&env, &retry_config(4, ""));
    let internal = Code::Internal.as_i32().to_string();
    let err = unary(
        &channel,
        options("a", &[("x-fail", "1"), ("x-code", &internal)]),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::Internal);
    assert_eq!(seen.attempts("a"), [0]);
}

async fn pushback_stops_or_delays_retries(env: Env) {
    let (seen, channel) = setup(&env, &retry_config(4, ""));
    let err = unary(
        &channel,
        options("stop", &[("x-fail", "1"), ("x-pushback", "stop")]),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
    assert_eq!(seen.attempts("stop"), [0]);
    unary(
        &channel,
        options("later", &[("x-fail", "2"), ("x-pushback", "1")]),
    )
    .await
    .unwrap();
    assert_eq!(seen.attempts("later"), [0, 1, 2]);
}

async fn throttling_stops_retries(env: Env) {
    // 4 tokens, threshold 2: the first failure leaves 3 (retry), the second 2 (no retry).
    let throttling = r#", "retryThrottling": {"maxTokens": 4, "tokenRatio": 1}"#;
    let (seen, channel) = setup(&env, &retry_config(5, throttling));
    unary(&channel, options("a", &[("x-fail", "9")]))
        .await
        .unwrap_err();
    assert_eq!(seen.attempts("a"), [0, 1]);
    unary(&channel, options("b", &[("x-fail", "9")]))
        .await
        .unwrap_err();
    assert_eq!(seen.attempts("b"), [0]);
    // Successful calls give tokens back (1 each here, up to 4): with 4, a failure leaves 3,
    // above the threshold, so it is retried again.
    for _ in 0..3 {
        unary(&channel, options("ok", &[])).await.unwrap();
    }
    unary(&channel, options("c", &[("x-fail", "1")]))
        .await
        .unwrap();
    assert_eq!(seen.attempts("c"), [0, 1]);
}

async fn a_streamed_request_is_replayed(env: Env) {
    let (seen, channel) = setup(&env, &retry_config(4, ""));
    let (sender, response) = channel
        .client_streaming("/retry.Flaky/Collect", options("a", &[("x-fail", "2")]))
        .await
        .unwrap();
    for part in ["one ", "two ", "three"] {
        sender.send(Bytes::from(part)).await.unwrap();
    }
    sender.close().await.unwrap();
    let all = response.response().await.unwrap().into_message();
    assert_eq!(all, "one two three", "the last attempt got every message");
    assert_eq!(seen.attempts("a"), [0, 1, 2]);
}

async fn response_headers_commit_the_call(env: Env) {
    let (seen, channel) = setup(&env, &retry_config(4, ""));
    let mut stream = channel
        .server_streaming(
            "/retry.Flaky/HeadersThenFail",
            Bytes::new(),
            options("a", &[]),
        )
        .await
        .unwrap();
    let err = stream.message().await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
    assert_eq!(seen.attempts("a"), [0]);
}

async fn a_full_retry_buffer_commits_the_call(env: Env) {
    let seen = Seen::default();
    let running = env.serve(flaky_server(&seen));
    let channel = running
        .channel_builder()
        .default_service_config(&retry_config(4, ""))
        .retry_buffer_sizes(8, 1 << 20)
        .build()
        .unwrap();
    let (sender, response) = channel
        .client_streaming("/retry.Flaky/Collect", options("a", &[("x-fail", "1")]))
        .await
        .unwrap();
    sender
        .send(Bytes::from_static(b"0123456789"))
        .await
        .unwrap();
    sender.close().await.unwrap();
    let err = response.response().await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
    assert_eq!(seen.attempts("a"), [0]);
    drop(running);
}

async fn retries_can_be_disabled(env: Env) {
    let seen = Seen::default();
    let running = env.serve(flaky_server(&seen));
    let channel = running
        .channel_builder()
        .default_service_config(&retry_config(4, ""))
        .enable_retries(false)
        .build()
        .unwrap();
    unary(&channel, options("a", &[("x-fail", "1")]))
        .await
        .unwrap_err();
    assert_eq!(seen.attempts("a"), [0]);
    drop(running);
}

async fn the_method_config_sets_timeouts_and_limits(env: Env) {
    let config = r#"{"methodConfig": [
        {"name": [{"service": "retry.Flaky", "method": "Hang"}], "timeout": "0.2s"},
        {"name": [{"service": "retry.Flaky", "method": "Unary"}],
         "maxRequestMessageBytes": 4, "maxResponseMessageBytes": 3}
    ]}"#;
    let (seen, channel) = setup(&env, config);
    let err = channel
        .unary("/retry.Flaky/Hang", Bytes::new(), CallOptions::new())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err}");
    let err = channel
        .unary(
            "/retry.Flaky/Unary",
            Bytes::from_static(b"12345"),
            options("big", &[]),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err}");
    assert!(seen.attempts("big").is_empty(), "the request never left");
    // Four bytes go out, but the four that come back are over the response limit.
    let err = unary(&channel, options("echo", &[])).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err}");
    // A call's own, smaller limit still applies.
    let err = channel
        .unary(
            "/retry.Flaky/Unary",
            Bytes::from_static(b"123"),
            options("own", &[]).max_send_message_size(2),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err}");
}

#[test]
fn wait_for_ready_comes_from_the_config() {
    // Nothing listens on this port: fail fast gives UNAVAILABLE, waiting gives the deadline.
    let port = {
        let socket = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        socket.local_addr().unwrap().port()
    };
    let target = format!("http://127.0.0.1:{port}");
    let config = r#"{"methodConfig": [{"name": [{}], "waitForReady": true}]}"#;
    plexus::rt::block_on(async {
        let waiting = Channel::builder(&target)
            .default_service_config(config)
            .build()
            .unwrap();
        let options = || CallOptions::new().timeout(Duration::from_millis(300));
        let err = waiting
            .unary("/a.B/C", Bytes::new(), options())
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::DeadlineExceeded, "{err}");
        // The call's own setting wins over the config: it fails fast, long before a
        // deadline generous enough for a busy machine.
        let generous = CallOptions::new().timeout(Duration::from_secs(20));
        let err = waiting
            .unary("/a.B/C", Bytes::new(), generous.wait_for_ready(false))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::Unavailable, "{err}");
    });
}

#[test]
fn a_bad_config_fails_the_build_naming_the_field() {
    let err = Channel::builder("http://127.0.0.1:1")
        .default_service_config(r#"{"methodConfig": [{"timeout": 5}]}"#)
        .build()
        .unwrap_err();
    assert!(err.is_config(), "{err}");
    let status = Status::from(err);
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("methodConfig[0].timeout"),
        "{status}"
    );
}
