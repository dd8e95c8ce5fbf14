"""TLS channels and call credentials (plexus.secure_channel, plexus.aio.secure_channel), after
grpcio's secure-channel tests, against a grpcio TLS server (grpcio_tls_server.py) and the
plexus one (`plexus-peer server --tls-cert ...`), each with and without required client
certificates. Certificates come from `plexus-peer certs`: the server's names are `localhost`
and `*.test.google.fr` (no IP address).

Credentials are made both with plexus's functions and with grpcio's (the `make` fixture);
where grpcio's own client can run a case, its outcome is compared with plexus's.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import sys
import tempfile
import threading
from pathlib import Path

import echo_pb2
import echo_pb2_grpc
import grpc
import grpc.aio
import pytest
from conftest import HERE, WAIT, ServerProcess, _peer_binary, run_async

import plexus
import plexus.aio

Req = echo_pb2.EchoRequest
SERVICE = "plexus.peer.Echo"
WHOAMI = "/plexus.test.Auth/Whoami"
OVERRIDE = [("grpc.ssl_target_name_override", "foo.test.google.fr")]


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def certs() -> dict[str, bytes]:
    """The test PKI from `plexus-peer certs`, by file name (ca.pem, server.key, ...)."""
    import subprocess

    out = tempfile.mkdtemp(prefix="plexus-secure-certs-")
    subprocess.run([_peer_binary(), "certs", "--out", out], check=True, capture_output=True)
    files = {path.name: path.read_bytes() for path in Path(out).iterdir()}
    files["dir"] = out.encode()
    return files


def _cert_args(certs: dict[str, bytes]) -> tuple[str, str, str]:
    d = certs["dir"].decode()
    return f"{d}/server.pem", f"{d}/server.key", f"{d}/ca.pem"


@pytest.fixture(scope="session")
def tls_servers(certs, stub_dir):
    """The four TLS servers: (grpcio|plexus, mtls) -> ServerProcess, started on first use."""
    cert, key, ca = _cert_args(certs)
    grpcio_cmd = [
        sys.executable,
        str(HERE / "grpcio_tls_server.py"),
        "--stubs",
        stub_dir,
        "--cert",
        cert,
        "--key",
        key,
    ]
    plexus_cmd = [_peer_binary(), "server", "--listen", "127.0.0.1:0"]
    plexus_cmd += ["--tls-cert", cert, "--tls-key", key]
    servers = {
        ("grpcio", False): ServerProcess("grpcio TLS", grpcio_cmd),
        ("grpcio", True): ServerProcess("grpcio mTLS", grpcio_cmd + ["--client-ca", ca]),
        ("plexus", False): ServerProcess("plexus TLS", plexus_cmd),
        ("plexus", True): ServerProcess("plexus mTLS", plexus_cmd + ["--client-ca", ca]),
    }
    yield servers
    for server in servers.values():
        server.stop()


def _port(server: ServerProcess) -> int:
    server.target  # starts it
    assert server.port is not None
    return server.port


@pytest.fixture(params=["plexus", "grpcio"])
def kind(request) -> str:
    """Which TLS server a test runs against."""
    return request.param


@pytest.fixture
def port(tls_servers, kind) -> int:
    """The port of the TLS server (no client certificates) of `kind`."""
    return _port(tls_servers[(kind, False)])


@pytest.fixture
def mtls_port(tls_servers, kind) -> int:
    """The port of the TLS server of `kind` that requires client certificates."""
    return _port(tls_servers[(kind, True)])


@pytest.fixture(params=["plexus", "grpcio"])
def make(request):
    """The module whose credential functions make the credentials: plexus or grpc."""
    return plexus if request.param == "plexus" else grpc


def outcome(fn):
    """("OK", result) or (code, details) of a call, for comparing clients."""
    try:
        return "OK", fn()
    except grpc.RpcError as exc:
        return exc.code(), exc.details()


async def aoutcome(awaitable):
    try:
        return "OK", await awaitable
    except grpc.RpcError as exc:
        return exc.code(), exc.details()


def unary(channel, metadata=None, **kwargs):
    """An echo Unary call: (initial metadata as a list, response message)."""
    stub = echo_pb2_grpc.EchoStub(channel)
    kwargs.setdefault("timeout", WAIT)
    reply, call = stub.Unary.with_call(Req(message="hi"), metadata=metadata, **kwargs)
    return [(k, v) for k, v in call.initial_metadata()], reply.message


def whoami(channel, **kwargs) -> dict:
    """What the grpcio TLS server saw of a call: metadata, authority, peer common name."""
    answer = channel.unary_unary(WHOAMI)(b"", timeout=WAIT, **kwargs)
    seen = json.loads(answer)
    seen["metadata"] = [tuple(e) for e in seen["metadata"] if e[0] != "user-agent"]
    return seen


# --------------------------------------------------------------------------- call kinds


def _four_kinds(channel) -> list:
    stub = echo_pb2_grpc.EchoStub(channel)
    out = [stub.Unary(Req(message="u"), timeout=WAIT).message]
    out.append([r.index for r in stub.ServerStream(Req(message="s", count=3), timeout=WAIT)])
    reply = stub.ClientStream(iter([Req(message="a"), Req(message="b")]), timeout=WAIT)
    out.append(reply.message)
    out.append(
        [r.message for r in stub.Bidi(iter([Req(message="x"), Req(message="y")]), timeout=WAIT)]
    )
    out.append(stub.Unary.future(Req(message="f"), timeout=WAIT).result().message)
    return out


EXPECTED_KINDS = ["u", [0, 1, 2], "a,b", ["x", "y"], "f"]


def test_secure_channel_four_call_kinds(port, make, certs):
    creds = make.ssl_channel_credentials(certs["ca.pem"])
    with plexus.secure_channel(f"localhost:{port}", creds) as channel:
        assert _four_kinds(channel) == EXPECTED_KINDS
    grpc_creds = grpc.ssl_channel_credentials(certs["ca.pem"])
    with grpc.secure_channel(f"localhost:{port}", grpc_creds) as g:
        assert _four_kinds(g) == EXPECTED_KINDS


async def _four_kinds_aio(channel) -> list:
    stub = echo_pb2_grpc.EchoStub(channel)
    out = [(await stub.Unary(Req(message="u"), timeout=WAIT)).message]
    out.append([r.index async for r in stub.ServerStream(Req(message="s", count=3), timeout=WAIT)])
    call = stub.ClientStream(timeout=WAIT)
    await call.write(Req(message="a"))
    await call.write(Req(message="b"))
    await call.done_writing()
    out.append((await call).message)
    bidi = stub.Bidi(iter([Req(message="x"), Req(message="y")]), timeout=WAIT)
    out.append([r.message async for r in bidi])
    return out


def test_aio_secure_channel_four_call_kinds(port, make, certs):
    creds = make.ssl_channel_credentials(certs["ca.pem"])

    async def main():
        async with plexus.aio.secure_channel(f"localhost:{port}", creds) as channel:
            mine = await _four_kinds_aio(channel)
        theirs_creds = grpc.ssl_channel_credentials(certs["ca.pem"])
        async with grpc.aio.secure_channel(f"localhost:{port}", theirs_creds) as channel:
            theirs = await _four_kinds_aio(channel)
        return mine, theirs

    mine, theirs = run_async(main())
    assert mine == theirs == EXPECTED_KINDS[:4]


def test_https_target_is_refused_only_without_tls(port, certs):
    with pytest.raises(ValueError, match="needs TLS"):
        plexus.insecure_channel(f"https://localhost:{port}")
    creds = plexus.ssl_channel_credentials(certs["ca.pem"])
    with plexus.secure_channel(f"https://localhost:{port}", creds) as channel:
        assert unary(channel)[1] == "hi"


# --------------------------------------------------------------------------- certificates


def test_mutual_tls(mtls_port, make, certs, kind):
    ca, key, chain = certs["ca.pem"], certs["client.key"], certs["client.pem"]
    target = f"localhost:{mtls_port}"
    with plexus.secure_channel(target, make.ssl_channel_credentials(ca, key, chain)) as channel:
        if kind == "plexus":
            initial, _ = unary(channel)
            der = ssl.PEM_cert_to_DER_cert(chain.decode())
            assert ("x-peer-certificate-bin", der) in initial
        else:
            assert whoami(channel)["peer_common_name"] == ["client.test"]
        assert _four_kinds(channel) == EXPECTED_KINDS
    with grpc.secure_channel(target, grpc.ssl_channel_credentials(ca, key, chain)) as g:
        assert _four_kinds(g) == EXPECTED_KINDS


@pytest.mark.parametrize("client_cert", [None, "rogue"])
def test_mutual_tls_refuses_a_missing_or_untrusted_client_certificate(
    mtls_port, make, certs, client_cert
):
    pair = ()
    if client_cert:
        pair = (certs[f"{client_cert}.key"], certs[f"{client_cert}.pem"])
    target = f"localhost:{mtls_port}"
    with plexus.secure_channel(target, make.ssl_channel_credentials(certs["ca.pem"], *pair)) as ch:
        code, details = outcome(lambda: unary(ch))
    with grpc.secure_channel(target, grpc.ssl_channel_credentials(certs["ca.pem"], *pair)) as g:
        theirs = outcome(lambda: unary(g))
    assert code is theirs[0] is grpc.StatusCode.UNAVAILABLE
    assert "client certificate" in details


def test_untrusted_server_certificate_is_unavailable(port, make, certs):
    creds = make.ssl_channel_credentials(certs["other-ca.pem"])
    with plexus.secure_channel(f"localhost:{port}", creds) as channel:
        code, details = outcome(lambda: unary(channel))
    grpc_creds = grpc.ssl_channel_credentials(certs["other-ca.pem"])
    with grpc.secure_channel(f"localhost:{port}", grpc_creds) as g:
        theirs = outcome(lambda: unary(g))
    assert code is theirs[0] is grpc.StatusCode.UNAVAILABLE
    assert "not signed by a trusted CA" in details, details


def test_ssl_target_name_override(port, make, certs, kind):
    """Connecting by IP fails the name check; the override names the certificate's name."""
    creds = make.ssl_channel_credentials(certs["ca.pem"])
    grpc_creds = grpc.ssl_channel_credentials(certs["ca.pem"])
    target = f"127.0.0.1:{port}"
    with plexus.secure_channel(target, creds) as channel:
        code, details = outcome(lambda: unary(channel))
    with grpc.secure_channel(target, grpc_creds) as g:
        assert outcome(lambda: unary(g))[0] is code is grpc.StatusCode.UNAVAILABLE
    assert "not valid for name" in details, details
    with plexus.secure_channel(target, creds, OVERRIDE) as channel:
        assert unary(channel)[1] == "hi"
        mine = whoami(channel)["authority"] if kind == "grpcio" else None
    with grpc.secure_channel(target, grpc_creds, OVERRIDE) as g:
        assert unary(g)[1] == "hi"
        theirs = whoami(g)["authority"] if kind == "grpcio" else None
    assert mine == theirs


def test_default_authority(port, make, certs, kind):
    """grpc.default_authority is the :authority and the name the certificate must hold."""
    options = [("grpc.default_authority", "bar.test.google.fr")]
    target = f"127.0.0.1:{port}"
    with plexus.secure_channel(target, make.ssl_channel_credentials(certs["ca.pem"]), options) as c:
        assert unary(c)[1] == "hi"
        if kind == "grpcio":
            assert whoami(c)["authority"] == "bar.test.google.fr"
    grpc_creds = grpc.ssl_channel_credentials(certs["ca.pem"])
    with grpc.secure_channel(target, grpc_creds, options) as g:
        if kind == "grpcio":
            assert whoami(g)["authority"] == "bar.test.google.fr"


def test_default_authority_with_a_name_override_and_on_insecure_channels(port, certs, kind):
    """With both options the certificate is checked by the override and :authority is the
    default authority, as in grpcio; an insecure channel sends it too; a malformed one is
    refused."""
    creds = plexus.ssl_channel_credentials(certs["ca.pem"])
    grpc_creds = grpc.ssl_channel_credentials(certs["ca.pem"])
    both = OVERRIDE + [("grpc.default_authority", "bar.test.google.fr")]
    target = f"127.0.0.1:{port}"
    with plexus.secure_channel(target, creds, both) as channel:
        assert unary(channel)[1] == "hi"
        mine = whoami(channel)["authority"] if kind == "grpcio" else None
    with grpc.secure_channel(target, grpc_creds, both) as g:
        assert unary(g)[1] == "hi"
        theirs = whoami(g)["authority"] if kind == "grpcio" else None
    assert mine == theirs
    with pytest.raises(plexus.InvalidArgumentError, match="invalid authority"):
        plexus.insecure_channel("127.0.0.1:1", [("grpc.default_authority", "bad authority!")])
    plexus.insecure_channel("127.0.0.1:1", [("grpc.default_authority", "x.test")]).close()


def test_default_roots_come_from_grpc_default_ssl_roots_file_path(port, certs, monkeypatch):
    ca_path = f"{certs['dir'].decode()}/ca.pem"
    monkeypatch.setenv("GRPC_DEFAULT_SSL_ROOTS_FILE_PATH", ca_path)
    with plexus.secure_channel(f"localhost:{port}", plexus.ssl_channel_credentials()) as channel:
        assert unary(channel)[1] == "hi"


# --------------------------------------------------------------------------- call credentials


def _echo_plugin(key: str, seen: list | None = None):
    """A metadata plugin sending `x-echo-<key>: <service_url>|<method_name>`."""

    def plugin(context, callback):
        if seen is not None:
            seen.append(threading.get_ident())
        callback(((f"x-echo-{key}", f"{context.service_url}|{context.method_name}"),), None)

    return plugin


def _echoed(initial, prefix="x-echo-") -> list:
    return [(k, v) for k, v in initial if k.startswith(prefix)]


def test_metadata_plugin_runs_with_grpcio_context(port, make, certs):
    creds = make.composite_channel_credentials(
        make.ssl_channel_credentials(certs["ca.pem"]),
        make.metadata_call_credentials(_echo_plugin("plugin")),
    )
    with plexus.secure_channel(f"localhost:{port}", creds) as channel:
        mine = _echoed(unary(channel)[0])
    grpc_creds = grpc.composite_channel_credentials(
        grpc.ssl_channel_credentials(certs["ca.pem"]),
        grpc.metadata_call_credentials(_echo_plugin("plugin")),
    )
    with grpc.secure_channel(f"localhost:{port}", grpc_creds) as g:
        theirs = _echoed(unary(g)[0])
    assert mine == theirs == [("x-echo-plugin", f"https://localhost:{port}/{SERVICE}|Unary")]


def test_access_token_arrives_as_bearer_authorization(tls_servers, make, certs):
    port = _port(tls_servers[("grpcio", False)])
    target = f"localhost:{port}"
    creds = make.composite_channel_credentials(
        make.ssl_channel_credentials(certs["ca.pem"]), make.access_token_call_credentials("tok")
    )
    with plexus.secure_channel(target, creds) as channel:
        mine = whoami(channel)["metadata"]
    grpc_creds = grpc.composite_channel_credentials(
        grpc.ssl_channel_credentials(certs["ca.pem"]), grpc.access_token_call_credentials("tok")
    )
    with grpc.secure_channel(target, grpc_creds) as g:
        theirs = whoami(g)["metadata"]
    assert mine == theirs == [("authorization", "Bearer tok")]


def test_access_token_call_reaches_the_plexus_server(tls_servers, make, certs):
    port = _port(tls_servers[("plexus", False)])
    creds = make.composite_channel_credentials(
        make.ssl_channel_credentials(certs["ca.pem"]), make.access_token_call_credentials("tok")
    )
    with plexus.secure_channel(f"localhost:{port}", creds) as channel:
        assert unary(channel)[1] == "hi"


def test_composite_and_per_call_credentials_add_up_in_order(tls_servers, make, certs):
    """Channel credentials first, then the call's, as grpcio (C-core) composes them."""
    port = _port(tls_servers[("grpcio", False)])

    def creds(m):
        return m.composite_channel_credentials(
            m.ssl_channel_credentials(certs["ca.pem"]),
            m.composite_call_credentials(
                m.metadata_call_credentials(_echo_plugin("a")),
                m.access_token_call_credentials("one"),
            ),
        )

    def per_call(m):
        return m.composite_call_credentials(
            m.access_token_call_credentials("two"), m.metadata_call_credentials(_echo_plugin("b"))
        )

    with plexus.secure_channel(f"localhost:{port}", creds(make)) as channel:
        mine = whoami(channel, credentials=per_call(make))["metadata"]
    with grpc.secure_channel(f"localhost:{port}", creds(grpc)) as g:
        theirs = whoami(g, credentials=per_call(grpc))["metadata"]
    url = f"https://localhost:{port}/plexus.test.Auth|Whoami"
    assert mine == theirs == [
        ("x-echo-a", url),
        ("authorization", "Bearer one"),
        ("authorization", "Bearer two"),
        ("x-echo-b", url),
    ]


def test_per_call_credentials_on_every_call_kind(port, make, certs):
    creds = make.composite_channel_credentials(
        make.ssl_channel_credentials(certs["ca.pem"]),
        make.metadata_call_credentials(_echo_plugin("channel")),
    )
    per_call = make.metadata_call_credentials(_echo_plugin("call"))
    with plexus.secure_channel(f"localhost:{port}", creds) as channel:
        stub = echo_pb2_grpc.EchoStub(channel)
        calls = [
            stub.Unary.with_call(Req(), timeout=WAIT, credentials=per_call)[1],
            stub.Unary.future(Req(), timeout=WAIT, credentials=per_call),
            stub.ServerStream(Req(count=1), timeout=WAIT, credentials=per_call),
            stub.ClientStream.with_call(iter([Req()]), timeout=WAIT, credentials=per_call)[1],
            stub.Bidi(iter([Req()]), timeout=WAIT, credentials=per_call),
        ]
        for call in calls:
            keys = [k for k, _ in _echoed(call.initial_metadata())]
            assert keys == ["x-echo-channel", "x-echo-call"]


# --------------------------------------------------------------------------- plugin failures


def _failing(how: str):
    def plugin(context, callback):
        if how == "error":
            callback(None, ValueError("no token today"))
        else:
            raise RuntimeError("no token today")

    return plugin


@pytest.mark.parametrize("how", ["error", "raise"])
def test_plugin_failure_is_unavailable_with_grpcio_text(port, make, certs, how):
    def creds(m):
        return m.composite_channel_credentials(
            m.ssl_channel_credentials(certs["ca.pem"]), m.metadata_call_credentials(_failing(how))
        )

    with plexus.secure_channel(f"localhost:{port}", creds(make)) as channel:
        stub = echo_pb2_grpc.EchoStub(channel)
        results = [
            outcome(lambda: stub.Unary(Req(), timeout=WAIT)),
            outcome(lambda: stub.Unary.future(Req(), timeout=WAIT).result()),
            outcome(lambda: list(stub.ServerStream(Req(count=1), timeout=WAIT))),
            outcome(lambda: stub.ClientStream(iter([Req()]), timeout=WAIT)),
            outcome(lambda: stub.ClientStream.future(iter([Req()]), timeout=WAIT).result()),
            outcome(lambda: list(stub.Bidi(iter([Req()]), timeout=WAIT))),
        ]
    with grpc.secure_channel(f"localhost:{port}", creds(grpc)) as g:
        theirs = outcome(lambda: echo_pb2_grpc.EchoStub(g).Unary(Req(), timeout=WAIT))
    expected = (
        grpc.StatusCode.UNAVAILABLE,
        "Getting metadata from plugin failed with error: no token today",
    )
    assert theirs == expected
    assert results == [expected] * len(results)


def test_malformed_plugin_metadata_fails_the_call(port, make, certs):
    """An illegal key is UNAVAILABLE "Illegal metadata" as in grpcio; other malformed answers
    (on which grpcio's call waits for its deadline) fail at once, saying what was wrong."""

    def plexus_creds(answer):
        return plexus.composite_channel_credentials(
            make.ssl_channel_credentials(certs["ca.pem"]),
            make.metadata_call_credentials(lambda context, callback: callback(answer, None)),
        )

    illegal = (("Bad Key", "v"),)
    with plexus.secure_channel(f"localhost:{port}", plexus_creds(illegal)) as channel:
        mine = outcome(lambda: unary(channel))
    grpc_creds = grpc.composite_channel_credentials(
        grpc.ssl_channel_credentials(certs["ca.pem"]),
        grpc.metadata_call_credentials(lambda context, callback: callback(illegal, None)),
    )
    with grpc.secure_channel(f"localhost:{port}", grpc_creds) as g:
        theirs = outcome(lambda: unary(g))
    assert mine == theirs == (grpc.StatusCode.UNAVAILABLE, "Illegal metadata")
    for answer, words in [
        ((("x-a-bin", "not bytes"),), "must be bytes"),
        ((("x-a", 5),), "must be a str"),
        ("junk", "must be (key, value) pairs"),
        ((("x-a",),), "must be (key, value) pairs"),
    ]:
        with plexus.secure_channel(f"localhost:{port}", plexus_creds(answer)) as channel:
            code, details = outcome(lambda: unary(channel))
        assert code is grpc.StatusCode.UNAVAILABLE
        assert details.startswith("Getting metadata from plugin failed with error: ")
        assert words in details


def test_plugin_that_never_answers_runs_into_the_deadline(port, certs):
    creds = plexus.composite_channel_credentials(
        plexus.ssl_channel_credentials(certs["ca.pem"]),
        plexus.metadata_call_credentials(lambda context, callback: None),
    )
    with plexus.secure_channel(f"localhost:{port}", creds) as channel:
        code, _ = outcome(lambda: unary(channel, timeout=0.2))
    assert code is grpc.StatusCode.DEADLINE_EXCEEDED


def test_plugin_answering_from_another_thread(port, certs):
    def plugin(context, callback):
        answer = (("x-echo-later", context.method_name),)
        threading.Thread(target=callback, args=(answer, None)).start()

    creds = plexus.composite_channel_credentials(
        plexus.ssl_channel_credentials(certs["ca.pem"]), plexus.metadata_call_credentials(plugin)
    )
    with plexus.secure_channel(f"localhost:{port}", creds) as channel:
        assert _echoed(unary(channel)[0]) == [("x-echo-later", "Unary")]


# --------------------------------------------------------------------------- asyncio


def test_aio_plugins_run_off_the_event_loop(port, make, certs):
    seen: list = []
    creds = make.composite_channel_credentials(
        make.ssl_channel_credentials(certs["ca.pem"]),
        make.metadata_call_credentials(_echo_plugin("plugin", seen)),
    )
    per_call = make.access_token_call_credentials("tok")

    async def main():
        loop_thread = threading.get_ident()
        async with plexus.aio.secure_channel(f"localhost:{port}", creds) as channel:
            stub = echo_pb2_grpc.EchoStub(channel)
            call = stub.Unary(Req(message="hi"), timeout=WAIT, credentials=per_call)
            assert (await call).message == "hi"
            initial = await call.initial_metadata()
            stream = stub.ServerStream(Req(count=2), timeout=WAIT)
            indexes = [r.index async for r in stream]
            stream_initial = await stream.initial_metadata()
        return loop_thread, _echoed(initial), indexes, _echoed(stream_initial)

    loop_thread, initial, indexes, stream_initial = run_async(main())
    assert initial == [("x-echo-plugin", f"https://localhost:{port}/{SERVICE}|Unary")]
    assert stream_initial == [("x-echo-plugin", f"https://localhost:{port}/{SERVICE}|ServerStream")]
    assert indexes == [0, 1]
    assert len(seen) == 2 and loop_thread not in seen


@pytest.mark.parametrize("how", ["error", "raise"])
def test_aio_plugin_failure_is_unavailable_with_grpcio_text(port, make, certs, how):
    def creds(m):
        return m.composite_channel_credentials(
            m.ssl_channel_credentials(certs["ca.pem"]), m.metadata_call_credentials(_failing(how))
        )

    async def run(module):
        made = creds(make if module is plexus else grpc)
        async with module.aio.secure_channel(f"localhost:{port}", made) as ch:
            stub = echo_pb2_grpc.EchoStub(ch)
            unary_result = await aoutcome(stub.Unary(Req(), timeout=WAIT))
            call = stub.ServerStream(Req(count=1), timeout=WAIT)
            stream_result = await aoutcome(call.read())
            return unary_result, stream_result, await call.code()

    mine = run_async(run(plexus))
    theirs = run_async(run(grpc))
    expected = (
        grpc.StatusCode.UNAVAILABLE,
        "Getting metadata from plugin failed with error: no token today",
    )
    assert mine == theirs == (expected, expected, grpc.StatusCode.UNAVAILABLE)


def test_aio_per_call_credentials_with_channel_interceptors(port, certs):
    """The caller's interceptors see `credentials`; the call credentials run after them."""
    seen = []

    class Recorder(grpc.aio.UnaryUnaryClientInterceptor):
        async def intercept_unary_unary(self, continuation, details, request):
            seen.append(details.credentials is not None)
            return await continuation(details, request)

    creds = plexus.ssl_channel_credentials(certs["ca.pem"])
    per_call = plexus.metadata_call_credentials(_echo_plugin("call"))

    async def main():
        channel = plexus.aio.secure_channel(
            f"localhost:{port}", creds, interceptors=[Recorder()]
        )
        async with channel:
            call = echo_pb2_grpc.EchoStub(channel).Unary(Req(), timeout=WAIT, credentials=per_call)
            await call
            return _echoed(await call.initial_metadata())

    assert run_async(main()) == [("x-echo-call", f"https://localhost:{port}/{SERVICE}|Unary")]
    assert seen == [True]


# --------------------------------------------------------------------------- insecure channels


def test_call_credentials_on_an_insecure_channel_are_unauthenticated(target):
    """grpcio refuses to send call credentials without TLS: the call fails unsent."""
    token = grpc.access_token_call_credentials("tok")
    with plexus.insecure_channel(target) as channel:
        mine = outcome(lambda: unary(channel, credentials=token))
        mine_plexus = outcome(
            lambda: unary(channel, credentials=plexus.access_token_call_credentials("t"))
        )
    with grpc.insecure_channel(target) as g:
        theirs = outcome(lambda: unary(g, credentials=token))
    assert mine == mine_plexus == theirs
    assert theirs[0] is grpc.StatusCode.UNAUTHENTICATED

    async def aio():
        async with plexus.aio.insecure_channel(target) as ch:
            return await aoutcome(echo_pb2_grpc.EchoStub(ch).Unary(Req(), credentials=token))

    assert run_async(aio()) == theirs


# --------------------------------------------------------------------------- bad input


def test_bad_credentials_get_clear_errors(certs):
    with pytest.raises(TypeError, match="needs credentials"):
        plexus.secure_channel("localhost:1", None)
    with pytest.raises(TypeError, match="channel credentials"):
        plexus.secure_channel("localhost:1", object())
    with pytest.raises(TypeError, match="LocalChannelCredentials"):
        plexus.secure_channel("localhost:1", grpc.local_channel_credentials())
    with pytest.raises(ValueError, match="Call insecure_channel instead"):
        plexus.secure_channel(
            "localhost:1", grpc.experimental.insecure_channel_credentials()
        )
    with pytest.raises(TypeError, match="channel credentials"):
        plexus.secure_channel("localhost:1", plexus.access_token_call_credentials("t"))
    with pytest.raises(ValueError, match="go together"):
        plexus.ssl_channel_credentials(certs["ca.pem"], private_key=certs["client.key"])
    with pytest.raises(TypeError, match="PEM bytes"):
        plexus.ssl_channel_credentials(42)
    with pytest.raises(TypeError, match="callable"):
        plexus.metadata_call_credentials("not a plugin")
    with pytest.raises(ValueError, match="at least one"):
        plexus.composite_call_credentials()
    with pytest.raises(plexus.PlexusError):
        plexus.secure_channel("localhost:1", plexus.ssl_channel_credentials(b"not a PEM"))
    with plexus.secure_channel("localhost:1", plexus.ssl_channel_credentials(certs["ca.pem"])) as c:
        with pytest.raises(ValueError, match="call credentials"):
            c.unary_unary("/x.Y/Z")(b"", credentials=object())

        async def aio():
            async with plexus.aio.secure_channel(
                "localhost:1", plexus.ssl_channel_credentials(certs["ca.pem"])
            ) as ch:
                ch.unary_unary("/x.Y/Z")(b"", credentials=object())

        with pytest.raises(ValueError, match="call credentials"):
            run_async(aio())


def test_credential_objects_describe_themselves(certs):
    creds = plexus.composite_channel_credentials(
        plexus.ssl_channel_credentials(certs["ca.pem"], certs["client.key"], certs["client.pem"]),
        plexus.access_token_call_credentials("t"),
    )
    assert "client certificate" in repr(creds) and "AccessToken" in repr(creds)
    assert isinstance(plexus.access_token_call_credentials("t"), plexus.CallCredentials)
    assert isinstance(creds, plexus.ChannelCredentials)
