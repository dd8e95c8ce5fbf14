//! Starts a plexus server on a Unix socket and on TCP loopback, makes all four kinds of call
//! through one channel, and prints what happened.
//!
//! Run with `cargo run --release --example quickstart`.

use std::time::{Duration, Instant};

use plexus::{
    CallOptions, Channel, Listener, Metadata, ProstCodec, Request, RequestStream, Response,
    ResponseSink, Server,
};

/// A greeting request.
#[derive(Clone, PartialEq, prost::Message)]
struct HelloRequest {
    #[prost(string, tag = "1")]
    name: String,
}

/// A greeting reply.
#[derive(Clone, PartialEq, prost::Message)]
struct HelloReply {
    #[prost(string, tag = "1")]
    message: String,
}

type ServerCodec = ProstCodec<HelloReply, HelloRequest>;
type ClientCodec = ProstCodec<HelloRequest, HelloReply>;

fn reply(message: String) -> HelloReply {
    HelloReply { message }
}

fn server() -> Result<Server, plexus::Error> {
    Server::builder()
        .unary("/quickstart.Greeter/SayHello", ServerCodec::new(), |req: Request<HelloRequest>| async move {
            let mut response = Response::new(reply(format!("hello, {}", req.message().name)));
            response.trailers_mut().append("x-served-by", "plexus")?;
            Ok(response)
        })
        .server_streaming(
            "/quickstart.Greeter/Countdown",
            ServerCodec::new(),
            |req: Request<HelloRequest>, sink: ResponseSink<HelloReply>| async move {
                for i in (1..=3).rev() {
                    sink.send(reply(format!("{}: {i}", req.message().name))).await?;
                }
                Ok(())
            },
        )
        .client_streaming(
            "/quickstart.Greeter/Gather",
            ServerCodec::new(),
            |mut req: Request<RequestStream<HelloRequest>>| async move {
                let mut names = Vec::new();
                while let Some(msg) = req.message_mut().message().await? {
                    names.push(msg.name);
                }
                Ok(Response::new(reply(format!("hello, {}", names.join(" and ")))))
            },
        )
        .bidi_streaming(
            "/quickstart.Greeter/Chat",
            ServerCodec::new(),
            |mut req: Request<RequestStream<HelloRequest>>, sink: ResponseSink<HelloReply>| async move {
                while let Some(msg) = req.message_mut().message().await? {
                    sink.send(reply(format!("echo {}", msg.name))).await?;
                }
                Ok(())
            },
        )
        .build()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    smol::block_on(async {
        let server = server()?;
        let tcp = Listener::bind_tcp("127.0.0.1:0")?;
        let addr = tcp.local_addr().expect("tcp listener has an address");
        let socket =
            std::env::temp_dir().join(format!("plexus-quickstart-{}.sock", std::process::id()));
        let _ = std::fs::remove_file(&socket);
        let uds = Listener::bind_unix(&socket)?;
        for listener in [tcp, uds] {
            let server = server.clone();
            smol::spawn(async move { server.serve(listener).await }).detach();
        }
        println!("server listening on {addr} and unix:{}", socket.display());

        // One channel; every call below multiplexes over its single HTTP/2 connection.
        let channel = Channel::new(&format!("http://{addr}"))?;
        let greeter = channel.typed(ClientCodec::new());

        let mut md = Metadata::new();
        md.append("x-client", "quickstart")?;
        let started = Instant::now();
        let response = greeter
            .unary(
                "/quickstart.Greeter/SayHello",
                &HelloRequest {
                    name: "world".into(),
                },
                CallOptions::new()
                    .timeout(Duration::from_secs(5))
                    .metadata(md),
            )
            .await?;
        println!(
            "unary:            {:?} (trailer x-served-by={:?}, {:?})",
            response.message().message,
            response.trailers().get("x-served-by").unwrap_or("-"),
            started.elapsed()
        );

        let mut stream = greeter
            .server_streaming(
                "/quickstart.Greeter/Countdown",
                &HelloRequest {
                    name: "liftoff".into(),
                },
                CallOptions::new(),
            )
            .await?;
        while let Some(msg) = stream.message().await? {
            println!("server streaming: {:?}", msg.message);
        }

        let (tx, response) = greeter
            .client_streaming("/quickstart.Greeter/Gather", CallOptions::new())
            .await?;
        for name in ["ada", "grace", "linus"] {
            tx.send(HelloRequest { name: name.into() }).await?;
        }
        drop(tx);
        println!("client streaming: {:?}", response.await?.message().message);

        let (tx, mut rx) = greeter
            .bidi_streaming("/quickstart.Greeter/Chat", CallOptions::new())
            .await?;
        for name in ["ping", "pong"] {
            tx.send(HelloRequest { name: name.into() }).await?;
            let msg = rx.message().await?.expect("one reply per message");
            println!("bidi streaming:   {:?}", msg.message);
        }
        tx.close().await?;
        assert!(rx.message().await?.is_none());

        // The same server over its Unix socket.
        let local = Channel::new(&format!("unix:{}", socket.display()))?.typed(ClientCodec::new());
        let response = local
            .unary(
                "/quickstart.Greeter/SayHello",
                &HelloRequest {
                    name: "unix socket".into(),
                },
                CallOptions::new(),
            )
            .await?;
        println!("unary over UDS:   {:?}", response.message().message);

        let status = channel
            .unary(
                "/quickstart.Greeter/Missing",
                bytes::Bytes::new(),
                CallOptions::new(),
            )
            .await
            .expect_err("no such method");
        println!("unknown method:   {status}");

        let stats = channel.stats();
        println!(
            "channel stats:    {} calls started, {} succeeded, {} failed, over {} connection(s), {:?}",
            stats.calls_started,
            stats.calls_succeeded,
            stats.calls_failed,
            stats.connections(),
            stats.state
        );

        server.shutdown(Duration::from_secs(1)).await;
        println!("server shut down; all calls done");
        Ok(())
    })
}
