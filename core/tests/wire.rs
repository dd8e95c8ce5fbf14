//! Wire-level tests: plexus against scripted raw HTTP/2 peers (h2 over in-memory pipes), so
//! every frame the other side sends, well-formed or hostile, is under the test's control.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use futures_util::StreamExt;
use futures_util::future::{Either, select};
use h2::RecvStream;
use h2::server::SendResponse;
use http::{HeaderMap, HeaderValue, Response as HttpResponse, StatusCode};
use plexus::rt::Compat;
use plexus::transport::{Address, memory};
use plexus::{
    BytesCodec, CallOptions, Channel, Code, Metadata, Response, Server, StaticResolver, Status,
};

/// Runs `fut` on smol with a hard limit, so a regression fails instead of hanging.
fn run<F: Future>(fut: F) -> F::Output {
    smol::block_on(async {
        match select(
            std::pin::pin!(fut),
            async_io::Timer::after(Duration::from_secs(20)),
        )
        .await
        {
            Either::Left((out, _)) => out,
            Either::Right(_) => panic!("test timed out"),
        }
    })
}

fn frame(payload: &[u8]) -> Bytes {
    let mut buf = BytesMut::new();
    buf.put_u8(0);
    buf.put_u32(payload.len() as u32);
    buf.put_slice(payload);
    buf.freeze()
}

fn grpc_headers() -> HttpResponse<()> {
    let mut response = HttpResponse::new(());
    response
        .headers_mut()
        .insert("content-type", HeaderValue::from_static("application/grpc"));
    response
}

fn trailers(pairs: &[(&'static str, &[u8])]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (k, v) in pairs {
        map.insert(*k, HeaderValue::from_bytes(v).unwrap());
    }
    map
}

/// A channel whose every stream is answered by `script`, a raw h2 server.
fn scripted<F, Fut>(script: F) -> Channel
where
    F: Fn(http::Request<RecvStream>, SendResponse<Bytes>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let (connector, mut listener) = memory::channel();
    let script = Arc::new(script);
    smol::spawn(async move {
        while let Some(Ok(io)) = listener.next().await {
            let script = script.clone();
            smol::spawn(async move {
                let Ok(mut conn) = h2::server::handshake(Compat::new(io)).await else {
                    return;
                };
                while let Some(Ok((request, respond))) = conn.accept().await {
                    smol::spawn(script(request, respond)).detach();
                }
            })
            .detach();
        }
    })
    .detach();
    Channel::builder("http://scripted.test:80")
        .connector(connector)
        .resolver(StaticResolver::new([Address::Unix("scripted".into())]))
        .build()
        .unwrap()
}

/// A script that answers with headers, `data`, then `trailers`.
fn answer(data: Vec<Bytes>, tail: HeaderMap) -> Channel {
    scripted(move |_request, mut respond| {
        let (data, tail) = (data.clone(), tail.clone());
        async move {
            let mut stream = respond.send_response(grpc_headers(), false).unwrap();
            for chunk in data {
                stream.send_data(chunk, false).unwrap();
            }
            stream.send_trailers(tail).unwrap();
        }
    })
}

async fn unary(channel: &Channel) -> Result<Response<Bytes>, Status> {
    channel
        .unary("/t.S/M", Bytes::from_static(b"req"), CallOptions::new())
        .await
}

#[test]
fn request_headers_follow_the_spec() {
    let seen = Arc::new(Mutex::new(None));
    let record = seen.clone();
    let channel = scripted(move |request, mut respond| {
        let record = record.clone();
        async move {
            *record.lock().unwrap() = Some((
                request.method().clone(),
                request.uri().clone(),
                request.headers().clone(),
            ));
            let mut stream = respond.send_response(grpc_headers(), false).unwrap();
            stream.send_data(frame(b"ok"), false).unwrap();
            stream
                .send_trailers(trailers(&[("grpc-status", b"0")]))
                .unwrap();
        }
    });
    let mut md = Metadata::new();
    md.append("x-plain", "v").unwrap();
    md.append_bin("x-raw-bin", &[0xff, 0]).unwrap();
    let options = CallOptions::new()
        .timeout(Duration::from_secs(10))
        .metadata(md);
    let response = run(channel.unary("/pkg.Svc/Do", Bytes::from_static(b"x"), options)).unwrap();
    assert_eq!(response.message().as_ref(), b"ok");
    let (method, uri, headers) = seen.lock().unwrap().take().unwrap();
    assert_eq!(method, http::Method::POST);
    assert_eq!(uri.path(), "/pkg.Svc/Do");
    assert_eq!(uri.authority().unwrap().as_str(), "scripted.test:80");
    assert_eq!(headers["content-type"], "application/grpc");
    assert_eq!(headers["te"], "trailers");
    assert!(
        headers["user-agent"]
            .to_str()
            .unwrap()
            .starts_with("grpc-rust-plexus/")
    );
    let timeout = headers["grpc-timeout"].to_str().unwrap();
    assert!(
        timeout.len() <= 9 && timeout.ends_with(['n', 'u', 'm', 'S', 'M', 'H']),
        "{timeout}"
    );
    assert_eq!(headers["x-plain"], "v");
    assert_eq!(
        headers["x-raw-bin"], "/wA",
        "binary metadata goes out as unpadded base64"
    );
}

#[test]
fn truncated_message_prefix_gives_internal() {
    let channel = answer(
        vec![Bytes::from_static(&[0, 0, 0])],
        trailers(&[("grpc-status", b"0")]),
    );
    let status = run(unary(&channel)).unwrap_err();
    assert_eq!(status.code(), Code::Internal, "{status}");
    assert!(status.message().contains("prefix"), "{status}");
}

#[test]
fn truncated_message_body_gives_internal() {
    let channel = answer(
        vec![Bytes::from_static(&[0, 0, 0, 0, 10, 1, 2])],
        trailers(&[("grpc-status", b"0")]),
    );
    let status = run(unary(&channel)).unwrap_err();
    assert_eq!(status.code(), Code::Internal, "{status}");
}

#[test]
fn compressed_flag_without_encoding_gives_internal() {
    let channel = answer(
        vec![Bytes::from_static(&[1, 0, 0, 0, 1, 7])],
        trailers(&[("grpc-status", b"0")]),
    );
    let status = run(unary(&channel)).unwrap_err();
    assert_eq!(status.code(), Code::Internal, "{status}");
    assert!(status.message().contains("grpc-encoding"), "{status}");
}

#[test]
fn four_gib_length_prefix_gives_resource_exhausted_without_allocating() {
    // Only the prefix is ever sent: a client that tried to buffer 4 GiB would wait forever
    // (and the timeout in `run` would fail the test) or abort on allocation.
    let channel = scripted(|_request, mut respond| async move {
        let mut stream = respond.send_response(grpc_headers(), false).unwrap();
        stream
            .send_data(Bytes::from_static(&[0, 0xff, 0xff, 0xff, 0xff]), false)
            .unwrap();
        std::future::pending::<()>().await;
    });
    let status = run(unary(&channel)).unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status}");
    assert!(
        status.message().contains("4294967295") && status.message().contains("4194304"),
        "{status}"
    );
}

#[test]
fn malformed_grpc_message_still_yields_a_status() {
    let channel = answer(
        vec![],
        trailers(&[
            ("grpc-status", b"9"),
            ("grpc-message", b"bad %zz \xff\xfe end%"),
        ]),
    );
    let status = run(unary(&channel)).unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(
        status.message().starts_with("bad %zz ") && status.message().ends_with(" end%"),
        "{status}"
    );
}

#[test]
fn status_details_and_percent_encoded_message_are_decoded() {
    let channel = answer(
        vec![],
        trailers(&[
            ("grpc-status", b"5"),
            ("grpc-message", b"caf%C3%A9 100%25"),
            ("grpc-status-details-bin", b"AAEC"),
        ]),
    );
    let status = run(unary(&channel)).unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    assert_eq!(status.message(), "caf\u{e9} 100%");
    assert_eq!(status.details().as_ref(), &[0, 1, 2]);
}

#[test]
fn missing_grpc_status_is_unknown() {
    let channel = answer(vec![frame(b"x")], trailers(&[("x-other", b"1")]));
    let status = run(unary(&channel)).unwrap_err();
    assert_eq!(status.code(), Code::Unknown, "{status}");
}

#[test]
fn non_200_http_status_maps_per_spec() {
    for (http, code) in [
        (400, Code::Internal),
        (401, Code::Unauthenticated),
        (403, Code::PermissionDenied),
        (404, Code::Unimplemented),
        (429, Code::Unavailable),
        (502, Code::Unavailable),
        (503, Code::Unavailable),
        (504, Code::Unavailable),
        (500, Code::Unknown),
    ] {
        let channel = scripted(move |_request, mut respond| async move {
            let mut response = HttpResponse::new(());
            *response.status_mut() = StatusCode::from_u16(http).unwrap();
            respond.send_response(response, true).unwrap();
        });
        let status = run(unary(&channel)).unwrap_err();
        assert_eq!(status.code(), code, "HTTP {http}: {status}");
    }
}

#[test]
fn trailers_only_response_gives_status_and_metadata() {
    let channel = scripted(|_request, mut respond| async move {
        let mut response = grpc_headers();
        response
            .headers_mut()
            .insert("grpc-status", HeaderValue::from_static("7"));
        response
            .headers_mut()
            .insert("grpc-message", HeaderValue::from_static("nope"));
        response
            .headers_mut()
            .insert("x-why", HeaderValue::from_static("policy"));
        respond.send_response(response, true).unwrap();
    });
    let status = run(unary(&channel)).unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    assert_eq!(status.message(), "nope");
    assert_eq!(status.metadata().get("x-why"), Some("policy"));
}

#[test]
fn rst_stream_reasons_map_to_codes() {
    for (reason, code) in [
        (h2::Reason::REFUSED_STREAM, Code::Unavailable),
        (h2::Reason::CANCEL, Code::Cancelled),
        (h2::Reason::ENHANCE_YOUR_CALM, Code::ResourceExhausted),
        (h2::Reason::INTERNAL_ERROR, Code::Internal),
        (h2::Reason::INADEQUATE_SECURITY, Code::PermissionDenied),
    ] {
        let channel = scripted(move |_request, mut respond| async move {
            respond.send_reset(reason);
        });
        let status = run(unary(&channel)).unwrap_err();
        assert_eq!(status.code(), code, "{reason:?}: {status}");
    }
}

#[test]
fn a_peer_cancel_after_the_deadline_is_deadline_exceeded() {
    // gRPC servers reset a call whose deadline passed with RST_STREAM(CANCEL); when that reset
    // is what the client sees first, the call still failed by its deadline.
    let channel = scripted(|_request, mut respond| async move {
        async_io::Timer::after(Duration::from_millis(150)).await;
        respond.send_reset(h2::Reason::CANCEL);
    });
    let status = run(async {
        let options = CallOptions::new().timeout(Duration::from_millis(50));
        let (_tx, mut rx) = channel.bidi_streaming("/t.S/M", options).await?;
        // Not polling until both the deadline and the reset are in.
        async_io::Timer::after(Duration::from_millis(600)).await;
        rx.message().await
    })
    .unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status}");

    // Without a deadline, the same reset is CANCELLED.
    let status = run(async {
        let (_tx, mut rx) = channel.bidi_streaming("/t.S/M", CallOptions::new()).await?;
        rx.message().await
    })
    .unwrap_err();
    assert_eq!(status.code(), Code::Cancelled, "{status}");
}

#[test]
fn unpadded_and_padded_binary_metadata_from_a_peer_are_accepted() {
    let channel = scripted(|_request, mut respond| async move {
        let mut response = grpc_headers();
        response
            .headers_mut()
            .insert("x-a-bin", HeaderValue::from_static("AQI"));
        response
            .headers_mut()
            .insert("x-b-bin", HeaderValue::from_static("AQI="));
        let mut stream = respond.send_response(response, false).unwrap();
        stream.send_data(frame(b"ok"), false).unwrap();
        stream
            .send_trailers(trailers(&[("grpc-status", b"0")]))
            .unwrap();
    });
    let response = run(unary(&channel)).unwrap();
    assert_eq!(
        response.metadata().get_bin("x-a-bin").unwrap().as_ref(),
        &[1, 2]
    );
    assert_eq!(
        response.metadata().get_bin("x-b-bin").unwrap().as_ref(),
        &[1, 2]
    );
}

#[test]
fn peer_closing_the_connection_mid_stream_gives_unavailable() {
    let (connector, mut listener) = memory::channel();
    smol::spawn(async move {
        let Some(Ok(io)) = listener.next().await else {
            return;
        };
        let mut conn = h2::server::handshake(Compat::new(io)).await.unwrap();
        let (_request, mut respond) = conn.accept().await.unwrap().unwrap();
        let mut stream = respond.send_response(grpc_headers(), false).unwrap();
        stream.send_data(frame(b"first"), false).unwrap();
        // Flush what was queued, then vanish without trailers or GOAWAY.
        let deadline = async_io::Timer::after(Duration::from_millis(100));
        let _ = select(std::pin::pin!(conn.accept()), deadline).await;
        drop(stream);
        drop(conn);
    })
    .detach();
    let channel = Channel::builder("http://x:1")
        .connector(connector)
        .resolver(StaticResolver::new([Address::Unix("scripted".into())]))
        .build()
        .unwrap();
    run(async {
        let mut stream = channel
            .server_streaming("/t.S/M", Bytes::new(), CallOptions::new())
            .await
            .unwrap();
        assert_eq!(stream.message().await.unwrap().unwrap().as_ref(), b"first");
        let started = Instant::now();
        let status = stream.message().await.unwrap_err();
        assert_eq!(status.code(), Code::Unavailable, "{status}");
        assert!(started.elapsed() < Duration::from_secs(5));
    });
}

#[test]
fn connect_failure_gives_unavailable() {
    let (connector, listener) = memory::channel();
    drop(listener);
    let channel = Channel::builder("http://x:1")
        .connector(connector)
        .resolver(StaticResolver::new([Address::Unix("scripted".into())]))
        .build()
        .unwrap();
    let status = run(unary(&channel)).unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status}");
}

#[test]
fn dropping_a_call_sends_rst_stream_cancel() {
    let (tx, rx) = async_channel::bounded(1);
    let channel = scripted(move |_request, mut respond| {
        let tx = tx.clone();
        async move {
            let mut stream = respond.send_response(grpc_headers(), false).unwrap();
            stream.send_data(frame(b"one"), false).unwrap();
            let reason = std::future::poll_fn(|cx| stream.poll_reset(cx))
                .await
                .unwrap();
            tx.send(reason).await.unwrap();
        }
    });
    run(async {
        let mut stream = channel
            .server_streaming("/t.S/M", Bytes::new(), CallOptions::new())
            .await
            .unwrap();
        stream.message().await.unwrap();
        drop(stream);
        assert_eq!(rx.recv().await.unwrap(), h2::Reason::CANCEL);
    });
}

#[test]
fn local_deadline_fires_even_if_the_server_never_answers() {
    let channel = scripted(|request, respond| async move {
        let _held = (request, respond);
        std::future::pending::<()>().await
    });
    let started = Instant::now();
    let options = CallOptions::new().timeout(Duration::from_millis(150));
    let status = run(channel.unary("/t.S/M", Bytes::new(), options)).unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded);
    assert!(started.elapsed() < Duration::from_secs(2));
}

// ---- our server against a raw h2 client ----

fn echo_server() -> Server {
    Server::builder()
        .unary(
            "/t.S/Echo",
            BytesCodec,
            |req: plexus::Request<Bytes>| async move { Ok(Response::new(req.into_message())) },
        )
        .build()
        .unwrap()
}

/// Sends one raw request to `server` and returns (HTTP status, headers, body, trailers).
fn raw_call(
    server: Server,
    headers: &[(&'static str, &'static str)],
    body: Vec<Bytes>,
) -> (StatusCode, HeaderMap, Bytes, Option<HeaderMap>) {
    let (client_io, server_io) = memory::duplex();
    smol::spawn(async move {
        let _ = server.serve_connection(server_io).await;
    })
    .detach();
    let headers: Vec<_> = headers.to_vec();
    run(async move {
        let (mut send, conn) = h2::client::handshake(Compat::new(client_io)).await.unwrap();
        smol::spawn(async move {
            let _ = conn.await;
        })
        .detach();
        let mut request = http::Request::post("http://local/t.S/Echo")
            .body(())
            .unwrap();
        for (k, v) in headers {
            request.headers_mut().insert(k, HeaderValue::from_static(v));
        }
        let (response, mut stream) = send.send_request(request, false).unwrap();
        // END_STREAM rides on the last DATA frame, so the server has the whole request when it
        // answers (an answer to a half-open request may be followed by RST_STREAM).
        // A server that answers from the headers alone (an unknown grpc-encoding) may have
        // closed the stream before the body goes out: then sending fails, and that is fine.
        let count = body.len();
        for (i, chunk) in body.into_iter().enumerate() {
            let _ = stream.send_data(chunk, i + 1 == count);
        }
        if count == 0 {
            let _ = stream.send_data(Bytes::new(), true);
        }
        let response = response.await.unwrap();
        let (parts, mut recv) = response.into_parts();
        let mut data = BytesMut::new();
        while let Some(chunk) = recv.data().await {
            let chunk = chunk.unwrap();
            let _ = recv.flow_control().release_capacity(chunk.len());
            data.extend_from_slice(&chunk);
        }
        let trailers = recv.trailers().await.unwrap();
        (parts.status, parts.headers, data.freeze(), trailers)
    })
}

fn grpc_status_of(headers: &HeaderMap, trailers: &Option<HeaderMap>) -> String {
    let source = trailers
        .as_ref()
        .filter(|t| t.contains_key("grpc-status"))
        .unwrap_or(headers);
    source
        .get("grpc-status")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default()
}

#[test]
fn server_answers_a_well_formed_request() {
    let (status, headers, body, trailers) = raw_call(
        echo_server(),
        &[("content-type", "application/grpc")],
        vec![frame(b"hi")],
    );
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["content-type"], "application/grpc");
    assert_eq!(body, frame(b"hi"));
    assert_eq!(grpc_status_of(&headers, &trailers), "0");
}

#[test]
fn server_rejects_a_truncated_request_with_internal() {
    let (_, headers, _, trailers) = raw_call(
        echo_server(),
        &[("content-type", "application/grpc")],
        vec![Bytes::from_static(&[0, 0, 0, 0, 9, 1])],
    );
    assert_eq!(grpc_status_of(&headers, &trailers), "13");
}

#[test]
fn server_rejects_a_huge_length_prefix_with_resource_exhausted() {
    let (_, headers, _, trailers) = raw_call(
        echo_server(),
        &[("content-type", "application/grpc")],
        vec![Bytes::from_static(&[0, 0xff, 0xff, 0xff, 0xff])],
    );
    assert_eq!(grpc_status_of(&headers, &trailers), "8");
}

#[test]
fn server_rejects_compressed_flag_without_encoding() {
    let (_, headers, _, trailers) = raw_call(
        echo_server(),
        &[("content-type", "application/grpc")],
        vec![Bytes::from_static(&[1, 0, 0, 0, 1, 0])],
    );
    assert_eq!(grpc_status_of(&headers, &trailers), "13");
}

#[test]
fn server_rejects_unknown_encoding_with_unimplemented() {
    let (_, headers, _, trailers) = raw_call(
        echo_server(),
        &[
            ("content-type", "application/grpc"),
            ("grpc-encoding", "snappy"),
        ],
        vec![frame(b"x")],
    );
    assert_eq!(grpc_status_of(&headers, &trailers), "12");
    assert_eq!(headers["grpc-accept-encoding"], "identity, deflate, gzip");
}

#[test]
fn server_rejects_malformed_timeout_with_internal() {
    let (_, headers, _, trailers) = raw_call(
        echo_server(),
        &[
            ("content-type", "application/grpc"),
            ("grpc-timeout", "soon"),
        ],
        vec![frame(b"x")],
    );
    assert_eq!(grpc_status_of(&headers, &trailers), "13");
}

#[test]
fn server_answers_non_grpc_content_type_with_415() {
    let (status, _, _, _) = raw_call(
        echo_server(),
        &[("content-type", "application/json")],
        vec![],
    );
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
}

#[test]
fn server_rejects_two_messages_on_a_unary_method() {
    let (_, headers, _, trailers) = raw_call(
        echo_server(),
        &[("content-type", "application/grpc")],
        vec![frame(b"a"), frame(b"b")],
    );
    assert_eq!(grpc_status_of(&headers, &trailers), "13");
}

#[test]
fn a_refused_unary_call_is_retried_once_transparently() {
    let attempts = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = attempts.clone();
    let channel = scripted(move |_request, mut respond| {
        let attempt = seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        async move {
            if attempt == 0 {
                respond.send_reset(h2::Reason::REFUSED_STREAM);
                return;
            }
            let mut stream = respond.send_response(grpc_headers(), false).unwrap();
            stream.send_data(frame(b"second"), false).unwrap();
            stream
                .send_trailers(trailers(&[("grpc-status", b"0")]))
                .unwrap();
        }
    });
    let response = run(unary(&channel)).unwrap();
    assert_eq!(response.message().as_ref(), b"second");
    assert_eq!(attempts.load(std::sync::atomic::Ordering::SeqCst), 2);
}

#[test]
fn a_unary_call_the_server_never_processed_before_goaway_is_retried() {
    // The first connection says GOAWAY (last stream 0) before it processes anything; the
    // call must go through on a second connection without the caller noticing.
    let (connector, mut listener) = memory::channel();
    let connections = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = connections.clone();
    smol::spawn(async move {
        while let Some(Ok(io)) = listener.next().await {
            let first = seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0;
            smol::spawn(async move {
                let Ok(mut conn) = h2::server::handshake(Compat::new(io)).await else {
                    return;
                };
                if first {
                    conn.abrupt_shutdown(h2::Reason::NO_ERROR);
                    while let Some(Ok(_ignored)) = conn.accept().await {}
                    return;
                }
                while let Some(Ok((_request, mut respond))) = conn.accept().await {
                    let mut stream = respond.send_response(grpc_headers(), false).unwrap();
                    stream.send_data(frame(b"second"), false).unwrap();
                    stream
                        .send_trailers(trailers(&[("grpc-status", b"0")]))
                        .unwrap();
                }
            })
            .detach();
        }
    })
    .detach();
    let channel = Channel::builder("http://x:1")
        .connector(connector)
        .resolver(StaticResolver::new([Address::Unix("memory".into())]))
        .build()
        .unwrap();
    let response = run(unary(&channel)).unwrap();
    assert_eq!(response.message().as_ref(), b"second");
    assert_eq!(connections.load(std::sync::atomic::Ordering::SeqCst), 2);
    let stats = channel.stats();
    assert_eq!(
        (
            stats.calls_started,
            stats.calls_succeeded,
            stats.calls_failed
        ),
        (1, 1, 0)
    );
}

// ===== Transparent retry of streams the server never processed =====

/// Reads a request body to its end, giving flow-control credit back.
async fn read_request(body: &mut RecvStream) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(chunk) = body.data().await {
        let Ok(chunk) = chunk else { break };
        let _ = body.flow_control().release_capacity(chunk.len());
        out.extend_from_slice(&chunk);
    }
    out
}

/// A script that refuses the first `refusals` streams once their first DATA frame (if
/// `after_data`) arrived, then echoes each later request body back as the response
/// (the raw bytes: one response message per request message). Counts attempts.
fn refusing(refusals: usize, after_data: bool, attempts: Arc<AtomicUsize>) -> Channel {
    scripted(move |request, mut respond| {
        let attempt = attempts.fetch_add(1, Ordering::SeqCst);
        async move {
            let mut body = request.into_body();
            if attempt < refusals {
                if after_data {
                    let _ = body.data().await;
                }
                respond.send_reset(h2::Reason::REFUSED_STREAM);
                return;
            }
            let echoed = read_request(&mut body).await;
            let mut stream = respond.send_response(grpc_headers(), false).unwrap();
            stream.send_data(Bytes::from(echoed), false).unwrap();
            stream
                .send_trailers(trailers(&[("grpc-status", b"0")]))
                .unwrap();
        }
    })
}

async fn collect(stream: &mut plexus::Streaming<Bytes>) -> Result<Vec<Bytes>, Status> {
    let mut out = Vec::new();
    while let Some(message) = stream.message().await? {
        out.push(message);
    }
    Ok(out)
}

fn counts(channel: &Channel) -> (u64, u64, u64) {
    let stats = channel.stats();
    (
        stats.calls_started,
        stats.calls_succeeded,
        stats.calls_failed,
    )
}

#[test]
fn a_refused_server_streaming_call_is_retried_once() {
    let attempts = Arc::new(AtomicUsize::new(0));
    let channel = refusing(1, false, attempts.clone());
    let messages = run(async {
        let mut stream = channel
            .server_streaming("/t.S/M", Bytes::from_static(b"once"), CallOptions::new())
            .await
            .unwrap();
        collect(&mut stream).await
    })
    .unwrap();
    assert_eq!(messages, [Bytes::from_static(b"once")]);
    assert_eq!(attempts.load(Ordering::SeqCst), 2);
    assert_eq!(counts(&channel), (1, 1, 0));
}

#[test]
fn a_refused_bidi_call_replays_what_it_sent_on_the_new_stream() {
    let attempts = Arc::new(AtomicUsize::new(0));
    let channel = refusing(1, true, attempts.clone());
    let messages = run(async {
        let (sender, mut stream) = channel
            .bidi_streaming("/t.S/M", CallOptions::new())
            .await
            .unwrap();
        sender.send(Bytes::from_static(b"a")).await.unwrap();
        // Wait until the first stream was refused, so the next sends meet a dead stream.
        while attempts.load(Ordering::SeqCst) == 0 {
            async_io::Timer::after(Duration::from_millis(5)).await;
        }
        async_io::Timer::after(Duration::from_millis(50)).await;
        sender.send(Bytes::from_static(b"b")).await.unwrap();
        sender.send(Bytes::from_static(b"c")).await.unwrap();
        sender.close().await.unwrap();
        collect(&mut stream).await
    })
    .unwrap();
    // Each message exactly once, in order, on the second stream.
    assert_eq!(
        messages,
        [Bytes::from_static(b"a"), b"b"[..].into(), b"c"[..].into()]
    );
    assert_eq!(attempts.load(Ordering::SeqCst), 2);
    assert_eq!(counts(&channel), (1, 1, 0));
}

#[test]
fn a_client_streaming_call_refused_after_close_is_retried() {
    let attempts = Arc::new(AtomicUsize::new(0));
    let channel = refusing(1, true, attempts.clone());
    let reply = run(async {
        let (sender, response) = channel
            .client_streaming("/t.S/M", CallOptions::new())
            .await
            .unwrap();
        sender.send(Bytes::from_static(b"only")).await.unwrap();
        drop(sender);
        response.await
    });
    // The echo script answers one message per request message: exactly one here.
    assert_eq!(reply.unwrap().message().as_ref(), b"only");
    assert_eq!(attempts.load(Ordering::SeqCst), 2);
}

#[test]
fn a_stream_refused_twice_fails_with_unavailable() {
    let attempts = Arc::new(AtomicUsize::new(0));
    let channel = refusing(2, true, attempts.clone());
    let status = run(async {
        let (sender, mut stream) = channel
            .bidi_streaming("/t.S/M", CallOptions::new())
            .await
            .unwrap();
        sender.send(Bytes::from_static(b"a")).await.unwrap();
        collect(&mut stream).await
    })
    .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert_eq!(attempts.load(Ordering::SeqCst), 2, "one retry only");
    assert_eq!(counts(&channel), (1, 0, 1));
}

#[test]
fn a_stream_that_sent_more_than_the_replay_limit_is_not_retried() {
    let attempts = Arc::new(AtomicUsize::new(0));
    let seen = attempts.clone();
    // The first stream reads everything, then refuses.
    let channel = scripted(move |request, mut respond| {
        seen.fetch_add(1, Ordering::SeqCst);
        async move {
            let mut body = request.into_body();
            read_request(&mut body).await;
            respond.send_reset(h2::Reason::REFUSED_STREAM);
        }
    });
    let status = run(async {
        let (sender, mut stream) = channel
            .bidi_streaming("/t.S/M", CallOptions::new())
            .await
            .unwrap();
        for _ in 0..5 {
            sender
                .send(Bytes::from(vec![9u8; 64 * 1024]))
                .await
                .unwrap();
        }
        sender.close().await.unwrap();
        collect(&mut stream).await
    })
    .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert_eq!(
        attempts.load(Ordering::SeqCst),
        1,
        "320 KiB sent: committed"
    );
}

#[test]
fn a_stream_reset_for_another_reason_is_not_retried() {
    let attempts = Arc::new(AtomicUsize::new(0));
    let seen = attempts.clone();
    let channel = scripted(move |_request, mut respond| {
        seen.fetch_add(1, Ordering::SeqCst);
        async move { respond.send_reset(h2::Reason::INTERNAL_ERROR) }
    });
    let status = run(async {
        let mut stream = channel
            .server_streaming("/t.S/M", Bytes::new(), CallOptions::new())
            .await
            .unwrap();
        collect(&mut stream).await
    })
    .unwrap_err();
    assert_eq!(status.code(), Code::Internal, "{status:?}");
    assert_eq!(attempts.load(Ordering::SeqCst), 1);
}
