"""What people expect from grpcio's channels beyond the calls themselves: close() ends calls
running in other threads, Ctrl-C interrupts a blocking call in the main thread, and
connectivity is reported by the library's notifications (no polling, no helper thread)."""

from __future__ import annotations

import asyncio
import os
import queue
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import grpc
import pytest

import plexus
import plexus.aio
from conftest import WAIT, nap_stats, run_async, wait_until

HERE = Path(__file__).resolve().parent


def _req(**kwargs):
    import echo_pb2

    return echo_pb2.EchoRequest(**kwargs)


# --------------------------------------------------------------------------- close()


def _close_outcomes(channel, target):
    """Starts a blocking unary call, a server-streaming and a bidi iteration, a unary future
    and a client-streaming future, each waiting on the server, from other threads; closes
    the channel; returns how each ended."""
    import echo_pb2_grpc

    stub = echo_pb2_grpc.EchoStub(channel)
    observer = plexus.insecure_channel(target, shared=False)
    before = nap_stats(observer)[0]
    outcomes: dict[str, object] = {}

    def record(name, fn):
        try:
            fn()
            outcomes[name] = "no error"
        except grpc.RpcError as exc:
            outcomes[name] = (exc.code(), exc.details())
        except Exception as exc:  # what a wrong implementation would raise
            outcomes[name] = repr(exc)

    def unary():
        stub.Unary(_req(delay_ms=20_000), timeout=WAIT)

    stream_open = threading.Event()

    def stream():
        responses = stub.ServerStream(_req(count=3, delay_ms=20_000), timeout=WAIT)
        next(responses)
        stream_open.set()
        list(responses)

    gate = threading.Event()  # holds the bidi call's request stream open until the end
    bidi_open = threading.Event()

    def requests():
        yield _req(message="a")
        gate.wait(WAIT)

    def bidi():
        responses = stub.Bidi(requests(), timeout=WAIT)
        next(responses)
        bidi_open.set()
        list(responses)

    future = stub.Unary.future(_req(delay_ms=20_000), timeout=WAIT)
    sent = threading.Event()

    def uploads():
        yield _req(message="a")
        sent.set()  # the first request went out: the call is open
        gate.wait(WAIT * 4)  # longer than the callers wait for the outcome

    upload = stub.ClientStream.future(uploads(), timeout=WAIT)
    threads = [
        threading.Thread(target=record, args=("unary", unary)),
        threading.Thread(target=record, args=("stream", stream)),
        threading.Thread(target=record, args=("bidi", bidi)),
        threading.Thread(target=record, args=("future", lambda: future.result(timeout=WAIT))),
        threading.Thread(target=record, args=("upload", lambda: upload.result(timeout=WAIT))),
    ]
    for thread in threads:
        thread.start()
    # The three calls are waiting on the server.
    wait_until(lambda: nap_stats(observer)[0] >= before + 3, what="the server to start the calls")
    assert bidi_open.wait(WAIT)
    assert stream_open.wait(WAIT)  # a busy machine may start it after the naps counted above
    assert sent.wait(WAIT)
    channel.close()
    # The request iterators are still blocked: close() does not wait for them.
    try:
        for thread in threads:
            thread.join(WAIT * 2)
            assert not thread.is_alive(), "a call outlived its channel's close()"
    finally:
        gate.set()
    observer.close()
    return outcomes


def test_close_cancels_calls_in_other_threads_as_grpcio_does(target):
    # Unshared: the failed calls stay out of the statistics of the pool other tests share.
    ours = _close_outcomes(plexus.insecure_channel(target, shared=False), target)
    theirs = _close_outcomes(grpc.insecure_channel(target), target)
    cancelled = (grpc.StatusCode.CANCELLED, "Channel closed!")
    assert ours == dict.fromkeys(("unary", "stream", "bidi", "future", "upload"), cancelled)
    assert theirs["unary"] == theirs["future"] == theirs["upload"] == cancelled
    # grpcio's core words a stream cancelled while a receive was pending "Stream removed
    # (Channel closed!)"; the code and the reason are the same.
    for kind in ("stream", "bidi"):
        assert theirs[kind][0] is grpc.StatusCode.CANCELLED
        assert "Channel closed!" in theirs[kind][1]


def test_aio_close_cancels_calls_as_grpc_aio_does(target):
    import echo_pb2_grpc

    async def outcomes(module):
        extra = {"shared": False} if module is plexus.aio else {}
        channel = module.insecure_channel(target, **extra)
        stub = echo_pb2_grpc.EchoStub(channel)
        unary = stub.Unary(_req(delay_ms=20_000), timeout=WAIT)
        stream = stub.ServerStream(_req(count=3, delay_ms=20_000), timeout=WAIT)
        await stream.read()
        reading = asyncio.ensure_future(stream.read())
        await channel.channel_ready()
        await channel.close()
        seen = []
        for call, waiting in ((unary, unary), (stream, reading)):
            try:
                await waiting
                raised = "nothing"
            except BaseException as exc:  # CancelledError is a BaseException
                raised = type(exc).__name__
            seen.append((raised, await call.code(), await call.details(), call.cancelled()))
        return seen

    ours = run_async(outcomes(plexus.aio))
    theirs = run_async(outcomes(grpc.aio))
    details = "Locally cancelled by application!"
    cancelled = ("CancelledError", grpc.StatusCode.CANCELLED, details, True)
    assert theirs == [cancelled, cancelled]
    assert ours == theirs


# --------------------------------------------------------------------------- Ctrl-C

_SIGINT_SCRIPT = textwrap.dedent(
    """
    import os, signal, sys, threading, time
    sys.path[:0] = sys.argv[3:]
    import plexus, echo_pb2, echo_pb2_grpc
    from conftest import nap_stats, wait_until

    target, kind = sys.argv[1], sys.argv[2]
    observer = plexus.insecure_channel(target)
    before = nap_stats(observer)
    sent = []

    def interrupt():
        wait_until(lambda: nap_stats(observer)[0] > before[0], what="the call to start")
        sent.append(time.monotonic())
        os.kill(os.getpid(), signal.SIGINT)

    channel = plexus.insecure_channel(target)
    stub = echo_pb2_grpc.EchoStub(channel)
    threading.Thread(target=interrupt, daemon=True).start()
    try:
        if kind == "unary":
            stub.Unary(echo_pb2.EchoRequest(delay_ms=60_000), timeout=120)
        else:
            for _ in stub.ServerStream(echo_pb2.EchoRequest(count=3, delay_ms=60_000), timeout=120):
                pass
        print("NOT INTERRUPTED", flush=True)
        sys.exit(3)
    except KeyboardInterrupt:
        print(f"INTERRUPTED {(time.monotonic() - sent[0]) * 1000:.1f} ms", flush=True)
    # The interrupted call was cancelled: the server sees its nap cut short.
    wait_until(lambda: nap_stats(observer)[1] > before[1], what="the server to see the cancel")
    channel.close()
    observer.close()
    print("CLEAN", flush=True)
    """
)


@pytest.mark.parametrize("kind", ["unary", "stream"])
def test_sigint_interrupts_a_blocking_call_on_the_main_thread(target, stub_dir, kind):
    proc = subprocess.run(
        [sys.executable, "-c", _SIGINT_SCRIPT, target, kind, stub_dir, str(HERE)],
        capture_output=True,
        text=True,
        timeout=WAIT * 4,
        env=dict(os.environ),
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "INTERRUPTED" in proc.stdout and "CLEAN" in proc.stdout, proc.stdout + proc.stderr
    print(proc.stdout.splitlines()[0])  # the measured latency, for the report (-s)


# --------------------------------------------------------------------------- connectivity


def _dns_target(target: str) -> str:
    return "dns:///localhost:" + target.rsplit(":", 1)[1]


def test_subscribe_reports_connecting_then_ready_from_library_events(target):
    import plexus._channel as sync_channel

    states: queue.Queue = queue.Queue()
    threads: set[str] = set()
    channel = plexus.insecure_channel(_dns_target(target), shared=False)

    def callback(state):
        threads.add(threading.current_thread().name)
        states.put(state)

    try:
        channel.subscribe(callback, try_to_connect=True)
        seen = []
        while not seen or seen[-1] is not grpc.ChannelConnectivity.READY:
            state = states.get(timeout=WAIT)
            if not seen or seen[-1] is not state:
                seen.append(state)
        assert seen == [
            grpc.ChannelConnectivity.IDLE,
            grpc.ChannelConnectivity.CONNECTING,
            grpc.ChannelConnectivity.READY,
        ]
        # Delivered by the thread that drains the connectivity completion queue; no helper
        # thread was started to connect.
        lib = channel._lib
        dispatcher = sync_channel._dispatchers[(lib.generation, "plexus-connectivity")]
        assert threads == {dispatcher._thread.name}
        assert not [t for t in threading.enumerate() if t.name == "plexus-connect"]
        channel.unsubscribe(callback)
    finally:
        channel.close()


def test_subscribe_gives_each_new_subscriber_the_current_state(target):
    channel = plexus.insecure_channel(target, shared=False)
    try:
        channel.connect(timeout=WAIT)
        first: queue.Queue = queue.Queue()
        second: queue.Queue = queue.Queue()
        channel.subscribe(first.put)
        assert first.get(timeout=WAIT) is grpc.ChannelConnectivity.READY
        channel.subscribe(second.put)
        assert second.get(timeout=WAIT) is grpc.ChannelConnectivity.READY
    finally:
        channel.close()


def test_aio_wait_for_state_change_and_channel_ready(target):
    async def main():
        names = {t.name for t in threading.enumerate()}
        async with plexus.aio.insecure_channel(_dns_target(target), shared=False) as channel:
            assert channel.get_state() is grpc.ChannelConnectivity.IDLE
            idle = channel.get_state(try_to_connect=True)
            assert idle is grpc.ChannelConnectivity.IDLE
            assert not [t for t in threading.enumerate() if t.name == "plexus-connect"]
            await channel.wait_for_state_change(idle)
            assert channel.get_state() is not grpc.ChannelConnectivity.IDLE
            await channel.channel_ready()
            assert channel.get_state() is grpc.ChannelConnectivity.READY
            # A wait abandoned by its task leaves the channel usable.
            waiting = asyncio.ensure_future(
                channel.wait_for_state_change(grpc.ChannelConnectivity.READY)
            )
            await asyncio.sleep(0)
            waiting.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiting
            await channel.unary_unary("/plexus.peer.Echo/Unary")(b"", timeout=WAIT)
        # The event loop's completion queue reported the changes: no thread was started.
        assert {t.name for t in threading.enumerate()} <= names

    run_async(main())
