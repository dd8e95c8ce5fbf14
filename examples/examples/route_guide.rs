//! RouteGuide, the classic gRPC example: a server implementing the `RouteGuide` trait that
//! plexus-build generated from `examples/proto/route_guide.proto`, and the generated
//! `RouteGuideClient` making one call of each kind to it over loopback TCP.
//!
//! Run with `cargo run --example route_guide`.

use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use plexus::{
    CallOptions, Channel, Listener, Request, RequestStream, Response, ResponseSink, Server, Status,
};

/// The code generated from `route_guide.proto`, whose package is `routeguide`.
pub mod routeguide {
    plexus::include_proto!("routeguide");
}

use routeguide::route_guide_client::RouteGuideClient;
use routeguide::route_guide_server::{RouteGuide, RouteGuideServer};
use routeguide::{Feature, Point, Rectangle, RouteNote, RouteSummary};

/// A few places the server knows, in degrees.
const PLACES: [(&str, f64, f64); 4] = [
    ("Eiffel Tower", 48.8584, 2.2945),
    ("Brandenburg Gate", 52.5163, 13.3777),
    ("Colosseum", 41.8902, 12.4922),
    ("Sagrada Familia", 41.4036, 2.1744),
];

/// A point from degrees (the .proto keeps degrees times 10^7).
fn point(latitude: f64, longitude: f64) -> Point {
    let e7 = |degrees: f64| (degrees * 1e7).round() as i32;
    Point {
        latitude: e7(latitude),
        longitude: e7(longitude),
    }
}

/// The server: the notes clients have left (the places are `PLACES`).
#[derive(Default)]
struct Guide {
    notes: Mutex<Vec<RouteNote>>,
}

/// The name of the place at `at`, if there is one.
fn place_at(at: Point) -> Option<&'static str> {
    PLACES.iter().find(|p| point(p.1, p.2) == at).map(|p| p.0)
}

/// A feature named `name` at `at`.
fn feature(name: &str, at: Point) -> Feature {
    let (name, location) = (name.to_string(), Some(at));
    Feature { name, location }
}

impl RouteGuide for Guide {
    async fn get_feature(&self, request: Request<Point>) -> Result<Response<Feature>, Status> {
        let at = *request.message();
        Ok(Response::new(feature(place_at(at).unwrap_or_default(), at)))
    }

    async fn list_features(
        &self,
        request: Request<Rectangle>,
        sink: ResponseSink<Feature>,
    ) -> Result<(), Status> {
        let Rectangle { lo, hi } = request.into_message();
        let (lo, hi) = (lo.unwrap_or_default(), hi.unwrap_or_default());
        let between = |v: i32, a: i32, b: i32| a.min(b) <= v && v <= a.max(b);
        for (name, lat, lon) in PLACES {
            let at = point(lat, lon);
            if between(at.latitude, lo.latitude, hi.latitude)
                && between(at.longitude, lo.longitude, hi.longitude)
            {
                sink.send(feature(name, at)).await?;
            }
        }
        Ok(())
    }

    async fn record_route(
        &self,
        request: Request<RequestStream<Point>>,
    ) -> Result<Response<RouteSummary>, Status> {
        let (started, mut points) = (Instant::now(), request.into_message());
        let mut summary = RouteSummary::default();
        while let Some(at) = points.message().await? {
            summary.point_count += 1;
            summary.feature_count += i32::from(place_at(at).is_some());
        }
        summary.elapsed_time = started.elapsed().try_into().ok();
        Ok(Response::new(summary))
    }

    async fn route_chat(
        &self,
        request: Request<RequestStream<RouteNote>>,
        sink: ResponseSink<RouteNote>,
    ) -> Result<(), Status> {
        let mut notes = request.into_message();
        while let Some(note) = notes.message().await? {
            // The earlier notes are copied out: no lock is held across an await.
            let earlier: Vec<RouteNote> = {
                let mut all = self.notes.lock().unwrap();
                let here = all.iter().filter(|n| n.location == note.location);
                let earlier = here.cloned().collect();
                all.push(note);
                earlier
            };
            for note in earlier {
                sink.send(note).await?;
            }
        }
        Ok(())
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    smol::block_on(async {
        let service = RouteGuideServer::new(Guide::default());
        let server = Server::builder().add_service(service).build()?;
        let listener = Listener::bind_tcp("127.0.0.1:0")?;
        let addr = listener.local_addr().ok_or("no address")?;
        let serving = server.clone();
        smol::spawn(async move { serving.serve(listener).await }).detach();
        println!("RouteGuide server on {addr}");

        let client = RouteGuideClient::new(Channel::new(&format!("http://{addr}"))?);
        let options = || CallOptions::new().timeout(Duration::from_secs(5));

        // Unary: one point in, one feature out.
        for at in [point(48.8584, 2.2945), point(0.0, 0.0)] {
            let feature = client.get_feature(&at, options()).await?.into_message();
            println!("GetFeature at {at:?}: {:?}", feature.name);
        }

        // Server streaming: the features in a rectangle over western Europe.
        let (lo, hi) = (Some(point(40.0, -5.0)), Some(point(50.0, 10.0)));
        let europe = Rectangle { lo, hi };
        let mut features = client.list_features(&europe, options()).await?;
        while let Some(feature) = features.message().await? {
            println!("ListFeatures: {}", feature.name);
        }

        // Client streaming: a route through every place, then one summary.
        let (route, summary) = client.record_route(options()).await?;
        for (_, lat, lon) in PLACES {
            route.send(point(lat, lon)).await?;
        }
        route.close().await?;
        let summary = summary.await?.into_message();
        let elapsed = summary.elapsed_time.unwrap_or_default();
        let (points, features) = (summary.point_count, summary.feature_count);
        println!("RecordRoute: {points} points, {features} on a feature, in {elapsed}");

        // Bidi streaming: notes at two places; each comes back when another is left there.
        let (notes, mut replies) = client.route_chat(options()).await?;
        for (i, (name, lat, lon)) in PLACES[..2].iter().cycle().take(4).enumerate() {
            let note = RouteNote {
                location: Some(point(*lat, *lon)),
                message: format!("note {i} at {name}"),
                sent_at: Some(SystemTime::now().into()),
            };
            notes.send(note).await?;
        }
        notes.close().await?;
        while let Some(note) = replies.message().await? {
            let sent = note.sent_at.unwrap_or_default();
            println!("RouteChat: {:?}, sent at {sent}", note.message);
        }

        server.shutdown(Duration::from_secs(1)).await;
        println!("server shut down");
        Ok(())
    })
}
