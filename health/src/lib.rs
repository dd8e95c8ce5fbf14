//! gRPC health checking for plexus: the standard `grpc.health.v1.Health` service (gRPC's
//! health-checking.md, with `List` from gRFC A90) and its generated client.
//!
//! A [`HealthReporter`] sets each service's status, SERVING or NOT_SERVING, by its full name
//! (`package.Service`), and the server as a whole under `""`. The service answers:
//!
//! - `Check`: the status now, or NOT_FOUND for a service the reporter has no status for;
//! - `Watch`: the status now (SERVICE_UNKNOWN for an unknown service, and the stream stays
//!   open), then every change until the client cancels. A watcher that falls behind gets the
//!   latest status rather than each one in between, as in grpc-go, but never misses the last;
//! - `List`: every status, or RESOURCE_EXHAUSTED above [`MAX_LIST_SERVICES`] services.
//!
//! [`install`] adds the service to a [`ServerBuilder`] with a shutdown hook: when
//! [`Server::shutdown`](plexus::Server::shutdown) starts, every service turns NOT_SERVING and
//! each `Watch` stream sends that before it ends, so clients learn it before the connection
//! goes away. [`health_reporter`] gives the service without the hook.
//!
//! ```no_run
//! use std::time::Duration;
//! use plexus::{Listener, Server};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let (builder, health) = plexus_health::install(Server::builder());
//! // ... .add_service(MyServiceServer::new(..)) ...
//! let server = builder.build()?;
//! health.set_serving("my.package.MyService");
//! // Blocks until shutdown; call `server.shutdown(..)` from elsewhere to stop.
//! server.serve(Listener::bind_tcp("127.0.0.1:50051")?).await?;
//! # Ok(())
//! # }
//! # async fn stop(server: Server) {
//! // Elsewhere: every status turns NOT_SERVING, watchers hear it, then GOAWAY and drain.
//! server.shutdown(Duration::from_secs(5)).await;
//! # }
//! ```
//!
//! The client side is the generated [`HealthClient`]:
//!
//! ```no_run
//! use plexus::{CallOptions, Channel};
//! use plexus_health::{HealthCheckRequest, HealthClient, ServingStatus};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let client = HealthClient::new(Channel::builder("http://127.0.0.1:50051").build()?);
//! let request = HealthCheckRequest { service: String::new() };
//! let reply = client.check(&request, CallOptions::new()).await?;
//! assert_eq!(reply.message().status(), ServingStatus::Serving);
//! # Ok(())
//! # }
//! ```

use std::collections::HashMap;
use std::pin::pin;
use std::sync::{Arc, Mutex, MutexGuard};

use event_listener::Event;
use futures_util::future::{Either, select};
use plexus::{Request, Response, ResponseSink, ServerBuilder, Status};

/// The encoded `FileDescriptorSet` of grpc/health/v1/health.proto, to register with
/// plexus-reflection (`register_encoded_file_descriptor_set`) so that reflection clients
/// (grpcurl, Postman) see the Health service too.
pub const FILE_DESCRIPTOR_SET: &[u8] = plexus::include_file_descriptor_set!("health");

/// The `grpc.health.v1` messages, `health_client::HealthClient` and the
/// `health_server::Health` trait with `HealthServer`, generated from the standard proto.
pub mod v1 {
    plexus::include_proto!("grpc.health.v1");
}

pub use v1::health_check_response::ServingStatus;
pub use v1::health_client::HealthClient;
pub use v1::health_server::{Health, HealthServer};
pub use v1::{HealthCheckRequest, HealthCheckResponse, HealthListRequest, HealthListResponse};

/// The most services `List` answers with: gRFC A90 sets 100 and asks for RESOURCE_EXHAUSTED
/// beyond it, so a response stays small.
pub const MAX_LIST_SERVICES: usize = 100;

/// The statuses and whether shutdown has frozen them.
#[derive(Debug)]
struct State {
    statuses: HashMap<String, ServingStatus>,
    shut_down: bool,
}

/// What the reporters and the service share.
#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    /// Notified on every change; each watcher then reads its own service's status.
    changed: Event,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere cannot leave the map half-written: every update is one insert or
        // remove, so the data is good even if the lock is poisoned.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Applies `update` unless shutdown froze the statuses, and wakes the watchers.
    fn update(&self, update: impl FnOnce(&mut HashMap<String, ServingStatus>)) {
        let mut state = self.lock();
        if state.shut_down {
            return;
        }
        update(&mut state.statuses);
        drop(state);
        self.changed.notify(usize::MAX);
    }
}

/// Sets the health statuses the [`Health`] service reports. Cheap to clone; every clone
/// changes the same statuses, from any thread.
#[derive(Debug, Clone)]
pub struct HealthReporter {
    shared: Arc<Shared>,
}

impl HealthReporter {
    /// Reports `service` (`package.Service`, or `""` for the whole server) as SERVING.
    pub fn set_serving(&self, service: &str) {
        self.set_status(service, ServingStatus::Serving);
    }

    /// Reports `service` as NOT_SERVING.
    pub fn set_not_serving(&self, service: &str) {
        self.set_status(service, ServingStatus::NotServing);
    }

    /// Reports `service` with `status`. SERVICE_UNKNOWN is what Watch says of a service with
    /// no status, so setting it is the same as [`clear`](Self::clear). Ignored after
    /// [`shutdown`](Self::shutdown).
    pub fn set_status(&self, service: &str, status: ServingStatus) {
        if status == ServingStatus::ServiceUnknown {
            return self.clear(service);
        }
        self.shared.update(|statuses| {
            if let Some(current) = statuses.get_mut(service) {
                *current = status;
            } else {
                statuses.insert(service.to_owned(), status);
            }
        });
    }

    /// Forgets `service`: Check answers NOT_FOUND for it and watchers see SERVICE_UNKNOWN.
    /// Ignored after [`shutdown`](Self::shutdown).
    pub fn clear(&self, service: &str) {
        self.shared.update(|statuses| {
            statuses.remove(service);
        });
    }

    /// The status reported for `service`, if any.
    pub fn status(&self, service: &str) -> Option<ServingStatus> {
        self.shared.lock().statuses.get(service).copied()
    }

    /// Sets every service NOT_SERVING for good: later changes are ignored, and each Watch
    /// stream ends with UNAVAILABLE once it has sent NOT_SERVING, so a graceful shutdown is
    /// not held up by watchers. [`install`] calls it when the server starts shutting down.
    pub fn shutdown(&self) {
        let mut state = self.shared.lock();
        if state.shut_down {
            return;
        }
        state.shut_down = true;
        for status in state.statuses.values_mut() {
            *status = ServingStatus::NotServing;
        }
        drop(state);
        self.shared.changed.notify(usize::MAX);
    }

    /// Whether [`shutdown`](Self::shutdown) has been called.
    pub fn is_shut_down(&self) -> bool {
        self.shared.lock().shut_down
    }

    /// A Health service answering from this reporter's statuses, for wrapping in a service
    /// of one's own ([`health_reporter`] gives one ready to register).
    pub fn service(&self) -> HealthService {
        HealthService {
            shared: self.shared.clone(),
        }
    }
}

/// The `grpc.health.v1.Health` service, answering from its [`HealthReporter`]'s statuses.
#[derive(Debug)]
pub struct HealthService {
    shared: Arc<Shared>,
}

/// A reporter and the service to register with
/// [`ServerBuilder::add_service`]. The whole server (`""`) starts SERVING, as in grpc-go and
/// grpc-java: a server that answers is up; named services have no status until set.
pub fn health_reporter() -> (HealthReporter, HealthServer<HealthService>) {
    let statuses = HashMap::from([(String::new(), ServingStatus::Serving)]);
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            statuses,
            shut_down: false,
        }),
        changed: Event::new(),
    });
    let reporter = HealthReporter { shared };
    let service = HealthServer::new(reporter.service());
    (reporter, service)
}

/// Adds the Health service to `builder` with a shutdown hook that calls
/// [`HealthReporter::shutdown`] when the server starts shutting down (see
/// [`ServerBuilder::on_shutdown`]), and returns the builder and the reporter.
pub fn install(builder: ServerBuilder) -> (ServerBuilder, HealthReporter) {
    let (reporter, service) = health_reporter();
    let hook = reporter.clone();
    let builder = builder
        .add_service(service)
        .on_shutdown(move || hook.shutdown());
    (builder, reporter)
}

fn response(status: ServingStatus) -> HealthCheckResponse {
    HealthCheckResponse {
        status: status.into(),
    }
}

impl Health for HealthService {
    async fn check(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        let service = &request.message().service;
        match self.shared.lock().statuses.get(service) {
            Some(&status) => Ok(Response::new(response(status))),
            None => Err(Status::not_found(format!("unknown service {service:?}"))),
        }
    }

    async fn list(
        &self,
        _request: Request<HealthListRequest>,
    ) -> Result<Response<HealthListResponse>, Status> {
        let state = self.shared.lock();
        if state.statuses.len() > MAX_LIST_SERVICES {
            return Err(Status::resource_exhausted(format!(
                "{} services have a status, more than the {MAX_LIST_SERVICES} List may return",
                state.statuses.len()
            )));
        }
        let statuses = state
            .statuses
            .iter()
            .map(|(name, &status)| (name.clone(), response(status)))
            .collect();
        Ok(Response::new(HealthListResponse { statuses }))
    }

    async fn watch(
        &self,
        request: Request<HealthCheckRequest>,
        sink: ResponseSink<HealthCheckResponse>,
    ) -> Result<(), Status> {
        let (context, request) = request.into_parts();
        let mut sent = None;
        loop {
            // Listening before reading: a change after the read still wakes this watcher.
            let changed = self.shared.changed.listen();
            let (status, shut_down) = {
                let state = self.shared.lock();
                let status = state.statuses.get(&request.service).copied();
                (
                    status.unwrap_or(ServingStatus::ServiceUnknown),
                    state.shut_down,
                )
            };
            if sent != Some(status) {
                let send = pin!(sink.send(response(status)));
                match select(send, pin!(context.cancelled())).await {
                    Either::Left((sent, _)) => sent?,
                    Either::Right(_) => return Err(Status::cancelled("the watch was cancelled")),
                }
                sent = Some(status);
                // Whatever changed while sending is read on the next turn.
                continue;
            }
            if shut_down {
                return Err(Status::unavailable("the server is shutting down"));
            }
            if let Either::Right(_) = select(changed, pin!(context.cancelled())).await {
                return Err(Status::cancelled("the watch was cancelled"));
            }
        }
    }
}
