//! Starts a plexus server on a Unix socket and on TCP loopback, makes all four kinds of call
//! through one channel with the client generated from `examples/proto/quickstart.proto`, and
//! prints what happened.
//!
//! Run with `cargo run --release --example quickstart`.

use std::time::{Duration, Instant};

use plexus::{
    CallOptions, Channel, Listener, Metadata, Request, RequestStream, Response, ResponseSink,
    Server, Status,
};

/// The code generated from `quickstart.proto`, whose package is `quickstart`.
pub mod quickstart {
    plexus::include_proto!("quickstart");
}

use quickstart::greeter_client::GreeterClient;
use quickstart::greeter_server::{Greeter, GreeterServer};
use quickstart::{HelloReply, HelloRequest};

fn reply(message: String) -> HelloReply {
    HelloReply { message }
}

fn request(name: &str) -> HelloRequest {
    HelloRequest { name: name.into() }
}

/// The server's side of `quickstart.Greeter`.
struct Greetings;

impl Greeter for Greetings {
    async fn say_hello(&self, req: Request<HelloRequest>) -> Result<Response<HelloReply>, Status> {
        let mut response = Response::new(reply(format!("hello, {}", req.message().name)));
        response.trailers_mut().append("x-served-by", "plexus")?;
        Ok(response)
    }

    async fn countdown(
        &self,
        req: Request<HelloRequest>,
        sink: ResponseSink<HelloReply>,
    ) -> Result<(), Status> {
        for i in (1..=3).rev() {
            sink.send(reply(format!("{}: {i}", req.message().name)))
                .await?;
        }
        Ok(())
    }

    async fn gather(
        &self,
        mut req: Request<RequestStream<HelloRequest>>,
    ) -> Result<Response<HelloReply>, Status> {
        let mut names = Vec::new();
        while let Some(msg) = req.message_mut().message().await? {
            names.push(msg.name);
        }
        Ok(Response::new(reply(format!(
            "hello, {}",
            names.join(" and ")
        ))))
    }

    async fn chat(
        &self,
        mut req: Request<RequestStream<HelloRequest>>,
        sink: ResponseSink<HelloReply>,
    ) -> Result<(), Status> {
        while let Some(msg) = req.message_mut().message().await? {
            sink.send(reply(format!("echo {}", msg.name))).await?;
        }
        Ok(())
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    smol::block_on(async {
        let server = Server::builder()
            .add_service(GreeterServer::new(Greetings))
            .build()?;
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
        let greeter = GreeterClient::new(channel.clone());

        let mut md = Metadata::new();
        md.append("x-client", "quickstart")?;
        let started = Instant::now();
        let response = greeter
            .say_hello(
                &request("world"),
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
            .countdown(&request("liftoff"), CallOptions::new())
            .await?;
        while let Some(msg) = stream.message().await? {
            println!("server streaming: {:?}", msg.message);
        }

        let (tx, response) = greeter.gather(CallOptions::new()).await?;
        for name in ["ada", "grace", "linus"] {
            tx.send(request(name)).await?;
        }
        drop(tx);
        println!("client streaming: {:?}", response.await?.message().message);

        let (tx, mut rx) = greeter.chat(CallOptions::new()).await?;
        for name in ["ping", "pong"] {
            tx.send(request(name)).await?;
            let msg = rx.message().await?.expect("one reply per message");
            println!("bidi streaming:   {:?}", msg.message);
        }
        tx.close().await?;
        assert!(rx.message().await?.is_none());

        // The same server over its Unix socket.
        let local = GreeterClient::new(Channel::new(&format!("unix:{}", socket.display()))?);
        let response = local
            .say_hello(&request("unix socket"), CallOptions::new())
            .await?;
        println!("unary over UDS:   {:?}", response.message().message);

        // A method the server does not have, through the untyped API on the same channel: it
        // fails on purpose, to show the status a client gets.
        let status = channel
            .unary(
                "/quickstart.Greeter/Missing",
                bytes::Bytes::new(),
                CallOptions::new(),
            )
            .await
            .expect_err("no such method");
        println!("unknown method:   {status} (deliberate: no such method)");

        let stats = channel.stats();
        println!(
            "channel stats:    {} calls started, {} succeeded, {} failed (1 expected: the \
             unknown method above), over {} connection(s), {:?}",
            stats.calls_started,
            stats.calls_succeeded,
            stats.calls_failed,
            stats.connections(),
            stats.state
        );

        server.shutdown(Duration::from_secs(1)).await;
        let _ = std::fs::remove_file(&socket);
        println!("server shut down; all calls done");
        Ok(())
    })
}
