//! Client and server interceptors: order, metadata changes, refusals, deadlines, and the
//! outcome each one observes.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_io::Timer;
use bytes::Bytes;
use plexus::intercept::{
    ClientCall, ClientInterceptor, InterceptFuture, ServerCall, ServerInterceptor, client_fn,
    server_fn,
};
use plexus::{
    BytesCodec, CallOptions, Channel, ChannelBuilder, Code, Listener, Request, Response, Server,
    ServerBuilder, Status,
};

/// What interceptors and handlers did, in order.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<String>>>);

impl Log {
    fn push(&self, entry: impl Into<String>) {
        self.0.lock().unwrap().push(entry.into());
    }

    fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

/// An async interceptor: waits (as a token fetch would), appends its name to `x-order`,
/// and logs the outcome.
struct Named {
    name: &'static str,
    log: Log,
}

impl ClientInterceptor for Named {
    fn before<'a>(&'a self, call: &'a mut ClientCall) -> InterceptFuture<'a> {
        Box::pin(async move {
            Timer::after(Duration::from_millis(1)).await;
            call.metadata_mut().append("x-order", self.name)?;
            Ok(())
        })
    }

    fn after(&self, method: &str, status: &Status) {
        self.log.push(format!(
            "client {} after {method} {}",
            self.name,
            status.code()
        ));
    }
}

impl ServerInterceptor for Named {
    fn before<'a>(&'a self, call: &'a mut ServerCall) -> InterceptFuture<'a> {
        Box::pin(async move {
            call.metadata_mut().append("x-server-order", self.name)?;
            Ok(())
        })
    }

    fn after(&self, method: &str, status: &Status) {
        self.log.push(format!(
            "server {} after {method} {}",
            self.name,
            status.code()
        ));
    }
}

/// Serves `builder` with methods that answer with the metadata they saw, fail, or hang;
/// returns the target.
fn server(builder: ServerBuilder, log: &Log) -> String {
    let seen = log.clone();
    let server = builder
        .unary("/i.Svc/Echo", BytesCodec, move |req: Request<Bytes>| {
            let log = seen.clone();
            async move {
                let md = req.metadata();
                let text = format!(
                    "{:?} {:?}",
                    md.get_all("x-order"),
                    md.get_all("x-server-order")
                );
                log.push("handler ran");
                Ok(Response::new(Bytes::from(text)))
            }
        })
        .unary(
            "/i.Svc/Fail",
            BytesCodec,
            |_req: Request<Bytes>| async move {
                Err::<Response<Bytes>, _>(Status::not_found("no such thing"))
            },
        )
        .unary(
            "/i.Svc/Hang",
            BytesCodec,
            |req: Request<Bytes>| async move {
                req.context().cancelled().await;
                Ok(Response::new(Bytes::new()))
            },
        )
        .build()
        .unwrap();
    let listener = Listener::bind_tcp("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    smol::spawn(async move { server.serve(listener).await }).detach();
    format!("http://{addr}")
}

fn with_client_interceptors(target: &str, log: &Log) -> ChannelBuilder {
    Channel::builder(target)
        .interceptor(Named {
            name: "a",
            log: log.clone(),
        })
        .interceptor(Named {
            name: "b",
            log: log.clone(),
        })
}

#[test]
fn client_interceptors_run_in_order_and_see_the_outcome() {
    let log = Log::default();
    let target = server(Server::builder(), &log);
    let channel = with_client_interceptors(&target, &log).build().unwrap();
    smol::block_on(async {
        let reply = channel
            .unary("/i.Svc/Echo", Bytes::new(), CallOptions::new())
            .await
            .unwrap();
        assert_eq!(reply.message().as_ref(), br#"["a", "b"] []"#);
        assert_eq!(
            log.take(),
            [
                "handler ran",
                "client b after /i.Svc/Echo OK",
                "client a after /i.Svc/Echo OK"
            ]
        );
        let err = channel
            .unary("/i.Svc/Fail", Bytes::new(), CallOptions::new())
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::NotFound);
        assert_eq!(
            log.take(),
            [
                "client b after /i.Svc/Fail NOT_FOUND",
                "client a after /i.Svc/Fail NOT_FOUND"
            ]
        );
    });
}

#[test]
fn a_client_interceptor_can_refuse_a_call_before_it_is_sent() {
    let log = Log::default();
    let target = server(Server::builder(), &log);
    let channel = with_client_interceptors(&target, &log)
        .interceptor(client_fn(|call| {
            if call.metadata().get("authorization").is_none() {
                return Err(Status::new(Code::Unauthenticated, "no token"));
            }
            Ok(())
        }))
        .build()
        .unwrap();
    smol::block_on(async {
        let err = channel
            .unary("/i.Svc/Echo", Bytes::new(), CallOptions::new())
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated);
        assert_eq!(
            log.take(),
            [
                "client b after /i.Svc/Echo UNAUTHENTICATED",
                "client a after /i.Svc/Echo UNAUTHENTICATED"
            ],
            "the handler never ran"
        );
    });
}

#[test]
fn a_client_interceptor_can_set_the_deadline() {
    let log = Log::default();
    let target = server(Server::builder(), &log);
    let channel = Channel::builder(&target)
        .interceptor(client_fn(|call| {
            call.set_deadline(Some(Instant::now() + Duration::from_millis(100)));
            Ok(())
        }))
        .build()
        .unwrap();
    smol::block_on(async {
        let err = channel
            .unary("/i.Svc/Hang", Bytes::new(), CallOptions::new())
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::DeadlineExceeded);
    });
}

#[test]
fn server_interceptors_change_metadata_refuse_calls_and_see_the_outcome() {
    let log = Log::default();
    let builder = Server::builder()
        .interceptor(Named {
            name: "x",
            log: log.clone(),
        })
        .interceptor(Named {
            name: "y",
            log: log.clone(),
        })
        .interceptor(server_fn(|call| match call.metadata().get("x-deny") {
            Some(why) => Err(Status::new(Code::PermissionDenied, why)),
            None => Ok(()),
        }));
    let channel = Channel::new(&server(builder, &log)).unwrap();
    smol::block_on(async {
        let reply = channel
            .unary("/i.Svc/Echo", Bytes::new(), CallOptions::new())
            .await
            .unwrap();
        assert_eq!(reply.message().as_ref(), br#"[] ["x", "y"]"#);
        assert_eq!(
            log.take(),
            [
                "handler ran",
                "server y after /i.Svc/Echo OK",
                "server x after /i.Svc/Echo OK"
            ]
        );

        let mut md = plexus::Metadata::new();
        md.append("x-deny", "not you").unwrap();
        let err = channel
            .unary("/i.Svc/Echo", Bytes::new(), CallOptions::new().metadata(md))
            .await
            .unwrap_err();
        assert_eq!(
            (err.code(), err.message()),
            (Code::PermissionDenied, "not you")
        );
        assert_eq!(
            log.take(),
            [
                "server y after /i.Svc/Echo PERMISSION_DENIED",
                "server x after /i.Svc/Echo PERMISSION_DENIED"
            ],
            "the handler never ran"
        );

        // A client that gives up: the server's interceptors see CANCELLED.
        let options = CallOptions::new().timeout(Duration::from_millis(100));
        let err = channel
            .unary("/i.Svc/Hang", Bytes::new(), options)
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::DeadlineExceeded);
        let deadline = Instant::now() + Duration::from_secs(20);
        while log.0.lock().unwrap().len() < 2 && Instant::now() < deadline {
            Timer::after(Duration::from_millis(10)).await;
        }
        let seen = log.take();
        assert_eq!(seen.len(), 2, "{seen:?}");
        assert!(
            seen[0].starts_with("server y after /i.Svc/Hang "),
            "{seen:?}"
        );
    });
}
