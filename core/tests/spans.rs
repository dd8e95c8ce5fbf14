//! The `tracing` feature: calls are spans (grpc.client.call, grpc.client.attempt,
//! grpc.server.call) with the gRPC fields, nested where they were made, and closed when the
//! call ends; a handler's events and the calls it makes nest under its server span.
//!
//! A hand-written subscriber records what tracing reports, so the test sees exactly the spans
//! a real subscriber (tracing-subscriber, tracing-opentelemetry) would.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use plexus::{BytesCodec, CallOptions, Channel, Listener, Request, Response, Server, Status};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Instrument, Metadata, Subscriber};

/// One span as the subscriber saw it.
#[derive(Clone, Debug, Default)]
struct SpanSeen {
    name: &'static str,
    parent: Option<u64>,
    fields: HashMap<String, String>,
    refs: usize,
    closed: bool,
}

#[derive(Default)]
struct Seen {
    spans: HashMap<u64, SpanSeen>,
    /// Events: (message, the span current when it was emitted).
    events: Vec<(String, Option<u64>)>,
}

#[derive(Default)]
struct Recorder {
    next: AtomicU64,
    seen: Mutex<Seen>,
}

thread_local! {
    /// The spans entered on this thread, innermost last.
    static CURRENT: RefCell<Vec<u64>> = const { RefCell::new(Vec::new()) };
}

fn current() -> Option<u64> {
    CURRENT.with(|stack| stack.borrow().last().copied())
}

struct Fields<'a>(&'a mut HashMap<String, String>);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0
            .insert(field.name().to_string(), format!("{value:?}"));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_string(), value.to_string());
    }
}

impl Subscriber for Recorder {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }

    fn new_span(&self, attrs: &Attributes<'_>) -> Id {
        let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let parent = match attrs.parent() {
            Some(parent) => Some(parent.into_u64()),
            None if attrs.is_contextual() => current(),
            None => None,
        };
        let mut span = SpanSeen {
            name: attrs.metadata().name(),
            parent,
            refs: 1,
            ..SpanSeen::default()
        };
        attrs.record(&mut Fields(&mut span.fields));
        self.seen.lock().unwrap().spans.insert(id, span);
        Id::from_u64(id)
    }

    fn record(&self, span: &Id, values: &Record<'_>) {
        let mut seen = self.seen.lock().unwrap();
        let span = seen.spans.get_mut(&span.into_u64()).unwrap();
        values.record(&mut Fields(&mut span.fields));
    }

    fn record_follows_from(&self, _: &Id, _: &Id) {}

    fn event(&self, event: &Event<'_>) {
        let mut fields = HashMap::new();
        event.record(&mut Fields(&mut fields));
        let message = fields.remove("message").unwrap_or_default();
        self.seen.lock().unwrap().events.push((message, current()));
    }

    fn enter(&self, span: &Id) {
        CURRENT.with(|stack| stack.borrow_mut().push(span.into_u64()));
    }

    fn exit(&self, span: &Id) {
        CURRENT.with(|stack| {
            let mut stack = stack.borrow_mut();
            if let Some(i) = stack.iter().rposition(|s| *s == span.into_u64()) {
                stack.remove(i);
            }
        });
    }

    fn clone_span(&self, span: &Id) -> Id {
        let mut seen = self.seen.lock().unwrap();
        seen.spans.get_mut(&span.into_u64()).unwrap().refs += 1;
        span.clone()
    }

    fn try_close(&self, span: Id) -> bool {
        let mut seen = self.seen.lock().unwrap();
        let span = seen.spans.get_mut(&span.into_u64()).unwrap();
        span.refs -= 1;
        span.closed = span.refs == 0;
        span.closed
    }
}

fn recorder() -> &'static Recorder {
    static RECORDER: OnceLock<&'static Recorder> = OnceLock::new();
    RECORDER.get_or_init(|| {
        let recorder: &'static Recorder = Box::leak(Box::default());
        tracing::subscriber::set_global_default(RecorderRef(recorder)).unwrap();
        recorder
    })
}

/// The subscriber installed globally, pointing at the leaked recorder the test reads.
struct RecorderRef(&'static Recorder);

impl Subscriber for RecorderRef {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        self.0.enabled(metadata)
    }
    fn new_span(&self, attrs: &Attributes<'_>) -> Id {
        self.0.new_span(attrs)
    }
    fn record(&self, span: &Id, values: &Record<'_>) {
        self.0.record(span, values)
    }
    fn record_follows_from(&self, span: &Id, follows: &Id) {
        self.0.record_follows_from(span, follows)
    }
    fn event(&self, event: &Event<'_>) {
        self.0.event(event)
    }
    fn enter(&self, span: &Id) {
        self.0.enter(span)
    }
    fn exit(&self, span: &Id) {
        self.0.exit(span)
    }
    fn clone_span(&self, span: &Id) -> Id {
        self.0.clone_span(span)
    }
    fn try_close(&self, span: Id) -> bool {
        self.0.try_close(span)
    }
}

/// The spans named `name` whose `field` is `value`.
fn spans(seen: &Seen, name: &str, field: &str, value: &str) -> Vec<(u64, SpanSeen)> {
    let mut found: Vec<(u64, SpanSeen)> = seen
        .spans
        .iter()
        .filter(|(_, s)| s.name == name && s.fields.get(field).is_some_and(|v| v == value))
        .map(|(id, s)| (*id, s.clone()))
        .collect();
    found.sort_by_key(|(id, _)| *id);
    found
}

#[test]
fn calls_are_spans_nested_where_they_were_made() {
    let recorder = recorder();
    let flaky_calls = Arc::new(AtomicUsize::new(0));
    let flaky = Server::builder()
        .unary("/t.Svc/Flaky", BytesCodec, move |_req: Request<Bytes>| {
            let first = flaky_calls.fetch_add(1, Ordering::SeqCst) == 0;
            async move {
                if first {
                    Err(Status::unavailable("first attempt fails"))
                } else {
                    Ok(Response::new(Bytes::from_static(b"ok")))
                }
            }
        })
        .build()
        .unwrap();
    let listener = Listener::bind_tcp("127.0.0.1:0").unwrap();
    let flaky_target = format!("http://{}", listener.local_addr().unwrap());
    smol::spawn(async move { flaky.serve(listener).await }).detach();
    let config = r#"{"methodConfig": [{"name": [{"service": "t.Svc"}],
        "retryPolicy": {"maxAttempts": 2, "initialBackoff": "0.001s", "maxBackoff": "0.001s",
        "backoffMultiplier": 1, "retryableStatusCodes": ["UNAVAILABLE"]}}]}"#;
    let downstream = Channel::builder(&flaky_target)
        .default_service_config(config)
        .build()
        .unwrap();

    // The front server's handler logs and calls the flaky one.
    let front = Server::builder()
        .unary("/t.Front/Outer", BytesCodec, move |req: Request<Bytes>| {
            let downstream = downstream.clone();
            async move {
                tracing::info!("in the handler");
                let options = CallOptions::new().child_of(req.context());
                let answer = downstream.unary("/t.Svc/Flaky", req.into_message(), options);
                Ok(Response::new(answer.await?.into_message()))
            }
        })
        .build()
        .unwrap();
    let listener = Listener::bind_tcp("127.0.0.1:0").unwrap();
    let front_target = format!("http://{}", listener.local_addr().unwrap());
    smol::spawn(async move { front.serve(listener).await }).detach();
    let channel = Channel::builder(&front_target).build().unwrap();

    let root = tracing::info_span!("test.root");
    let root_id = root.id().unwrap().into_u64();
    smol::block_on(
        async {
            let call = channel.unary(
                "/t.Front/Outer",
                Bytes::from_static(b"x"),
                CallOptions::new(),
            );
            assert_eq!(call.await.unwrap().into_message(), "ok");
        }
        .instrument(root),
    );

    // Spans close as their calls end, which on the server may be just after the answer.
    let limit = Instant::now() + Duration::from_secs(20);
    loop {
        let seen = recorder.seen.lock().unwrap();
        let open = seen
            .spans
            .values()
            .filter(|s| s.name.starts_with("grpc.") && !s.closed);
        if open.count() == 0 {
            break;
        }
        drop(seen);
        assert!(Instant::now() < limit, "call spans were never closed");
        std::thread::sleep(Duration::from_millis(5));
    }

    let seen = recorder.seen.lock().unwrap();
    let outer = spans(&seen, "grpc.client.call", "grpc.method", "t.Front/Outer");
    assert_eq!(outer.len(), 1, "{:?}", seen.spans);
    let (outer_id, outer) = &outer[0];
    assert_eq!(
        outer.parent,
        Some(root_id),
        "the call's span is a child of the caller's"
    );
    assert_eq!(outer.fields["grpc.target"], front_target);
    assert_eq!(outer.fields["grpc.status"], "OK");
    let attempts: Vec<_> = seen
        .spans
        .values()
        .filter(|s| s.name == "grpc.client.attempt" && s.parent == Some(*outer_id))
        .collect();
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0].fields["grpc.status"], "OK");

    let handler = spans(&seen, "grpc.server.call", "grpc.method", "t.Front/Outer");
    assert_eq!(handler.len(), 1);
    let (handler_id, handler) = &handler[0];
    assert_eq!(handler.fields["grpc.status"], "OK");
    let logged: Vec<_> = seen
        .events
        .iter()
        .filter(|(message, _)| message == "in the handler")
        .collect();
    assert_eq!(logged, [&("in the handler".to_string(), Some(*handler_id))]);

    // The handler's own call nests under its server span, with one span per attempt.
    let inner = spans(&seen, "grpc.client.call", "grpc.method", "t.Svc/Flaky");
    assert_eq!(inner.len(), 1);
    let (inner_id, inner) = &inner[0];
    assert_eq!(inner.parent, Some(*handler_id));
    assert_eq!(inner.fields["grpc.status"], "OK");
    let mut attempts: Vec<_> = seen
        .spans
        .iter()
        .filter(|(_, s)| s.name == "grpc.client.attempt" && s.parent == Some(*inner_id))
        .collect();
    attempts.sort_by_key(|(id, _)| **id);
    let attempts: Vec<(&str, &str)> = attempts
        .iter()
        .map(|(_, s)| {
            (
                s.fields["grpc.previous_rpc_attempts"].as_str(),
                s.fields["grpc.status"].as_str(),
            )
        })
        .collect();
    assert_eq!(attempts, [("0", "UNAVAILABLE"), ("1", "OK")]);
    let flaky_calls = spans(&seen, "grpc.server.call", "grpc.method", "t.Svc/Flaky");
    let statuses: Vec<&str> = flaky_calls
        .iter()
        .map(|(_, s)| s.fields["grpc.status"].as_str())
        .collect();
    assert_eq!(statuses, ["UNAVAILABLE", "OK"]);
}
