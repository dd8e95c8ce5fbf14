//! gRFC A66 measurements through a `Metrics` implementation, on a channel and a server:
//! names, labels, attempts of a retried call, and message sizes.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_io::Timer;
use bytes::Bytes;
use plexus::metrics::{self, Metrics};
use plexus::{BytesCodec, CallOptions, Channel, Listener, Request, Response, Server, Status};

/// One measurement: instrument, value, labels.
type Entry = (&'static str, f64, Vec<(String, String)>);

#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<Entry>>>);

impl Recorder {
    fn push(&self, name: &'static str, value: f64, labels: &[(&'static str, &str)]) {
        let labels = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.0.lock().unwrap().push((name, value, labels));
    }

    /// The entries for `name`, as (value, status label) pairs.
    fn values(&self, name: &str) -> Vec<(f64, String)> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|(n, _, _)| *n == name)
            .map(|(_, v, labels)| {
                let status = labels
                    .iter()
                    .find(|(k, _)| k == metrics::STATUS)
                    .map_or(String::new(), |(_, v)| v.clone());
                (*v, status)
            })
            .collect()
    }

    fn labels(&self, name: &str) -> Vec<(String, String)> {
        let entries = self.0.lock().unwrap();
        let (_, _, labels) = entries.iter().find(|(n, _, _)| *n == name).unwrap();
        labels.clone()
    }

    fn clear(&self) {
        self.0.lock().unwrap().clear();
    }
}

impl Metrics for Recorder {
    fn add(&self, name: &'static str, value: u64, labels: &[(&'static str, &str)]) {
        self.push(name, value as f64, labels);
    }

    fn record(&self, name: &'static str, value: f64, labels: &[(&'static str, &str)]) {
        self.push(name, value, labels);
    }
}

/// Waits until the server has recorded `count` call durations (it records as the call ends,
/// which may be just after the client has its answer).
async fn server_calls(server: &Recorder, count: usize) {
    let limit = Instant::now() + Duration::from_secs(20);
    while server.values(metrics::SERVER_CALL_DURATION).len() < count {
        assert!(Instant::now() < limit, "the server recorded no end of call");
        Timer::after(Duration::from_millis(5)).await;
    }
}

#[test]
fn calls_and_attempts_are_measured_on_both_sides() {
    let (client, server) = (Recorder::default(), Recorder::default());
    let fails = Arc::new(AtomicUsize::new(0));
    let failing = fails.clone();
    let built = Server::builder()
        .metrics(server.clone())
        .unary(
            "/m.Svc/Echo",
            BytesCodec,
            |req: Request<Bytes>| async move { Ok(Response::new(req.into_message())) },
        )
        .unary("/m.Svc/Flaky", BytesCodec, move |_req: Request<Bytes>| {
            let first = failing.fetch_add(1, Ordering::SeqCst) == 0;
            async move {
                if first {
                    Err(Status::unavailable("first attempt"))
                } else {
                    Ok(Response::new(Bytes::from_static(b"ok")))
                }
            }
        })
        .build()
        .unwrap();
    let listener = Listener::bind_tcp("127.0.0.1:0").unwrap();
    let target = format!("http://{}", listener.local_addr().unwrap());
    smol::spawn(async move { built.serve(listener).await }).detach();
    let config = r#"{"methodConfig": [{"name": [{"service": "m.Svc", "method": "Flaky"}],
        "retryPolicy": {"maxAttempts": 3, "initialBackoff": "0.001s", "maxBackoff": "0.001s",
        "backoffMultiplier": 1, "retryableStatusCodes": ["UNAVAILABLE"]}}]}"#;
    let channel = Channel::builder(&target)
        .metrics(client.clone())
        .default_service_config(config)
        .build()
        .unwrap();

    smol::block_on(async {
        let payload = Bytes::from(vec![7u8; 100]);
        channel
            .unary("/m.Svc/Echo", payload, CallOptions::new())
            .await
            .unwrap();
        assert_eq!(
            client.values(metrics::CLIENT_ATTEMPT_STARTED),
            [(1.0, String::new())]
        );
        assert_eq!(
            client.labels(metrics::CLIENT_ATTEMPT_STARTED),
            [
                ("grpc.method".to_string(), "m.Svc/Echo".to_string()),
                ("grpc.target".to_string(), target.clone())
            ]
        );
        // 100 bytes and the 5-byte gRPC prefix, each way.
        let sizes = [(105.0, "OK".to_string())];
        assert_eq!(client.values(metrics::CLIENT_ATTEMPT_SENT_BYTES), sizes);
        assert_eq!(client.values(metrics::CLIENT_ATTEMPT_RECEIVED_BYTES), sizes);
        let durations = client.values(metrics::CLIENT_CALL_DURATION);
        assert_eq!(durations.len(), 1);
        assert!(durations[0].0 > 0.0 && durations[0].1 == "OK");
        server_calls(&server, 1).await;
        assert_eq!(
            server.values(metrics::SERVER_CALL_STARTED),
            [(1.0, String::new())]
        );
        assert_eq!(server.values(metrics::SERVER_CALL_SENT_BYTES), sizes);
        assert_eq!(server.values(metrics::SERVER_CALL_RECEIVED_BYTES), sizes);
        assert_eq!(
            server.labels(metrics::SERVER_CALL_DURATION),
            [
                ("grpc.method".to_string(), "m.Svc/Echo".to_string()),
                ("grpc.status".to_string(), "OK".to_string())
            ]
        );

        // A retried call: two attempts, one call.
        client.clear();
        server.clear();
        channel
            .unary("/m.Svc/Flaky", Bytes::new(), CallOptions::new())
            .await
            .unwrap();
        assert_eq!(client.values(metrics::CLIENT_ATTEMPT_STARTED).len(), 2);
        let attempts: Vec<String> = client
            .values(metrics::CLIENT_ATTEMPT_DURATION)
            .into_iter()
            .map(|(_, status)| status)
            .collect();
        assert_eq!(attempts, ["UNAVAILABLE", "OK"]);
        let calls = client.values(metrics::CLIENT_CALL_DURATION);
        assert_eq!(calls.len(), 1);
        assert_eq!(calls[0].1, "OK");
        server_calls(&server, 2).await;
        let statuses: Vec<String> = server
            .values(metrics::SERVER_CALL_DURATION)
            .into_iter()
            .map(|(_, status)| status)
            .collect();
        assert_eq!(statuses, ["UNAVAILABLE", "OK"]);
    });
}
