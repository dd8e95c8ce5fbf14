"""Cross-implementation tests: grpcio client against the grpcio and plexus Echo
servers, and the plexus peer client against the grpcio Echo server.

Every RPC carries a deadline and every subprocess a timeout, so nothing hangs.
"""

from __future__ import annotations

import queue
import ssl
import subprocess
import threading
import time
from concurrent import futures

import grpc
import pytest

import echo_pb2
from conftest import RPC_TIMEOUT, TLS_SERVER_NAME, kill_process_group, plexus_bin, secure_channel

T = RPC_TIMEOUT


def req(**kwargs) -> echo_pb2.EchoRequest:
    return echo_pb2.EchoRequest(**kwargs)


def md_dict(metadata) -> dict:
    """Metadata as a dict; a key must not repeat."""
    if isinstance(metadata, dict):
        return metadata
    result = {}
    for key, value in metadata or ():
        assert key not in result, f"metadata key {key!r} repeated in {metadata!r}"
        result[key] = value
    return result


def echo_keys(metadata) -> dict:
    return {k: v for k, v in md_dict(metadata).items() if k.startswith("x-echo-")}


def assert_trailers(metadata) -> dict:
    trailers = md_dict(metadata)
    assert trailers.get("x-trailer") == "done", trailers
    assert trailers.get("x-trailer-bin") == b"\xfe\x00\x01", trailers
    return trailers


# =========================================================================== grpcio client -> server


def test_unary(client):
    response, call = client.stub.Unary.with_call(
        req(message="hello", payload=b"\x00\x01\x02\xff"), timeout=T
    )
    assert response.message == "hello"
    assert response.index == 0
    assert response.payload == b"\x00\x01\x02\xff"
    assert call.code() == grpc.StatusCode.OK
    assert_trailers(call.trailing_metadata())


def test_unary_empty_request(client):
    response = client.stub.Unary(req(), timeout=T)
    assert response == echo_pb2.EchoResponse()


def test_unary_1mib_payload(client):
    payload = bytes(range(256)) * 4096
    assert len(payload) == 1 << 20
    response = client.stub.Unary(req(message="big", payload=payload), timeout=T)
    assert response.message == "big"
    assert response.payload == payload


def test_unary_metadata(client):
    sent = [("x-echo-ascii", "hello"), ("x-echo-data-bin", b"\x00\x01\xff"), ("x-other", "nope")]
    response, call = client.stub.Unary.with_call(req(message="md"), metadata=sent, timeout=T)
    assert response.message == "md"
    initial = md_dict(call.initial_metadata())
    assert echo_keys(initial) == {"x-echo-ascii": "hello", "x-echo-data-bin": b"\x00\x01\xff"}
    assert "x-other" not in initial
    trailers = assert_trailers(call.trailing_metadata())
    assert "grpc-status-details-bin" not in trailers


def test_server_streaming(client):
    call = client.stub.ServerStream(
        req(message="s", count=5, payload=b"p"), metadata=[("x-echo-stream", "1")], timeout=T
    )
    responses = list(call)
    assert [r.index for r in responses] == [0, 1, 2, 3, 4]
    assert all(r.message == "s" and r.payload == b"p" for r in responses)
    assert call.code() == grpc.StatusCode.OK
    assert echo_keys(call.initial_metadata()) == {"x-echo-stream": "1"}
    assert_trailers(call.trailing_metadata())


def test_server_streaming_zero(client):
    call = client.stub.ServerStream(req(message="none", count=0), timeout=T)
    assert list(call) == []
    assert call.code() == grpc.StatusCode.OK
    assert_trailers(call.trailing_metadata())


def test_client_streaming(client):
    requests = [req(message=m, payload=m.encode()) for m in ("a", "b", "c")]
    response, call = client.stub.ClientStream.with_call(
        iter(requests), metadata=[("x-echo-cs-bin", b"\x80")], timeout=T
    )
    assert response.message == "a,b,c"
    assert response.index == 3
    assert response.payload == b"abc"
    assert echo_keys(call.initial_metadata()) == {"x-echo-cs-bin": b"\x80"}
    assert_trailers(call.trailing_metadata())


def test_client_streaming_error_after_all(client):
    requests = [req(message="a"), req(message="b", status_code=3, status_message="bad b"), req(message="c")]
    with pytest.raises(grpc.RpcError) as info:
        client.stub.ClientStream(iter(requests), timeout=T)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.details() == "bad b"


def test_bidi(client):
    outgoing: queue.Queue = queue.Queue()
    done = object()

    def requests():
        while True:
            try:
                item = outgoing.get(timeout=T)
            except queue.Empty:
                return  # never block grpcio's sending thread forever
            if item is done:
                return
            yield item

    call = client.stub.Bidi(requests(), metadata=[("x-echo-bidi", "yes")], timeout=T)
    try:
        for i in range(4):
            outgoing.put(req(message=f"m{i}", payload=bytes([i])))
            response = next(call)  # bounded by the call deadline
            assert (response.message, response.index, response.payload) == (f"m{i}", i, bytes([i]))
    finally:
        outgoing.put(done)
    assert list(call) == []
    assert call.code() == grpc.StatusCode.OK
    assert echo_keys(call.initial_metadata()) == {"x-echo-bidi": "yes"}
    assert_trailers(call.trailing_metadata())


def test_bidi_error(client):
    requests = [req(message="a"), req(message="b", status_code=7, status_message="denied")]
    call = client.stub.Bidi(iter(requests), timeout=T)
    received = []
    with pytest.raises(grpc.RpcError) as info:
        for response in call:
            received.append(response.message)
    assert received == ["a"]
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert info.value.details() == "denied"


def test_error_status(client):
    with pytest.raises(grpc.RpcError) as info:
        client.stub.Unary(req(status_code=5, status_message="no such thing"), timeout=T)
    err = info.value
    assert err.code() == grpc.StatusCode.NOT_FOUND
    assert err.details() == "no such thing"
    # grpcio hands grpc-status-details-bin through, undecoded, in trailing_metadata().
    trailers = assert_trailers(err.trailing_metadata())
    assert trailers.get("grpc-status-details-bin") == b"details:no such thing"


def test_error_status_non_ascii_message(client):
    message = "caf\u00e9 \u2603 100%"
    with pytest.raises(grpc.RpcError) as info:
        client.stub.Unary(req(status_code=5, status_message=message), timeout=T)
    err = info.value
    assert err.code() == grpc.StatusCode.NOT_FOUND
    assert err.details() == message
    trailers = assert_trailers(err.trailing_metadata())
    assert trailers.get("grpc-status-details-bin") == b"details:" + message.encode("utf-8")


def test_error_status_with_echoed_metadata(client):
    with pytest.raises(grpc.RpcError) as info:
        client.stub.Unary(
            req(status_code=13, status_message="boom"),
            metadata=[("x-echo-err", "e")],
            timeout=T,
        )
    assert info.value.code() == grpc.StatusCode.INTERNAL
    # A unary error may go out trailers-only (plexus, tonic) or after empty headers (grpcio):
    # either way the echoed keys must reach the client.
    echoed = echo_keys(info.value.initial_metadata()) or echo_keys(info.value.trailing_metadata())
    assert echoed == {"x-echo-err": "e"}
    assert_trailers(info.value.trailing_metadata())


def test_deadline_exceeded(client):
    stub = client.stub  # connect before timing
    started = time.monotonic()
    with pytest.raises(grpc.RpcError) as info:
        stub.Unary(req(message="slow", delay_ms=2000), timeout=0.3)
    elapsed = time.monotonic() - started
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert elapsed < 1.5, f"deadline call took {elapsed:.2f} s"


def test_server_streaming_error_after_two(client):
    call = client.stub.ServerStream(
        req(message="x", count=2, status_code=9, status_message="precondition"), timeout=T
    )
    received = []
    with pytest.raises(grpc.RpcError) as info:
        for response in call:
            received.append(response.index)
    assert received == [0, 1]
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert info.value.details() == "precondition"
    trailers = assert_trailers(info.value.trailing_metadata())
    assert trailers.get("grpc-status-details-bin") == b"details:precondition"


def test_server_streaming_cancel(client):
    call = client.stub.ServerStream(req(message="c", count=100, delay_ms=50), timeout=T)
    received = []
    with pytest.raises(grpc.RpcError) as info:
        for response in call:
            received.append(response.index)
            if len(received) == 2:
                call.cancel()
    assert received == [0, 1]
    assert info.value.code() == grpc.StatusCode.CANCELLED
    assert call.code() == grpc.StatusCode.CANCELLED


def test_unknown_method(client):
    nope = client.channel.unary_unary("/plexus.peer.Echo/Nope")
    with pytest.raises(grpc.RpcError) as info:
        nope(b"", timeout=T)
    assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_concurrent_unary(client):
    stub = client.stub
    n = 20
    barrier = threading.Barrier(n, timeout=T)

    def one(i: int):
        barrier.wait()
        return stub.Unary(req(message=f"c{i}", payload=bytes([i]) * i, delay_ms=100), timeout=T)

    started = time.monotonic()
    with futures.ThreadPoolExecutor(max_workers=n) as pool:
        results = list(pool.map(one, range(n), timeout=2 * T))
    elapsed = time.monotonic() - started
    assert [(r.message, r.payload) for r in results] == [(f"c{i}", bytes([i]) * i) for i in range(n)]
    # Run one after another these would take >= 2 s.
    assert elapsed < 1.5, f"20 concurrent 100 ms calls took {elapsed:.2f} s; not served concurrently?"


_ALGORITHMS = {"gzip": grpc.Compression.Gzip, "deflate": grpc.Compression.Deflate}


@pytest.mark.parametrize("name", ["gzip", "deflate"])
def test_compressed_unary(client, name):
    payload = b"grpcio compresses this payload; " * 4096
    response, call = client.stub.Unary.with_call(
        req(message="z", payload=payload),
        compression=_ALGORITHMS[name],
        metadata=[("x-response-compression", name)],
        timeout=T,
    )
    assert response.message == "z"
    assert response.payload == payload
    if client.peer.name == "plexus":
        # The plexus server saw the request compressed with `name`, and inflated it.
        seen = md_dict(call.initial_metadata()).get("x-request-compression")
        assert seen == f"{name} 1", call.initial_metadata()


def test_compressed_bidi(client):
    payloads = [bytes([i]) * 50_000 for i in range(3)]
    requests = iter([req(message=f"m{i}", payload=p) for i, p in enumerate(payloads)])
    call = client.stub.Bidi(
        requests,
        compression=grpc.Compression.Gzip,
        metadata=[("x-response-compression", "deflate")],
        timeout=T,
    )
    got = [(r.message, r.payload) for r in call]
    assert got == [(f"m{i}", p) for i, p in enumerate(payloads)]
    assert call.code() == grpc.StatusCode.OK


# =========================================================================== plexus client -> grpcio server

PLEXUS_CLIENT_TIMEOUT = 120
REQUIRED_CASES = (
    "unary",
    "metadata",
    "server_streaming",
    "client_streaming",
    "bidi",
    "error_status",
    "deadline",
    "compressed_unary",
    "compressed_streaming",
)


def run_plexus_client(args: list[str]) -> tuple[int, str, str, list[str]]:
    """Runs `plexus-peer client ARGS`; returns (exit code, stdout, stderr, command)."""
    cmd = [plexus_bin(), "client", *args]
    try:
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
    except OSError as exc:
        pytest.fail(f"could not run {cmd}: {exc}", pytrace=False)
    timed_out = False
    try:
        out, err = proc.communicate(timeout=PLEXUS_CLIENT_TIMEOUT)
    except subprocess.TimeoutExpired:
        timed_out = True
        kill_process_group(proc)
        try:
            out, err = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            out, err = b"", b"(output lost: pipes still open after kill)"
    stdout, stderr = _text(out), _text(err)
    if timed_out:
        output = f"--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}"
        pytest.fail(f"{cmd} did not finish within {PLEXUS_CLIENT_TIMEOUT} s\n{output}", pytrace=False)
    return proc.returncode, stdout, stderr, cmd


def assert_plexus_client_passes(args: list[str]) -> None:
    returncode, stdout, stderr, cmd = run_plexus_client(args)
    output = f"--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}"
    lines = [line.strip() for line in stdout.splitlines()]
    failed = [line for line in lines if line.startswith("FAIL")]
    passed = {line[len("PASS ") :].strip() for line in lines if line.startswith("PASS ")}
    missing = [case for case in REQUIRED_CASES if case not in passed]
    problems = []
    if returncode != 0:
        problems.append(f"exit code {returncode}")
    if failed:
        problems.append(f"{len(failed)} FAIL line(s)")
    if missing:
        problems.append(f"no PASS line for {', '.join(missing)}")
    if problems:
        pytest.fail(f"{cmd}: {'; '.join(problems)}\n{output}", pytrace=False)
    print(output)


def test_plexus_client_against_grpcio_server(grpcio_server):
    assert_plexus_client_passes(["--target", f"127.0.0.1:{grpcio_server}"])


# =========================================================================== TLS


def tls_client_args(tls_certs, port: int, cert: str | None = None) -> list[str]:
    """plexus-peer client flags: TLS to 127.0.0.1:port, trusting the test CA, verifying the
    server as TLS_SERVER_NAME, presenting `cert`.pem/.key if given."""
    args = [
        "--target",
        f"127.0.0.1:{port}",
        "--ca",
        tls_certs.path("ca.pem"),
        "--server-name",
        TLS_SERVER_NAME,
    ]
    if cert is not None:
        args += ["--cert", tls_certs.path(f"{cert}.pem"), "--key", tls_certs.path(f"{cert}.key")]
    return args


def test_plexus_client_against_grpcio_tls_server(grpcio_tls_server, tls_certs):
    assert_plexus_client_passes(tls_client_args(tls_certs, grpcio_tls_server))


def test_plexus_client_with_the_wrong_ca_fails_against_grpcio_tls_server(
    grpcio_tls_server, tls_certs
):
    args = tls_client_args(tls_certs, grpcio_tls_server)
    args[args.index("--ca") + 1] = tls_certs.path("other-ca.pem")
    returncode, stdout, stderr, cmd = run_plexus_client(args)
    assert returncode != 0, f"{cmd} passed with an untrusted CA\n{stdout}"
    assert "FAIL unary: UNAVAILABLE" in stdout, stdout
    assert "not signed by a trusted CA" in stdout, stdout


@pytest.fixture(scope="module")
def grpcio_mtls_server(tls_certs):
    """The grpcio echo server over TLS, requiring client certificates from the test CA."""
    import echo_server

    credentials = grpc.ssl_server_credentials(
        [(tls_certs.read("server.key"), tls_certs.read("server.pem"))],
        root_certificates=tls_certs.read("ca.pem"),
        require_client_auth=True,
    )
    server, port = echo_server.start(0, credentials=credentials)
    yield port
    server.stop(grace=None).wait(10)


def test_plexus_client_with_a_certificate_against_grpcio_mtls_server(
    grpcio_mtls_server, tls_certs
):
    assert_plexus_client_passes(tls_client_args(tls_certs, grpcio_mtls_server, cert="client"))


@pytest.mark.parametrize("cert", [None, "rogue"])
def test_plexus_client_refused_by_grpcio_mtls_server(grpcio_mtls_server, tls_certs, cert):
    returncode, stdout, stderr, cmd = run_plexus_client(
        tls_client_args(tls_certs, grpcio_mtls_server, cert=cert)
    )
    assert returncode != 0, f"{cmd} passed without an acceptable certificate\n{stdout}"
    assert "FAIL unary: UNAVAILABLE" in stdout, stdout
    # BoringSSL closes without an alert; plexus says what that probably means.
    assert "client certificate" in stdout.splitlines()[0], stdout


def mtls_stub(server, tls_certs, cert: str | None):
    import echo_pb2_grpc

    channel = secure_channel(server.address(), tls_certs.client_credentials(cert))
    return channel, echo_pb2_grpc.EchoStub(channel)


def test_grpcio_client_with_a_certificate_against_plexus_mtls_server(
    plexus_mtls_server, tls_certs
):
    channel, stub = mtls_stub(plexus_mtls_server, tls_certs, "client")
    try:
        response, call = stub.Unary.with_call(req(message="mtls"), timeout=T)
        assert response.message == "mtls"
        # The plexus handler saw our certificate (it echoes the leaf it got).
        seen = md_dict(call.initial_metadata()).get("x-peer-certificate-bin")
        expected = ssl.PEM_cert_to_DER_cert(tls_certs.read("client.pem").decode())
        assert seen == expected
        stream = stub.ServerStream(req(message="s", count=3), timeout=T)
        assert [r.index for r in stream] == [0, 1, 2]
    finally:
        channel.close()


@pytest.mark.parametrize("cert", [None, "rogue"])
def test_grpcio_client_refused_by_plexus_mtls_server(plexus_mtls_server, tls_certs, cert):
    channel, stub = mtls_stub(plexus_mtls_server, tls_certs, cert)
    try:
        with pytest.raises(grpc.RpcError) as info:
            stub.Unary(req(message="no"), timeout=T)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE, info.value
    finally:
        channel.close()


def _text(data) -> str:
    if data is None:
        return ""
    if isinstance(data, bytes):
        return data.decode("utf-8", "replace")
    return data
