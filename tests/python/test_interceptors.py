"""grpc.intercept_channel over a plexus channel: grpcio's four client interceptor interfaces
change metadata and see outcomes, on every call style (call, with_call, future, streams),
against a grpcio server."""

from __future__ import annotations

import collections
from concurrent import futures

import grpc
import pytest

import plexus

SERVICE = "icpt.Echo"


def _added(context: grpc.ServicerContext) -> bytes:
    md = dict(context.invocation_metadata())
    if "x-deny" in md:
        context.abort(grpc.StatusCode.PERMISSION_DENIED, "denied")
    return md.get("x-added", "none").encode()


def _unary(request: bytes, context: grpc.ServicerContext) -> bytes:
    return _added(context) + request


def _unary_stream(request: bytes, context: grpc.ServicerContext):
    added = _added(context)
    for i in range(3):
        yield added + bytes([48 + i])


def _stream_unary(requests, context: grpc.ServicerContext) -> bytes:
    return _added(context) + b"".join(requests)


def _stream_stream(requests, context: grpc.ServicerContext):
    added = _added(context)
    for request in requests:
        yield added + request


@pytest.fixture(scope="module")
def target():
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    handler = grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "UU": grpc.unary_unary_rpc_method_handler(_unary),
            "US": grpc.unary_stream_rpc_method_handler(_unary_stream),
            "SU": grpc.stream_unary_rpc_method_handler(_stream_unary),
            "SS": grpc.stream_stream_rpc_method_handler(_stream_stream),
        },
    )
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield f"127.0.0.1:{port}"
    server.stop(None)


class _Details(
    collections.namedtuple(
        "_Details", ("method", "timeout", "metadata", "credentials", "wait_for_ready", "compression")
    ),
    grpc.ClientCallDetails,
):
    pass


class AddsMetadata(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    """Adds x-added (and, when asked, x-deny) and records each call's method and outcome."""

    def __init__(self, value: str, deny: bool = False) -> None:
        self.value = value
        self.deny = deny
        self.seen: list[tuple[str, str]] = []

    def _details(self, details: grpc.ClientCallDetails) -> _Details:
        metadata = list(details.metadata or []) + [("x-added", self.value)]
        if self.deny:
            metadata.append(("x-deny", "1"))
        return _Details(
            details.method,
            details.timeout,
            metadata,
            details.credentials,
            details.wait_for_ready,
            details.compression,
        )

    def _record(self, details, outcome):
        code = outcome.code() if hasattr(outcome, "code") else None
        self.seen.append((details.method, code.name if code else "?"))

    def intercept_unary_unary(self, continuation, details, request):
        outcome = continuation(self._details(details), request)
        outcome.add_done_callback(lambda o: self._record(details, o))
        return outcome

    def intercept_unary_stream(self, continuation, details, request):
        return continuation(self._details(details), request)

    def intercept_stream_unary(self, continuation, details, request_iterator):
        outcome = continuation(self._details(details), request_iterator)
        outcome.add_done_callback(lambda o: self._record(details, o))
        return outcome

    def intercept_stream_stream(self, continuation, details, request_iterator):
        return continuation(self._details(details), request_iterator)


CLIENTS = {
    "plexus": lambda target: plexus.insecure_channel(target),
    "grpcio": lambda target: grpc.insecure_channel(target),
}


@pytest.mark.parametrize("client", sorted(CLIENTS))
def test_the_four_interceptor_interfaces(target, client):
    interceptor = AddsMetadata("yes")
    with CLIENTS[client](target) as base:
        channel = grpc.intercept_channel(base, interceptor)
        uu = channel.unary_unary(f"/{SERVICE}/UU")
        assert uu(b"!", timeout=30) == b"yes!"
        response, call = uu.with_call(b"?", timeout=30)
        assert (response, call.code()) == (b"yes?", grpc.StatusCode.OK)
        assert uu.future(b".", timeout=30).result() == b"yes."
        us = channel.unary_stream(f"/{SERVICE}/US")
        assert list(us(b"", timeout=30)) == [b"yes0", b"yes1", b"yes2"]
        su = channel.stream_unary(f"/{SERVICE}/SU")
        assert su(iter([b"a", b"b"]), timeout=30) == b"yesab"
        ss = channel.stream_stream(f"/{SERVICE}/SS")
        assert list(ss(iter([b"x", b"y"]), timeout=30)) == [b"yesx", b"yesy"]
    methods = [(m, code) for m, code in interceptor.seen]
    assert methods == [
        (f"/{SERVICE}/UU", "OK"),
        (f"/{SERVICE}/UU", "OK"),
        (f"/{SERVICE}/UU", "OK"),
        (f"/{SERVICE}/SU", "OK"),
    ]


@pytest.mark.parametrize("client", sorted(CLIENTS))
def test_interceptors_chain_in_order_and_see_failures(target, client):
    first, second = AddsMetadata("first"), AddsMetadata("second", deny=True)
    with CLIENTS[client](target) as base:
        channel = grpc.intercept_channel(base, first, second)
        with pytest.raises(grpc.RpcError) as info:
            channel.unary_unary(f"/{SERVICE}/UU")(b"", timeout=30)
        assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert first.seen == [(f"/{SERVICE}/UU", "PERMISSION_DENIED")]
    assert second.seen == [(f"/{SERVICE}/UU", "PERMISSION_DENIED")]
