//! The golden files compile, and their clients and servers talk: every rpc kind, keyword
//! names, well-known types, a service with no methods, and the per-client defaults.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use plexus::{
    CallDefaults, CallOptions, Channel, Code, Listener, Request, RequestStream, Response,
    ResponseSink, Server, Service, Status,
};

#[allow(missing_docs, dead_code, unreachable_pub, clippy::all)]
mod generated {
    pub mod plexus {
        pub mod common {
            include!("golden/plexus.common.rs");
        }
        pub mod golden {
            pub mod v1 {
                include!("golden/plexus.golden.v1.rs");
            }
        }
    }
}

use generated::plexus::common::Id;
use generated::plexus::golden::v1::{
    Feature, Kind, Match, Point, atlas_client::AtlasClient, atlas_server, empty_server,
    keywords_client::KeywordsClient, keywords_server,
};

#[derive(Default)]
struct Atlas {
    pings: AtomicUsize,
}

fn feature(at: &Point) -> Feature {
    Feature {
        name: format!("{},{}", at.latitude, at.longitude),
        location: Some(*at),
        seen: Some(plexus::prost_types::Timestamp {
            seconds: 1_700_000_000,
            nanos: 5,
        }),
        kind: Kind::Road as i32,
        ..Feature::default()
    }
}

impl atlas_server::Atlas for Atlas {
    async fn get_feature(&self, request: Request<Point>) -> Result<Response<Feature>, Status> {
        if request.message().latitude < 0 {
            return Err(Status::invalid_argument("south of the equator"));
        }
        Ok(Response::new(feature(request.message())))
    }

    async fn list_features(
        &self,
        request: Request<Point>,
        sink: ResponseSink<Feature>,
    ) -> Result<(), Status> {
        let at = request.into_message();
        for i in 0..at.latitude {
            sink.send(feature(&Point {
                latitude: i,
                longitude: at.longitude,
            }))
            .await?;
        }
        Ok(())
    }

    async fn record_route(
        &self,
        request: Request<RequestStream<Point>>,
    ) -> Result<Response<Id>, Status> {
        let (_, mut points) = request.into_parts();
        let mut count = 0;
        while let Some(_point) = points.message().await? {
            count += 1;
        }
        Ok(Response::new(Id {
            value: format!("{count} points"),
        }))
    }

    async fn route_chat(
        &self,
        request: Request<RequestStream<Point>>,
        sink: ResponseSink<Feature>,
    ) -> Result<(), Status> {
        let (_, mut points) = request.into_parts();
        while let Some(point) = points.message().await? {
            sink.send(feature(&point)).await?;
        }
        Ok(())
    }

    async fn ping(&self, request: Request<()>) -> Result<Response<()>, Status> {
        self.pings.fetch_add(1, Ordering::Relaxed);
        let timeout = request.context().deadline().is_some();
        let tenant = request.metadata().get("x-tenant") == Some("t1");
        if timeout && tenant {
            Ok(Response::new(()))
        } else {
            Err(Status::new(
                Code::FailedPrecondition,
                "the client's defaults were not applied",
            ))
        }
    }
}

struct Keywords;

impl keywords_server::Keywords for Keywords {
    async fn r#type(&self, request: Request<Match>) -> Result<Response<Match>, Status> {
        let mut m = request.into_message();
        m.r#type.push('!');
        Ok(Response::new(m))
    }

    async fn r#match(
        &self,
        request: Request<RequestStream<Match>>,
    ) -> Result<Response<Match>, Status> {
        let (_, mut stream) = request.into_parts();
        let mut all = Match::default();
        while let Some(m) = stream.message().await? {
            all.r#type.push_str(&m.r#type);
            all.r#async |= m.r#async;
        }
        Ok(Response::new(all))
    }

    async fn r#async(
        &self,
        request: Request<Match>,
        sink: ResponseSink<Match>,
    ) -> Result<(), Status> {
        sink.send(request.into_message()).await
    }

    async fn self_(&self, request: Request<Match>) -> Result<Response<Match>, Status> {
        Ok(Response::new(request.into_message()))
    }

    async fn channel(&self, request: Request<Match>) -> Result<Response<Match>, Status> {
        let mut m = request.into_message();
        m.r#type = "channel".into();
        Ok(Response::new(m))
    }
}

struct Nothing;
impl empty_server::Empty for Nothing {}

fn serve(atlas: Arc<Atlas>) -> Channel {
    let server = Server::builder()
        .add_service(atlas_server::AtlasServer::from_arc(atlas))
        .add_service(keywords_server::KeywordsServer::new(Keywords))
        .add_service(empty_server::EmptyServer::new(Nothing))
        .build()
        .unwrap();
    let listener = Listener::bind_tcp("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    smol::spawn(async move { server.serve(listener).await }).detach();
    Channel::new(&format!("http://{addr}")).unwrap()
}

#[test]
fn descriptors_name_every_method() {
    use atlas_server::AtlasServer;
    assert_eq!(
        <AtlasServer<Atlas> as Service>::NAME,
        "plexus.golden.v1.Atlas"
    );
    let paths: Vec<_> = <AtlasServer<Atlas> as Service>::METHODS
        .iter()
        .map(|m| (m.method(), m.kind))
        .collect();
    use plexus::MethodKind::*;
    assert_eq!(
        paths,
        [
            ("GetFeature", Unary),
            ("ListFeatures", ServerStreaming),
            ("RecordRoute", ClientStreaming),
            ("RouteChat", BidiStreaming),
            ("Ping", Unary),
        ]
    );
    assert_eq!(
        keywords_server::SELF_.path,
        "/plexus.golden.v1.Keywords/Self"
    );
    assert_eq!(
        keywords_server::TYPE.path,
        "/plexus.golden.v1.Keywords/Type"
    );
    assert!(<empty_server::EmptyServer<Nothing> as Service>::METHODS.is_empty());
}

#[test]
fn clients_call_servers_of_every_kind() {
    fn assert_shareable<T: Clone + Send + Sync + 'static>() {}
    assert_shareable::<AtlasClient>();
    assert_shareable::<KeywordsClient>();

    let atlas = Arc::new(Atlas::default());
    let channel = serve(atlas.clone());
    smol::block_on(async {
        let client = AtlasClient::new(channel.clone());
        let at = Point {
            latitude: 3,
            longitude: 4,
        };

        let got = client.get_feature(&at, CallOptions::new()).await.unwrap();
        assert_eq!(got.message(), &feature(&at));
        let refused = client
            .get_feature(
                &Point {
                    latitude: -1,
                    longitude: 0,
                },
                CallOptions::new(),
            )
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::InvalidArgument);

        let mut listed = client.list_features(&at, CallOptions::new()).await.unwrap();
        let mut names = Vec::new();
        while let Some(f) = listed.message().await.unwrap() {
            names.push(f.name);
        }
        assert_eq!(names, ["0,4", "1,4", "2,4"]);

        let (sender, summary) = client.record_route(CallOptions::new()).await.unwrap();
        for i in 0..5 {
            sender
                .send(Point {
                    latitude: i,
                    longitude: i,
                })
                .await
                .unwrap();
        }
        sender.close().await.unwrap();
        assert_eq!(
            summary.response().await.unwrap().message().value,
            "5 points"
        );

        let (sender, mut replies) = client.route_chat(CallOptions::new()).await.unwrap();
        for i in 0..3 {
            sender
                .send(Point {
                    latitude: i,
                    longitude: 9,
                })
                .await
                .unwrap();
            let reply = replies.message().await.unwrap().unwrap();
            assert_eq!(
                reply.location,
                Some(Point {
                    latitude: i,
                    longitude: 9
                })
            );
        }
        sender.close().await.unwrap();
        assert!(replies.message().await.unwrap().is_none());

        // google.protobuf.Empty is (); the defaults give the call a deadline and metadata.
        let bare = client.ping(&(), CallOptions::new()).await.unwrap_err();
        assert_eq!(bare.code(), Code::FailedPrecondition);
        let mut md = plexus::Metadata::new();
        md.append("x-tenant", "t1").unwrap();
        let defaults = CallDefaults::new()
            .timeout(Duration::from_secs(30))
            .metadata(md);
        let with_defaults = AtlasClient::with_defaults(channel.clone(), defaults);
        with_defaults.ping(&(), CallOptions::new()).await.unwrap();
        assert_eq!(atlas.pings.load(Ordering::Relaxed), 2);

        let keywords = KeywordsClient::new(channel.clone());
        let m = Match {
            r#type: "t".into(),
            r#async: true,
        };
        assert_eq!(
            keywords
                .r#type(&m, CallOptions::new())
                .await
                .unwrap()
                .message()
                .r#type,
            "t!"
        );
        assert_eq!(
            keywords
                .self_(&m, CallOptions::new())
                .await
                .unwrap()
                .message(),
            &m
        );
        let renamed = keywords.channel_rpc(&m, CallOptions::new()).await.unwrap();
        assert_eq!(renamed.message().r#type, "channel");
        let (sender, all) = keywords.r#match(CallOptions::new()).await.unwrap();
        sender.send(m.clone()).await.unwrap();
        sender.send(m.clone()).await.unwrap();
        sender.close().await.unwrap();
        assert_eq!(all.response().await.unwrap().message().r#type, "tt");
        let mut echoed = keywords.r#async(&m, CallOptions::new()).await.unwrap();
        assert_eq!(echoed.message().await.unwrap(), Some(m));
    });
    channel.shutdown();
}
