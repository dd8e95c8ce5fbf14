//! (a) 1 MiB messages over a link with 20 ms round-trip time (a delaying TCP proxy on
//! loopback, 10 ms each way): adaptive flow-control windows against fixed 64 KiB ones, in MB/s.
//! Run with `cargo bench -p plexus-benches --bench windows`.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use async_io::{Async, Timer};
use bytes::Bytes;
use plexus::{
    BytesCodec, CallOptions, Channel, Executor, Listener, Request, ResponseSink, Server,
    SmolExecutor,
};
use smol::io::{AsyncReadExt, AsyncWriteExt};

const DOWNLOAD: &str = "/bench.Bulk/Download";
const MESSAGE: usize = 1024 * 1024;
const MESSAGES: usize = 16;
const ONE_WAY: Duration = Duration::from_millis(10);

/// Forwards `from` to `to`, holding each chunk back by `delay`.
async fn pipe(mut from: Async<TcpStream>, mut to: Async<TcpStream>, delay: Duration) {
    let (tx, rx) = async_channel::unbounded::<(Instant, Vec<u8>)>();
    let reader = async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match from.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if tx
                        .send((Instant::now() + delay, buf[..n].to_vec()))
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
            }
        }
    };
    let writer = async move {
        while let Ok((due, chunk)) = rx.recv().await {
            Timer::at(due).await;
            if to.write_all(&chunk).await.is_err() {
                break;
            }
        }
    };
    futures_util::future::join(reader, writer).await;
}

/// A proxy to `upstream` that delays every byte by `ONE_WAY` in each direction.
fn delaying_proxy(upstream: SocketAddr) -> SocketAddr {
    let listener = Async::<TcpListener>::bind(([127, 0, 0, 1], 0)).expect("bind proxy");
    let addr = listener.get_ref().local_addr().expect("addr");
    SmolExecutor.spawn(Box::pin(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(server) = Async::<TcpStream>::connect(upstream).await else {
                continue;
            };
            let (c2, s2) = (client.get_ref().try_clone(), server.get_ref().try_clone());
            let (Ok(c2), Ok(s2)) = (c2, s2) else { continue };
            let (c2, s2) = (
                Async::new(c2).expect("async"),
                Async::new(s2).expect("async"),
            );
            SmolExecutor.spawn(Box::pin(pipe(client, s2, ONE_WAY)));
            SmolExecutor.spawn(Box::pin(pipe(server, c2, ONE_WAY)));
        }
    }));
    addr
}

fn main() {
    let server = Server::builder()
        .server_streaming(
            DOWNLOAD,
            BytesCodec,
            |_req: Request<Bytes>, sink: ResponseSink<Bytes>| async move {
                let chunk = Bytes::from(vec![7u8; MESSAGE]);
                for _ in 0..MESSAGES {
                    sink.send(chunk.clone()).await?;
                }
                Ok(())
            },
        )
        .build()
        .expect("server");
    let listener = Listener::bind_tcp("127.0.0.1:0").expect("bind");
    let upstream = listener.local_addr().expect("tcp");
    SmolExecutor.spawn(Box::pin({
        let server = server.clone();
        async move {
            let _ = server.serve(listener).await;
        }
    }));
    let proxy = delaying_proxy(upstream);
    println!(
        "(a) {MESSAGES} × 1 MiB server-streamed over a 20 ms RTT link (delaying proxy on loopback)"
    );
    let mut rates = Vec::new();
    for (name, adaptive) in [("adaptive windows", true), ("fixed 64 KiB windows", false)] {
        let mut builder = Channel::builder(&format!("http://{proxy}"));
        if !adaptive {
            builder = builder
                .initial_stream_window_size(65_535)
                .initial_connection_window_size(65_535);
        }
        let channel = builder.build().expect("channel");
        let mut best = 0.0f64;
        for _ in 0..3 {
            let started = Instant::now();
            let received = smol::block_on(async {
                let mut stream = channel
                    .server_streaming(DOWNLOAD, Bytes::new(), CallOptions::new())
                    .await
                    .expect("call");
                let mut total = 0usize;
                while let Some(msg) = stream.message().await.expect("message") {
                    total += msg.len();
                }
                total
            });
            let rate = received as f64 / started.elapsed().as_secs_f64() / 1e6;
            best = best.max(rate);
        }
        println!("  {name:<22}: {best:>7.1} MB/s (best of 3)");
        rates.push(best);
    }
    println!("  adaptive/fixed: {:.1}x", rates[0] / rates[1]);
}
