"""plexus.aio.server running a grpcio-tools-generated servicer with async methods, called by
grpcio's asyncio client and by plexus's: the four call kinds, the ServicerContext methods,
handler exceptions and abort, deadlines, client cancellation, oversize messages,
maximum_concurrent_rpcs, a TLS port, and stop(grace) with a call in flight. Where grpcio's
behaviour is the reference (status codes and texts), the same scenario runs on
grpc.aio.server in the same process and the outcomes must be equal.

No test waits for time to pass: handlers block on asyncio events the test sets, and every
wait is bounded by the generous WAIT.
"""

from __future__ import annotations

import asyncio
import subprocess
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path

import echo_pb2
import echo_pb2_grpc
import grpc
import grpc.aio
import pytest
from conftest import WAIT, _peer_binary, run_async

import plexus
import plexus.aio

Req = echo_pb2.EchoRequest
Resp = echo_pb2.EchoResponse
SERVICE = "plexus.peer.Echo"


class RichStatus(grpc.Status):
    """A grpc.Status for abort_with_status."""

    def __init__(self, code, details, trailing_metadata):
        self.code, self.details, self.trailing_metadata = code, details, trailing_metadata


class Servicer(echo_pb2_grpc.EchoServicer):
    """The echo service as grpc.aio servicers are written; `message` picks a behaviour."""

    def __init__(self) -> None:
        self.started = asyncio.Event()  # a blocking handler is running
        self.release = asyncio.Event()  # lets blocking handlers return
        self.ended = asyncio.Event()  # a blocking handler saw its call end
        self.cancelled = asyncio.Event()  # a blocking handler was cancelled
        self.seen: dict[str, object] = {}

    async def Unary(self, request, context):
        m = request.message
        if m == "raise":
            raise ValueError("boom")
        if m == "setcoderaise":
            context.set_code(grpc.StatusCode.NOT_FOUND)
            raise KeyError("k")
        if m == "abort":
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, "go away", (("x-why", "no"),))
        if m == "abort2":
            try:
                await context.abort(grpc.StatusCode.NOT_FOUND, "first")
            except Exception:
                pass
            await context.abort(grpc.StatusCode.INTERNAL, "second")
        if m == "abortstatus":
            details = (("grpc-status-details-bin", b"\x08\x0a"),)
            await context.abort_with_status(RichStatus(grpc.StatusCode.ABORTED, "rich", details))
        if m == "none":
            return None
        if m == "badresp":
            return b"not a message"
        if m == "setcode":
            context.set_code(grpc.StatusCode.NOT_FOUND)
            context.set_details("not here")
            context.set_trailing_metadata((("x-t", "v"), ("x-t-bin", b"\x00\x01")))
            return Resp()
        if m == "context":
            await context.send_initial_metadata((("x-initial", "yes"),))
            context.set_trailing_metadata((("x-trailer", "done"),))
            meta = dict(context.invocation_metadata())
            remaining = context.time_remaining()
            self.seen["peer"] = context.peer()
            self.seen["remaining"] = remaining
            self.seen["code"] = context.code()
            return Resp(message=meta.get("x-in", ""), index=0 if remaining is None else 1)
        if m == "block":
            return await self._block(context)
        return Resp(message=m, payload=request.payload)

    async def _block(self, context):
        ended = self.ended
        context.add_done_callback(lambda ctx: ended.set())
        self.started.set()
        try:
            await self.release.wait()
        except asyncio.CancelledError:
            self.seen["handler_cancelled"] = True
            self.seen["cancelled()"] = context.cancelled()
            self.cancelled.set()
            raise
        return Resp(message="released")

    async def ServerStream(self, request, context):
        if request.message == "write":
            for i in range(request.count):
                await context.write(Resp(message="w", index=i))
            return
        for i in range(request.count):
            yield Resp(message=request.message, index=i)
        if request.message == "raise":
            raise ValueError("after stream")

    async def ClientStream(self, request_iterator, context):
        parts = [r.message async for r in request_iterator]
        return Resp(message=",".join(parts), index=len(parts))

    async def Bidi(self, request_iterator, context):
        while True:
            request = await context.read()
            if request is grpc.aio.EOF:
                return
            await context.write(Resp(message=request.message.upper()))


@asynccontextmanager
async def serving(kind: str = "plexus", servicer=None, credentials=None, **kwargs):
    """A started plexus.aio or grpc.aio server with `servicer`; yields (port, servicer)."""
    servicer = servicer or Servicer()
    make = plexus.aio.server if kind == "plexus" else grpc.aio.server
    server = make(**kwargs)
    echo_pb2_grpc.add_EchoServicer_to_server(servicer, server)
    if credentials is None:
        port = server.add_insecure_port("127.0.0.1:0")
    else:
        port = server.add_secure_port("127.0.0.1:0", credentials)
    await server.start()
    try:
        yield port, servicer, server
    finally:
        await server.stop(None)


def channel_for(client: str, port: int):
    target = f"127.0.0.1:{port}"
    if client == "plexus":
        return plexus.aio.insecure_channel(target)
    return grpc.aio.insecure_channel(target)


CLIENTS = ["grpcio", "plexus"]


@pytest.mark.parametrize("client", CLIENTS)
def test_four_kinds(client):
    async def main():
        async with serving() as (port, _, _):
            async with channel_for(client, port) as channel:
                stub = echo_pb2_grpc.EchoStub(channel)
                reply = await stub.Unary(Req(message="hi", payload=b"\x00" * 70_000), timeout=WAIT)
                assert (reply.message, len(reply.payload)) == ("hi", 70_000)
                got = [
                    r.index
                    async for r in stub.ServerStream(Req(message="s", count=5), timeout=WAIT)
                ]
                assert got == [0, 1, 2, 3, 4]
                got = [
                    r.index
                    async for r in stub.ServerStream(Req(message="write", count=3), timeout=WAIT)
                ]
                assert got == [0, 1, 2]

                async def requests():
                    for word in ("a", "b", "c"):
                        yield Req(message=word)

                reply = await stub.ClientStream(requests(), timeout=WAIT)
                assert (reply.message, reply.index) == ("a,b,c", 3)
                call = stub.Bidi(timeout=WAIT)
                for word in ("x", "y"):
                    await call.write(Req(message=word))
                    assert (await call.read()).message == word.upper()
                await call.done_writing()
                assert await call.read() is grpc.aio.EOF
                assert await call.code() == grpc.StatusCode.OK

    run_async(main())


def test_many_concurrent_unary_calls():
    async def main():
        async with serving() as (port, _, _):
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = echo_pb2_grpc.EchoStub(channel)
                replies = await asyncio.gather(
                    *(stub.Unary(Req(message=str(i)), timeout=WAIT) for i in range(300))
                )
                assert [r.message for r in replies] == [str(i) for i in range(300)]

    run_async(main())


@pytest.mark.parametrize("client", CLIENTS)
def test_context_methods(client):
    async def main():
        async with serving() as (port, servicer, _):
            async with channel_for(client, port) as channel:
                stub = echo_pb2_grpc.EchoStub(channel)
                call = stub.Unary(Req(message="context"), metadata=(("x-in", "v1"),), timeout=WAIT)
                reply = await call
                assert (reply.message, reply.index) == ("v1", 1)
                assert ("x-initial", "yes") in list(await call.initial_metadata())
                assert ("x-trailer", "done") in list(await call.trailing_metadata())
                assert servicer.seen["peer"].startswith("ipv4:127.0.0.1:")
                # grpc-timeout is sent in whole units, rounded up: allow a little above WAIT.
                assert 0 < servicer.seen["remaining"] <= WAIT + 1
                assert servicer.seen["code"] is None
                reply = await stub.Unary(Req(message="context"))
                assert reply.index == 0  # no deadline: time_remaining() is None
                call = stub.Unary(Req(message="setcode"), timeout=WAIT)
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await call
                assert (err.value.code(), err.value.details()) == (
                    grpc.StatusCode.NOT_FOUND,
                    "not here",
                )
                trailers = list(err.value.trailing_metadata())
                assert ("x-t", "v") in trailers and ("x-t-bin", b"\x00\x01") in trailers

    run_async(main())


async def _outcome(kind: str, request=None, method=None, payload=None, **server_kwargs):
    """(code, details) of one unary call on a `kind` server, seen by grpcio's client."""
    async with serving(kind, **server_kwargs) as (port, _, _):
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            if method is None:
                call = echo_pb2_grpc.EchoStub(channel).Unary(request, timeout=WAIT)
            else:
                call = channel.unary_unary(method)(payload, timeout=WAIT)
            try:
                await call
            except grpc.aio.AioRpcError as exc:
                return exc.code(), exc.details(), tuple(exc.trailing_metadata() or ())
            return grpc.StatusCode.OK, "", ()


ERROR_CASES = {
    "raise": dict(request=Req(message="raise")),
    "set_code then raise": dict(request=Req(message="setcoderaise")),
    "abort": dict(request=Req(message="abort")),
    "second abort": dict(request=Req(message="abort2")),
    "abort_with_status": dict(request=Req(message="abortstatus")),
    "returns None": dict(request=Req(message="none")),
    "returns bytes": dict(request=Req(message="badresp")),
    "undecodable request": dict(method=f"/{SERVICE}/Unary", payload=b"\xff\xff\xff"),
    "unknown method": dict(method=f"/{SERVICE}/Nope", payload=b""),
    "oversize request": dict(
        request=Req(payload=b"\x00" * 5000), options=[("grpc.max_receive_message_length", 1024)]
    ),
}


@pytest.mark.parametrize("case", list(ERROR_CASES))
def test_errors_as_grpc_aio(case):
    async def main():
        kwargs = ERROR_CASES[case]
        mine = await _outcome("plexus", **kwargs)
        theirs = await _outcome("grpcio", **kwargs)
        assert mine[0] == theirs[0] != grpc.StatusCode.OK
        if case != "oversize request":  # grpcio's text names its own internals
            assert mine[1] == theirs[1]
        if case == "abort":
            assert ("x-why", "no") in mine[2] and ("x-why", "no") in theirs[2]
        if case == "abort_with_status":
            assert ("grpc-status-details-bin", b"\x08\x0a") in theirs[2]

    run_async(main())


def test_abort_with_status_sends_the_details():
    async def main():
        code, details, trailers = await _outcome("plexus", request=Req(message="abortstatus"))
        assert (code, details) == (grpc.StatusCode.ABORTED, "rich")
        assert ("grpc-status-details-bin", b"\x08\x0a") in trailers

    run_async(main())


def test_stream_handler_exception_after_messages():
    async def main():
        async with serving() as (port, _, _):
            async with plexus.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                call = echo_pb2_grpc.EchoStub(channel).ServerStream(
                    Req(message="raise", count=2), timeout=WAIT
                )
                got = []
                with pytest.raises(grpc.RpcError) as err:
                    async for reply in call:
                        got.append(reply.index)
                assert got == [0, 1]
                assert err.value.code() == grpc.StatusCode.UNKNOWN
                assert err.value.details() == "Unexpected <class 'ValueError'>: after stream"

    run_async(main())


@pytest.mark.parametrize("client", CLIENTS)
def test_deadline_cancels_the_handler(client):
    async def main():
        async with serving() as (port, servicer, _):
            async with channel_for(client, port) as channel:
                call = echo_pb2_grpc.EchoStub(channel).Unary(Req(message="block"), timeout=0.5)
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await call
                assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
                await asyncio.wait_for(servicer.ended.wait(), WAIT)
                await asyncio.wait_for(servicer.cancelled.wait(), WAIT)
                assert servicer.seen.get("handler_cancelled") is True
                assert servicer.seen.get("cancelled()") is True

    run_async(main())


@pytest.mark.parametrize("client", CLIENTS)
def test_client_cancel_reaches_the_handler(client):
    async def main():
        async with serving() as (port, servicer, _):
            async with channel_for(client, port) as channel:
                call = echo_pb2_grpc.EchoStub(channel).Unary(Req(message="block"), timeout=WAIT)
                await asyncio.wait_for(servicer.started.wait(), WAIT)
                call.cancel()
                await asyncio.wait_for(servicer.ended.wait(), WAIT)
                await asyncio.wait_for(servicer.cancelled.wait(), WAIT)
                assert servicer.seen.get("handler_cancelled") is True
                assert servicer.seen.get("cancelled()") is True

    run_async(main())


@pytest.mark.parametrize("kind", ["plexus", "grpcio"])
def test_maximum_concurrent_rpcs(kind):
    async def main():
        async with serving(kind, maximum_concurrent_rpcs=1) as (port, servicer, _):
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = echo_pb2_grpc.EchoStub(channel)
                first = stub.Unary(Req(message="block"), timeout=WAIT)
                await asyncio.wait_for(servicer.started.wait(), WAIT)
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await stub.Unary(Req(message="second"), timeout=WAIT)
                servicer.release.set()
                assert (await first).message == "released"
                assert (await stub.Unary(Req(message="third"), timeout=WAIT)).message == "third"
                return err.value.code(), err.value.details()

    assert run_async(main()) == (
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "Concurrent RPC limit exceeded!",
    )


def test_stop_with_grace_lets_a_call_in_flight_finish():
    async def main():
        async with serving() as (port, servicer, server):
            async with plexus.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = echo_pb2_grpc.EchoStub(channel)
                call = stub.Unary(Req(message="block"), timeout=WAIT)
                await asyncio.wait_for(servicer.started.wait(), WAIT)
                stopping = asyncio.ensure_future(server.stop(WAIT))
                # The call in flight is still being served: stop() waits for it.
                assert await server.wait_for_termination(0.05) is True
                servicer.release.set()
                assert (await call).message == "released"
                await asyncio.wait_for(stopping, WAIT)
                assert await server.wait_for_termination(0) is False

    run_async(main())


def test_stop_without_grace_cancels_the_call_in_flight():
    async def main():
        async with serving() as (port, servicer, server):
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = echo_pb2_grpc.EchoStub(channel)
                call = stub.Unary(Req(message="block"), timeout=WAIT)
                await asyncio.wait_for(servicer.started.wait(), WAIT)
                await asyncio.wait_for(server.stop(None), WAIT)
                assert servicer.seen.get("handler_cancelled") is True
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await call
                assert err.value.code() in (grpc.StatusCode.CANCELLED, grpc.StatusCode.UNAVAILABLE)

    run_async(main())


def test_stop_cancels_what_outlives_the_grace():
    async def main():
        async with serving() as (port, servicer, server):
            async with plexus.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = echo_pb2_grpc.EchoStub(channel)
                call = stub.Unary(Req(message="block"), timeout=WAIT)
                await asyncio.wait_for(servicer.started.wait(), WAIT)
                # The handler never returns by itself: only the end of the grace ends it.
                await asyncio.wait_for(server.stop(0.2), WAIT)
                assert servicer.seen.get("handler_cancelled") is True
                with pytest.raises(grpc.RpcError) as err:
                    await call
                assert err.value.code() in (grpc.StatusCode.CANCELLED, grpc.StatusCode.UNAVAILABLE)
                assert await server.wait_for_termination(0) is False

    run_async(main())


def test_sync_handlers_run_in_the_migration_pool():
    class SyncServicer(echo_pb2_grpc.EchoServicer):
        def Unary(self, request, context):
            if request.message == "abort":
                context.abort(grpc.StatusCode.FAILED_PRECONDITION, "sync abort")
            return Resp(message=threading.current_thread().name)

        def ServerStream(self, request, context):
            for i in range(request.count):
                yield Resp(index=i)

        def ClientStream(self, request_iterator, context):
            return Resp(index=sum(1 for _ in request_iterator))

    async def main():
        with ThreadPoolExecutor(2, thread_name_prefix="migration") as pool:
            kwargs = dict(servicer=SyncServicer(), migration_thread_pool=pool)
            async with serving(**kwargs) as (port, _, _):
                async with plexus.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                    stub = echo_pb2_grpc.EchoStub(channel)
                    reply = await stub.Unary(Req(message="x"), timeout=WAIT)
                    assert reply.message.startswith("migration")
                    with pytest.raises(grpc.aio.AioRpcError) as err:
                        await stub.Unary(Req(message="abort"), timeout=WAIT)
                    assert (err.value.code(), err.value.details()) == (
                        grpc.StatusCode.FAILED_PRECONDITION,
                        "sync abort",
                    )
                    got = [r.index async for r in stub.ServerStream(Req(count=3), timeout=WAIT)]
                    assert got == [0, 1, 2]
                    reply = await stub.ClientStream(iter([Req(), Req()]), timeout=WAIT)
                    assert reply.index == 2

    run_async(main())


def test_generic_handlers_and_interceptors():
    """A server given only generic handlers (the catch-all path), through an interceptor."""
    seen = []

    class Recorder(grpc.aio.ServerInterceptor):
        async def intercept_service(self, continuation, details):
            seen.append((details.method, dict(details.invocation_metadata).get("x-k")))
            if details.method.endswith("/Denied"):
                return None
            return await continuation(details)

    async def unary(request, context):
        return b"echo:" + request

    handler = grpc.method_handlers_generic_handler(
        "t.S", {"Echo": grpc.unary_unary_rpc_method_handler(unary)}
    )

    async def main():
        server = plexus.aio.server(handlers=[handler], interceptors=[Recorder()])
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        try:
            async with plexus.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                reply = await channel.unary_unary("/t.S/Echo")(
                    b"hi", metadata=(("x-k", "v"),), timeout=WAIT
                )
                assert reply == b"echo:hi"
                with pytest.raises(grpc.RpcError) as err:
                    await channel.unary_unary("/t.S/Denied")(b"", timeout=WAIT)
                assert (err.value.code(), err.value.details()) == (
                    grpc.StatusCode.UNIMPLEMENTED,
                    "Method not found!",
                )
        finally:
            await server.stop(None)
        assert seen == [("/t.S/Echo", "v"), ("/t.S/Denied", None)]

    run_async(main())


@pytest.fixture(scope="module")
def certs() -> dict[str, bytes]:
    out = tempfile.mkdtemp(prefix="plexus-aio-server-certs-")
    subprocess.run([_peer_binary(), "certs", "--out", out], check=True, capture_output=True)
    return {path.name: path.read_bytes() for path in Path(out).iterdir()}


@pytest.mark.parametrize("client", CLIENTS)
def test_secure_port(client, certs):
    credentials = grpc.ssl_server_credentials([(certs["server.key"], certs["server.pem"])])

    async def main():
        async with serving(credentials=credentials) as (port, _, _):
            target = f"localhost:{port}"
            if client == "plexus":
                channel = plexus.aio.secure_channel(
                    target, plexus.ssl_channel_credentials(root_certificates=certs["ca.pem"])
                )
            else:
                channel = grpc.aio.secure_channel(
                    target, grpc.ssl_channel_credentials(root_certificates=certs["ca.pem"])
                )
            async with channel:
                reply = await echo_pb2_grpc.EchoStub(channel).Unary(
                    Req(message="tls"), timeout=WAIT
                )
                assert reply.message == "tls"
            async with grpc.aio.insecure_channel(target) as plain:
                with pytest.raises(grpc.aio.AioRpcError):
                    await echo_pb2_grpc.EchoStub(plain).Unary(Req(message="x"), timeout=WAIT)

    run_async(main())


def test_bad_arguments_are_clear_errors():
    async def main():
        server = plexus.aio.server()
        with pytest.raises(RuntimeError, match="Failed to bind"):
            server.add_insecure_port("not an address")
        with pytest.raises(TypeError, match="ssl_server_credentials"):
            server.add_secure_port("127.0.0.1:0", object())
        with pytest.raises(ValueError, match="maximum_concurrent_rpcs"):
            plexus.aio.server(maximum_concurrent_rpcs=0)
        with pytest.raises(ValueError, match="ServerInterceptor"):
            plexus.aio.server(interceptors=[object()])
        await server.stop(None)

    run_async(main())


class CompressingServicer(Servicer):
    async def ServerStream(self, request, context):
        context.set_compression(grpc.Compression.Gzip)
        for i in range(request.count):
            if i == 1:
                context.disable_next_message_compression()
            yield Resp(message="z" * 1000, index=i)


@pytest.mark.parametrize("client", CLIENTS)
def test_compression(client):
    """Responses compressed by the server's default and by set_compression (with one message
    left uncompressed) arrive intact."""

    async def main():
        kwargs = dict(servicer=CompressingServicer(), compression=grpc.Compression.Deflate)
        async with serving(**kwargs) as (port, _, _):
            async with channel_for(client, port) as channel:
                stub = echo_pb2_grpc.EchoStub(channel)
                reply = await stub.Unary(Req(message="c" * 5000), timeout=WAIT)
                assert reply.message == "c" * 5000
                call = stub.ServerStream(Req(count=3), timeout=WAIT)
                got = [(r.index, r.message) async for r in call]
                assert got == [(i, "z" * 1000) for i in range(3)]

    run_async(main())


@pytest.mark.parametrize("kind", ["plexus", "grpcio"])
def test_oversize_message_in_a_request_stream(kind):
    async def main():
        options = [("grpc.max_receive_message_length", 1024)]
        async with serving(kind, options=options) as (port, _, _):
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                requests = [Req(message="small"), Req(payload=b"\x00" * 5000)]
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await echo_pb2_grpc.EchoStub(channel).ClientStream(iter(requests), timeout=WAIT)
                return err.value.code()

    assert run_async(main()) == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_unix_socket_port():
    async def main():
        path = Path(tempfile.mkdtemp(prefix="plexus-aio-server-")) / "s.sock"
        server = plexus.aio.server()
        echo_pb2_grpc.add_EchoServicer_to_server(Servicer(), server)
        server.add_insecure_port(f"unix:{path}")
        await server.start()
        try:
            async with plexus.aio.insecure_channel(f"unix:{path}") as channel:
                reply = await echo_pb2_grpc.EchoStub(channel).Unary(
                    Req(message="uds"), timeout=WAIT
                )
                assert reply.message == "uds"
        finally:
            await server.stop(None)

    run_async(main())
