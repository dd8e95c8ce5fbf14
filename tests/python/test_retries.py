"""The service config's retry policy against a grpcio server that fails the first attempts of
a call: grpcio's client and plexus's from Python, from Rust (plexus-peer call) and from C
(retry_client.c, compiled here against include/plexus.h), given the same config, must make
the same attempts, with the same grpc-previous-rpc-attempts on each."""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
from concurrent import futures

import grpc
import pytest
from conftest import HERE, ROOT, _peer_binary, wait_until

import plexus
from plexus import _ffi

SERVICE = "retry.Flaky"
METHOD = f"/{SERVICE}/Unary"


class Flaky:
    """Fails the first `x-fail` attempts of each `x-key`; remembers every attempt's
    grpc-previous-rpc-attempts."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.seen: dict[str, list[int]] = {}

    def unary(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        md = dict(context.invocation_metadata())
        key = md.get("x-key", "")
        with self.lock:
            attempts = self.seen.setdefault(key, [])
            attempts.append(int(md.get("grpc-previous-rpc-attempts", "0")))
            attempt = len(attempts)
        if attempt <= int(md.get("x-fail", "0")):
            code = grpc.StatusCode[md.get("x-code", "UNAVAILABLE")]
            if "x-pushback" in md:
                context.set_trailing_metadata((("grpc-retry-pushback-ms", md["x-pushback"]),))
            context.abort(code, f"attempt {attempt} fails")
        return request

    def stall_first(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        """The first attempt waits until cancelled (and records that); later ones answer."""
        md = dict(context.invocation_metadata())
        key = md.get("x-key", "")
        previous = int(md.get("grpc-previous-rpc-attempts", "0"))
        with self.lock:
            self.seen.setdefault(key, []).append(previous)
        if previous == 0:
            done = threading.Event()
            context.add_callback(done.set)
            done.wait()
            with self.lock:
                self.seen.setdefault(key + "/cancelled", []).append(previous)
            return b""
        return f"attempt {previous}".encode()

    def hang(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        done = threading.Event()
        context.add_callback(done.set)
        done.wait()
        return request

    def attempts(self, key: str) -> list[int]:
        with self.lock:
            return list(self.seen.get(key, []))


@pytest.fixture(scope="module")
def flaky():
    service = Flaky()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    handler = grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "Unary": grpc.unary_unary_rpc_method_handler(service.unary),
            "Hang": grpc.unary_unary_rpc_method_handler(service.hang),
            "StallFirst": grpc.unary_unary_rpc_method_handler(service.stall_first),
        },
    )
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield service, f"127.0.0.1:{port}"
    server.stop(None)


CONFIG = """{
  "methodConfig": [{
    "name": [{"service": "retry.Flaky"}],
    "retryPolicy": {
      "maxAttempts": 4,
      "initialBackoff": "0.01s",
      "maxBackoff": "0.05s",
      "backoffMultiplier": 2,
      "retryableStatusCodes": ["UNAVAILABLE"]
    }
  }]
}"""


def _call(channel, key: str, fail: int, code: str = "UNAVAILABLE"):
    call = channel.unary_unary(METHOD)
    metadata = (("x-key", key), ("x-fail", str(fail)), ("x-code", code))
    return call(b"ping", metadata=metadata, timeout=30)


CLIENTS = {
    "plexus": lambda target, options: plexus.insecure_channel(target, options=options),
    "grpcio": lambda target, options: grpc.insecure_channel(target, options=options),
}


@pytest.fixture(scope="module")
def c_client(tmp_path_factory) -> str:
    """retry_client.c built against the library the package loads."""
    compiler = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if compiler is None:
        pytest.fail("no C compiler (cc) to build retry_client.c", pytrace=False)
    library = _ffi._source_path
    out = str(tmp_path_factory.mktemp("c") / "retry_client")
    libdir = os.path.dirname(library)
    # Link the exact file the package loads (it may be named other than libplexus.so).
    subprocess.run(
        [compiler, "-std=c11", "-Wall", "-Werror", "-o", out, str(HERE / "retry_client.c"),
         f"-I{ROOT / 'include'}", library, f"-Wl,-rpath,{libdir}"],
        check=True,
    )
    return out


def _outside_call(cmd: list[str]) -> str:
    """Runs a client process; the code name it printed."""
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, (cmd, done.stdout, done.stderr)
    lines = [line for line in done.stdout.splitlines() if line.startswith("STATUS ")]
    assert len(lines) == 1, done.stdout
    return lines[0].split()[1]


def _rust_call(
    target: str, enable: int, metadata: list[tuple[str, str]], config: str = CONFIG,
    method: str = METHOD,
) -> str:
    cmd = [_peer_binary(), "call", "--target", target, "--method", method,
           "--service-config", config, "--enable-retries", str(enable), "--timeout-ms", "30000"]
    for key, value in metadata:
        cmd += ["--metadata", f"{key}={value}"]
    return _outside_call(cmd)


def _c_call(
    binary: str, target: str, enable: int, metadata: list[tuple[str, str]], config: str = CONFIG,
    method: str = METHOD,
) -> str:
    cmd = [binary, target, method, config, str(enable)]
    for key, value in metadata:
        cmd += [key, value]
    return _outside_call(cmd)


@pytest.mark.parametrize("case", ["succeeds", "gives_up", "not_retryable", "disabled"])
def test_plexus_retries_as_grpcio_does(flaky, c_client, case):
    service, target = flaky
    fail, code, enable = {
        "succeeds": (2, "UNAVAILABLE", 1),
        "gives_up": (9, "UNAVAILABLE", 1),
        "not_retryable": (1, "INTERNAL", 1),
        "disabled": (1, "UNAVAILABLE", 0),
    }[case]
    options = [("grpc.service_config", CONFIG), ("grpc.enable_retries", enable)]
    outcomes = {}
    for name, make in CLIENTS.items():
        key = f"{case}-{name}"
        with make(target, options) as channel:
            try:
                _call(channel, key, fail, code)
                outcomes[name] = ("OK", service.attempts(key))
            except grpc.RpcError as err:
                outcomes[name] = (err.code().name, service.attempts(key))
    for name in ("rust", "c"):
        key = f"{case}-{name}"
        metadata = [("x-key", key), ("x-fail", str(fail)), ("x-code", code)]
        if name == "rust":
            result = _rust_call(target, enable, metadata)
        else:
            result = _c_call(c_client, target, enable, metadata)
        outcomes[name] = (result, service.attempts(key))
    for name in ("plexus", "rust", "c"):
        assert outcomes[name] == outcomes["grpcio"], outcomes
    expected_attempts = {
        "succeeds": [0, 1, 2],
        "gives_up": [0, 1, 2, 3],
        "not_retryable": [0],
        "disabled": [0],
    }[case]
    assert outcomes["plexus"][1] == expected_attempts


def test_a_malformed_service_config_names_the_field():
    bad = '{"methodConfig": [{"retryPolicy": {"maxAttempts": 1}}]}'
    with pytest.raises(plexus.InvalidArgumentError, match=r"retryPolicy\.maxAttempts"):
        plexus.insecure_channel("localhost:1", options=[("grpc.service_config", bad)])
    with pytest.raises(plexus.InvalidArgumentError, match="not JSON"):
        plexus.insecure_channel("localhost:1", service_config="{")


def test_the_config_timeout_applies(flaky):
    _, target = flaky
    config = '{"methodConfig": [{"name": [{"service": "retry.Flaky", "method": "Hang"}], "timeout": "0.2s"}]}'
    for name, make in CLIENTS.items():
        with make(target, [("grpc.service_config", config)]) as channel:
            with pytest.raises(grpc.RpcError) as info:
                channel.unary_unary(f"/{SERVICE}/Hang")(b"")
            assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED, name


def test_a_hedged_call_wins_over_a_stalled_attempt(flaky, c_client):
    """grpcio's own client does not hedge, so plexus's clients are checked against each other
    (Python, Rust, C): the second attempt answers, and the grpcio server sees the first one
    cancelled."""
    service, target = flaky
    config = """{"methodConfig": [{
        "name": [{"service": "retry.Flaky", "method": "StallFirst"}],
        "hedgingPolicy": {"maxAttempts": 3, "hedgingDelay": "0.05s"}
    }]}"""
    method = f"/{SERVICE}/StallFirst"
    with plexus.insecure_channel(target, options=[("grpc.service_config", config)]) as channel:
        reply = channel.unary_unary(method)(b"", metadata=(("x-key", "hedged"),), timeout=30)
    assert reply == b"attempt 1"
    results = {
        "rust": _rust_call(target, 1, [("x-key", "hedged-rust")], config, method),
        "c": _c_call(c_client, target, 1, [("x-key", "hedged-c")], config, method),
    }
    assert results == {"rust": "OK", "c": "OK"}
    for key in ("hedged", "hedged-rust", "hedged-c"):
        assert service.attempts(key) == [0, 1], key
        cancelled = wait_until(
            lambda key=key: service.attempts(f"{key}/cancelled"),
            what="the stalled attempt's cancel",
        )
        assert cancelled == [0], key


@pytest.mark.parametrize("pushback", ["-1", "1", "20", "not-a-number"])
def test_pushback_is_honoured_as_grpcio_does(flaky, pushback):
    """grpc-retry-pushback-ms: a negative value stops retries, a non-negative one sets the
    delay, a malformed one stops them (gRFC A6); plexus and grpcio must agree. (Not 0:
    grpcio 1.85 never makes the next attempt after a pushback of 0 and waits out the
    deadline; plexus retries at once, as A6 says.)"""
    service, target = flaky
    options = [("grpc.service_config", CONFIG)]
    outcomes = {}
    for name, make in CLIENTS.items():
        key = f"pushback-{pushback}-{name}"
        metadata = (("x-key", key), ("x-fail", "9"), ("x-pushback", pushback))
        with make(target, options) as channel:
            with pytest.raises(grpc.RpcError) as info:
                channel.unary_unary(METHOD)(b"ping", metadata=metadata, timeout=30)
        outcomes[name] = (info.value.code().name, service.attempts(key))
    assert outcomes["plexus"] == outcomes["grpcio"], outcomes
    expected = [0] if pushback in ("-1", "not-a-number") else [0, 1, 2, 3]
    assert outcomes["plexus"][1] == expected, outcomes


def test_throttling_stops_retries_as_grpcio_does(flaky):
    """retryThrottling: each failed attempt takes a token, each success gives back
    tokenRatio; retries stop while the tokens are at or below half of maxTokens. The same
    run of always-failing calls must make the same attempts on plexus and on grpcio."""
    service, target = flaky
    config = CONFIG.rstrip().rstrip("}") + ', "retryThrottling": {"maxTokens": 6, "tokenRatio": 0.5}}'
    options = [("grpc.service_config", config)]
    runs = {}
    for name, make in CLIENTS.items():
        attempts = []
        with make(target, options) as channel:
            for i in range(5):
                key = f"throttle-{name}-{i}"
                metadata = (("x-key", key), ("x-fail", "9"))
                with pytest.raises(grpc.RpcError):
                    channel.unary_unary(METHOD)(b"ping", metadata=metadata, timeout=30)
                attempts.append(len(service.attempts(key)))
        runs[name] = attempts
    assert runs["plexus"] == runs["grpcio"], runs
    # Six tokens: the first call's three failures leave three (half), so later calls get
    # one attempt each.
    assert runs["plexus"][0] > 1 and runs["plexus"][-1] == 1, runs
