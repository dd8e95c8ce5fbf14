//! Hedging from the service config (gRFC A6), end to end: the first response wins and the
//! other attempts are cancelled (the server sees it), a non-fatal failure starts the next
//! attempt at once, a fatal one ends the call, pushback stops hedging, and a streamed request
//! reaches every attempt whole. Every scenario runs under each executor and transport.

// The shared harness; this file uses only part of it.
#[allow(dead_code)]
mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use plexus::{
    BytesCodec, CallContext, CallOptions, Channel, Code, Metadata, Request, RequestStream,
    Response, Server, ServerBuilder, Status,
};

use support::{Env, ProbeTx, probe};

matrix!(
    the_first_response_wins_and_the_others_are_cancelled,
    a_non_fatal_failure_starts_the_next_attempt_at_once,
    a_fatal_status_ends_the_call,
    when_every_attempt_fails_the_last_status_is_returned,
    pushback_stops_hedging,
    a_streamed_request_reaches_every_attempt,
);

/// What one attempt does, by its `grpc-previous-rpc-attempts`, from `x-plan` (comma
/// separated): `ok`, `stall` (until cancelled), `unavailable`, `unavailable-stop` (with
/// pushback saying not to retry) or `internal`. Missing entries are `ok`.
fn action(md: &Metadata, attempt: u32) -> String {
    md.get("x-plan")
        .unwrap_or("")
        .split(',')
        .nth(attempt as usize)
        .unwrap_or("ok")
        .to_string()
}

/// Every attempt the server saw, per `x-key`: (previous attempts, ended by a cancel).
#[derive(Clone, Default)]
struct Seen(Arc<Mutex<HashMap<String, Vec<u32>>>>);

impl Seen {
    fn record(&self, md: &Metadata, ctx: &CallContext) {
        let key = md.get("x-key").unwrap_or("").to_string();
        let mut map = self.0.lock().unwrap();
        map.entry(key).or_default().push(ctx.previous_attempts());
    }

    fn attempts(&self, key: &str) -> Vec<u32> {
        let mut list = self.0.lock().unwrap().get(key).cloned().unwrap_or_default();
        list.sort();
        list
    }
}

/// Runs the planned action; a stalled attempt reports its cancellation on `cancelled`.
async fn act(md: &Metadata, ctx: &CallContext, cancelled: &ProbeTx<String>) -> Result<(), Status> {
    match action(md, ctx.previous_attempts()).as_str() {
        "stall" => {
            ctx.cancelled().await;
            let key = md.get("x-key").unwrap_or("").to_string();
            cancelled.report(format!("{key}/{}", ctx.previous_attempts()));
            Err(Status::cancelled("stalled attempt cancelled"))
        }
        "unavailable" => Err(Status::unavailable("non-fatal")),
        "unavailable-stop" => {
            ctx.set_retry_pushback(None);
            Err(Status::unavailable("non-fatal, stop"))
        }
        "internal" => Err(Status::internal("fatal")),
        _ => Ok(()),
    }
}

fn server(seen: &Seen, cancelled: ProbeTx<String>, started: ProbeTx<String>) -> ServerBuilder {
    let (unary_seen, unary_cancel) = (seen.clone(), cancelled.clone());
    let collect_seen = seen.clone();
    Server::builder()
        .unary(
            "/hedge.Svc/Unary",
            BytesCodec,
            move |req: Request<Bytes>| {
                let (seen, cancelled) = (unary_seen.clone(), unary_cancel.clone());
                async move {
                    seen.record(req.metadata(), req.context());
                    act(req.metadata(), req.context(), &cancelled).await?;
                    let attempt = req.context().previous_attempts();
                    Ok(Response::new(Bytes::from(format!("attempt {attempt}"))))
                }
            },
        )
        .client_streaming(
            "/hedge.Svc/Collect",
            BytesCodec,
            move |req: Request<RequestStream<Bytes>>| {
                let (seen, cancelled, started) =
                    (collect_seen.clone(), cancelled.clone(), started.clone());
                async move {
                    let md = req.metadata().clone();
                    let (ctx, mut messages) = req.into_parts();
                    seen.record(&md, &ctx);
                    started.report(format!("attempt {}", ctx.previous_attempts()));
                    let mut all = Vec::new();
                    let read = async {
                        while let Some(m) = messages.message().await? {
                            all.extend_from_slice(&m);
                        }
                        Ok::<_, Status>(())
                    };
                    let read = read.await;
                    // A stalled attempt may be cancelled before it read its whole request:
                    // it stalls (and reports the cancel) whatever reading came to.
                    if action(&md, ctx.previous_attempts()) != "stall" {
                        read?;
                    }
                    act(&md, &ctx, &cancelled).await?;
                    Ok(Response::new(Bytes::from(all)))
                }
            },
        )
}

fn hedging_config(max_attempts: u32, delay: &str) -> String {
    format!(
        r#"{{"methodConfig": [{{
            "name": [{{"service": "hedge.Svc"}}],
            "hedgingPolicy": {{
                "maxAttempts": {max_attempts},
                "hedgingDelay": "{delay}",
                "nonFatalStatusCodes": ["UNAVAILABLE"]
            }}
        }}]}}"#
    )
}

struct Setup {
    seen: Seen,
    channel: Channel,
    cancelled: support::ProbeRx<String>,
    started: support::ProbeRx<String>,
}

fn setup(env: &Env, config: &str) -> Setup {
    let seen = Seen::default();
    let (cancel_tx, cancelled) = probe();
    let (start_tx, started) = probe();
    let running = env.serve(server(&seen, cancel_tx, start_tx));
    let channel = running
        .channel_builder()
        .default_service_config(config)
        .build()
        .unwrap();
    std::mem::forget(running);
    Setup {
        seen,
        channel,
        cancelled,
        started,
    }
}

fn options(key: &str, plan: &str) -> CallOptions {
    let mut md = Metadata::new();
    md.append("x-key", key).unwrap();
    md.append("x-plan", plan).unwrap();
    CallOptions::new()
        .metadata(md)
        .timeout(Duration::from_secs(25))
}

async fn unary(setup: &Setup, key: &str, plan: &str) -> Result<Bytes, Status> {
    setup
        .channel
        .unary("/hedge.Svc/Unary", Bytes::new(), options(key, plan))
        .await
        .map(Response::into_message)
}

async fn the_first_response_wins_and_the_others_are_cancelled(env: Env) {
    let s = setup(&env, &hedging_config(3, "0.02s"));
    let reply = unary(&s, "a", "stall,ok").await.unwrap();
    assert_eq!(reply, "attempt 1");
    // The stalled first attempt is cancelled once the second wins.
    assert_eq!(
        s.cancelled
            .next(Duration::from_secs(20), "the cancel of the stalled attempt")
            .await,
        "a/0"
    );
    assert_eq!(s.seen.attempts("a"), [0, 1]);
}

async fn a_non_fatal_failure_starts_the_next_attempt_at_once(env: Env) {
    // The delay is longer than the test's time limit: only the failure can start attempt 1.
    let s = setup(&env, &hedging_config(3, "60s"));
    let reply = unary(&s, "a", "unavailable,ok").await.unwrap();
    assert_eq!(reply, "attempt 1");
    assert_eq!(s.seen.attempts("a"), [0, 1]);
}

async fn a_fatal_status_ends_the_call(env: Env) {
    let s = setup(&env, &hedging_config(3, "60s"));
    let err = unary(&s, "a", "internal,ok").await.unwrap_err();
    assert_eq!(err.code(), Code::Internal);
    assert_eq!(s.seen.attempts("a"), [0]);
}

async fn when_every_attempt_fails_the_last_status_is_returned(env: Env) {
    let s = setup(&env, &hedging_config(3, "60s"));
    let err = unary(&s, "a", "unavailable,unavailable,unavailable,ok")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
    assert_eq!(s.seen.attempts("a"), [0, 1, 2]);
}

async fn pushback_stops_hedging(env: Env) {
    let s = setup(&env, &hedging_config(3, "60s"));
    let err = unary(&s, "a", "unavailable-stop,ok").await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
    assert_eq!(err.message(), "non-fatal, stop");
    assert_eq!(s.seen.attempts("a"), [0]);
}

async fn a_streamed_request_reaches_every_attempt(env: Env) {
    let s = setup(&env, &hedging_config(2, "0.02s"));
    let (sender, response) = s
        .channel
        .client_streaming("/hedge.Svc/Collect", options("a", "stall,ok"))
        .await
        .unwrap();
    // Attempts start while the response is awaited. "one " goes out before the hedge starts
    // (the hedge gets it replayed), "two" after (it gets it as it is sent).
    let send = async {
        sender.send(Bytes::from_static(b"one ")).await.unwrap();
        let what = "an attempt";
        let mut started = vec![
            s.started.next(Duration::from_secs(20), what).await,
            s.started.next(Duration::from_secs(20), what).await,
        ];
        started.sort();
        assert_eq!(started, ["attempt 0", "attempt 1"]);
        sender.send(Bytes::from_static(b"two")).await.unwrap();
        sender.close().await.unwrap();
    };
    let ((), reply) = futures_util::future::join(send, response.response()).await;
    assert_eq!(reply.unwrap().into_message(), "one two");
    let what = "the cancel of the stalled attempt";
    assert_eq!(s.cancelled.next(Duration::from_secs(20), what).await, "a/0");
}
