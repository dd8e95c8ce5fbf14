"""gRPC health checking across implementations.

(a) grpcio-health-checking's client (its generated HealthStub) against plexus's
    interop-server, which serves grpc.health.v1.Health: Check, Watch, List, and
    NOT_SERVING to watchers when SIGTERM starts a graceful shutdown.
(b) plexus's generated HealthClient (`plexus-peer health`) against grpcio's own
    health server (grpc_health.v1.health.HealthServicer).

interop-server comes from PLEXUS_INTEROP_SERVER_BIN, or else sits beside the
plexus peer binary (PLEXUS_PEER_BIN) in the same cargo target directory. Every
RPC carries a deadline and every wait a timeout, so nothing hangs.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import tempfile
import threading
import time
from concurrent import futures
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from conftest import RPC_TIMEOUT, kill_process_group, plexus_bin

T = RPC_TIMEOUT
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
SERVICE_UNKNOWN = health_pb2.HealthCheckResponse.SERVICE_UNKNOWN
TEST_SERVICE = "grpc.testing.TestService"
INTEROP_ENV = "PLEXUS_INTEROP_SERVER_BIN"
# How long a process may take to start, to print a line we wait for, or to exit.
PROCESS_TIMEOUT = 30.0
_LISTENING = re.compile(r"^interop-server: listening on port (\d+)\b")


class Lines:
    """A child process's stdout, line by line, read on a thread so waits can time out."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.proc = proc
        self.seen: list[str] = []
        self._queue: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for raw in iter(self.proc.stdout.readline, b""):
            self._queue.put(raw.decode("utf-8", "replace").rstrip("\r\n"))
        self._queue.put(None)

    def next(self, what: str) -> str:
        """The next line; fails the test if none comes within PROCESS_TIMEOUT."""
        try:
            line = self._queue.get(timeout=PROCESS_TIMEOUT)
        except queue.Empty:
            pytest.fail(f"no line ({what}) within {PROCESS_TIMEOUT} s; so far: {self.seen}")
        if line is None:
            pytest.fail(f"the process ended (waiting for {what}); it printed: {self.seen}")
        self.seen.append(line)
        return line


# --------------------------------------------------------------------------- interop-server


def interop_server_bin() -> str:
    value = os.environ.get(INTEROP_ENV)
    path = Path(value) if value else Path(plexus_bin()).parent / "interop-server"
    if not path.is_file() or not os.access(path, os.X_OK):
        pytest.fail(
            f"no interop-server at {path}: build it (cargo build --release -p plexus-interop) "
            f"or set {INTEROP_ENV}",
            pytrace=False,
        )
    return str(path)


class InteropServer:
    """`interop-server --port=0` in its own process group, with its stderr kept for reports."""

    def __init__(self) -> None:
        self.stderr = tempfile.TemporaryFile()
        cmd = [interop_server_bin(), "--port=0"]
        self.proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            start_new_session=True,
        )
        self.lines = Lines(self.proc)
        first = self.lines.next("the listening line")
        match = _LISTENING.match(first)
        if not match:
            self.stop()
            pytest.fail(f"{cmd} printed {first!r}, not its port\n{self.output()}")
        self.address = f"localhost:{match.group(1)}"
        self.channel = grpc.insecure_channel(self.address)
        self.stub = health_pb2_grpc.HealthStub(self.channel)

    def output(self) -> str:
        self.stderr.seek(0)
        return self.stderr.read().decode("utf-8", "replace")

    def stop(self) -> None:
        if getattr(self, "channel", None) is not None:
            self.channel.close()
        kill_process_group(self.proc)


@pytest.fixture(scope="module")
def interop_server():
    server = InteropServer()
    yield server
    server.stop()


def check(stub, service: str):
    return stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=T).status


def test_check_reports_the_server_and_its_services_serving(interop_server):
    stub = interop_server.stub
    assert check(stub, "") == SERVING
    assert check(stub, TEST_SERVICE) == SERVING
    assert check(stub, "grpc.testing.BenchmarkService") == SERVING
    assert check(stub, "grpc.health.v1.Health") == SERVING


def test_check_unknown_service_is_not_found(interop_server):
    with pytest.raises(grpc.RpcError) as failure:
        check(interop_server.stub, "no.such.Service")
    assert failure.value.code() == grpc.StatusCode.NOT_FOUND, failure.value


def test_list_gives_every_status(interop_server):
    reply = interop_server.stub.List(health_pb2.HealthListRequest(), timeout=T)
    statuses = {name: response.status for name, response in reply.statuses.items()}
    assert statuses == {
        "": SERVING,
        TEST_SERVICE: SERVING,
        "grpc.testing.BenchmarkService": SERVING,
        "grpc.health.v1.Health": SERVING,
        "grpc.reflection.v1.ServerReflection": SERVING,
        "grpc.reflection.v1alpha.ServerReflection": SERVING,
    }


def test_watch_an_unknown_service_stays_open(interop_server):
    stream = interop_server.stub.Watch(
        health_pb2.HealthCheckRequest(service="no.such.Service"), timeout=T
    )
    assert next(stream).status == SERVICE_UNKNOWN
    stream.cancel()
    with pytest.raises(grpc.RpcError) as ended:
        next(stream)
    assert ended.value.code() == grpc.StatusCode.CANCELLED, ended.value


def test_watchers_see_not_serving_when_sigterm_starts_graceful_shutdown():
    server = InteropServer()
    try:
        streams = [
            server.stub.Watch(health_pb2.HealthCheckRequest(service=name), timeout=PROCESS_TIMEOUT)
            for name in ("", TEST_SERVICE)
        ]
        for stream in streams:
            assert next(stream).status == SERVING
        server.proc.send_signal(signal.SIGTERM)
        for stream in streams:
            assert next(stream).status == NOT_SERVING, server.output()
            # Then the server ends the stream, so the graceful shutdown need not wait for it.
            with pytest.raises(grpc.RpcError) as ended:
                next(stream)
            assert ended.value.code() == grpc.StatusCode.UNAVAILABLE, ended.value
        assert server.proc.wait(timeout=PROCESS_TIMEOUT) == 0, server.output()
    finally:
        server.stop()


# --------------------------------------------------------------------------- grpcio's server


@pytest.fixture
def grpcio_health():
    """grpcio's health server in-process on an OS-chosen port: (servicer, port)."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    servicer = health.HealthServicer(
        experimental_non_blocking=True,
        experimental_thread_pool=futures.ThreadPoolExecutor(max_workers=2),
    )
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield servicer, port
    server.stop(grace=None).wait(10)


def plexus_health(port: int, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [plexus_bin(), "health", "--target", f"127.0.0.1:{port}", *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )


def plexus_check(port: int, service: str) -> str:
    proc = plexus_health(port, "--service", service)
    try:
        out, err = proc.communicate(timeout=PROCESS_TIMEOUT)
    except subprocess.TimeoutExpired:
        kill_process_group(proc)
        pytest.fail(f"plexus-peer health did not finish within {PROCESS_TIMEOUT} s")
    assert proc.returncode == 0, err.decode(errors="replace")
    return out.decode().strip()


def test_plexus_client_checks_grpcio_health_server(grpcio_health):
    servicer, port = grpcio_health
    servicer.set("", SERVING)
    servicer.set("svc.A", NOT_SERVING)
    assert plexus_check(port, "") == "STATUS SERVING"
    assert plexus_check(port, "svc.A") == "STATUS NOT_SERVING"
    assert plexus_check(port, "no.Such").startswith("ERROR NotFound"), "unknown service"


def test_plexus_client_watches_grpcio_health_server(grpcio_health):
    servicer, port = grpcio_health
    proc = plexus_health(port, "--service", "svc.B", "--watch")
    try:
        lines = Lines(proc)
        assert lines.next("the first status") == "STATUS SERVICE_UNKNOWN"
        servicer.set("svc.B", SERVING)
        assert lines.next("SERVING") == "STATUS SERVING"
        # grpcio's graceful-shutdown switch: every service NOT_SERVING.
        servicer.enter_graceful_shutdown()
        assert lines.next("NOT_SERVING") == "STATUS NOT_SERVING"
        assert proc.poll() is None, "the watch ended by itself"
    finally:
        kill_process_group(proc)
