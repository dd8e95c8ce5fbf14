"""os.fork(): a child can create channels and make calls, whether or not the parent had
started plexus's runtime (then the child loads a fresh copy of libplexus)."""

from __future__ import annotations

import asyncio
import gc
import multiprocessing
import os
import subprocess
import sys
import textwrap
import traceback

import echo_pb2
import echo_pb2_grpc
import pytest
from conftest import HERE, WAIT

import plexus
import plexus.aio

Req = echo_pb2.EchoRequest


@pytest.fixture(autouse=True)
def no_grpcio_garbage_for_the_children():
    """Collects the garbage earlier tests left before each test forks. Tests in this process
    also run grpcio, and grpcio without its fork support cannot free its objects in a forked
    child: a collection there that reaches a dead grpcio call spins in grpcio's finalizer for
    good. What these tests check is plexus in the child, so the children start clean."""
    gc.collect()


def in_child(body) -> None:
    """Runs body() in a forked child; fails the test with the child's traceback if it
    raises or dies."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_fd)
        code = 0
        try:
            body()
        except BaseException:
            os.write(write_fd, traceback.format_exc().encode())
            code = 1
        finally:
            os.close(write_fd)
            os._exit(code)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as pipe:
        report = pipe.read().decode()
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status), f"the child died: status {status}\n{report}"
    assert os.WEXITSTATUS(status) == 0, f"the child failed:\n{report}"


def calls_work(target: str) -> None:
    """Sync and aio calls of every kind on new channels."""
    with plexus.insecure_channel(target) as channel:
        stub = echo_pb2_grpc.EchoStub(channel)
        assert stub.Unary(Req(message="child"), timeout=WAIT).message == "child"
        assert [r.index for r in stub.ServerStream(Req(count=3), timeout=WAIT)] == [0, 1, 2]
        assert stub.ClientStream(iter([Req(message="a")]), timeout=WAIT).message == "a"
        assert stub.Unary.future(Req(message="f"), timeout=WAIT).result(WAIT).message == "f"

    async def aio() -> None:
        async with plexus.aio.insecure_channel(target) as channel:
            stub = echo_pb2_grpc.EchoStub(channel)
            replies = await asyncio.gather(
                *(stub.Unary(Req(message=str(i)), timeout=WAIT) for i in range(20))
            )
            assert [r.message for r in replies] == [str(i) for i in range(20)]

    asyncio.run(aio())


def test_child_of_a_parent_that_never_called(target, stub_dir):
    # A fresh interpreter that imports plexus (the library loads) but makes no call before
    # forking: the child starts the runtime of the same copy.
    script = textwrap.dedent(
        f"""
        import os, sys
        sys.path[:0] = [{stub_dir!r}, {str(HERE)!r}]
        import plexus, plexus._ffi
        from test_fork import in_child, calls_work
        lib = plexus._ffi.current()
        in_child(lambda: (calls_work({target!r}), assert_same(lib)))
        calls_work({target!r})  # the parent starts its runtime only now
        print("OK")
        """
    ).replace(
        "from test_fork import in_child, calls_work",
        "from test_fork import in_child, calls_work\n"
        "def assert_same(lib):\n"
        "    assert plexus._ffi.current() is lib, 'the child reloaded a library needlessly'\n",
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, timeout=WAIT * 4, check=False
    )
    assert proc.returncode == 0 and proc.stdout.strip().endswith(b"OK"), proc.stderr.decode()


def test_child_of_a_parent_that_made_calls(target):
    parent_lib = plexus._ffi.current()
    with plexus.insecure_channel(target) as channel:
        stub = echo_pb2_grpc.EchoStub(channel)
        assert stub.Unary(Req(message="before"), timeout=WAIT).message == "before"

        def child() -> None:
            # The runtime had started here: the child runs on a fresh copy of the library.
            assert plexus._ffi.current() is not parent_lib
            assert plexus._ffi.current().generation == parent_lib.generation + 1
            calls_work(target)
            # The parent's channel belongs to the copy that cannot run here: a clear error.
            with pytest.raises(plexus.ForkedError, match="create a new channel in the child"):
                stub.Unary(Req(), timeout=WAIT)

        in_child(child)
        # The parent is unaffected.
        assert stub.Unary(Req(message="after"), timeout=WAIT).message == "after"
        assert plexus._ffi.current() is parent_lib


def test_no_garbage_collection_while_the_child_loads_its_copy(target, stub_dir):
    """A collection inside plexus's fork handler would finalize other libraries' objects
    before their own fork handlers ran (grpcio's then spin forever: seen as a hung grandchild
    in test_grandchild): the handler keeps the collector off while it works and turns it back
    on after."""
    script = textwrap.dedent(
        f"""
        import gc, os, sys
        sys.path[:0] = [{stub_dir!r}, {str(HERE)!r}]
        import plexus, plexus._ffi
        from test_fork import calls_work
        calls_work({target!r})  # the runtime starts: the child will load a fresh copy
        seen = []
        keep_or_reload = plexus._ffi._keep_or_reload

        def watched():
            seen.append(gc.isenabled())
            keep_or_reload()

        plexus._ffi._keep_or_reload = watched
        gc.enable()
        pid = os.fork()
        if pid == 0:
            reloaded = plexus._ffi.current().generation == 1
            os._exit(0 if seen == [False] and gc.isenabled() and reloaded else 1)
        _, status = os.waitpid(pid, 0)
        print("OK" if os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0 else "FAILED")
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, timeout=WAIT * 4, check=False
    )
    assert proc.returncode == 0, proc.stderr.decode()
    assert proc.stdout.strip() == b"OK", proc.stdout.decode() + proc.stderr.decode()


def test_fork_while_another_thread_is_in_a_call(target):
    import threading

    with plexus.insecure_channel(target) as channel:
        stub = echo_pb2_grpc.EchoStub(channel)
        responses = stub.ServerStream(Req(count=2, delay_ms=60_000), timeout=WAIT)
        assert next(responses).index == 0
        reader = threading.Thread(target=_drain, args=(responses,))
        reader.start()
        in_child(lambda: calls_work(target))
        responses.cancel()
        reader.join(WAIT)
        assert not reader.is_alive()


def _drain(responses) -> None:
    try:
        for _ in responses:
            pass
    except Exception:
        pass


def test_grandchild(target):
    with plexus.insecure_channel(target) as channel:
        echo_pb2_grpc.EchoStub(channel).Unary(Req(), timeout=WAIT)

    def child() -> None:
        calls_work(target)  # starts the runtime of the child's fresh copy
        in_child(lambda: calls_work(target))  # which the grandchild replaces in turn

    in_child(child)


def _pool_call(target: str) -> str:
    with plexus.insecure_channel(target) as channel:
        return (
            echo_pb2_grpc.EchoStub(channel)
            .Unary(Req(message=str(os.getpid())), timeout=WAIT)
            .message
        )


def test_multiprocessing_fork_pool(target):
    with plexus.insecure_channel(target) as channel:
        echo_pb2_grpc.EchoStub(channel).Unary(Req(), timeout=WAIT)
    context = multiprocessing.get_context("fork")
    with context.Pool(2) as pool:
        pids = pool.map(_pool_call, [target] * 4, chunksize=1)
    assert all(int(p) != os.getpid() for p in pids)
