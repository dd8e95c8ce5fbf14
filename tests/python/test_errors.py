"""Bad input gets a clear exception, raised before anything goes on the wire: serializers,
targets, closed channels, metadata, methods, timeouts, options and call arguments."""

from __future__ import annotations

import re

import echo_pb2
import echo_pb2_grpc
import grpc
import pytest
from conftest import WAIT, run_async

import plexus
import plexus.aio

Req = echo_pb2.EchoRequest


# --------------------------------------------------------------------------- serializers


def test_serializer_returning_non_bytes(channel):
    call = channel.unary_unary("/plexus.peer.Echo/Unary", request_serializer=lambda m: 42)
    with pytest.raises(TypeError, match="request_serializer returned int, not bytes") as info:
        call(Req())
    # Also an RpcError with grpcio's code for it, for code that catches grpc.RpcError.
    assert isinstance(info.value, grpc.RpcError)
    assert info.value.code() is grpc.StatusCode.INTERNAL


def test_serializer_raising(channel):
    def broken(message):
        raise KeyError("no field")

    call = channel.unary_unary("/plexus.peer.Echo/Unary", request_serializer=broken)
    with pytest.raises(plexus.SerializationError, match="no field") as info:
        call(Req())
    assert isinstance(info.value.__cause__, KeyError)


def test_request_without_serializer_must_be_bytes(channel):
    call = channel.unary_unary("/plexus.peer.Echo/Unary")
    with pytest.raises(TypeError, match="the request is EchoRequest, not bytes"):
        call(Req())
    # bytes-like objects are fine.
    assert call(bytearray(Req(message="ba").SerializeToString()), timeout=WAIT)
    assert call(memoryview(Req(message="mv").SerializeToString()), timeout=WAIT)


def test_serializer_failure_in_a_request_stream(channel):
    stream = channel.stream_stream("/plexus.peer.Echo/Bidi", request_serializer=lambda m: "text")
    responses = stream(iter([Req()]), timeout=WAIT)
    with pytest.raises(grpc.RpcError) as info:
        list(responses)
    assert info.value.code() is grpc.StatusCode.INTERNAL
    assert "request_serializer returned str, not bytes" in info.value.details()
    unary = channel.stream_unary(
        "/plexus.peer.Echo/ClientStream", request_serializer=lambda m: None
    )
    with pytest.raises(TypeError, match="returned NoneType"):
        unary(iter([Req()]), timeout=WAIT)


def test_aio_serializer_returning_non_bytes(target):
    async def main():
        async with plexus.aio.insecure_channel(target) as channel:
            call = channel.unary_unary("/plexus.peer.Echo/Unary", request_serializer=lambda m: 1.5)
            with pytest.raises(TypeError, match="returned float"):
                await call(Req())
            bidi = channel.stream_stream("/plexus.peer.Echo/Bidi", request_serializer=lambda m: 7)
            with pytest.raises(grpc.aio.AioRpcError) as info:
                async for _ in bidi(iter([Req()]), timeout=WAIT):
                    pass
            assert info.value.code() is grpc.StatusCode.INTERNAL

    run_async(main())


# --------------------------------------------------------------------------- targets


@pytest.mark.parametrize(
    "bad, words",
    [
        ("", "invalid target"),
        ("unix:", "missing socket path"),
        ("ipv4:not-an-ip:80", "invalid IPv4 address"),
        ("http://[::1", "unclosed '['"),
        ("bogus://x:1", "unsupported scheme"),
        ("localhost:99999", "invalid port"),
        ("a b:80", "invalid host name"),
        ("with\0nul:80", "invalid target"),
    ],
)
def test_bad_targets(bad, words):
    with pytest.raises(ValueError, match=re.escape(words)):
        plexus.insecure_channel(bad)
    with pytest.raises(ValueError, match=re.escape(words)):
        plexus.aio.insecure_channel(bad)


def test_target_type():
    with pytest.raises(TypeError, match="target must be a str"):
        plexus.insecure_channel(("localhost", 80))


def test_https_target_on_an_insecure_channel():
    with pytest.raises(ValueError, match="https"):
        plexus.insecure_channel("https://localhost:443")


# --------------------------------------------------------------------------- closed channels


def test_closed_channel(target):
    channel = plexus.insecure_channel(target)
    stub = echo_pb2_grpc.EchoStub(channel)
    channel.close()
    for call in (
        lambda: stub.Unary(Req()),
        lambda: stub.Unary.with_call(Req()),
        lambda: stub.Unary.future(Req()),
        lambda: stub.ServerStream(Req()),
        lambda: stub.ClientStream(iter([Req()])),
        lambda: stub.ClientStream.future(iter([Req()])),
        lambda: stub.Bidi(iter([Req()])),
        lambda: channel.subscribe(lambda state: None),
    ):
        with pytest.raises(ValueError, match="Cannot invoke RPC on closed channel!"):
            call()


def test_aio_closed_channel(target):
    async def main():
        channel = plexus.aio.insecure_channel(target)
        stub = echo_pb2_grpc.EchoStub(channel)
        await channel.close()
        for call in (
            lambda: stub.Unary(Req()),
            lambda: stub.ServerStream(Req()),
            lambda: stub.ClientStream(),
            lambda: stub.Bidi(),
        ):
            with pytest.raises(ValueError, match="closed channel"):
                call()

    run_async(main())


# --------------------------------------------------------------------------- metadata


@pytest.mark.parametrize(
    "metadata, error, words",
    [
        ([("X-Upper", "v")], ValueError, "invalid metadata entry 'X-Upper'"),
        ([("grpc-timeout", "1S")], ValueError, "invalid metadata entry 'grpc-timeout'"),
        ([("has space", "v")], ValueError, "invalid metadata entry 'has space'"),
        ([("", "v")], ValueError, "invalid metadata entry ''"),
        ([("x-key", "line\nbreak")], ValueError, "invalid metadata entry 'x-key'"),
        ([("x-key", "nul\0")], ValueError, "NUL"),
        ([(b"x-key", 5)], TypeError, "must be str"),
        ([(7, "v")], TypeError, "metadata key must be str"),
        ([("x-data-bin", 5)], TypeError, "must be bytes"),
        (["x-key"], TypeError, "pairs"),
        ([("a", "b", "c")], TypeError, "pairs"),
    ],
)
def test_invalid_metadata(channel, metadata, error, words):
    call = channel.unary_unary("/plexus.peer.Echo/Unary")
    with pytest.raises(error, match=words):
        call(b"", metadata=metadata)
    with pytest.raises(error, match=words):
        channel.unary_stream("/plexus.peer.Echo/ServerStream")(b"", metadata=metadata)


def test_aio_invalid_metadata(target):
    async def main():
        async with plexus.aio.insecure_channel(target) as channel:
            with pytest.raises(ValueError, match="invalid metadata entry 'Bad'"):
                channel.unary_unary("/plexus.peer.Echo/Unary")(b"", metadata=[("Bad", "x")])

    run_async(main())


# --------------------------------------------------------------------------- call arguments


def test_bad_method_names(channel):
    for method in ("Unary", "", "/with\0nul"):
        with pytest.raises(ValueError, match="/package.Service/Method"):
            channel.unary_unary(method)
    with pytest.raises(TypeError):
        channel.unary_stream(42)


def test_bad_timeouts(channel):
    call = channel.unary_unary("/plexus.peer.Echo/Unary")
    with pytest.raises(TypeError, match="timeout must be a number"):
        call(b"", timeout="10")
    with pytest.raises(TypeError, match="timeout must be a number"):
        call(b"", timeout=True)
    with pytest.raises(ValueError, match="NaN"):
        call(b"", timeout=float("nan"))


def test_call_credentials_need_a_secure_channel(channel):
    with pytest.raises(ValueError, match="secure channel"):
        channel.unary_unary("/plexus.peer.Echo/Unary")(b"", credentials=object())


def test_bad_compression_arguments(target):
    for bad in ("zstd", 7, True, object()):
        with pytest.raises(TypeError, match="compression must be"):
            plexus.insecure_channel(target, compression=bad)
    with plexus.insecure_channel(target) as channel:
        with pytest.raises(TypeError, match="compression must be"):
            channel.unary_unary("/plexus.peer.Echo/Unary")(b"", compression="brotli")
    with pytest.raises(TypeError, match="must be an int"):
        plexus.insecure_channel(target, [("grpc.default_compression_algorithm", "gzip")])


def test_aio_request_iterator_type(target):
    async def main():
        async with plexus.aio.insecure_channel(target) as channel:
            with pytest.raises(TypeError, match="request_iterator"):
                channel.stream_unary("/plexus.peer.Echo/ClientStream")(42)
            with pytest.raises(ValueError, match="interceptors"):
                plexus.aio.insecure_channel(target, interceptors=[object()])

    run_async(main())


def test_errors_do_not_leave_the_channel_unusable(channel):
    call = channel.unary_unary("/plexus.peer.Echo/Unary")
    for bad in ([("Bad", "x")], [("x-ok", "\x01")]):
        with pytest.raises(ValueError):
            call(b"", metadata=bad)
    assert call(b"", timeout=WAIT) == b""
