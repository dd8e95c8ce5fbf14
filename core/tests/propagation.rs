//! Deadline propagation and cancellation: a handler's calls made with
//! `CallOptions::child_of(ctx)` get its deadline and are cancelled with it.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use async_io::Timer;
use bytes::Bytes;
use futures_util::future::{Either, select};
use plexus::{BytesCodec, CallOptions, Channel, Code, Listener, Request, Response, Server, Status};

/// Hard limit on anything a test waits for.
const LIMIT: Duration = Duration::from_secs(20);

/// What the handlers report back to the test.
type Reports = async_channel::Sender<String>;

/// A server whose `Front` handlers call its `Back` handlers through `channel`, as children.
fn start() -> (Channel, async_channel::Receiver<String>) {
    let (tx, rx) = async_channel::unbounded::<String>();
    let slot: Arc<OnceLock<Channel>> = Arc::new(OnceLock::new());
    let (front_slot, hang_slot, early_slot) = (slot.clone(), slot.clone(), slot.clone());
    let (hang_tx, back_tx, early_tx) = (tx.clone(), tx.clone(), tx.clone());
    let server = Server::builder()
        // Answers with how much deadline it was given, in whole seconds ("none" if none).
        .unary(
            "/p.Back/Deadline",
            BytesCodec,
            |req: Request<Bytes>| async move {
                let left = req.context().deadline().map_or("none".to_string(), |at| {
                    let secs = at.saturating_duration_since(Instant::now()).as_secs_f64();
                    format!("{}", secs.ceil() as u64)
                });
                Ok(Response::new(Bytes::from(left)))
            },
        )
        // Waits until cancelled, and says so.
        .unary("/p.Back/Hang", BytesCodec, move |req: Request<Bytes>| {
            let tx: Reports = back_tx.clone();
            async move {
                let _ = tx.send("back started".into()).await;
                req.context().cancelled().await;
                let _ = tx.send("back cancelled".into()).await;
                Err::<Response<Bytes>, _>(Status::cancelled("gone"))
            }
        })
        // Calls Back/Deadline as a child, or not, as the request says.
        .unary(
            "/p.Front/Deadline",
            BytesCodec,
            move |req: Request<Bytes>| {
                let channel = front_slot.get().unwrap().clone();
                async move {
                    let mut options = CallOptions::new();
                    if req.message().as_ref() == b"child" {
                        options = options.child_of(req.context());
                    }
                    channel
                        .unary("/p.Back/Deadline", Bytes::new(), options)
                        .await
                }
            },
        )
        // Calls Back/Hang as a child and reports how that call ended.
        .unary("/p.Front/Hang", BytesCodec, move |req: Request<Bytes>| {
            let channel = hang_slot.get().unwrap().clone();
            let tx: Reports = hang_tx.clone();
            async move {
                let options = CallOptions::new().child_of(req.context());
                let result = channel.unary("/p.Back/Hang", Bytes::new(), options).await;
                let ended = match &result {
                    Ok(_) => "child ended OK".to_string(),
                    Err(status) => format!("child ended {}: {}", status.code(), status.message()),
                };
                let _ = tx.send(ended).await;
                result
            }
        })
        // Waits for its own cancellation, then starts a child, which must fail at once.
        .unary("/p.Front/Late", BytesCodec, move |req: Request<Bytes>| {
            let channel = early_slot.get().unwrap().clone();
            let tx: Reports = early_tx.clone();
            async move {
                req.context().cancelled().await;
                let options = CallOptions::new().child_of(req.context());
                let result = channel.unary("/p.Back/Hang", Bytes::new(), options).await;
                let code = result.err().map(|s| s.code());
                let _ = tx.send(format!("late child {code:?}")).await;
                Err::<Response<Bytes>, _>(Status::cancelled("gone"))
            }
        })
        .build()
        .unwrap();
    let listener = Listener::bind_tcp("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    smol::spawn(async move { server.serve(listener).await }).detach();
    let channel = Channel::new(&format!("http://{addr}")).unwrap();
    slot.set(channel.clone()).unwrap();
    (channel, rx)
}

async fn next(rx: &async_channel::Receiver<String>) -> String {
    match select(Box::pin(rx.recv()), Timer::after(LIMIT)).await {
        Either::Left((report, _)) => report.unwrap(),
        Either::Right(_) => panic!("no report within {LIMIT:?}"),
    }
}

#[test]
fn a_child_call_gets_its_parents_deadline() {
    let (channel, _rx) = start();
    smol::block_on(async {
        let options = || CallOptions::new().timeout(Duration::from_secs(7));
        let child = channel
            .unary("/p.Front/Deadline", Bytes::from("child"), options())
            .await
            .unwrap();
        let secs: u64 = std::str::from_utf8(child.message())
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=7).contains(&secs), "the child had {secs} s");
        let other = channel
            .unary("/p.Front/Deadline", Bytes::from("not a child"), options())
            .await
            .unwrap();
        assert_eq!(other.message().as_ref(), b"none");
    });
}

#[test]
fn cancelling_the_parent_cancels_the_child() {
    let (channel, rx) = start();
    smol::block_on(async {
        let call = channel.unary("/p.Front/Hang", Bytes::new(), CallOptions::new());
        // Run the call until the child has reached the back end, then drop it (a cancel).
        let mut call = Box::pin(call);
        match select(call.as_mut(), Box::pin(next(&rx))).await {
            Either::Left((result, _)) => panic!("the front call ended: {result:?}"),
            Either::Right((report, _)) => assert_eq!(report, "back started"),
        }
        drop(call);
        let mut reports = vec![next(&rx).await, next(&rx).await];
        reports.sort();
        assert_eq!(
            reports,
            [
                "back cancelled",
                "child ended CANCELLED: the parent call was cancelled"
            ]
        );
    });
}

#[test]
fn a_child_of_a_cancelled_call_fails_at_once() {
    let (channel, rx) = start();
    smol::block_on(async {
        let options = CallOptions::new().timeout(Duration::from_millis(200));
        let err = channel
            .unary("/p.Front/Late", Bytes::new(), options)
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::DeadlineExceeded);
        assert_eq!(
            next(&rx).await,
            format!("late child {:?}", Some(Code::Cancelled))
        );
    });
}
