"""A grpcio interop server: grpc.testing.TestService and BenchmarkService, written for plexus's
interop matrix from the public interop test description (grpcio's own interop server is not
in its wheel).

    python interop_server.py --port=PORT [--use_tls=true --tls_cert_file=F --tls_key_file=F]
                             [--server_impl=grpcio|plexus]

--server_impl=plexus serves the same servicers, unchanged, on plexus.server (the plexus
package from the repo's bindings/python when it is not installed; $PLEXUS_LIBRARY names the
libplexus to load). Prints "interop_server.py: listening on port N" once serving (--port=0 picks a free port) and
serves until killed.

CompressedRequest is not implemented: a grpcio servicer cannot see whether a request arrived
compressed (neither the message flag nor the grpc-encoding header reaches it), so
expect_compressed is ignored and the client_compressed_* probes against this server cannot
pass. CompressedResponse is: grpcio compresses a whole call and can skip single messages.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from concurrent import futures
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import grpc  # noqa: E402

import flags  # noqa: E402
import stubs  # noqa: E402

stubs.load()

import benchmark_service_pb2_grpc  # noqa: E402
import empty_pb2  # noqa: E402
import messages_pb2  # noqa: E402
import test_pb2_grpc  # noqa: E402

ECHO_INITIAL = "x-grpc-test-echo-initial"
ECHO_TRAILING = "x-grpc-test-echo-trailing-bin"
CODES = {code.value[0]: code for code in grpc.StatusCode}


def _echo(context) -> None:
    """Echo Metadata: the initial key back in the headers, the trailing key in the trailers."""
    metadata = context.invocation_metadata()
    initial = [(k, v) for k, v in metadata if k == ECHO_INITIAL]
    trailing = [(k, v) for k, v in metadata if k == ECHO_TRAILING]
    if initial:
        context.send_initial_metadata(initial)
    if trailing:
        context.set_trailing_metadata(trailing)


def _echo_status(status, context) -> None:
    """Echo Status: ends the call with the requested status (code 0 means none)."""
    if status.code != 0:
        code = CODES.get(status.code, grpc.StatusCode.UNKNOWN)
        context.abort(code, status.message)


def _payload(size: int, context):
    if size < 0:
        context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"response size {size} is negative")
    return messages_pb2.Payload(type=messages_pb2.COMPRESSABLE, body=b"\0" * size)


def _check_type(response_type: int, context) -> None:
    if response_type != messages_pb2.COMPRESSABLE:
        context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"unsupported response_type {response_type}")


def _pause(interval_us: int, context) -> None:
    if interval_us > 0:
        deadline = time.monotonic() + interval_us / 1e6
        while context.is_active() and time.monotonic() < deadline:
            time.sleep(min(0.01, max(0.0, deadline - time.monotonic())))


def _stream_responses(request, context):
    """The responses one StreamingOutputCallRequest asks for."""
    _check_type(request.response_type, context)
    for params in request.response_parameters:
        _pause(params.interval_us, context)
        if params.HasField("compressed") and not params.compressed.value:
            context.disable_next_message_compression()
        yield messages_pb2.StreamingOutputCallResponse(payload=_payload(params.size, context))


def _stream_compression(requests, context) -> None:
    """Compress the call when any response asks for it (others then opt out one by one)."""
    if any(p.HasField("compressed") and p.compressed.value for r in requests for p in r.response_parameters):
        context.set_compression(grpc.Compression.Gzip)


class TestService(test_pb2_grpc.TestServiceServicer):
    """grpc.testing.TestService; UnimplementedCall is left to the base class (UNIMPLEMENTED)."""

    def EmptyCall(self, request, context):
        _echo(context)
        return empty_pb2.Empty()

    def UnaryCall(self, request, context):
        _echo(context)
        if request.HasField("response_status"):
            _echo_status(request.response_status, context)
        _check_type(request.response_type, context)
        if request.HasField("response_compressed"):
            context.set_compression(
                grpc.Compression.Gzip if request.response_compressed.value else grpc.Compression.NoCompression
            )
        return messages_pb2.SimpleResponse(payload=_payload(request.response_size, context))

    def CacheableUnaryCall(self, request, context):
        _echo(context)
        context.send_initial_metadata([("cache-control", "public, max-age=60")])
        body = str(time.time_ns()).encode()
        return messages_pb2.SimpleResponse(payload=messages_pb2.Payload(body=body))

    def StreamingOutputCall(self, request, context):
        _echo(context)
        if request.HasField("response_status"):
            _echo_status(request.response_status, context)
        _stream_compression([request], context)
        yield from _stream_responses(request, context)

    def StreamingInputCall(self, request_iterator, context):
        _echo(context)
        total = 0
        for request in request_iterator:
            total += len(request.payload.body)
        return messages_pb2.StreamingInputCallResponse(aggregated_payload_size=total)

    def FullDuplexCall(self, request_iterator, context):
        _echo(context)
        for request in request_iterator:
            if request.HasField("response_status"):
                _echo_status(request.response_status, context)
            yield from _stream_responses(request, context)

    def HalfDuplexCall(self, request_iterator, context):
        _echo(context)
        requests = list(request_iterator)
        _stream_compression(requests, context)
        for request in requests:
            if request.HasField("response_status"):
                _echo_status(request.response_status, context)
            yield from _stream_responses(request, context)


class BenchmarkService(benchmark_service_pb2_grpc.BenchmarkServiceServicer):
    """grpc.testing.BenchmarkService: the two methods gRPC's benchmark clients use."""

    def UnaryCall(self, request, context):
        return messages_pb2.SimpleResponse(payload=_payload(request.response_size, context))

    def StreamingCall(self, request_iterator, context):
        for request in request_iterator:
            yield messages_pb2.SimpleResponse(payload=_payload(request.response_size, context))


def _server_factory(impl: str):
    """grpc.server, or plexus.server for --server_impl=plexus."""
    if impl == "grpcio":
        return grpc.server
    try:
        import plexus
    except ImportError:
        sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "bindings" / "python"))
        import plexus
    return plexus.server


def start(port: int, tls: tuple[bytes, bytes] | None = None, impl: str = "grpcio"):
    """Starts the server on [::]:port; returns (server, bound port)."""
    make = _server_factory(impl)
    server = make(futures.ThreadPoolExecutor(max_workers=64))
    test_pb2_grpc.add_TestServiceServicer_to_server(TestService(), server)
    benchmark_service_pb2_grpc.add_BenchmarkServiceServicer_to_server(BenchmarkService(), server)
    address = f"[::]:{port}"
    if tls is None:
        bound = server.add_insecure_port(address)
    else:
        bound = server.add_secure_port(address, grpc.ssl_server_credentials([tls]))
    if bound == 0:
        raise OSError(f"could not listen on {address}")
    server.start()
    return server, bound


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    flags.add_bool(parser, "--use_tls", "serve TLS with --tls_cert_file and --tls_key_file")
    parser.add_argument("--tls_cert_file", help="PEM certificate chain (with --use_tls)")
    parser.add_argument("--tls_key_file", help="PEM private key (with --use_tls)")
    parser.add_argument(
        "--server_impl",
        choices=("grpcio", "plexus"),
        default="grpcio",
        help="serve on grpc.server (default) or on plexus.server",
    )
    args = parser.parse_args()
    tls = None
    if args.use_tls:
        if not (args.tls_cert_file and args.tls_key_file):
            parser.error("--use_tls=true needs --tls_cert_file and --tls_key_file")
        tls = (Path(args.tls_key_file).read_bytes(), Path(args.tls_cert_file).read_bytes())
    server, port = start(args.port, tls, args.server_impl)
    print(f"interop_server.py: listening on port {port}", flush=True)
    stop = threading.Event()
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    server.stop(grace=None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
