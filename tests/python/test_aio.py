"""plexus.aio against both echo servers: the four call kinds, metadata, deadlines,
cancellation, status details, error mapping, 1,000 concurrent calls, and no threads."""

from __future__ import annotations

import asyncio
import threading
import time

import echo_pb2
import echo_pb2_grpc
import grpc
import grpc.aio
import pytest
from conftest import WAIT, nap_stats, run_async

import plexus
import plexus.aio

Req = echo_pb2.EchoRequest


def md(metadata) -> list:
    return [(k, v) for k, v in metadata]


async def connect(target):
    channel = plexus.aio.insecure_channel(target)
    return channel, echo_pb2_grpc.EchoStub(channel)


def test_unary_and_metadata(target):
    async def main():
        async with plexus.aio.insecure_channel(target) as channel:
            stub = echo_pb2_grpc.EchoStub(channel)
            assert (await stub.Unary(Req(message="hi"), timeout=WAIT)).message == "hi"
            call = stub.Unary(
                Req(message="md", payload=b"\x00" * 100_000),
                metadata=[("x-echo-a", "b"), ("x-echo-c-bin", b"\xff\x00")],
                timeout=WAIT,
            )
            reply = await call
            assert reply.message == "md" and reply.payload == b"\x00" * 100_000
            assert call.done() and not call.cancelled()
            assert await call.code() is grpc.StatusCode.OK
            initial = md(await call.initial_metadata())
            assert ("x-echo-a", "b") in initial and ("x-echo-c-bin", b"\xff\x00") in initial
            assert ("x-trailer", "done") in md(await call.trailing_metadata())
            assert 0 <= call.time_remaining() <= WAIT

    run_async(main())


@pytest.mark.parametrize(
    "code", [5, 3, 16, 13], ids=["NOT_FOUND", "INVALID_ARGUMENT", "UNAUTHENTICATED", "INTERNAL"]
)
def test_unary_error_mapping_and_details(target, code):
    async def main():
        async with plexus.aio.insecure_channel(target) as channel:
            stub = echo_pb2_grpc.EchoStub(channel)
            call = stub.Unary(Req(status_code=code, status_message="caf\u00e9"), timeout=WAIT)
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await call
            err = info.value
            assert isinstance(err, grpc.RpcError) and isinstance(err, plexus.RpcError)
            assert isinstance(err, plexus.aio.AioRpcError)
            assert err.code().value[0] == code
            assert err.details() == "caf\u00e9"
            trailing = md(err.trailing_metadata())
            assert ("grpc-status-details-bin", "details:caf\u00e9".encode()) in trailing
            assert ("x-trailer", "done") in trailing
            assert (await call.code()).value[0] == code
            assert await call.details() == "caf\u00e9"

    run_async(main())


def test_unary_deadline(target):
    async def main():
        async with plexus.aio.insecure_channel(target) as channel:
            stub = echo_pb2_grpc.EchoStub(channel)
            started = time.monotonic()
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stub.Unary(Req(delay_ms=20_000), timeout=0.3)
            assert info.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
            assert time.monotonic() - started < 15

    run_async(main())


def test_unary_cancel_reaches_the_server(target):
    async def main():
        async with plexus.aio.insecure_channel(target) as channel:
            stub = echo_pb2_grpc.EchoStub(channel)
            before = await asyncio.to_thread(nap_stats, plexus.insecure_channel(target))
            call = stub.Unary(Req(delay_ms=20_000), timeout=WAIT)
            sync = plexus.insecure_channel(target)
            deadline = time.monotonic() + WAIT
            while (await asyncio.to_thread(nap_stats, sync))[0] <= before[0]:
                assert time.monotonic() < deadline, "the server never started the call"
                await asyncio.sleep(0.02)
            assert call.cancel() is True
            assert call.cancelled() and call.cancel() is False
            with pytest.raises(asyncio.CancelledError):
                await call
            assert await call.code() is grpc.StatusCode.CANCELLED
            while (await asyncio.to_thread(nap_stats, sync))[1] <= before[1]:
                assert time.monotonic() < deadline, "the server never saw the cancel"
                await asyncio.sleep(0.02)
            sync.close()

    run_async(main())


def test_cancelling_the_awaiting_task_cancels_the_call(target):
    async def main():
        async with plexus.aio.insecure_channel(target) as channel:
            stub = echo_pb2_grpc.EchoStub(channel)
            call = stub.Unary(Req(delay_ms=20_000), timeout=WAIT)
            task = asyncio.ensure_future(call)
            await asyncio.sleep(0.05)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert await call.code() is grpc.StatusCode.CANCELLED
            # wait_for's timeout cancels the same way.
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(stub.Unary(Req(delay_ms=20_000), timeout=WAIT), 0.1)

    run_async(main())


def test_server_streaming(target):
    async def main():
        async with plexus.aio.insecure_channel(target) as channel:
            stub = echo_pb2_grpc.EchoStub(channel)
            call = stub.ServerStream(
                Req(message="s", count=5), metadata=[("x-echo-s", "1")], timeout=WAIT
            )
            assert ("x-echo-s", "1") in md(await call.initial_metadata())
            assert [r.index async for r in call] == [0, 1, 2, 3, 4]
            assert await call.code() is grpc.StatusCode.OK
            assert ("x-trailer", "done") in md(await call.trailing_metadata())
            call = stub.ServerStream(Req(count=2), timeout=WAIT)
            assert (await call.read()).index == 0
            assert (await call.read()).index == 1
            assert await call.read() is plexus.aio.EOF
            assert plexus.aio.EOF is grpc.aio.EOF

    run_async(main())


def test_server_streaming_error_and_cancel(target):
    async def main():
        async with plexus.aio.insecure_channel(target) as channel:
            stub = echo_pb2_grpc.EchoStub(channel)
            call = stub.ServerStream(
                Req(count=2, status_code=9, status_message="stop"), timeout=WAIT
            )
            got = []
            with pytest.raises(grpc.aio.AioRpcError) as info:
                async for r in call:
                    got.append(r.index)
            assert got == [0, 1]
            assert info.value.code() is grpc.StatusCode.FAILED_PRECONDITION
            call = stub.ServerStream(Req(count=1000, delay_ms=5000), timeout=WAIT)
            assert (await call.read()).index == 0
            assert call.cancel()
            with pytest.raises(asyncio.CancelledError):
                await call.read()
            assert await call.code() is grpc.StatusCode.CANCELLED
            assert await call.details() == "Locally cancelled by application!"

    run_async(main())


def test_streaming_deadline(target):
    async def main():
        async with plexus.aio.insecure_channel(target) as channel:
            stub = echo_pb2_grpc.EchoStub(channel)
            call = stub.ServerStream(Req(count=100, delay_ms=200), timeout=0.5)
            with pytest.raises(grpc.aio.AioRpcError) as info:
                async for _ in call:
                    pass
            assert info.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED

    run_async(main())


def test_client_streaming(target):
    async def main():
        async with plexus.aio.insecure_channel(target) as channel:
            stub = echo_pb2_grpc.EchoStub(channel)
            # A sync iterator, an async iterator, and explicit writes.
            reply = await stub.ClientStream(iter([Req(message=m) for m in "abc"]), timeout=WAIT)
            assert (reply.message, reply.index) == ("a,b,c", 3)

            async def requests():
                for m in "xy":
                    await asyncio.sleep(0)
                    yield Req(message=m, payload=m.encode())

            reply = await stub.ClientStream(requests(), timeout=WAIT)
            assert (reply.message, reply.payload) == ("x,y", b"xy")
            call = stub.ClientStream(metadata=[("x-echo-w", "1")], timeout=WAIT)
            for m in "pqr":
                await call.write(Req(message=m))
            await call.done_writing()
            assert (await call).message == "p,q,r"
            assert ("x-echo-w", "1") in md(await call.initial_metadata())
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stub.ClientStream(
                    iter([Req(message="a", status_code=6, status_message="dup")]), timeout=WAIT
                )
            assert info.value.code() is grpc.StatusCode.ALREADY_EXISTS

    run_async(main())


def test_request_iterator_failure(target):
    async def main():
        async with plexus.aio.insecure_channel(target) as channel:
            stub = echo_pb2_grpc.EchoStub(channel)

            async def requests():
                yield Req(message="a")
                raise RuntimeError("broken iterator")

            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stub.ClientStream(requests(), timeout=WAIT)
            assert info.value.code() is grpc.StatusCode.UNKNOWN
            assert info.value.details() == "Exception iterating requests!"

    run_async(main())


def test_bidi(target):
    async def main():
        async with plexus.aio.insecure_channel(target) as channel:
            stub = echo_pb2_grpc.EchoStub(channel)
            call = stub.Bidi(metadata=[("x-echo-b", "1")], timeout=WAIT)
            for i in range(5):
                await call.write(Req(message=f"m{i}"))
                reply = await call.read()
                assert (reply.message, reply.index) == (f"m{i}", i)
            await call.done_writing()
            assert await call.read() is plexus.aio.EOF
            assert ("x-echo-b", "1") in md(await call.initial_metadata())
            assert await call.code() is grpc.StatusCode.OK

            async def requests():
                for m in "xyz":
                    yield Req(message=m)

            assert [r.message async for r in stub.Bidi(requests(), timeout=WAIT)] == list("xyz")
            call = stub.Bidi(
                iter([Req(message="ok"), Req(status_code=10, status_message="no")]), timeout=WAIT
            )
            assert (await call.read()).message == "ok"
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await call.read()
            assert info.value.code() is grpc.StatusCode.ABORTED
            with pytest.raises(asyncio.InvalidStateError, match="request iterator"):
                await call.write(Req())
            # With explicit writes, a write after the call ended raises its status.
            call = stub.Bidi(timeout=WAIT)
            await call.write(Req(status_code=10, status_message="no"))
            with pytest.raises(grpc.aio.AioRpcError):
                await call.read()
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await call.write(Req())
            assert info.value.code() is grpc.StatusCode.ABORTED

    run_async(main())


def test_thousand_concurrent_calls_without_threads(target):
    async def main():
        async with plexus.aio.insecure_channel(target) as channel:
            stub = echo_pb2_grpc.EchoStub(channel)
            await stub.Unary(Req(), timeout=WAIT)
            threads_before = threading.active_count()
            calls = [stub.Unary(Req(message=str(i)), timeout=WAIT) for i in range(1000)]
            # The calls are in flight, waited for on the loop: no thread per call (or at all).
            assert threading.active_count() == threads_before
            replies = await asyncio.gather(*calls)
            assert [r.message for r in replies] == [str(i) for i in range(1000)]
            assert threading.active_count() == threads_before
            stats = channel.stats()
            assert stats["calls_failed"] == 0

    run_async(main())


def test_concurrent_streams(target):
    async def main():
        async with plexus.aio.insecure_channel(target) as channel:
            stub = echo_pb2_grpc.EchoStub(channel)

            async def one(i):
                return [r.index async for r in stub.ServerStream(Req(count=10), timeout=WAIT)]

            results = await asyncio.gather(*(one(i) for i in range(100)))
            assert all(r == list(range(10)) for r in results)

    run_async(main())


def test_close_cancels_calls_and_refuses_new_ones(target):
    async def main():
        channel = plexus.aio.insecure_channel(target)
        stub = echo_pb2_grpc.EchoStub(channel)
        slow = stub.Unary(Req(delay_ms=20_000), timeout=WAIT)
        stream = stub.ServerStream(Req(count=1000, delay_ms=100), timeout=WAIT)
        assert (await stream.read()).index == 0
        await channel.close()
        # As grpc.aio: close() cancel()s each call.
        with pytest.raises(asyncio.CancelledError):
            await slow
        assert await slow.code() is grpc.StatusCode.CANCELLED
        assert await slow.details() == "Locally cancelled by application!"
        assert slow.cancelled()
        assert await stream.code() is grpc.StatusCode.CANCELLED
        with pytest.raises(ValueError, match="closed channel"):
            stub.Unary(Req())
        await channel.close()

    run_async(main())


def test_close_with_grace_lets_calls_finish(target):
    async def main():
        channel = plexus.aio.insecure_channel(target)
        stub = echo_pb2_grpc.EchoStub(channel)
        call = stub.Unary(Req(message="late", delay_ms=200), timeout=WAIT)
        await channel.close(grace=WAIT)
        assert (await call).message == "late"

    run_async(main())


def test_channel_ready_and_state(target):
    async def main():
        async with plexus.aio.insecure_channel(target, shared=False) as channel:
            assert channel.get_state() is grpc.ChannelConnectivity.IDLE
            await channel.channel_ready()
            assert channel.get_state() is grpc.ChannelConnectivity.READY

    run_async(main())


def test_one_channel_on_two_loops_in_turn(target):
    channel = plexus.aio.insecure_channel(target)
    stub = echo_pb2_grpc.EchoStub(channel)

    async def call(i):
        return await stub.Unary(Req(message=str(i)), timeout=WAIT)

    for i in range(2):
        assert run_async(call(i)).message == str(i)
    run_async(channel.close())


def test_calls_need_a_running_loop(target):
    channel = plexus.aio.insecure_channel(target)
    with pytest.raises(RuntimeError):
        echo_pb2_grpc.EchoStub(channel).Unary(Req())
    run_async(channel.close())
