"""The blocking channel against both echo servers: the four call kinds, metadata, deadlines,
cancellation, status details and error mapping, futures, and channel close."""

from __future__ import annotations

import queue
import threading
import time

import echo_pb2
import grpc
import pytest
from conftest import WAIT, nap_stats, wait_until

import plexus

Req = echo_pb2.EchoRequest
TRAILERS = (("x-trailer", "done"), ("x-trailer-bin", b"\xfe\x00\x01"))


def md(call_metadata) -> list:
    return [(k, v) for k, v in call_metadata]


# --------------------------------------------------------------------------- unary


def test_unary_round_trip(stub):
    payload = bytes(range(256)) * 4096  # 1 MiB
    reply = stub.Unary(Req(message="hello", payload=payload), timeout=WAIT)
    assert reply.message == "hello"
    assert reply.index == 0
    assert reply.payload == payload


def test_unary_with_call_metadata(stub):
    sent = [("x-echo-ascii", "hello"), ("x-echo-data-bin", b"\x00\x01\xff"), ("x-other", "no")]
    reply, call = stub.Unary.with_call(Req(message="md"), metadata=sent, timeout=WAIT)
    assert reply.message == "md"
    assert call.code() is grpc.StatusCode.OK
    assert call.details() in ("", None)
    initial = md(call.initial_metadata())
    assert ("x-echo-ascii", "hello") in initial
    assert ("x-echo-data-bin", b"\x00\x01\xff") in initial
    assert all(k != "x-other" for k, _ in initial)
    trailing = md(call.trailing_metadata())
    for entry in TRAILERS:
        assert entry in trailing
    # The Call and Future faces of the completed call.
    assert isinstance(call, grpc.Call) and isinstance(call, grpc.Future)
    assert call.done() and not call.running() and not call.cancelled()
    assert call.result() == reply and call.exception() is None
    assert not call.is_active() and call.cancel() is False


def test_metadata_keys_and_repeated_values(stub):
    sent = [("x-echo-multi", "one"), ("x-echo-multi", "two"), ("x-echo-bin", b"")]
    _, call = stub.Unary.with_call(Req(), metadata=tuple(sent), timeout=WAIT)
    initial = md(call.initial_metadata())
    assert [v for k, v in initial if k == "x-echo-multi"] == ["one", "two"]
    assert ("x-echo-bin", b"") in initial


def test_raw_bytes_without_serializers(channel):
    raw = channel.unary_unary("/plexus.peer.Echo/Unary")
    reply = raw(Req(message="raw").SerializeToString(), timeout=WAIT)
    assert isinstance(reply, bytes)
    assert echo_pb2.EchoResponse.FromString(reply).message == "raw"


# --------------------------------------------------------------------------- status and errors


@pytest.mark.parametrize(
    "code",
    [c for c in grpc.StatusCode if c is not grpc.StatusCode.OK],
    ids=lambda c: c.name,
)
def test_every_status_code_maps(stub, code):
    with pytest.raises(grpc.RpcError) as info:
        stub.Unary(
            Req(status_code=code.value[0], status_message=f"because {code.name}"), timeout=WAIT
        )
    err = info.value
    assert isinstance(err, plexus.RpcError) and isinstance(err, grpc.Call)
    assert err.code() is code
    assert err.details() == f"because {code.name}"


def test_status_details_and_trailers(stub):
    with pytest.raises(grpc.RpcError) as info:
        stub.Unary(
            Req(status_code=5, status_message="no such thing"),
            metadata=[("x-echo-id", "7")],
            timeout=WAIT,
        )
    err = info.value
    assert err.code() is grpc.StatusCode.NOT_FOUND
    assert err.details() == "no such thing"
    trailing = md(err.trailing_metadata())
    assert ("x-trailer", "done") in trailing
    assert ("x-echo-id", "7") in trailing
    # Binary details where grpc_status.rpc_status.from_call looks for them.
    assert ("grpc-status-details-bin", b"details:no such thing") in trailing
    assert "NOT_FOUND" in str(err) and "no such thing" in str(err)
    assert err.debug_error_string()


def test_unicode_status_message(stub):
    text = "caf\u00e9 \u2603 100%"
    with pytest.raises(grpc.RpcError) as info:
        stub.Unary(Req(status_code=3, status_message=text), timeout=WAIT)
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.details() == text


def test_unimplemented_method(channel):
    with pytest.raises(grpc.RpcError) as info:
        channel.unary_unary("/plexus.peer.Echo/Nope")(b"", timeout=WAIT)
    assert info.value.code() is grpc.StatusCode.UNIMPLEMENTED


def test_unreachable_server_is_unavailable():
    # A port nothing listens on (bound and closed just now).
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with plexus.insecure_channel(f"127.0.0.1:{port}") as channel:
        with pytest.raises(grpc.RpcError) as info:
            channel.unary_unary("/plexus.peer.Echo/Unary")(b"", timeout=WAIT)
        assert info.value.code() is grpc.StatusCode.UNAVAILABLE


def test_deserializer_failure_is_internal(channel):
    def broken(data):
        raise ValueError("cannot parse")

    call = channel.unary_unary(
        "/plexus.peer.Echo/Unary",
        request_serializer=Req.SerializeToString,
        response_deserializer=broken,
    )
    with pytest.raises(grpc.RpcError) as info:
        call(Req(message="x"), timeout=WAIT)
    assert info.value.code() is grpc.StatusCode.INTERNAL
    assert "cannot parse" in info.value.details()


# --------------------------------------------------------------------------- deadlines


def test_unary_deadline(stub):
    started = time.monotonic()
    with pytest.raises(grpc.RpcError) as info:
        stub.Unary(Req(delay_ms=20_000), timeout=0.3)
    assert info.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
    assert time.monotonic() - started < 15


def test_zero_and_negative_timeouts_expire_at_once(stub):
    for timeout in (0, -1):
        with pytest.raises(grpc.RpcError) as info:
            stub.Unary(Req(delay_ms=20_000), timeout=timeout)
        assert info.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED


def test_streaming_deadline(stub):
    responses = stub.ServerStream(Req(count=100, delay_ms=200), timeout=0.5)
    with pytest.raises(grpc.RpcError) as info:
        for _ in responses:
            pass
    assert info.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
    assert responses.code() is grpc.StatusCode.DEADLINE_EXCEEDED


def test_time_remaining(stub):
    responses = stub.ServerStream(Req(count=1), timeout=WAIT)
    remaining = responses.time_remaining()
    assert 0 < remaining <= WAIT
    assert stub.ServerStream(Req(count=1)).time_remaining() is None
    list(responses)


# --------------------------------------------------------------------------- server streaming


def test_server_streaming(stub):
    responses = stub.ServerStream(
        Req(message="s", count=5), metadata=[("x-echo-k", "v")], timeout=WAIT
    )
    assert ("x-echo-k", "v") in md(responses.initial_metadata())
    assert [r.index for r in responses] == [0, 1, 2, 3, 4]
    assert responses.code() is grpc.StatusCode.OK
    assert ("x-trailer", "done") in md(responses.trailing_metadata())
    assert responses.done() and responses.result() is None


def test_server_streaming_error_after_messages(stub):
    responses = stub.ServerStream(Req(count=2, status_code=9, status_message="stop"), timeout=WAIT)
    assert next(responses).index == 0
    assert next(responses).index == 1
    with pytest.raises(grpc.RpcError) as info:
        next(responses)
    assert info.value is responses  # the iterator is the error, as grpcio's rendezvous
    assert responses.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert responses.details() == "stop"
    assert ("x-trailer", "done") in md(responses.trailing_metadata())


def test_server_streaming_cancel(stub, channel):
    before = nap_stats(channel)
    responses = stub.ServerStream(Req(count=1000, delay_ms=5000), timeout=WAIT)
    assert next(responses).index == 0
    assert responses.is_active()
    assert responses.cancel() is True
    assert responses.cancelled()
    with pytest.raises(grpc.RpcError) as info:
        next(responses)
    assert info.value.code() is grpc.StatusCode.CANCELLED
    assert responses.details() == "Locally cancelled by application!"
    assert responses.cancel() is False
    # The server saw the cancel (RST_STREAM), not just the client giving up.
    wait_until(lambda: nap_stats(channel)[1] > before[1], what="the server to see the cancel")


def test_cancel_from_another_thread_wakes_the_reader(stub):
    responses = stub.ServerStream(Req(count=1000, delay_ms=50), timeout=WAIT)
    assert next(responses).index == 0
    seen = []

    def read() -> None:
        try:
            for r in responses:
                seen.append(r.index)
        except grpc.RpcError as err:
            seen.append(err.code())

    reader = threading.Thread(target=read)
    reader.start()
    wait_until(lambda: len(seen) >= 2, what="the reader to get messages")
    responses.cancel()
    reader.join(WAIT)
    assert not reader.is_alive()
    assert seen[-1] is grpc.StatusCode.CANCELLED


def test_done_callbacks(stub):
    responses = stub.ServerStream(Req(count=3), timeout=WAIT)
    fired = threading.Event()
    got = []
    responses.add_done_callback(lambda call: (got.append(call.code()), fired.set()))
    assert responses.add_callback(lambda: got.append("rpc-callback"))
    list(responses)
    assert fired.wait(WAIT)
    assert got == ["rpc-callback", grpc.StatusCode.OK]


# --------------------------------------------------------------------------- client streaming


def test_client_streaming(stub):
    payloads = [b"ab", b"", b"cd"]
    requests = (Req(message=m, payload=p) for m, p in zip("abc", payloads))
    reply = stub.ClientStream(requests, timeout=WAIT)
    assert reply.message == "a,b,c" and reply.index == 3 and reply.payload == b"abcd"


def test_client_streaming_with_call_and_empty_stream(stub):
    reply, call = stub.ClientStream.with_call(iter([]), metadata=[("x-echo-z", "1")], timeout=WAIT)
    assert reply.index == 0 and reply.message == ""
    assert ("x-echo-z", "1") in md(call.initial_metadata())
    assert call.code() is grpc.StatusCode.OK


def test_client_streaming_error(stub):
    requests = [Req(message="a"), Req(message="b", status_code=7, status_message="nope")]
    with pytest.raises(grpc.RpcError) as info:
        stub.ClientStream(iter(requests), timeout=WAIT)
    assert info.value.code() is grpc.StatusCode.PERMISSION_DENIED
    assert info.value.details() == "nope"


def test_client_streaming_future(stub):
    future = stub.ClientStream.future(iter([Req(message=m) for m in "xyz"]), timeout=WAIT)
    assert future.result(timeout=WAIT).message == "x,y,z"
    assert future.code() is grpc.StatusCode.OK and future.done()


def test_client_streaming_future_cancel(stub):
    blocker = queue.Queue()

    def requests():
        yield Req(message="first")
        blocker.get()  # never answered: the stream stays open until cancelled

    future = stub.ClientStream.future(requests(), timeout=WAIT)
    assert future.cancel() is True
    assert future.cancelled()
    with pytest.raises(grpc.FutureCancelledError):
        future.result(timeout=WAIT)
    assert future.code() is grpc.StatusCode.CANCELLED
    blocker.put(None)


def test_client_streaming_future_cancel_while_the_iterator_blocks(stub):
    """cancel() makes the future done even while its thread is stuck in the request
    iterator (as grpcio's): the order the other test leaves to chance, forced."""
    blocker = queue.Queue()
    blocking = threading.Event()

    def requests():
        yield Req(message="first")
        blocking.set()
        blocker.get()  # answered only after the test

    future = stub.ClientStream.future(requests(), timeout=WAIT)
    assert blocking.wait(WAIT), "the request iterator never got to its second item"
    assert future.cancel() is True
    with pytest.raises(grpc.FutureCancelledError):
        future.result(timeout=WAIT)
    assert future.done() and future.code() is grpc.StatusCode.CANCELLED
    blocker.put(None)


def test_request_iterator_failure_is_unknown(stub):
    def requests():
        yield Req(message="a")
        raise RuntimeError("iterator broke")

    with pytest.raises(grpc.RpcError) as info:
        stub.ClientStream(requests(), timeout=WAIT)
    assert info.value.code() is grpc.StatusCode.UNKNOWN
    assert info.value.details() == "Exception iterating requests!"


# --------------------------------------------------------------------------- bidi


def test_bidi_ping_pong(stub):
    outbox: queue.Queue = queue.Queue()

    def requests():
        while True:
            item = outbox.get()
            if item is None:
                return
            yield item

    responses = stub.Bidi(requests(), metadata=[("x-echo-b", "1")], timeout=WAIT)
    for i in range(5):
        outbox.put(Req(message=f"m{i}"))
        reply = next(responses)
        assert (reply.message, reply.index) == (f"m{i}", i)
    assert ("x-echo-b", "1") in md(responses.initial_metadata())
    outbox.put(None)
    with pytest.raises(StopIteration):
        next(responses)
    assert responses.code() is grpc.StatusCode.OK


def test_bidi_error_ends_stream(stub):
    requests = [Req(message="ok"), Req(status_code=10, status_message="aborted here")]
    responses = stub.Bidi(iter(requests), timeout=WAIT)
    assert next(responses).message == "ok"
    with pytest.raises(grpc.RpcError) as info:
        next(responses)
    assert info.value.code() is grpc.StatusCode.ABORTED


def test_bidi_cancel_with_blocked_request_iterator(stub):
    blocker = queue.Queue()

    def requests():
        yield Req(message="one")
        blocker.get()

    responses = stub.Bidi(requests(), timeout=WAIT)
    assert next(responses).message == "one"
    responses.cancel()
    with pytest.raises(grpc.RpcError) as info:
        next(responses)
    assert info.value.code() is grpc.StatusCode.CANCELLED
    blocker.put(None)


# --------------------------------------------------------------------------- unary futures


def test_unary_future(stub):
    future = stub.Unary.future(Req(message="f"), metadata=[("x-echo-f", "1")], timeout=WAIT)
    assert isinstance(future, grpc.Future)
    assert future.result(timeout=WAIT).message == "f"
    assert future.done() and not future.running() and not future.cancelled()
    assert future.exception() is None and future.traceback() is None
    assert ("x-echo-f", "1") in md(future.initial_metadata())
    assert ("x-trailer", "done") in md(future.trailing_metadata())
    called = []
    future.add_done_callback(called.append)
    assert called == [future]


def test_many_unary_futures(stub):
    futures = [stub.Unary.future(Req(message=str(i)), timeout=WAIT) for i in range(200)]
    assert [f.result(timeout=WAIT).message for f in futures] == [str(i) for i in range(200)]


def test_unary_future_error(stub):
    future = stub.Unary.future(Req(status_code=8, status_message="full"), timeout=WAIT)
    err = future.exception(timeout=WAIT)
    assert isinstance(err, grpc.RpcError)
    assert err.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    with pytest.raises(grpc.RpcError):
        future.result()


def test_unary_future_timeout_and_cancel(stub, channel):
    before = nap_stats(channel)
    future = stub.Unary.future(Req(delay_ms=20_000), timeout=WAIT)
    with pytest.raises(grpc.FutureTimeoutError):
        future.result(timeout=0.05)
    wait_until(lambda: nap_stats(channel)[0] > before[0], what="the server to start the call")
    assert future.cancel() is True
    assert future.cancelled()
    with pytest.raises(grpc.FutureCancelledError):
        future.result(timeout=WAIT)
    assert future.code() is grpc.StatusCode.CANCELLED
    wait_until(lambda: nap_stats(channel)[1] > before[1], what="the server to see the cancel")
    assert future.cancel() is False


# --------------------------------------------------------------------------- channel


def test_closed_channel_refuses_calls(target):
    channel = plexus.insecure_channel(target)
    unary = channel.unary_unary("/plexus.peer.Echo/Unary")
    unary(b"", timeout=WAIT)
    channel.close()
    channel.close()  # idempotent
    with pytest.raises(ValueError, match="closed channel"):
        unary(b"")
    with pytest.raises(ValueError, match="closed channel"):
        channel.unary_stream("/plexus.peer.Echo/ServerStream")(b"")
    with pytest.raises(ValueError, match="closed channel"):
        channel.stream_unary("/plexus.peer.Echo/ClientStream")(iter([]))


def test_close_cancels_streams_and_futures(target):
    import echo_pb2_grpc

    channel = plexus.insecure_channel(target)
    stub = echo_pb2_grpc.EchoStub(channel)
    responses = stub.ServerStream(Req(count=1000, delay_ms=100), timeout=WAIT)
    assert next(responses).index == 0
    future = stub.Unary.future(Req(delay_ms=20_000), timeout=WAIT)
    channel.close()
    with pytest.raises(grpc.RpcError) as info:
        list(responses)
    assert info.value.code() is grpc.StatusCode.CANCELLED
    assert responses.details() == "Channel closed!"
    assert future.exception(timeout=WAIT).code() is grpc.StatusCode.CANCELLED


def test_context_manager_and_stats(target):
    with plexus.insecure_channel(target, shared=False) as channel:
        assert channel.get_state() in (plexus.ChannelConnectivity.IDLE,)
        channel.unary_unary("/plexus.peer.Echo/Unary")(b"", timeout=WAIT)
        stats = channel.stats()
        assert stats["calls_started"] == 1 and stats["calls_succeeded"] == 1
        assert stats["connections"] == 1
        assert stats["state"] is grpc.ChannelConnectivity.READY
    with pytest.raises(ValueError):
        channel.stats()


def test_channel_ready_future_from_grpcio(target):
    # grpc.channel_ready_future drives subscribe(); it works on a plexus channel too.
    with plexus.insecure_channel(target, shared=False) as channel:
        grpc.channel_ready_future(channel).result(timeout=WAIT)
        assert channel.get_state() is grpc.ChannelConnectivity.READY


def test_shared_channels_share_connections(target):
    with plexus.insecure_channel(target) as a, plexus.insecure_channel(target) as b:
        a.unary_unary("/plexus.peer.Echo/Unary")(b"", timeout=WAIT)
        b.unary_unary("/plexus.peer.Echo/Unary")(b"", timeout=WAIT)
        assert a.stats()["connections"] == 1
        assert a.stats()["calls_started"] == b.stats()["calls_started"]
    options = [("grpc.use_local_subchannel_pool", 1)]
    with (
        plexus.insecure_channel(target, options) as a,
        plexus.insecure_channel(target, options) as b,
    ):
        a.unary_unary("/plexus.peer.Echo/Unary")(b"", timeout=WAIT)
        assert b.stats()["calls_started"] == 0
