//! What a host that looks methods up itself needs from the server (the C ABI and the Python
//! server are such hosts): a fallback route for every path not routed, a limit on calls open
//! at once over the whole server, and the client's address.

use std::time::Duration;

use async_io::Timer;
use bytes::Bytes;
use futures_util::future::{Either, select};
use plexus::{
    BytesCodec, CallOptions, Channel, Code, Listener, Request, RequestStream, Response,
    ResponseSink, Server, ServerBuilder, Status,
};

/// Hard limit on anything a test waits for.
const LIMIT: Duration = Duration::from_secs(20);

/// Runs `fut` on smol, failing the test if it takes longer than [`LIMIT`].
fn run<F: std::future::Future>(fut: F) -> F::Output {
    smol::block_on(async {
        match select(std::pin::pin!(fut), Timer::after(LIMIT)).await {
            Either::Left((out, _)) => out,
            Either::Right(_) => panic!("test did not finish within {LIMIT:?}"),
        }
    })
}

/// Serves `builder` on a TCP port of 127.0.0.1; a channel to it.
fn serve(builder: ServerBuilder) -> (Server, Channel) {
    let server = builder.build().unwrap();
    let listener = Listener::bind_tcp("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let s = server.clone();
    smol::spawn(async move { s.serve(listener).await }).detach();
    (server, Channel::new(&format!("http://{addr}")).unwrap())
}

/// Answers every message of a bidi stream with the call's path, then the message.
async fn path_echo(
    req: Request<RequestStream<Bytes>>,
    sink: ResponseSink<Bytes>,
) -> Result<(), Status> {
    let (context, mut stream) = req.into_parts();
    while let Some(message) = stream.message().await? {
        let mut answer = context.method().as_bytes().to_vec();
        answer.push(b' ');
        answer.extend_from_slice(&message);
        sink.send(Bytes::from(answer)).await?;
    }
    Ok(())
}

#[test]
fn the_fallback_serves_every_path_not_routed() {
    let (_server, channel) = serve(
        Server::builder()
            .unary(
                "/a.Known/Say",
                BytesCodec,
                |req: Request<Bytes>| async move { Ok(Response::new(req.into_message())) },
            )
            .fallback(BytesCodec, path_echo),
    );
    run(async {
        let known = channel
            .unary("/a.Known/Say", Bytes::from("hi"), CallOptions::new())
            .await
            .unwrap();
        assert_eq!(known.message(), "hi");
        for path in ["/a.Known/Other", "/b.Unknown/Method"] {
            let other = channel
                .unary(path, Bytes::from("hi"), CallOptions::new())
                .await
                .unwrap();
            assert_eq!(other.message(), format!("{path} hi").as_str());
        }
    });
}

#[test]
fn without_a_fallback_unrouted_paths_are_unimplemented() {
    let (_server, channel) = serve(Server::builder());
    run(async {
        let err = channel
            .unary("/b.Unknown/Method", Bytes::new(), CallOptions::new())
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::Unimplemented, "{err:?}");
    });
}

#[test]
fn calls_beyond_the_servers_limit_are_refused_until_one_ends() {
    let (release_tx, release_rx) = async_channel::unbounded::<()>();
    let (started_tx, started_rx) = async_channel::unbounded::<()>();
    let (_server, channel) = serve(
        Server::builder()
            .max_concurrent_calls(2)
            .unary("/a.S/Hold", BytesCodec, move |_req: Request<Bytes>| {
                let (release, started) = (release_rx.clone(), started_tx.clone());
                async move {
                    let _ = started.send(()).await;
                    let _ = release.recv().await;
                    Ok(Response::new(Bytes::from("released")))
                }
            })
            .unary(
                "/a.S/Quick",
                BytesCodec,
                |_req: Request<Bytes>| async move { Ok(Response::new(Bytes::from("quick"))) },
            ),
    );
    run(async {
        let hold = || {
            let channel = channel.clone();
            async move {
                channel
                    .unary("/a.S/Hold", Bytes::new(), CallOptions::new())
                    .await
            }
        };
        let first = smol::spawn(hold());
        let second = smol::spawn(hold());
        started_rx.recv().await.unwrap();
        started_rx.recv().await.unwrap();
        // Two calls open, on two different paths alike: the third is refused at once.
        let refused = channel
            .unary("/a.S/Quick", Bytes::new(), CallOptions::new())
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
        assert_eq!(refused.message(), "Concurrent RPC limit exceeded!");
        // Releases one of the two handlers (whichever takes the message first) and waits
        // for its call to end.
        release_tx.send(()).await.unwrap();
        let other = match select(first, second).await {
            Either::Left((ended, other)) | Either::Right((ended, other)) => {
                assert_eq!(ended.unwrap().message(), "released");
                other
            }
        };
        // One slot is free again (the other call still holds the second).
        let quick = channel
            .unary("/a.S/Quick", Bytes::new(), CallOptions::new())
            .await
            .unwrap();
        assert_eq!(quick.message(), "quick");
        release_tx.send(()).await.unwrap();
        assert_eq!(other.await.unwrap().message(), "released");
    });
}

/// The peer as the handler sees it, in gRPC's form.
fn peer_route() -> ServerBuilder {
    Server::builder().unary("/a.S/Peer", BytesCodec, |req: Request<Bytes>| async move {
        let peer = req
            .context()
            .remote_addr()
            .map_or_else(|| "none".to_string(), ToString::to_string);
        Ok(Response::new(Bytes::from(peer)))
    })
}

#[test]
fn handlers_see_where_the_client_connected_from() {
    let (_server, channel) = serve(peer_route());
    run(async {
        let peer = channel
            .unary("/a.S/Peer", Bytes::new(), CallOptions::new())
            .await
            .unwrap();
        let text = std::str::from_utf8(peer.message()).unwrap();
        let port = text.strip_prefix("ipv4:127.0.0.1:").expect(text);
        assert!(port.parse::<u16>().is_ok_and(|p| p != 0), "{text}");
    });

    let dir = std::env::temp_dir().join(format!("plexus-peer-{}.sock", std::process::id()));
    let server = peer_route().build().unwrap();
    let listener = Listener::bind_unix(&dir).unwrap();
    let s = server.clone();
    smol::spawn(async move { s.serve(listener).await }).detach();
    let channel = Channel::new(&format!("unix:{}", dir.display())).unwrap();
    run(async {
        let peer = channel
            .unary("/a.S/Peer", Bytes::new(), CallOptions::new())
            .await
            .unwrap();
        // A client's Unix socket has no name.
        assert_eq!(peer.message(), "unix:");
        server.shutdown(Duration::ZERO).await;
    });
}
