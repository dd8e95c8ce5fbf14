"""plexus.server (bindings/python/plexus/_server.py): a grpcio-tools servicer served by plexus,
called by grpcio's client and by plexus's, and the same scenarios run on grpc.server where
grpcio's behaviour is the reference (same codes, same details).

Servers run in this process (the handlers report what they saw through threading events);
every wait is bounded by WAIT and nothing depends on how fast the machine is.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import threading
from concurrent import futures
from pathlib import Path

import echo_pb2
import echo_pb2_grpc
import grpc
import pytest
from conftest import WAIT, _peer_binary

import plexus

Req = echo_pb2.EchoRequest
Resp = echo_pb2.EchoResponse
SERVICE = "plexus.peer.Echo"
IMPLS = ["plexus", "grpcio"]
CLIENTS = ["grpcio", "plexus"]


# --------------------------------------------------------------------------- the servicer


class Probe:
    """What a handler saw, for the test to read once `done` is set."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.release = threading.Event()
        self.ended = threading.Event()  # set by add_callback
        self.done = threading.Event()
        self.seen: dict[str, object] = {}


class Servicer(echo_pb2_grpc.EchoServicer):
    """Echo whose request.message picks what the handler does."""

    def __init__(self) -> None:
        self.probe = Probe()

    def Unary(self, request, context):
        cmd = request.message
        probe = self.probe
        if cmd == "raise":
            raise ValueError("boom")
        if cmd == "abort":
            context.abort(grpc.StatusCode.NOT_FOUND, "nope")
        if cmd == "abort_ok":
            context.abort(grpc.StatusCode.OK, "ignored")
        if cmd == "abort_status":
            context.abort_with_status(_Status())
        if cmd == "abort_caught":
            try:
                context.abort(grpc.StatusCode.PERMISSION_DENIED, "denied")
            except Exception:
                pass
            return Resp(message="after abort")
        if cmd == "set_code":
            context.set_code(grpc.StatusCode.INVALID_ARGUMENT)
            context.set_details("bad argument")
            return Resp(message="ignored")
        if cmd == "set_code_raise":
            context.set_code(grpc.StatusCode.ALREADY_EXISTS)
            raise RuntimeError("late")
        if cmd == "none":
            return None
        if cmd == "metadata":
            echoed = tuple((k, v) for k, v in context.invocation_metadata() if k.startswith("x-"))
            context.send_initial_metadata(echoed)
            context.set_trailing_metadata((("x-trailer", "done"), ("x-trailer-bin", b"\x00\x01")))
            return Resp(message="metadata")
        if cmd == "initial_twice":
            context.send_initial_metadata((("x-a", "1"),))
            try:
                context.send_initial_metadata((("x-a", "2"),))
            except ValueError as exc:
                return Resp(message=f"ValueError: {exc}")
            return Resp(message="no error")
        if cmd == "context":
            seen = {
                "is_context": isinstance(context, grpc.ServicerContext),
                "peer": context.peer(),
                "md": dict(context.invocation_metadata()).get("x-probe"),
                "time_remaining": context.time_remaining(),
                "is_active": context.is_active(),
                "code_before": context.code(),
                "details_before": context.details(),
                "trailing_before": context.trailing_metadata(),
                "auth_context": context.auth_context(),
            }
            context.set_code(grpc.StatusCode.OK)
            context.set_details("fine")
            context.set_trailing_metadata((("x-t", "1"),))
            seen["code_after"] = context.code()
            seen["details_after"] = context.details()
            seen["trailing_after"] = context.trailing_metadata()
            context.set_compression(grpc.Compression.Gzip)
            context.disable_next_message_compression()
            probe.seen.update(seen)
            probe.done.set()
            return Resp(message="context", payload=request.payload)
        if cmd == "wait":
            # Blocks until the call ends (cancel, deadline) or the test releases it.
            probe.seen["time_remaining"] = context.time_remaining()
            probe.seen["callback_added"] = context.add_callback(probe.ended.set)
            probe.started.set()
            released = False
            while not released and context.is_active():
                released = probe.release.wait(0.01)
            probe.seen["active_after"] = context.is_active()
            # A call that ended (not released) has run its callback, or is about to.
            probe.seen["callback_ran"] = released or probe.ended.wait(WAIT)
            probe.done.set()
            return Resp(message="released" if released else "ended")
        if cmd == "cancel_self":
            context.cancel()
            probe.seen["active_after_cancel"] = context.is_active()
            probe.done.set()
            return Resp(message="cancelled")
        return Resp(message=request.message, payload=request.payload)

    def ServerStream(self, request, context):
        for index in range(request.count):
            if request.message == "raise" and index == 2:
                raise KeyError("mid-stream")
            if request.message == "abort" and index == 1:
                context.abort(grpc.StatusCode.OUT_OF_RANGE, "stream aborted")
            yield Resp(message=request.message, index=index, payload=request.payload)
        if request.status_code:
            context.set_code(grpc.StatusCode(_code(request.status_code)))
            context.set_details(request.status_message)

    def ClientStream(self, request_iterator, context):
        probe = self.probe
        messages = []
        try:
            for request in request_iterator:
                if request.message == "wait":
                    probe.seen["callback_added"] = context.add_callback(probe.ended.set)
                    probe.started.set()
                messages.append(request.message)
        except grpc.RpcError as exc:
            probe.seen["iterator_error"] = exc
            probe.seen["callback_ran"] = probe.ended.wait(WAIT)
            probe.done.set()
            raise
        if "wait" in messages:
            probe.seen["iterator_error"] = None
            probe.seen["callback_ran"] = probe.ended.wait(WAIT)
            probe.done.set()
        return Resp(message=",".join(messages), index=len(messages))

    def Bidi(self, request_iterator, context):
        for index, request in enumerate(request_iterator):
            if request.message == "raise":
                raise ValueError("bidi")
            yield Resp(message=request.message, index=index, payload=request.payload)


def _code(number: int):
    return {c.value[0]: c for c in grpc.StatusCode}[number].value


class _Status(grpc.Status):
    code = grpc.StatusCode.FAILED_PRECONDITION
    details = "rich"
    trailing_metadata = (("grpc-status-details-bin", b"\x08\x09\x12\x04rich"), ("x-k", "v"))


# --------------------------------------------------------------------------- servers


class Running:
    """One in-process server serving a Servicer, stopped by `close()`."""

    def __init__(self, impl: str, workers: int = 8, credentials=None, **kwargs) -> None:
        self.impl = impl
        self.servicer = Servicer()
        self.pool = futures.ThreadPoolExecutor(max_workers=workers)
        make = plexus.server if impl == "plexus" else grpc.server
        self.server = make(self.pool, **kwargs)
        echo_pb2_grpc.add_EchoServicer_to_server(self.servicer, self.server)
        if credentials is None:
            self.port = self.server.add_insecure_port("127.0.0.1:0")
        else:
            self.port = self.server.add_secure_port("127.0.0.1:0", credentials)
        self.target = f"127.0.0.1:{self.port}"
        self.server.start()

    @property
    def probe(self) -> Probe:
        return self.servicer.probe

    def close(self) -> None:
        self.probe.release.set()
        stopped = self.server.stop(0)
        # grpc.server's stop sometimes never completes after a handler cancelled its own
        # call: only plexus's is waited for.
        if self.impl == "plexus":
            assert stopped.wait(WAIT)
        self.pool.shutdown(wait=False)


@pytest.fixture(scope="module")
def servers():
    made = {impl: Running(impl) for impl in IMPLS}
    yield made
    for running in made.values():
        running.close()


@pytest.fixture
def fresh():
    """Builds servers with particular arguments; each is stopped after the test."""
    made = []

    def make(impl: str, **kwargs) -> Running:
        running = Running(impl, **kwargs)
        made.append(running)
        return running

    yield make
    for running in made:
        running.close()


def _channel(client: str, target: str, **kwargs):
    if client == "grpcio":
        return grpc.insecure_channel(target, **kwargs)
    return plexus.insecure_channel(target, **kwargs)


@pytest.fixture
def channels():
    opened = []

    def make(client: str, target: str, **kwargs):
        channel = _channel(client, target, **kwargs)
        opened.append(channel)
        return channel

    yield make
    for channel in opened:
        channel.close()


def _outcome(fn):
    """(code, details) of a call, (OK, message) when it succeeds."""
    try:
        response = fn()
    except grpc.RpcError as exc:
        return exc.code(), exc.details()
    if hasattr(response, "message"):
        return grpc.StatusCode.OK, response.message
    return grpc.StatusCode.OK, [r.message for r in response]


def _reset(running: Running) -> Probe:
    running.servicer.probe = Probe()
    return running.servicer.probe


# --------------------------------------------------------------------------- tests


def test_is_a_grpc_server():
    pool = futures.ThreadPoolExecutor(max_workers=1)
    server = plexus.server(pool)
    try:
        assert isinstance(server, grpc.Server)
    finally:
        server.stop(None)
        pool.shutdown()


@pytest.mark.parametrize("client", CLIENTS)
def test_four_kinds(servers, channels, client):
    stub = echo_pb2_grpc.EchoStub(channels(client, servers["plexus"].target))
    reply = stub.Unary(Req(message="hi", payload=b"\x00\xff"), timeout=WAIT)
    assert (reply.message, reply.payload) == ("hi", b"\x00\xff")
    stream = list(stub.ServerStream(Req(message="s", count=3), timeout=WAIT))
    assert [(r.message, r.index) for r in stream] == [("s", 0), ("s", 1), ("s", 2)]
    reply = stub.ClientStream(iter([Req(message=m) for m in "abc"]), timeout=WAIT)
    assert (reply.message, reply.index) == ("a,b,c", 3)
    replies = list(stub.Bidi(iter([Req(message=m) for m in "xy"]), timeout=WAIT))
    assert [(r.message, r.index) for r in replies] == [("x", 0), ("y", 1)]
    assert list(stub.ServerStream(Req(message="none", count=0), timeout=WAIT)) == []
    assert stub.ClientStream(iter([]), timeout=WAIT).index == 0


@pytest.mark.parametrize("client", CLIENTS)
def test_bidi_ping_pong(servers, channels, client):
    """Each response goes out before the next request is sent (no buffering in between)."""
    stub = echo_pb2_grpc.EchoStub(channels(client, servers["plexus"].target))
    import queue

    requests: queue.Queue = queue.Queue()

    def gen():
        while True:
            item = requests.get()
            if item is None:
                return
            yield item

    call = stub.Bidi(gen(), timeout=WAIT)
    for index in range(5):
        requests.put(Req(message=str(index)))
        assert next(call).message == str(index)
    requests.put(None)
    assert list(call) == []


@pytest.mark.parametrize("client", CLIENTS)
def test_metadata_both_ways(servers, channels, client):
    stub = echo_pb2_grpc.EchoStub(channels(client, servers["plexus"].target))
    reply, call = stub.Unary.with_call(
        Req(message="metadata"), metadata=(("x-echo", "v"), ("x-bin", b"\x01")), timeout=WAIT
    )
    assert reply.message == "metadata"
    initial = dict(call.initial_metadata())
    assert initial["x-echo"] == "v" and initial["x-bin"] == b"\x01"
    trailing = dict(call.trailing_metadata())
    assert trailing["x-trailer"] == "done" and trailing["x-trailer-bin"] == b"\x00\x01"


SCENARIOS = {
    "raise": lambda stub: stub.Unary(Req(message="raise"), timeout=WAIT),
    "abort": lambda stub: stub.Unary(Req(message="abort"), timeout=WAIT),
    "abort_ok": lambda stub: stub.Unary(Req(message="abort_ok"), timeout=WAIT),
    "abort_caught": lambda stub: stub.Unary(Req(message="abort_caught"), timeout=WAIT),
    "abort_status": lambda stub: stub.Unary(Req(message="abort_status"), timeout=WAIT),
    "set_code": lambda stub: stub.Unary(Req(message="set_code"), timeout=WAIT),
    "set_code_raise": lambda stub: stub.Unary(Req(message="set_code_raise"), timeout=WAIT),
    "returns_none": lambda stub: stub.Unary(Req(message="none"), timeout=WAIT),
    "initial_twice": lambda stub: stub.Unary(Req(message="initial_twice"), timeout=WAIT),
    "stream_raise": lambda stub: list(stub.ServerStream(Req(message="raise", count=4), timeout=WAIT)),
    "stream_abort": lambda stub: list(stub.ServerStream(Req(message="abort", count=4), timeout=WAIT)),
    "stream_status": lambda stub: list(
        stub.ServerStream(Req(count=1, status_code=9, status_message="late"), timeout=WAIT)
    ),
    "bidi_raise": lambda stub: list(stub.Bidi(iter([Req(message="a"), Req(message="raise")]), timeout=WAIT)),
}


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_handler_outcomes_match_grpcio(servers, channels, scenario):
    """The same handler behaviour ends the call with the same code and details on both."""
    outcomes = {}
    for impl in IMPLS:
        stub = echo_pb2_grpc.EchoStub(channels("grpcio", servers[impl].target))
        outcomes[impl] = _outcome(lambda: SCENARIOS[scenario](stub))
    assert outcomes["plexus"] == outcomes["grpcio"]
    if scenario == "raise":
        assert outcomes["plexus"] == (grpc.StatusCode.UNKNOWN, "Exception calling application: boom")
    if scenario == "returns_none":
        assert outcomes["plexus"] == (grpc.StatusCode.INTERNAL, "Failed to serialize response!")


def _abort_with_status(servers, channels) -> dict:
    seen = {}
    for impl in IMPLS:
        stub = echo_pb2_grpc.EchoStub(channels("grpcio", servers[impl].target))
        with pytest.raises(grpc.RpcError) as info:
            stub.Unary(Req(message="abort_status"), timeout=WAIT)
        trailing = dict(info.value.trailing_metadata())
        seen[impl] = (info.value.code(), trailing.get("x-k"), trailing.get("grpc-status-details-bin"))
    return seen


def test_abort_with_status_trailers(servers, channels):
    seen = _abort_with_status(servers, channels)
    assert seen["plexus"][:2] == seen["grpcio"][:2] == (grpc.StatusCode.FAILED_PRECONDITION, "v")


def test_abort_with_status_details(servers, channels):
    seen = _abort_with_status(servers, channels)
    assert seen["plexus"][2] == seen["grpcio"][2] == b"\x08\x09\x12\x04rich"


@pytest.mark.parametrize("method", ["/plexus.peer.Echo/Nope", "/other.Service/Unary"])
def test_unimplemented_matches_grpcio(servers, channels, method):
    outcomes = {}
    for impl in IMPLS:
        channel = channels("grpcio", servers[impl].target)
        call = channel.unary_unary(method)
        outcomes[impl] = _outcome(lambda: call(b"", timeout=WAIT))
    assert outcomes["plexus"] == outcomes["grpcio"] == (
        grpc.StatusCode.UNIMPLEMENTED,
        "Method not found!",
    )


@pytest.mark.parametrize("method", ["Unary", "ClientStream"])
def test_bad_request_bytes_match_grpcio(servers, channels, method):
    outcomes = {}
    for impl in IMPLS:
        channel = channels("grpcio", servers[impl].target)
        path = f"/{SERVICE}/{method}"
        if method == "Unary":
            call = channel.unary_unary(path)
            outcomes[impl] = _outcome(lambda: call(b"\xff\xff\xff", timeout=WAIT))
        else:
            call = channel.stream_unary(path)
            outcomes[impl] = _outcome(lambda: call(iter([b"\xff\xff\xff"]), timeout=WAIT))
    assert outcomes["plexus"] == outcomes["grpcio"]
    assert outcomes["plexus"] == (grpc.StatusCode.INTERNAL, "Exception deserializing request!")


@pytest.mark.parametrize("client", CLIENTS)
def test_servicer_context(servers, channels, client):
    running = servers["plexus"]
    probe = _reset(running)
    stub = echo_pb2_grpc.EchoStub(channels(client, running.target))
    reply, call = stub.Unary.with_call(
        Req(message="context", payload=b"z" * 1000), metadata=(("x-probe", "yes"),), timeout=WAIT
    )
    assert reply.payload == b"z" * 1000
    assert call.code() == grpc.StatusCode.OK
    assert dict(call.trailing_metadata())["x-t"] == "1"
    assert probe.done.wait(WAIT)
    seen = probe.seen
    assert seen["is_context"] is True
    assert str(seen["peer"]).startswith("ipv4:127.0.0.1:")
    assert seen["md"] == "yes"
    assert 0 < seen["time_remaining"] <= WAIT + 1  # grpc-timeout is rounded up
    assert seen["is_active"] is True
    assert seen["code_before"] is None and seen["details_before"] is None
    assert seen["trailing_before"] is None
    assert seen["code_after"] == grpc.StatusCode.OK and seen["details_after"] == b"fine"
    assert seen["trailing_after"] == (("x-t", "1"),)
    assert seen["auth_context"] == {}


def test_time_remaining_without_deadline_matches_grpcio(servers, channels):
    seen = {}
    for impl in IMPLS:
        probe = _reset(servers[impl])
        stub = echo_pb2_grpc.EchoStub(channels("grpcio", servers[impl].target))
        stub.Unary(Req(message="context"))
        assert probe.done.wait(WAIT)
        seen[impl] = probe.seen["time_remaining"]
    # grpcio reports an infinite deadline as a huge number of seconds; plexus as None.
    assert seen["plexus"] is None or seen["plexus"] > 1e6


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("client", CLIENTS)
def test_client_cancel_ends_call(fresh, channels, impl, client):
    """A cancelled call: the handler sees is_active() False and its add_callback runs."""
    running = fresh(impl)
    stub = echo_pb2_grpc.EchoStub(channels(client, running.target))
    future = stub.Unary.future(Req(message="wait"), timeout=WAIT * 2)
    assert running.probe.started.wait(WAIT)
    future.cancel()
    assert running.probe.done.wait(WAIT)
    assert running.probe.seen["callback_added"] is True
    assert running.probe.seen["active_after"] is False
    assert running.probe.seen["callback_ran"] is True


def test_client_cancel_during_client_stream(fresh, channels):
    """The request iterator raises an RpcError once the client cancelled; no status is
    reported for it (the call is over). Not compared with grpc.server, whose iterator does
    not always wake up after a cancel."""
    running = fresh("plexus")
    stub = echo_pb2_grpc.EchoStub(channels("grpcio", running.target))
    stop = threading.Event()

    def requests():
        yield Req(message="wait")
        stop.wait(WAIT)

    future = stub.ClientStream.future(requests(), timeout=WAIT * 2)
    assert running.probe.started.wait(WAIT)
    future.cancel()
    # The request generator stays blocked until the handler is done: ending it earlier
    # could half-close the stream before the cancel goes out.
    try:
        assert running.probe.done.wait(WAIT)
    finally:
        stop.set()
    assert isinstance(running.probe.seen["iterator_error"], grpc.RpcError)
    assert running.probe.seen["callback_ran"] is True
    with pytest.raises(grpc.FutureCancelledError):
        future.result(timeout=WAIT)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("client", CLIENTS)
def test_deadline(fresh, channels, impl, client):
    running = fresh(impl)
    stub = echo_pb2_grpc.EchoStub(channels(client, running.target))
    with pytest.raises(grpc.RpcError) as info:
        stub.Unary(Req(message="wait"), timeout=0.5)
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert running.probe.done.wait(WAIT)
    assert 0 < running.probe.seen["time_remaining"] <= 1.0  # rounded up on the wire
    assert running.probe.seen["active_after"] is False
    assert running.probe.seen["callback_ran"] is True


def test_cancel_from_handler(servers, channels):
    outcomes = {}
    for impl in IMPLS:
        probe = _reset(servers[impl])
        stub = echo_pb2_grpc.EchoStub(channels("grpcio", servers[impl].target))
        outcomes[impl] = _outcome(lambda: stub.Unary(Req(message="cancel_self"), timeout=WAIT))
        assert probe.done.wait(WAIT)
        if impl == "plexus":  # grpcio learns of its own cancel asynchronously
            assert probe.seen["active_after_cancel"] is False
    assert outcomes["plexus"][0] == outcomes["grpcio"][0] == grpc.StatusCode.CANCELLED


@pytest.mark.parametrize("kind", ["unary", "client_stream", "response"])
def test_oversize_messages_match_grpcio(fresh, channels, kind):
    outcomes = {}
    for impl in IMPLS:
        if kind == "response":
            running = fresh(impl, options=[("grpc.max_send_message_length", 1024)])
        else:
            running = fresh(impl, options=[("grpc.max_receive_message_length", 1024)])
        stub = echo_pb2_grpc.EchoStub(channels("grpcio", running.target))
        big = Req(message="echo", payload=b"x" * 4096)
        if kind == "client_stream":
            outcomes[impl] = _outcome(lambda: stub.ClientStream(iter([big]), timeout=WAIT))
        else:
            outcomes[impl] = _outcome(lambda: stub.Unary(big, timeout=WAIT))
        # The server still serves calls within the limit.
        assert stub.Unary(Req(message="small"), timeout=WAIT).message == "small"
    assert outcomes["plexus"][0] == outcomes["grpcio"][0] == grpc.StatusCode.RESOURCE_EXHAUSTED


@pytest.mark.parametrize("impl", IMPLS)
def test_maximum_concurrent_rpcs(fresh, channels, impl):
    running = fresh(impl, workers=4, maximum_concurrent_rpcs=1)
    stub = echo_pb2_grpc.EchoStub(channels("grpcio", running.target))
    first = stub.Unary.future(Req(message="wait"), timeout=WAIT * 2)
    assert running.probe.started.wait(WAIT)
    with pytest.raises(grpc.RpcError) as info:
        stub.Unary(Req(message="second"), timeout=WAIT)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert info.value.details() == "Concurrent RPC limit exceeded!"
    running.probe.release.set()
    assert first.result(timeout=WAIT).message == "released"
    assert stub.Unary(Req(message="third"), timeout=WAIT).message == "third"


@pytest.mark.parametrize("impl", IMPLS)
def test_stop_with_grace_lets_call_in_flight_finish(fresh, channels, impl):
    running = fresh(impl)
    stub = echo_pb2_grpc.EchoStub(channels("grpcio", running.target))
    future = stub.Unary.future(Req(message="wait"), timeout=WAIT * 2)
    assert running.probe.started.wait(WAIT)
    stopped = running.server.stop(WAIT)
    assert isinstance(stopped, threading.Event)
    running.probe.release.set()
    assert future.result(timeout=WAIT).message == "released"
    assert stopped.wait(WAIT)
    assert running.server.wait_for_termination(timeout=WAIT) is False
    # A new call finds nobody listening.
    with pytest.raises(grpc.RpcError) as info:
        stub.Unary(Req(message="late"), timeout=WAIT)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE


@pytest.mark.parametrize("impl", IMPLS)
def test_stop_without_grace_cancels_call_in_flight(fresh, channels, impl):
    running = fresh(impl)
    stub = echo_pb2_grpc.EchoStub(channels("grpcio", running.target))
    future = stub.Unary.future(Req(message="wait"), timeout=WAIT * 2)
    assert running.probe.started.wait(WAIT)
    stopped = running.server.stop(None)
    assert stopped.is_set()
    with pytest.raises(grpc.RpcError) as info:
        future.result(timeout=WAIT)
    assert info.value.code() in (grpc.StatusCode.CANCELLED, grpc.StatusCode.UNAVAILABLE)
    assert running.probe.done.wait(WAIT)
    assert running.probe.seen["callback_ran"] is True


def test_wait_for_termination_times_out_while_serving(servers):
    assert servers["plexus"].server.wait_for_termination(timeout=0.05) is True


class _Interceptor(grpc.ServerInterceptor):
    """Refuses calls carrying x-deny; counts the calls it saw by method."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def intercept_service(self, continuation, handler_call_details):
        self.seen.append(handler_call_details.method)
        if dict(handler_call_details.invocation_metadata).get("x-deny"):
            return grpc.unary_unary_rpc_method_handler(
                lambda request, context: context.abort(grpc.StatusCode.PERMISSION_DENIED, "denied")
            )
        return continuation(handler_call_details)


def test_interceptors_match_grpcio(fresh, channels):
    outcomes = {}
    for impl in IMPLS:
        interceptor = _Interceptor()
        running = fresh(impl, interceptors=[interceptor, _Interceptor()])
        stub = echo_pb2_grpc.EchoStub(channels("grpcio", running.target))
        ok = stub.Unary(Req(message="through"), timeout=WAIT).message
        denied = _outcome(lambda: stub.Unary(Req(), metadata=(("x-deny", "1"),), timeout=WAIT))
        stream = [r.index for r in stub.ServerStream(Req(count=2), timeout=WAIT)]
        outcomes[impl] = (ok, denied, stream, interceptor.seen)
    assert outcomes["plexus"] == outcomes["grpcio"]
    assert outcomes["plexus"][1] == (grpc.StatusCode.PERMISSION_DENIED, "denied")


@pytest.mark.parametrize("client", CLIENTS)
def test_generic_handlers_only(channels, client):
    """A server with only generic handlers (no registered methods) serves them."""

    def upper(request, context):
        return request.upper()

    def count(request, context):
        for index in range(int(request)):
            yield str(index).encode()

    handler = grpc.method_handlers_generic_handler(
        "plexus.test.Raw",
        {
            "Upper": grpc.unary_unary_rpc_method_handler(upper),
            "Count": grpc.unary_stream_rpc_method_handler(count),
        },
    )
    pool = futures.ThreadPoolExecutor(max_workers=2)
    server = plexus.server(pool, handlers=[handler])
    port = server.add_insecure_port("localhost:0")
    server.start()
    try:
        channel = channels(client, f"localhost:{port}")
        assert channel.unary_unary("/plexus.test.Raw/Upper")(b"abc", timeout=WAIT) == b"ABC"
        assert list(channel.unary_stream("/plexus.test.Raw/Count")(b"3", timeout=WAIT)) == [
            b"0",
            b"1",
            b"2",
        ]
    finally:
        server.stop(None)
        pool.shutdown()


def test_ports(channels):
    pool = futures.ThreadPoolExecutor(max_workers=2)
    server = plexus.server(pool)
    echo_pb2_grpc.add_EchoServicer_to_server(Servicer(), server)
    sock = os.path.join(tempfile.mkdtemp(prefix="plexus-server-"), "s.sock")
    try:
        port = server.add_insecure_port("[::]:0")
        assert port > 0
        assert server.add_insecure_port(f"unix:{sock}") == 1
        taken = socket.socket()
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with taken, pytest.raises(RuntimeError, match="Failed to bind"):
            server.add_insecure_port(f"127.0.0.1:{taken.getsockname()[1]}")
        server.start()
        # grpcio's client is not used over the Unix socket: its calls there are reset by
        # libplexus's HTTP/2 server (reported on issue 19).
        for client, target in (("grpcio", f"127.0.0.1:{port}"), ("plexus", f"unix:{sock}")):
            stub = echo_pb2_grpc.EchoStub(channels(client, target))
            assert stub.Unary(Req(message="p"), timeout=WAIT).message == "p"
        # A port added after start serves at once.
        late = server.add_insecure_port("127.0.0.1:0")
        stub = echo_pb2_grpc.EchoStub(channels("plexus", f"127.0.0.1:{late}"))
        assert stub.Unary(Req(message="late"), timeout=WAIT).message == "late"
        with pytest.raises(ValueError):
            server.start()
    finally:
        server.stop(None)
        pool.shutdown()


def test_compression_option(fresh, channels):
    running = fresh("plexus", compression=grpc.Compression.Gzip)
    stub = echo_pb2_grpc.EchoStub(channels("grpcio", running.target))
    assert stub.Unary(Req(message="z", payload=b"a" * 10000), timeout=WAIT).payload == b"a" * 10000
    assert [r.index for r in stub.ServerStream(Req(count=3), timeout=WAIT)] == [0, 1, 2]


def test_bad_arguments():
    with pytest.raises(TypeError):
        plexus.server(None)
    pool = futures.ThreadPoolExecutor(max_workers=1)
    try:
        with pytest.raises(TypeError):
            plexus.server(pool, options=[("grpc.max_receive_message_length", "big")])
        with pytest.raises(ValueError):
            plexus.server(pool, maximum_concurrent_rpcs=0)
        with pytest.raises(AttributeError):
            plexus.server(pool, handlers=[object()])
        server = plexus.server(pool, options=[("grpc.unknown_option", 1)])
        with pytest.raises(TypeError):
            server.add_secure_port("127.0.0.1:0", object())
        server.stop(None)
    finally:
        pool.shutdown()


# --------------------------------------------------------------------------- TLS


@pytest.fixture(scope="module")
def certs() -> dict[str, bytes]:
    out = tempfile.mkdtemp(prefix="plexus-server-certs-")
    subprocess.run([_peer_binary(), "certs", "--out", out], check=True, capture_output=True)
    return {path.name: path.read_bytes() for path in Path(out).iterdir()}


OVERRIDE = (("grpc.ssl_target_name_override", "foo.test.google.fr"),)


@pytest.mark.parametrize("maker", ["grpc", "plexus"])
@pytest.mark.parametrize("client", CLIENTS)
def test_secure_port(fresh, certs, maker, client):
    module = grpc if maker == "grpc" else plexus
    credentials = module.ssl_server_credentials([(certs["server.key"], certs["server.pem"])])
    running = fresh("plexus", credentials=credentials)
    client_module = grpc if client == "grpcio" else plexus
    channel = client_module.secure_channel(
        f"localhost:{running.port}", client_module.ssl_channel_credentials(certs["ca.pem"])
    )
    try:
        stub = echo_pb2_grpc.EchoStub(channel)
        assert stub.Unary(Req(message="tls"), timeout=WAIT).message == "tls"
    finally:
        channel.close()


@pytest.mark.parametrize("client", CLIENTS)
def test_secure_port_requiring_client_certificates(fresh, certs, client):
    credentials = grpc.ssl_server_credentials(
        [(certs["server.key"], certs["server.pem"])],
        root_certificates=certs["ca.pem"],
        require_client_auth=True,
    )
    running = fresh("plexus", credentials=credentials)
    client_module = grpc if client == "grpcio" else plexus
    target = f"localhost:{running.port}"
    good = client_module.secure_channel(
        target,
        client_module.ssl_channel_credentials(
            certs["ca.pem"], certs["client.key"], certs["client.pem"]
        ),
    )
    bare = client_module.secure_channel(target, client_module.ssl_channel_credentials(certs["ca.pem"]))
    try:
        assert echo_pb2_grpc.EchoStub(good).Unary(Req(message="m"), timeout=WAIT).message == "m"
        # The handler sees the client's certificate, as grpcio's auth context gives it.
        echo_pb2_grpc.EchoStub(good).Unary(Req(message="context"), timeout=WAIT)
        assert running.probe.done.wait(WAIT)
        auth = running.probe.seen["auth_context"]
        assert auth["transport_security_type"] == [b"ssl"]
        body = b"".join(certs["client.pem"].split(b"-----")[2].split())
        assert body in b"".join(auth["x509_pem_cert"][0].split(b"-----")[2].split())
        with pytest.raises(grpc.RpcError) as info:
            echo_pb2_grpc.EchoStub(bare).Unary(Req(message="m"), timeout=WAIT)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        good.close()
        bare.close()


def test_interpreter_exits_with_server_running(stub_dir):
    """A program that never calls stop() still exits: the pool's serving loops end at exit."""
    script = (
        "import sys; sys.path.insert(0, sys.argv[1])\n"
        "from concurrent import futures\n"
        "import plexus, echo_pb2_grpc\n"
        "server = plexus.server(futures.ThreadPoolExecutor(max_workers=4))\n"
        "echo_pb2_grpc.add_EchoServicer_to_server(echo_pb2_grpc.EchoServicer(), server)\n"
        "server.add_insecure_port('127.0.0.1:0')\n"
        "server.start()\n"
        "print('serving', flush=True)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, stub_dir], capture_output=True, text=True, timeout=WAIT * 2
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "serving"
