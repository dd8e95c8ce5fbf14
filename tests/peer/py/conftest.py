"""Fixtures for the grpcio <-> plexus peer tests.

At start-up the Python stubs for ../proto/echo.proto are generated with
grpc_tools.protoc into a temporary directory that is put on sys.path (and
removed at exit), so nothing generated lives in the source tree.

The plexus peer binary comes from the PLEXUS_PEER_BIN environment variable.
When it is unset or unusable every test that needs it FAILS (never skips) with
a message saying so.

TLS: `plexus-peer certs` writes a test CA and certificates into a temporary
directory once per session (the `tls_certs` fixture). The `*-tls` peers serve
with the server certificate (valid for localhost and *.test.google.fr, no IP
address), and their clients verify it against the test CA with the name
override foo.test.google.fr, as gRPC's interop client does.
"""

from __future__ import annotations

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
PROTO_DIR = HERE.parent / "proto"
PROTO_FILE = PROTO_DIR / "echo.proto"

PLEXUS_ENV = "PLEXUS_PEER_BIN"
PLEXUS_STARTUP_TIMEOUT = 30.0
RPC_TIMEOUT = 10.0
# The name the test server certificate covers and TLS clients verify (it has no IP address).
TLS_SERVER_NAME = "foo.test.google.fr"
_LISTENING = re.compile(r"^LISTENING (\d+)\s*$")

_stub_dir: str | None = None


def _generate_stubs() -> None:
    global _stub_dir
    if _stub_dir is not None:
        return
    from grpc_tools import protoc

    out_dir = tempfile.mkdtemp(prefix="plexus-peer-stubs-")
    include = Path(protoc.__file__).resolve().parent / "_proto"
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_DIR}",
        f"-I{include}",
        f"--python_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        str(PROTO_FILE),
    ]
    rc = protoc.main(args)
    if rc != 0:
        shutil.rmtree(out_dir, ignore_errors=True)
        raise pytest.UsageError(f"grpc_tools.protoc failed (exit {rc}) compiling {PROTO_FILE}")
    _stub_dir = out_dir
    sys.path.insert(0, out_dir)
    if str(HERE) not in sys.path:
        sys.path.insert(0, str(HERE))


def pytest_configure(config):
    _generate_stubs()


def pytest_unconfigure(config):
    global _stub_dir
    if _stub_dir is not None:
        shutil.rmtree(_stub_dir, ignore_errors=True)
        _stub_dir = None


# --------------------------------------------------------------------------- plexus binary


def plexus_bin() -> str:
    """Path of the plexus peer binary, or fail the current test explaining why not."""
    value = os.environ.get(PLEXUS_ENV)
    if not value:
        pytest.fail(
            f"{PLEXUS_ENV} is not set: build the plexus peer binary (tests/peer) and export "
            f"{PLEXUS_ENV}=/path/to/it to run the plexus cases",
            pytrace=False,
        )
    path = Path(value)
    if not path.is_file() or not os.access(path, os.X_OK):
        pytest.fail(f"{PLEXUS_ENV}={value!r} is not an executable file", pytrace=False)
    return str(path)


class PlexusServer:
    """`$PLEXUS_PEER_BIN server --listen 127.0.0.1:0 [extra args]`, started on first use.

    A start-up failure is remembered so later tests fail at once instead of
    waiting for the start-up timeout again. `extra` is a callable returning more
    arguments (called at start, so fixtures it needs resolve inside the test).
    """

    def __init__(self, extra=None) -> None:
        self.extra = extra
        self.proc: subprocess.Popen | None = None
        self.port: int | None = None
        self.error: str | None = None
        self.stdout_lines: list[str] = []
        self._stderr = tempfile.TemporaryFile(mode="w+b")

    def address(self) -> str:
        if self.error is None and self.port is None:
            try:
                self._spawn()
            except _StartFailure as failure:
                self.error = str(failure)
                self.stop()
        if self.error is not None:
            pytest.fail(self.error, pytrace=False)
        if self.proc is not None and self.proc.poll() is not None:
            pytest.fail(
                f"the plexus server is gone (exit code {self.proc.returncode})\n{self.output()}",
                pytrace=False,
            )
        return f"127.0.0.1:{self.port}"

    def _spawn(self) -> None:
        binary = plexus_bin()
        cmd = [binary, "server", "--listen", "127.0.0.1:0"]
        if self.extra is not None:
            cmd += self.extra()
        try:
            self.proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=self._stderr,
                start_new_session=True,  # its own process group, so stop() reaches any children
            )
        except OSError as exc:
            raise _StartFailure(f"could not run {cmd}: {exc}") from None
        lines: queue.Queue = queue.Queue()

        def reader(stream) -> None:
            for raw in iter(stream.readline, b""):
                line = raw.decode("utf-8", "replace").rstrip("\r\n")
                self.stdout_lines.append(line)
                lines.put(line)
            lines.put(None)

        threading.Thread(target=reader, args=(self.proc.stdout,), daemon=True).start()
        deadline = time.monotonic() + PLEXUS_STARTUP_TIMEOUT
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise _StartFailure(
                    f"{cmd} did not print 'LISTENING <port>' within "
                    f"{PLEXUS_STARTUP_TIMEOUT:.0f} s\n{self.output()}"
                )
            try:
                line = lines.get(timeout=min(left, 0.5))
            except queue.Empty:
                continue
            if line is None:
                self.proc.wait(timeout=5)
                raise _StartFailure(
                    f"{cmd} exited with code {self.proc.returncode} before printing "
                    f"'LISTENING <port>'\n{self.output()}"
                )
            match = _LISTENING.match(line)
            if match:
                self.port = int(match.group(1))
                return

    def output(self) -> str:
        self._stderr.flush()
        self._stderr.seek(0)
        err = self._stderr.read().decode("utf-8", "replace")
        self._stderr.seek(0, os.SEEK_END)
        out = "\n".join(self.stdout_lines)
        return f"--- plexus server stdout ---\n{out}\n--- plexus server stderr ---\n{err}"

    def stop(self) -> None:
        if self.proc is not None:
            kill_process_group(self.proc)


def kill_process_group(proc: subprocess.Popen) -> None:
    """SIGKILL a child started with start_new_session=True, and its process group."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            proc.kill()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass


class _StartFailure(Exception):
    pass


# --------------------------------------------------------------------------- peers and clients


class TlsCerts:
    """The files `plexus-peer certs --out DIR` wrote."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory

    def path(self, name: str) -> str:
        return str(self.dir / name)

    def read(self, name: str) -> bytes:
        return (self.dir / name).read_bytes()

    def client_credentials(self, cert: str | None = None):
        """grpcio channel credentials trusting the test CA, with `cert`.pem/.key if given."""
        import grpc

        key_pair = {}
        if cert is not None:
            key_pair = {
                "private_key": self.read(f"{cert}.key"),
                "certificate_chain": self.read(f"{cert}.pem"),
            }
        return grpc.ssl_channel_credentials(root_certificates=self.read("ca.pem"), **key_pair)


def secure_channel(address: str, credentials):
    """A grpcio TLS channel verifying the server as TLS_SERVER_NAME."""
    import grpc

    return grpc.secure_channel(
        address, credentials, options=[("grpc.ssl_target_name_override", TLS_SERVER_NAME)]
    )


class Peer:
    """A server under test: `name` is "grpcio" or "plexus", with "-tls" when it
    serves TLS (then `tls` holds the certificates its clients trust)."""

    def __init__(self, name: str, address_fn, tls: TlsCerts | None = None) -> None:
        self.name = name
        self.tls = tls
        self._address_fn = address_fn

    def address(self) -> str:
        return self._address_fn()


class Client:
    """A grpcio channel + stub to one peer, created on first use (inside the test body,
    so a missing plexus binary is a test FAILURE rather than a setup error)."""

    def __init__(self, peer: Peer) -> None:
        self.peer = peer
        self._channel = None
        self._stub = None

    @property
    def channel(self):
        if self._channel is None:
            import grpc

            if self.peer.tls is None:
                self._channel = grpc.insecure_channel(self.peer.address())
            else:
                credentials = self.peer.tls.client_credentials()
                self._channel = secure_channel(self.peer.address(), credentials)
            try:
                grpc.channel_ready_future(self._channel).result(timeout=RPC_TIMEOUT)
            except grpc.FutureTimeoutError:
                pytest.fail(
                    f"could not connect to the {self.peer.name} server at "
                    f"{self.peer.address()} within {RPC_TIMEOUT} s",
                    pytrace=False,
                )
        return self._channel

    @property
    def stub(self):
        if self._stub is None:
            import echo_pb2_grpc

            self._stub = echo_pb2_grpc.EchoStub(self.channel)
        return self._stub

    def close(self) -> None:
        if self._channel is not None:
            self._channel.close()
            self._channel = None
            self._stub = None


@pytest.fixture(scope="session")
def grpcio_server():
    """The grpcio echo server, in-process on an OS-chosen port; yields the port."""
    import echo_server

    server, port = echo_server.start(0)
    yield port
    server.stop(grace=None).wait(10)


@pytest.fixture(scope="session")
def tls_certs():
    """A test CA and certificates from `plexus-peer certs`, in a temporary directory."""
    directory = Path(tempfile.mkdtemp(prefix="plexus-peer-certs-"))
    try:
        cmd = [plexus_bin(), "certs", "--out", str(directory)]
        done = subprocess.run(cmd, capture_output=True, timeout=60, stdin=subprocess.DEVNULL)
        if done.returncode != 0:
            pytest.fail(
                f"{cmd} failed (exit {done.returncode}): {done.stderr.decode(errors='replace')}",
                pytrace=False,
            )
        yield TlsCerts(directory)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="session")
def grpcio_tls_server(tls_certs):
    """The grpcio echo server over TLS (the test server certificate); yields the port."""
    import grpc

    import echo_server

    credentials = grpc.ssl_server_credentials(
        [(tls_certs.read("server.key"), tls_certs.read("server.pem"))]
    )
    server, port = echo_server.start(0, credentials=credentials)
    yield port
    server.stop(grace=None).wait(10)


_plexus: list[PlexusServer] = []


def _plexus_fixture(extra=None):
    server = PlexusServer(extra)
    _plexus.append(server)
    try:
        yield server
    finally:
        server.stop()
        _plexus.remove(server)


@pytest.fixture(scope="session")
def plexus_server():
    yield from _plexus_fixture()


@pytest.fixture(scope="session")
def plexus_tls_server(tls_certs):
    """The plexus echo server over TLS, not asking for client certificates."""
    yield from _plexus_fixture(
        lambda: ["--tls-cert", tls_certs.path("server.pem"), "--tls-key", tls_certs.path("server.key")]
    )


@pytest.fixture(scope="session")
def plexus_mtls_server(tls_certs):
    """The plexus echo server over TLS, requiring client certificates from the test CA."""
    yield from _plexus_fixture(
        lambda: [
            "--tls-cert",
            tls_certs.path("server.pem"),
            "--tls-key",
            tls_certs.path("server.key"),
            "--client-ca",
            tls_certs.path("ca.pem"),
        ]
    )


@pytest.fixture(scope="session", params=["grpcio", "plexus", "grpcio-tls", "plexus-tls"])
def peer(request):
    if request.param == "grpcio":
        port = request.getfixturevalue("grpcio_server")
        return Peer("grpcio", lambda: f"127.0.0.1:{port}")
    if request.param == "grpcio-tls":
        port = request.getfixturevalue("grpcio_tls_server")
        tls = request.getfixturevalue("tls_certs")
        return Peer("grpcio-tls", lambda: f"127.0.0.1:{port}", tls)
    if request.param == "plexus-tls":
        server = request.getfixturevalue("plexus_tls_server")
        tls = request.getfixturevalue("tls_certs")
        return Peer("plexus-tls", server.address, tls)
    server = request.getfixturevalue("plexus_server")
    return Peer("plexus", server.address)


@pytest.fixture
def client(peer):
    c = Client(peer)
    yield c
    c.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """On a failed plexus-server test, attach the plexus server's output to the report."""
    outcome = yield
    report = outcome.get_result()
    if report.when != "call" or not report.failed:
        return
    peer = getattr(item, "funcargs", {}).get("peer")
    if (
        getattr(peer, "name", "").startswith("plexus")
        and "--- plexus server stderr ---" not in report.longreprtext
    ):
        for server in _plexus:
            if server.port is not None:
                report.sections.append(("plexus server output", server.output()))
