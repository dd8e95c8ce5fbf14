//! The Health service end to end on smol: a plexus server with the service, over in-memory
//! pipes, called through the generated `HealthClient`. Every body has a hard timeout, and no
//! assertion depends on how long anything took.

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::future::{Either, select};
use plexus::transport::Address;
use plexus::transport::memory;
use plexus::{
    CallOptions, Channel, Code, Request, Response, ResponseSink, Server, ServerBuilder,
    SmolExecutor, StaticResolver, Status, Streaming,
};
use plexus_health::{
    Health, HealthCheckRequest, HealthCheckResponse, HealthClient, HealthListRequest,
    HealthListResponse, HealthServer, HealthService, MAX_LIST_SERVICES, ServingStatus,
};

/// Hard limit on one test body; nothing here should come near it.
const TEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs `body` on smol, failing the test if it outlasts [`TEST_TIMEOUT`].
fn run<F: Future<Output = ()>>(body: F) {
    smol::block_on(async {
        let timeout = async_io::Timer::after(TEST_TIMEOUT);
        if let Either::Right(_) = select(pin!(body), timeout).await {
            panic!("the test did not finish within {TEST_TIMEOUT:?}");
        }
    });
}

/// A server built from `builder`, served in memory on smol, and a client to it.
fn serve(builder: ServerBuilder) -> (Server, HealthClient) {
    let server = builder
        .executor(SmolExecutor)
        .build()
        .expect("valid server");
    let (connector, listener) = memory::channel();
    let serving = server.clone();
    smol::spawn(async move {
        let _ = serving.serve_incoming(listener).await;
    })
    .detach();
    let channel = Channel::builder("http://in-memory.test:50051")
        .executor(SmolExecutor)
        .connector(connector)
        .resolver(StaticResolver::new([Address::Unix("in-memory".into())]))
        .build()
        .expect("valid channel");
    (server, HealthClient::new(channel))
}

fn request(service: &str) -> HealthCheckRequest {
    HealthCheckRequest {
        service: service.to_string(),
    }
}

async fn check(client: &HealthClient, service: &str) -> Result<ServingStatus, Status> {
    let reply = client.check(&request(service), CallOptions::new()).await?;
    Ok(reply.message().status())
}

async fn watch(client: &HealthClient, service: &str) -> Streaming<HealthCheckResponse> {
    client
        .watch(&request(service), CallOptions::new())
        .await
        .expect("watch starts")
}

/// The next status a watch sends; fails the test if the stream ends instead.
async fn next(watch: &mut Streaming<HealthCheckResponse>) -> ServingStatus {
    match watch.message().await {
        Ok(Some(reply)) => reply.status(),
        other => panic!("the watch ended instead of sending a status: {other:?}"),
    }
}

#[test]
fn check_answers_each_status_and_not_found_for_an_unknown_service() {
    run(async {
        let (builder, health) = plexus_health::install(Server::builder());
        let (_server, client) = serve(builder);
        assert_eq!(check(&client, "").await.unwrap(), ServingStatus::Serving);

        health.set_serving("a.B");
        assert_eq!(check(&client, "a.B").await.unwrap(), ServingStatus::Serving);
        health.set_not_serving("a.B");
        assert_eq!(
            check(&client, "a.B").await.unwrap(),
            ServingStatus::NotServing
        );
        health.set_status("", ServingStatus::NotServing);
        assert_eq!(check(&client, "").await.unwrap(), ServingStatus::NotServing);

        let unknown = check(&client, "no.Such").await.unwrap_err();
        assert_eq!(unknown.code(), Code::NotFound, "{unknown}");
        health.clear("a.B");
        let cleared = check(&client, "a.B").await.unwrap_err();
        assert_eq!(cleared.code(), Code::NotFound, "{cleared}");
    });
}

#[test]
fn watch_sends_the_current_status_then_every_change() {
    run(async {
        let (builder, health) = plexus_health::install(Server::builder());
        let (_server, client) = serve(builder);

        let mut whole = watch(&client, "").await;
        assert_eq!(next(&mut whole).await, ServingStatus::Serving);

        // Unknown at first: SERVICE_UNKNOWN, and the stream stays open for when it appears.
        let mut named = watch(&client, "a.B").await;
        assert_eq!(next(&mut named).await, ServingStatus::ServiceUnknown);
        health.set_serving("a.B");
        assert_eq!(next(&mut named).await, ServingStatus::Serving);
        health.set_not_serving("a.B");
        assert_eq!(next(&mut named).await, ServingStatus::NotServing);
        health.clear("a.B");
        assert_eq!(next(&mut named).await, ServingStatus::ServiceUnknown);

        // A change to another service sends nothing here: the next message is this one's.
        health.set_not_serving("");
        assert_eq!(next(&mut whole).await, ServingStatus::NotServing);
        health.set_serving("a.B");
        assert_eq!(next(&mut named).await, ServingStatus::Serving);
    });
}

#[test]
fn a_watcher_that_falls_behind_still_gets_the_last_status() {
    run(async {
        let (builder, health) = plexus_health::install(Server::builder());
        let (_server, client) = serve(builder);
        let mut named = watch(&client, "a.B").await;
        assert_eq!(next(&mut named).await, ServingStatus::ServiceUnknown);
        for _ in 0..50 {
            health.set_serving("a.B");
            health.set_not_serving("a.B");
        }
        // Intermediate values may be coalesced away, the last one never.
        let mut last = next(&mut named).await;
        while last != ServingStatus::NotServing {
            last = next(&mut named).await;
        }
    });
}

#[test]
fn list_gives_every_status_up_to_the_limit() {
    run(async {
        let (builder, health) = plexus_health::install(Server::builder());
        let (_server, client) = serve(builder);
        health.set_serving("a.B");
        health.set_not_serving("c.D");
        let list = client
            .list(&HealthListRequest {}, CallOptions::new())
            .await
            .expect("list");
        let mut statuses: Vec<(String, ServingStatus)> = list
            .message()
            .statuses
            .iter()
            .map(|(name, reply)| (name.clone(), reply.status()))
            .collect();
        statuses.sort();
        assert_eq!(
            statuses,
            [
                (String::new(), ServingStatus::Serving),
                ("a.B".to_string(), ServingStatus::Serving),
                ("c.D".to_string(), ServingStatus::NotServing),
            ]
        );

        // "" and a.B and c.D are three; this makes MAX_LIST_SERVICES + 1.
        for i in 0..MAX_LIST_SERVICES - 2 {
            health.set_serving(&format!("many.S{i}"));
        }
        let too_many = client
            .list(&HealthListRequest {}, CallOptions::new())
            .await
            .unwrap_err();
        assert_eq!(too_many.code(), Code::ResourceExhausted, "{too_many}");
        health.clear("many.S0");
        let list = client
            .list(&HealthListRequest {}, CallOptions::new())
            .await
            .expect("list at the limit");
        assert_eq!(list.message().statuses.len(), MAX_LIST_SERVICES);
    });
}

#[test]
fn server_shutdown_turns_everything_not_serving_and_watchers_hear_it_first() {
    run(async {
        let (builder, health) = plexus_health::install(Server::builder());
        let (server, client) = serve(builder);
        health.set_serving("a.B");
        let mut whole = watch(&client, "").await;
        let mut named = watch(&client, "a.B").await;
        let mut unknown = watch(&client, "no.Such").await;
        assert_eq!(next(&mut whole).await, ServingStatus::Serving);
        assert_eq!(next(&mut named).await, ServingStatus::Serving);
        assert_eq!(next(&mut unknown).await, ServingStatus::ServiceUnknown);

        // A grace far past the test's timeout: shutdown returns in time only because the
        // watch streams end by themselves once they have sent NOT_SERVING.
        let stopping = smol::spawn({
            let server = server.clone();
            async move { server.shutdown(2 * TEST_TIMEOUT).await }
        });
        for stream in [&mut whole, &mut named] {
            assert_eq!(next(stream).await, ServingStatus::NotServing);
        }
        for mut stream in [whole, named, unknown] {
            let end = stream.message().await.unwrap_err();
            assert_eq!(end.code(), Code::Unavailable, "{end}");
        }
        stopping.await;

        assert!(health.is_shut_down());
        health.set_serving("a.B");
        health.clear("");
        assert_eq!(health.status("a.B"), Some(ServingStatus::NotServing));
        assert_eq!(health.status(""), Some(ServingStatus::NotServing));
    });
}

/// Counts the Watch handlers that have returned, around the real service.
struct Counting {
    inner: HealthService,
    finished: Arc<AtomicUsize>,
    notify: async_channel::Sender<()>,
}

impl Health for Counting {
    async fn check(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        self.inner.check(request).await
    }

    async fn list(
        &self,
        request: Request<HealthListRequest>,
    ) -> Result<Response<HealthListResponse>, Status> {
        self.inner.list(request).await
    }

    async fn watch(
        &self,
        request: Request<HealthCheckRequest>,
        sink: ResponseSink<HealthCheckResponse>,
    ) -> Result<(), Status> {
        let result = self.inner.watch(request, sink).await;
        self.finished.fetch_add(1, Ordering::SeqCst);
        let _ = self.notify.send(()).await;
        result
    }
}

#[test]
fn a_watch_ends_when_the_client_cancels() {
    run(async {
        let (health, _) = plexus_health::health_reporter();
        let finished = Arc::new(AtomicUsize::new(0));
        let (notify, done) = async_channel::unbounded();
        let counting = Counting {
            inner: health.service(),
            finished: finished.clone(),
            notify,
        };
        let (_server, client) = serve(Server::builder().add_service(HealthServer::new(counting)));
        let mut stream = watch(&client, "").await;
        assert_eq!(next(&mut stream).await, ServingStatus::Serving);
        assert_eq!(finished.load(Ordering::SeqCst), 0, "the watch ended early");
        stream.cancel();
        done.recv().await.expect("the watch handler returns");
        assert_eq!(finished.load(Ordering::SeqCst), 1);
    });
}

#[test]
fn the_reporter_alone_freezes_at_shutdown() {
    let (health, _) = plexus_health::health_reporter();
    assert_eq!(health.status(""), Some(ServingStatus::Serving));
    assert_eq!(health.status("a.B"), None);
    health.set_status("a.B", ServingStatus::Serving);
    health.set_status("a.B", ServingStatus::ServiceUnknown);
    assert_eq!(health.status("a.B"), None, "SERVICE_UNKNOWN clears");
    health.set_serving("a.B");
    health.shutdown();
    health.set_serving("c.D");
    assert_eq!(health.status("a.B"), Some(ServingStatus::NotServing));
    assert_eq!(health.status("c.D"), None);
    assert!(health.clone().is_shut_down());
}
