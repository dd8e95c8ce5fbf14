//! The two halves together: round_robin channels with `healthCheckConfig` (gRFC A17, in
//! plexus's client) over servers running this crate's Health service. A server whose reporter
//! says NOT_SERVING stops getting calls, and gets them again once it says SERVING; at graceful
//! shutdown the server turns NOT_SERVING before it goes. Over loopback TCP; every wait is
//! bounded and no assertion depends on timing.

use std::collections::BTreeMap;
use std::pin::pin;
use std::time::{Duration, Instant};

use async_io::Timer;
use bytes::Bytes;
use futures_util::future::{Either, select};
use plexus::{
    BytesCodec, CallOptions, Channel, Listener, Request, Response, Server, ServerBuilder,
};
use plexus_health::HealthReporter;

const WHO: &str = "/hc.Test/Who";
const SERVICE: &str = "hc.Test";

/// A server answering WHO with `name`, with the Health service; its reporter and address.
fn backend(name: u8) -> (Server, HealthReporter, String) {
    let builder =
        ServerBuilder::default().unary(WHO, BytesCodec, move |_: Request<Bytes>| async move {
            Ok(Response::new(Bytes::from(vec![name])))
        });
    let (builder, health) = plexus_health::install(builder);
    health.set_serving(SERVICE);
    let server = builder.build().unwrap();
    let listener = Listener::bind_tcp("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let serving = server.clone();
    std::thread::spawn(move || smol::block_on(serving.serve(listener)));
    (server, health, address)
}

/// Which servers answered `count` calls in a row.
async fn answers(channel: &Channel, count: usize) -> BTreeMap<u8, usize> {
    let mut seen = BTreeMap::new();
    for _ in 0..count {
        let reply = channel
            .unary(WHO, Bytes::new(), CallOptions::new())
            .await
            .unwrap();
        *seen.entry(reply.into_message()[0]).or_default() += 1;
    }
    seen
}

/// Calls until a batch of 30 is answered by exactly `wanted`.
async fn until_only(channel: &Channel, wanted: &[u8], what: &str) {
    let limit = Instant::now() + Duration::from_secs(20);
    loop {
        let seen = answers(channel, 30).await;
        if seen.keys().copied().eq(wanted.iter().copied()) {
            return;
        }
        assert!(Instant::now() < limit, "{what}: still answered by {seen:?}");
        Timer::after(Duration::from_millis(10)).await;
    }
}

#[test]
fn round_robin_follows_the_health_reporters() {
    let servers: Vec<_> = (1..=3).map(backend).collect();
    let addresses: Vec<&str> = servers.iter().map(|(_, _, a)| a.as_str()).collect();
    let config = format!(
        r#"{{"loadBalancingConfig": [{{"round_robin": {{}}}}],
            "healthCheckConfig": {{"serviceName": "{SERVICE}"}}}}"#
    );
    let channel = Channel::builder(&format!("ipv4:{}", addresses.join(",")))
        .default_service_config(&config)
        .build()
        .unwrap();
    smol::block_on(async {
        let body = async {
            until_only(&channel, &[1, 2, 3], "all serving").await;
            servers[1].1.set_not_serving(SERVICE);
            until_only(&channel, &[1, 3], "server 2 not serving").await;
            servers[1].1.set_serving(SERVICE);
            until_only(&channel, &[1, 2, 3], "server 2 serving again").await;
            // Graceful shutdown turns server 3 NOT_SERVING first: it leaves the rotation.
            let (leaving, _, _) = &servers[2];
            let stop = leaving.shutdown(Duration::from_secs(10));
            let calls = until_only(&channel, &[1, 2], "server 3 shutting down");
            let (_, ()) = futures_util::future::join(stop, calls).await;
        };
        let limit = Timer::after(Duration::from_secs(60));
        if let Either::Right(_) = select(pin!(body), limit).await {
            panic!("the test did not finish within 60 s");
        }
    });
}
