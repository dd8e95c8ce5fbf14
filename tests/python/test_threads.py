"""One channel shared by 16 threads, and blocking calls that release the GIL."""

from __future__ import annotations

import threading

import echo_pb2
import echo_pb2_grpc
import grpc
from conftest import WAIT, nap_stats, wait_until

import plexus
from plexus import _ffi

Req = echo_pb2.EchoRequest
THREADS = 16


def test_sixteen_threads_share_one_channel(target):
    with plexus.insecure_channel(target, shared=False) as channel:
        stub = echo_pb2_grpc.EchoStub(channel)
        barrier = threading.Barrier(THREADS)
        errors: list = []

        def work(n: int) -> None:
            try:
                barrier.wait(WAIT)
                for i in range(40):
                    tag = f"{n}-{i}"
                    assert stub.Unary(Req(message=tag), timeout=WAIT).message == tag
                    if i % 10 == 0:
                        got = [r.index for r in stub.ServerStream(Req(count=3), timeout=WAIT)]
                        assert got == [0, 1, 2]
                        reply = stub.ClientStream(iter([Req(message=tag)] * 2), timeout=WAIT)
                        assert reply.message == f"{tag},{tag}"
                        bidi = stub.Bidi(iter([Req(message=tag)]), timeout=WAIT)
                        assert [r.message for r in bidi] == [tag]
                        future = stub.Unary.future(Req(message=tag), timeout=WAIT)
                        assert future.result(WAIT).message == tag
                    if i % 13 == 0:
                        try:
                            stub.Unary(Req(status_code=5, status_message=tag), timeout=WAIT)
                        except grpc.RpcError as err:
                            assert err.code() is grpc.StatusCode.NOT_FOUND
                            assert err.details() == tag
                        else:
                            raise AssertionError("expected NOT_FOUND")
            except BaseException as exc:  # reported by the main thread
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(n,)) for n in range(THREADS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(WAIT * 4)
        assert not any(t.is_alive() for t in threads)
        assert not errors, errors[:3]
        stats = channel.stats()
        # 40 unary, 4 x (stream, client stream, bidi, future), 4 failing calls per thread.
        assert stats["calls_started"] == THREADS * (40 + 4 * 4 + 4)
        assert stats["calls_failed"] == THREADS * 4
        assert stats["connections"] == 1


def test_blocking_calls_release_the_gil(target):
    """While one thread is blocked inside libplexus, other threads run Python and make
    calls on the same channel; with the GIL held, none of that could happen."""
    with plexus.insecure_channel(target, shared=False) as channel:
        stub = echo_pb2_grpc.EchoStub(channel)
        before = nap_stats(channel)
        blocked_in_unary = threading.Event()
        unary_done = threading.Event()

        def slow_unary() -> None:
            blocked_in_unary.set()
            stub.Unary(Req(message="slow", delay_ms=6000), timeout=WAIT)
            unary_done.set()

        responses = stub.ServerStream(Req(count=2, delay_ms=60_000), timeout=WAIT)
        assert next(responses).index == 0
        stream_done = threading.Event()

        def blocked_reader() -> None:
            try:
                next(responses)  # waits 60 s for the second message unless cancelled
            except grpc.RpcError:
                pass
            stream_done.set()

        threads = [threading.Thread(target=slow_unary), threading.Thread(target=blocked_reader)]
        for t in threads:
            t.start()
        assert blocked_in_unary.wait(WAIT)
        # Both naps have begun on the server: both threads are inside blocking C calls.
        wait_until(lambda: nap_stats(channel)[0] >= before[0] + 2, what="both calls to start")
        for i in range(10):
            assert stub.Unary(Req(message=str(i)), timeout=WAIT).message == str(i)
        spins = sum(1 for _ in range(100_000))
        assert spins == 100_000
        assert not stream_done.is_set()
        assert not unary_done.is_set(), "the 6 s unary call returned before the other calls"
        responses.cancel()
        assert stream_done.wait(WAIT)
        for t in threads:
            t.join(WAIT)
        assert unary_done.is_set()


# Functions that can wait: each must let go of the GIL while it does.
_WAITING = {
    "plexus_cq_next",
    "plexus_unary",
    "plexus_shutdown",
    "plexus_channel_connect",
    "plexus_call_start",
    "plexus_call_start_server_streaming",
    "plexus_call_send",
    "plexus_call_recv",
    "plexus_call_close_send",
    "plexus_call_initial_metadata",
    "plexus_call_finish",
    "plexus_server_shutdown",
    "plexus_server_call_recv",
    "plexus_server_call_send",
    "plexus_server_call_send_initial_metadata",
}


def test_only_functions_that_never_wait_keep_the_gil():
    """The functions bound to run with the GIL held are real ones and none of them waits: one
    that did would stop every other Python thread for as long."""
    assert _ffi._KEEP_GIL <= _ffi._SIGNATURES.keys()
    assert _WAITING <= _ffi._SIGNATURES.keys()
    assert not (_ffi._KEEP_GIL & _WAITING)
