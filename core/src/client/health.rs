//! Client-side health checking (gRFC A17): each subchannel of a `round_robin` channel whose
//! service config names `healthCheckConfig.serviceName` keeps one `grpc.health.v1.Health/Watch`
//! call open on one of its connections, and counts as READY for the picker only while the
//! server's latest answer is SERVING.
//!
//! The Watch runs on the subchannel's connection directly, not through the picker, the
//! channel's interceptors or its call statistics, and it does not count as a call for the idle
//! timeout: an idle channel closes its connections and with them the Watch.

use std::future::{Future, poll_fn};
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Weak};

use bytes::Bytes;
use event_listener::Event;
use futures_util::future::{Either, select};
use http::header::CONTENT_TYPE;
use prost::Message;

use super::backoff::{Backoff, BackoffConfig};
use super::connection::Connection;
use super::state::ConnectivityState;
use super::subchannel::Subchannel;
use super::target::Target;
use crate::codec::Compression;
use crate::codec::compress::StreamEncoding;
use crate::codec::frame::{DEFAULT_MAX_RECV_MESSAGE_SIZE, frame_bytes};
use crate::metadata::Metadata;
use crate::proto::headers::{self, is_grpc_content_type, status_from_trailers};
use crate::proto::recv::MessageReader;
use crate::status::{Code, Status};

/// The health service's streaming method (grpc-proto `grpc/health/v1/health.proto`).
const WATCH_PATH: &str = "/grpc.health.v1.Health/Watch";

/// `HealthCheckResponse.ServingStatus.SERVING`; every other value is unhealthy.
const SERVING: i32 = 1;

/// `grpc.health.v1.HealthCheckRequest`.
#[derive(Clone, PartialEq, Message)]
struct HealthCheckRequest {
    #[prost(string, tag = "1")]
    service: String,
}

/// `grpc.health.v1.HealthCheckResponse`; `status` is the `ServingStatus` enum's number.
#[derive(Clone, PartialEq, Message)]
struct HealthCheckResponse {
    #[prost(int32, tag = "1")]
    status: i32,
}

/// The name of a `ServingStatus` number, for messages.
fn status_name(status: i32) -> String {
    match status {
        0 => "UNKNOWN".into(),
        1 => "SERVING".into(),
        2 => "NOT_SERVING".into(),
        3 => "SERVICE_UNKNOWN".into(),
        n => format!("serving status {n}"),
    }
}

/// A channel's health-check settings, shared by its subchannels.
pub(crate) struct HealthCheck {
    /// `healthCheckConfig.serviceName`.
    pub(crate) service: String,
    /// The Watch request message, framed once.
    request: Bytes,
    scheme: http::uri::Scheme,
    authority: http::uri::Authority,
    user_agent: http::HeaderValue,
    /// Between failed Watch calls (A17 asks for exponential backoff); the channel's
    /// reconnect backoff.
    backoff: BackoffConfig,
    /// Whether a server without the health service was reported on stderr yet.
    unimplemented_reported: AtomicBool,
}

impl HealthCheck {
    pub(crate) fn new(
        service: &str,
        target: &Target,
        user_agent: http::HeaderValue,
        backoff: BackoffConfig,
    ) -> Result<HealthCheck, Status> {
        let message = HealthCheckRequest {
            service: service.to_string(),
        }
        .encode_to_vec();
        let framed = frame_bytes(Bytes::from(message), usize::MAX)?;
        Ok(HealthCheck {
            service: service.to_string(),
            request: framed.head,
            scheme: target.scheme.clone(),
            authority: target.authority.clone(),
            user_agent,
            backoff,
            unimplemented_reported: AtomicBool::new(false),
        })
    }
}

/// What a subchannel's Watch said last.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Health {
    /// No answer yet on the current attempt: CONNECTING (A17, "Client Workflow").
    Pending = 0,
    /// SERVING: READY.
    Serving = 1,
    /// Any other serving status, or the call failed: TRANSIENT_FAILURE.
    Unhealthy = 2,
    /// The server has no health service: treated as healthy, READY.
    Disabled = 3,
}

impl Health {
    /// The subchannel's state for the picker while its connection is READY.
    pub(crate) fn state(self) -> ConnectivityState {
        match self {
            Health::Pending => ConnectivityState::Connecting,
            Health::Serving | Health::Disabled => ConnectivityState::Ready,
            Health::Unhealthy => ConnectivityState::TransientFailure,
        }
    }
}

/// A [`Health`] that can be read without a lock (every pick reads it).
#[derive(Debug)]
pub(crate) struct HealthCell(AtomicU8);

impl HealthCell {
    pub(crate) fn new() -> HealthCell {
        HealthCell(AtomicU8::new(Health::Pending as u8))
    }

    pub(crate) fn get(&self) -> Health {
        match self.0.load(Ordering::Acquire) {
            1 => Health::Serving,
            2 => Health::Unhealthy,
            3 => Health::Disabled,
            _ => Health::Pending,
        }
    }

    /// Sets it; whether it changed.
    pub(crate) fn set(&self, health: Health) -> bool {
        self.0.swap(health as u8, Ordering::AcqRel) != health as u8
    }
}

/// Tells one Watch task to end (the subchannel shut down, went idle, or the connection the
/// Watch runs on is going away).
#[derive(Debug, Default)]
pub(crate) struct Stop {
    stopped: AtomicBool,
    event: Event,
}

impl Stop {
    pub(crate) fn stop(&self) {
        self.stopped.store(true, Ordering::Release);
        self.event.notify(usize::MAX);
    }

    fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::Acquire)
    }

    /// `fut`'s output, or `None` if the task is stopped first.
    async fn until<F: Future>(&self, fut: F) -> Option<F::Output> {
        let stopped = async {
            loop {
                if self.is_stopped() {
                    return;
                }
                let listener = self.event.listen();
                if self.is_stopped() {
                    return;
                }
                listener.await;
            }
        };
        match select(pin!(fut), pin!(stopped)).await {
            Either::Left((out, _)) => Some(out),
            Either::Right(_) => None,
        }
    }
}

/// The Watch task of one subchannel: a Watch call on one of its connections, again with
/// backoff after a failure (A17, "Client Workflow"), until `stop` or until the server turns
/// out to have no health service.
pub(crate) async fn watch(sub: Weak<Subchannel>, check: Arc<HealthCheck>, stop: Arc<Stop>) {
    let mut backoff = Backoff::new(check.backoff);
    loop {
        // Each attempt starts CONNECTING on a usable connection; none left ends the task
        // (the subchannel starts another when it connects again).
        let Some(connection) = sub.upgrade().and_then(|s| s.health_attempt(&stop)) else {
            return;
        };
        let mut received = false;
        let report = |health: Health, why: Option<String>| {
            if let Some(s) = sub.upgrade() {
                s.health_report(&stop, health, why);
            }
        };
        let ended = stop
            .until(watch_once(&check, connection, &mut received, &report))
            .await;
        let Some(status) = ended else { return };
        if status.code() == Code::Unimplemented {
            // A17: act as if health checking were off for this subchannel; do not retry.
            report(Health::Disabled, None);
            if !check.unimplemented_reported.swap(true, Ordering::AcqRel) {
                let address = sub.upgrade().map(|s| s.address().to_string());
                eprintln!(
                    "plexus: {} does not implement {WATCH_PATH}; treating it as healthy \
                     (health check of service {:?} is off for it)",
                    address.unwrap_or_default(),
                    check.service
                );
            }
            return;
        }
        report(
            Health::Unhealthy,
            Some(format!("health check failed: {}", describe(&status))),
        );
        // A message on the last call resets the backoff: the next attempt starts at once.
        if received {
            backoff.reset();
        } else if stop
            .until(async_io::Timer::after(backoff.next_delay()))
            .await
            .is_none()
        {
            return;
        }
    }
}

/// A status for messages: its code and message.
fn describe(status: &Status) -> String {
    if status.message().is_empty() {
        format!("{:?}", status.code())
    } else {
        format!("{:?}: {}", status.code(), status.message())
    }
}

/// One Watch call on `connection`, reporting each answer; returns the status the call ended
/// with (OK included: the server is not supposed to end it). Dropping it resets the stream.
async fn watch_once(
    check: &HealthCheck,
    connection: Connection,
    received: &mut bool,
    report: &impl Fn(Health, Option<String>),
) -> Status {
    let request = match headers::request(
        &check.scheme,
        &check.authority,
        WATCH_PATH,
        &check.user_agent,
        None,
        Compression::Identity,
        &Metadata::new(),
    ) {
        Ok(request) => request,
        Err(status) => return status,
    };
    let mut sender = match connection.sender().ready().await {
        Ok(sender) => sender,
        Err(err) => return Status::from_h2(err),
    };
    let (response, mut stream) = match sender.send_request(request, false) {
        Ok(sent) => sent,
        Err(err) => return Status::from_h2(err),
    };
    if let Err(err) = stream.send_data(check.request.clone(), true) {
        return Status::from_h2(err);
    }
    // Holds the request side so that dropping this future resets the stream.
    let _stream = Reset(stream);
    let response = match response.await {
        Ok(response) => response,
        Err(err) => return Status::from_h2(err),
    };
    let (parts, body) = response.into_parts();
    if let Some(status) = status_from_trailers(&parts.headers) {
        return status;
    }
    if parts.status != http::StatusCode::OK {
        return Status::from_http_status(parts.status);
    }
    if !is_grpc_content_type(parts.headers.get(CONTENT_TYPE)) {
        return Status::new(
            Code::Unknown,
            "invalid content-type in health check response",
        );
    }
    let encoding = StreamEncoding::from_header(parts.headers.get(headers::GRPC_ENCODING));
    let mut reader = MessageReader::new(body, DEFAULT_MAX_RECV_MESSAGE_SIZE, encoding);
    loop {
        match poll_fn(|cx| reader.poll_message(cx)).await {
            Ok(Some(message)) => {
                let Ok(answer) = HealthCheckResponse::decode(message) else {
                    return Status::internal("could not decode a HealthCheckResponse");
                };
                *received = true;
                if answer.status == SERVING {
                    report(Health::Serving, None);
                } else {
                    let why = format!("reports {}", status_name(answer.status));
                    report(Health::Unhealthy, Some(why));
                }
            }
            Ok(None) => break,
            Err(status) => return status,
        }
    }
    match poll_fn(|cx| reader.poll_trailers(cx)).await {
        Ok(Some(trailers)) => status_from_trailers(&trailers).unwrap_or_else(|| {
            Status::new(Code::Unknown, "server sent trailers without grpc-status")
        }),
        Ok(None) => Status::new(Code::Unknown, "server ended the stream without trailers"),
        Err(status) => status,
    }
}

/// Resets its stream when dropped (a no-op once the stream has ended).
struct Reset(h2::SendStream<Bytes>);

impl Drop for Reset {
    fn drop(&mut self) {
        self.0.send_reset(h2::Reason::CANCEL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_match_the_health_proto() {
        // service = "a.B": field 1, length-delimited.
        let request = HealthCheckRequest {
            service: "a.B".into(),
        };
        assert_eq!(request.encode_to_vec(), b"\x0a\x03a.B");
        // status = NOT_SERVING: field 1, varint 2.
        let response = HealthCheckResponse::decode(&b"\x08\x02"[..]).unwrap();
        assert_eq!(response.status, 2);
        assert_eq!(status_name(response.status), "NOT_SERVING");
        assert_eq!(HealthCheckResponse::decode(&b""[..]).unwrap().status, 0);
    }

    #[test]
    fn health_maps_to_the_pickers_state() {
        let cell = HealthCell::new();
        assert_eq!(cell.get().state(), ConnectivityState::Connecting);
        assert!(cell.set(Health::Unhealthy));
        assert!(!cell.set(Health::Unhealthy));
        assert_eq!(cell.get().state(), ConnectivityState::TransientFailure);
        cell.set(Health::Disabled);
        assert_eq!(cell.get().state(), ConnectivityState::Ready);
        cell.set(Health::Serving);
        assert_eq!(cell.get().state(), ConnectivityState::Ready);
    }
}
