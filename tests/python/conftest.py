"""Fixtures for the tests of the plexus Python package (bindings/python).

* The grpcio-tools stubs for tests/peer/proto/echo.proto are generated at start-up into a
  temporary directory put on sys.path (removed at exit): echo_pb2 and echo_pb2_grpc.
* Two echo servers, each a subprocess started once per session: the Rust one
  (`plexus-peer server`, from $PLEXUS_PEER_BIN or target/release/plexus-peer) and the grpcio
  one (grpcio_server.py). The `server` fixture runs a test against each. A server that
  cannot start FAILS the tests that need it (never skips).
* The plexus package under test is whatever `import plexus` finds (scripts/test-python.sh
  installs it into the venv with pip).
"""

from __future__ import annotations

import asyncio
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
PROTO_DIR = ROOT / "tests" / "peer" / "proto"
STARTUP_TIMEOUT = 60.0
WAIT = 30.0  # generous bound for anything the tests wait on (a loaded 2-core machine)

_stub_dir: str | None = None


def _generate_stubs() -> str:
    from grpc_tools import protoc

    out = tempfile.mkdtemp(prefix="plexus-python-stubs-")
    include = Path(protoc.__file__).resolve().parent / "_proto"
    rc = protoc.main(
        [
            "grpc_tools.protoc",
            f"-I{PROTO_DIR}",
            f"-I{include}",
            f"--python_out={out}",
            f"--grpc_python_out={out}",
            str(PROTO_DIR / "echo.proto"),
        ]
    )
    if rc != 0:
        shutil.rmtree(out, ignore_errors=True)
        raise pytest.UsageError(f"grpc_tools.protoc failed (exit {rc}) on {PROTO_DIR}/echo.proto")
    return out


def pytest_configure(config):
    global _stub_dir
    _stub_dir = _generate_stubs()
    sys.path.insert(0, _stub_dir)
    if str(HERE) not in sys.path:
        sys.path.insert(0, str(HERE))


def pytest_unconfigure(config):
    if _stub_dir is not None:
        shutil.rmtree(_stub_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def stub_dir() -> str:
    return _stub_dir


# --------------------------------------------------------------------------- servers


class ServerProcess:
    """An echo server subprocess that prints `LISTENING <port>`; started on first use."""

    def __init__(self, name: str, cmd: list[str]) -> None:
        self.name = name
        self.cmd = cmd
        self.proc: subprocess.Popen | None = None
        self.port: int | None = None
        self.error: str | None = None
        self._err = tempfile.TemporaryFile()

    @property
    def target(self) -> str:
        if self.port is None and self.error is None:
            try:
                self._start()
            except RuntimeError as exc:
                self.error = str(exc)
                self.stop()
        if self.error is not None:
            pytest.fail(self.error, pytrace=False)
        if self.proc.poll() is not None:
            pytest.fail(f"the {self.name} server exited ({self.proc.returncode})\n{self.stderr()}")
        return f"127.0.0.1:{self.port}"

    def _start(self) -> None:
        try:
            self.proc = subprocess.Popen(
                self.cmd,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=self._err,
                start_new_session=True,
            )
        except OSError as exc:
            raise RuntimeError(f"cannot run the {self.name} server {self.cmd}: {exc}") from None
        lines: queue.Queue = queue.Queue()

        def read(stream) -> None:
            for raw in iter(stream.readline, b""):
                lines.put(raw.decode("utf-8", "replace").strip())
            lines.put(None)

        threading.Thread(target=read, args=(self.proc.stdout,), daemon=True).start()
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            try:
                line = lines.get(timeout=0.5)
            except queue.Empty:
                continue
            if line is None:
                raise RuntimeError(
                    f"the {self.name} server {self.cmd} exited before listening\n{self.stderr()}"
                )
            match = re.match(r"LISTENING (\d+)$", line)
            if match:
                self.port = int(match.group(1))
                return
        raise RuntimeError(f"the {self.name} server did not listen within {STARTUP_TIMEOUT} s")

    def stderr(self) -> str:
        self._err.seek(0)
        return self._err.read().decode("utf-8", "replace")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except OSError:
                self.proc.kill()
            self.proc.wait(timeout=10)


def _peer_binary() -> str:
    value = os.environ.get("PLEXUS_PEER_BIN") or str(ROOT / "target" / "release" / "plexus-peer")
    if not (os.path.isfile(value) and os.access(value, os.X_OK)):
        pytest.fail(
            f"no Rust echo server at {value}: build it (cargo build --release -p plexus-peer) "
            "or set PLEXUS_PEER_BIN",
            pytrace=False,
        )
    return value


@pytest.fixture(scope="session")
def plexus_server():
    server = ServerProcess("plexus", [_peer_binary(), "server", "--listen", "127.0.0.1:0"])
    yield server
    server.stop()


@pytest.fixture(scope="session")
def grpcio_server(stub_dir):
    cmd = [sys.executable, str(HERE / "grpcio_server.py"), "--stubs", stub_dir]
    server = ServerProcess("grpcio", cmd)
    yield server
    server.stop()


@pytest.fixture(params=["plexus", "grpcio"])
def server(request) -> ServerProcess:
    """Each test that takes `server` runs against the Rust and the grpcio echo server."""
    return request.getfixturevalue(f"{request.param}_server")


@pytest.fixture
def target(server) -> str:
    return server.target


@pytest.fixture
def channel(target):
    import plexus

    ch = plexus.insecure_channel(target)
    yield ch
    ch.close()


@pytest.fixture
def stub(channel):
    import echo_pb2_grpc

    return echo_pb2_grpc.EchoStub(channel)


# --------------------------------------------------------------------------- helpers


def run_async(coro, timeout: float = WAIT * 2):
    """Runs a coroutine on a fresh event loop, bounded by `timeout` seconds."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


def wait_until(predicate, timeout: float = WAIT, what: str = "condition"):
    """Polls `predicate` until it returns a truthy value (generous deadline)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


def nap_stats(channel) -> tuple[int, int]:
    """(naps started, naps cancelled) as the server reports them."""
    import echo_pb2

    call = channel.unary_unary(
        "/plexus.peer.Echo/NapStats",
        request_serializer=echo_pb2.EchoRequest.SerializeToString,
        response_deserializer=echo_pb2.EchoResponse.FromString,
    )
    started, cancelled = call(echo_pb2.EchoRequest(), timeout=WAIT).message.split(",")
    return int(started), int(cancelled)
