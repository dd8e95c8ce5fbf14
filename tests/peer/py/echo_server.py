"""grpcio implementation of plexus.peer.Echo (tests/peer/proto/echo.proto).

The plexus peer server (tests/peer/src) implements the same semantics, so the
same client tests run against both. Semantics, for every method:

* Each request metadata entry whose key starts with ``x-echo-`` (ASCII keys and
  ``-bin`` keys alike) is sent back in the initial metadata, same key and value.
* A request header ``x-response-compression: gzip`` (or ``deflate``) makes the
  server compress its response messages with that algorithm. Compressed
  requests are accepted in either algorithm.
* Trailing metadata always holds ``x-trailer: done`` and
  ``x-trailer-bin: b"\\xfe\\x00\\x01"``. When a call ends with a non-OK status
  it also holds ``grpc-status-details-bin: b"details:" + status_message``.

* Unary: sleep ``delay_ms`` (returning early if the call is no longer active),
  then fail with ``status_code``/``status_message`` if ``status_code`` is
  non-zero, else answer ``(message, index=0, payload)``.
* ServerStream: ``count`` answers ``(message, index=i, payload)`` with
  ``delay_ms`` between consecutive answers (not before the first), then the
  status if ``status_code`` is non-zero.
* ClientStream: read every request, then answer
  ``(",".join(messages), index=len(requests), b"".join(payloads))``; if any
  request had a non-zero ``status_code`` the call instead fails, after all
  requests have been read, with the status of the first such request.
* Bidi: answer each request as it arrives with ``(message, index=i, payload)``;
  a request with a non-zero ``status_code`` gets no answer and ends the call
  with its status at once.

Usable in-process (``start(port=0) -> (server, port)``) or standalone
(``python echo_server.py --port N`` prints ``LISTENING <port>`` once serving).
"""

from __future__ import annotations

import argparse
import importlib
import shutil
import signal
import sys
import tempfile
import threading
import time
from concurrent import futures
from pathlib import Path

import grpc

PROTO_DIR = Path(__file__).resolve().parent.parent / "proto"
PROTO_FILE = PROTO_DIR / "echo.proto"

ECHO_PREFIX = "x-echo-"
TRAILERS = (("x-trailer", "done"), ("x-trailer-bin", b"\xfe\x00\x01"))
DETAILS_KEY = "grpc-status-details-bin"

_CODES = {code.value[0]: code for code in grpc.StatusCode}


def generate_stubs(out_dir: str | Path) -> None:
    """Compile echo.proto into ``echo_pb2.py`` and ``echo_pb2_grpc.py`` in out_dir."""
    from grpc_tools import protoc

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
        raise RuntimeError(f"grpc_tools.protoc failed with exit code {rc}: {args}")


def load_stubs():
    """Return (echo_pb2, echo_pb2_grpc), generating them into a temp dir if needed."""
    try:
        return importlib.import_module("echo_pb2"), importlib.import_module("echo_pb2_grpc")
    except ImportError:
        pass
    # Standalone run: generate, import, and delete the files right away (the modules stay
    # loaded), so nothing is left behind even if the process is SIGKILLed later.
    out_dir = tempfile.mkdtemp(prefix="plexus-peer-stubs-")
    try:
        generate_stubs(out_dir)
        sys.path.insert(0, out_dir)
        importlib.invalidate_caches()
        return importlib.import_module("echo_pb2"), importlib.import_module("echo_pb2_grpc")
    finally:
        sys.path.remove(out_dir)
        shutil.rmtree(out_dir, ignore_errors=True)


pb2, pb2_grpc = load_stubs()


def _echoed_metadata(context) -> tuple:
    return tuple(
        (key, value)
        for key, value in (context.invocation_metadata() or ())
        if key.startswith(ECHO_PREFIX)
    )


_COMPRESSION = {"gzip": grpc.Compression.Gzip, "deflate": grpc.Compression.Deflate}


def _begin(context) -> None:
    """Apply x-response-compression, send the echoed initial metadata and arm the fixed
    trailers."""
    for key, value in context.invocation_metadata() or ():
        if key == "x-response-compression":
            # Must precede the initial metadata: C-core picks the algorithm when it sends them.
            context.set_compression(_COMPRESSION[value])
    context.send_initial_metadata(_echoed_metadata(context))
    context.set_trailing_metadata(TRAILERS)


def _fail(context, status_code: int, status_message: str):
    """End the call with the given status (raises, like context.abort)."""
    context.set_trailing_metadata(
        TRAILERS + ((DETAILS_KEY, b"details:" + status_message.encode("utf-8")),)
    )
    context.abort(_CODES.get(status_code, grpc.StatusCode.UNKNOWN), status_message)


def _sleep_while_active(context, delay_ms: int) -> bool:
    """Sleep delay_ms; return False early if the call stops being active."""
    deadline = time.monotonic() + delay_ms / 1000.0
    while True:
        if not context.is_active():
            return False
        left = deadline - time.monotonic()
        if left <= 0:
            return True
        time.sleep(min(left, 0.01))


class EchoServicer(pb2_grpc.EchoServicer):
    def Unary(self, request, context):
        _begin(context)
        if request.delay_ms > 0 and not _sleep_while_active(context, request.delay_ms):
            return pb2.EchoResponse()
        if request.status_code != 0:
            _fail(context, request.status_code, request.status_message)
        return pb2.EchoResponse(message=request.message, index=0, payload=request.payload)

    def ServerStream(self, request, context):
        _begin(context)
        for i in range(request.count):
            if i > 0 and request.delay_ms > 0:
                if not _sleep_while_active(context, request.delay_ms):
                    return
            if not context.is_active():
                return
            yield pb2.EchoResponse(message=request.message, index=i, payload=request.payload)
        if request.status_code != 0:
            _fail(context, request.status_code, request.status_message)

    def ClientStream(self, request_iterator, context):
        _begin(context)
        messages, payloads, failure = [], [], None
        for request in request_iterator:
            messages.append(request.message)
            payloads.append(request.payload)
            if request.status_code != 0 and failure is None:
                failure = (request.status_code, request.status_message)
        if failure is not None:
            _fail(context, *failure)
        return pb2.EchoResponse(
            message=",".join(messages), index=len(messages), payload=b"".join(payloads)
        )

    def Bidi(self, request_iterator, context):
        _begin(context)
        for i, request in enumerate(request_iterator):
            if request.status_code != 0:
                _fail(context, request.status_code, request.status_message)
            yield pb2.EchoResponse(message=request.message, index=i, payload=request.payload)


def start(port: int = 0, host: str = "127.0.0.1", max_workers: int = 64, credentials=None):
    """Start a server (over TLS with `credentials`, grpc.ssl_server_credentials);
    returns (server, bound_port). Stop it with server.stop(grace)."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=max_workers))
    pb2_grpc.add_EchoServicer_to_server(EchoServicer(), server)
    if credentials is None:
        bound = server.add_insecure_port(f"{host}:{port}")
    else:
        bound = server.add_secure_port(f"{host}:{port}", credentials)
    if bound == 0:
        raise RuntimeError(f"could not bind {host}:{port}")
    server.start()
    return server, bound


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args(argv)

    server, port = start(args.port, args.host)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    print(f"LISTENING {port}", flush=True)
    while not stop.wait(0.5):
        pass
    server.stop(grace=1).wait(5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
