//! A crate outside plexus's workspace that uses generated code the way a user would: it starts
//! a plexus server with the generated `Clock` service on 127.0.0.1:0, calls every method
//! through the generated client, and exits 0 only if every answer is right.

use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use plexus::prost_types::{Duration as PbDuration, Timestamp};
use plexus::{
    CallOptions, Channel, Code, DefaultExecutor, Listener, Request, RequestStream, Response,
    ResponseSink, Server, Status,
};

/// The generated messages, client and server; the modules mirror the package `clock.v1`.
pub mod clock {
    /// Version 1 of the clock service.
    pub mod v1 {
        plexus::include_proto!("clock.v1");
    }
}

use clock::v1::clock_client::ClockClient;
use clock::v1::clock_server::{self, ClockServer};
use clock::v1::{Tick, TicksRequest};

/// The most ticks one `Ticks` call may ask for.
const MAX_TICKS: u32 = 1000;

/// A timestamp as nanoseconds since the epoch.
fn timestamp_nanos(ts: &Timestamp) -> i128 {
    i128::from(ts.seconds) * 1_000_000_000 + i128::from(ts.nanos)
}

/// Nanoseconds since the epoch as a timestamp, or None if out of range.
fn timestamp_from_nanos(nanos: i128) -> Option<Timestamp> {
    Some(Timestamp {
        seconds: i64::try_from(nanos.div_euclid(1_000_000_000)).ok()?,
        nanos: nanos.rem_euclid(1_000_000_000) as i32,
    })
}

/// The clock service: answers computed from the request, except `Now`.
struct Clock;

impl clock_server::Clock for Clock {
    async fn now(&self, _request: Request<()>) -> Result<Response<Tick>, Status> {
        Ok(Response::new(Tick {
            seq: 0,
            at: Some(Timestamp::from(SystemTime::now())),
        }))
    }

    async fn ticks(
        &self,
        request: Request<TicksRequest>,
        sink: ResponseSink<Tick>,
    ) -> Result<(), Status> {
        let req = request.into_message();
        if req.count > MAX_TICKS {
            return Err(Status::invalid_argument(format!(
                "count {} is over {MAX_TICKS}",
                req.count
            )));
        }
        let start = req.start.as_ref().map_or(0, timestamp_nanos);
        let every = req.every.as_ref().map_or(0, |d| {
            i128::from(d.seconds) * 1_000_000_000 + i128::from(d.nanos)
        });
        for seq in 0..req.count {
            let at = timestamp_from_nanos(start + every * i128::from(seq)).ok_or_else(|| {
                Status::new(Code::OutOfRange, "a tick falls outside the timestamp range")
            })?;
            sink.send(Tick { seq, at: Some(at) }).await?;
        }
        Ok(())
    }

    async fn span(
        &self,
        request: Request<RequestStream<Tick>>,
    ) -> Result<Response<PbDuration>, Status> {
        let (_, mut ticks) = request.into_parts();
        let (mut first, mut last) = (None::<i128>, None::<i128>);
        while let Some(tick) = ticks.message().await? {
            let at = tick.at.as_ref().map_or(0, timestamp_nanos);
            first = Some(first.map_or(at, |f| f.min(at)));
            last = Some(last.map_or(at, |l| l.max(at)));
        }
        let span = last.unwrap_or(0) - first.unwrap_or(0);
        let seconds = i64::try_from(span / 1_000_000_000)
            .map_err(|_| Status::new(Code::OutOfRange, "the span does not fit a Duration"))?;
        Ok(Response::new(PbDuration {
            seconds,
            nanos: (span % 1_000_000_000) as i32,
        }))
    }
}

/// Fails with `what` unless `ok`.
fn check(ok: bool, what: impl FnOnce() -> String) -> Result<(), String> {
    if ok { Ok(()) } else { Err(what()) }
}

/// Every call a deadline, so a broken server fails the run instead of hanging it.
fn options() -> CallOptions {
    CallOptions::new().timeout(Duration::from_secs(30))
}

/// Calls each method through the generated client and checks the answers.
async fn exercise(client: &ClockClient) -> Result<(), String> {
    // Unary, google.protobuf.Empty in, a message with a Timestamp out.
    let now = client
        .now(&(), options())
        .await
        .map_err(|s| format!("Now: {s}"))?;
    let at = now.message().at.ok_or("Now: no timestamp")?;
    // 2020-09-13: any clock this runs on is past it.
    check(at.seconds > 1_600_000_000, || format!("Now: {at:?}"))?;

    // Server streaming: four ticks 1.5 s apart from a fixed start.
    let start = Timestamp {
        seconds: 1_700_000_000,
        nanos: 250_000_000,
    };
    let request = TicksRequest {
        start: Some(start),
        every: Some(PbDuration {
            seconds: 1,
            nanos: 500_000_000,
        }),
        count: 4,
    };
    let mut stream = client
        .ticks(&request, options())
        .await
        .map_err(|s| format!("Ticks: {s}"))?;
    let mut ticks = Vec::new();
    while let Some(tick) = stream.message().await.map_err(|s| format!("Ticks: {s}"))? {
        ticks.push(tick);
    }
    let expected: Vec<Tick> = (0..4u32)
        .map(|seq| Tick {
            seq,
            at: timestamp_from_nanos(timestamp_nanos(&start) + 1_500_000_000 * i128::from(seq)),
        })
        .collect();
    check(ticks == expected, || format!("Ticks: got {ticks:?}"))?;

    // A bad request is a status with the server's message, through the generated client.
    let too_many = TicksRequest {
        count: MAX_TICKS + 1,
        ..TicksRequest::default()
    };
    let mut stream = client
        .ticks(&too_many, options())
        .await
        .map_err(|s| format!("Ticks: {s}"))?;
    match stream.message().await {
        Err(status) if status.code() == Code::InvalidArgument => {}
        other => return Err(format!("Ticks over the limit: {other:?}")),
    }

    // Client streaming: the ticks back, a google.protobuf.Duration out.
    let (sender, response) = client
        .span(options())
        .await
        .map_err(|s| format!("Span: {s}"))?;
    for tick in ticks.iter().rev() {
        sender.send(*tick).await.map_err(|s| format!("Span: {s}"))?;
    }
    drop(sender);
    let span = response.await.map_err(|s| format!("Span: {s}"))?;
    let want = PbDuration {
        seconds: 4,
        nanos: 500_000_000,
    };
    check(*span.message() == want, || {
        format!("Span: {:?}", span.message())
    })
}

/// Serves, calls, shuts down.
async fn run() -> Result<(), String> {
    let server = Server::builder()
        .add_service(ClockServer::new(Clock))
        .build()
        .map_err(|e| format!("server: {e}"))?;
    let listener = Listener::bind_tcp("127.0.0.1:0").map_err(|e| format!("bind: {e}"))?;
    let addr = listener
        .local_addr()
        .ok_or("the listener has no TCP address")?;
    let serving = server.clone();
    DefaultExecutor::pool().spawn_future(async move {
        if let Err(err) = serving.serve(listener).await {
            eprintln!("codegen-user: serving failed: {err}");
        }
    });
    let channel = Channel::new(&format!("http://{addr}")).map_err(|e| format!("channel: {e}"))?;
    let outcome = exercise(&ClockClient::new(channel)).await;
    server.shutdown(Duration::from_secs(5)).await;
    outcome
}

fn main() -> ExitCode {
    match plexus::rt::block_on(run()) {
        Ok(()) => {
            println!("codegen-user: every call answered right");
            ExitCode::SUCCESS
        }
        Err(why) => {
            eprintln!("codegen-user: FAILED: {why}");
            ExitCode::FAILURE
        }
    }
}
