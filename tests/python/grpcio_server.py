"""A grpcio server for the Python binding tests: plexus.peer.Echo (tests/peer/proto) with the
same semantics as the Rust echo server (tests/peer/src/main.rs), plus its NapStats method.

Run as `python grpcio_server.py --stubs DIR` (DIR holds echo_pb2.py); prints
`LISTENING <port>` once serving on 127.0.0.1 and serves until killed. A subprocess, so the
tests' own process (which forks) never hosts grpcio's server threads.

* Each request metadata key starting with ``x-echo-`` is echoed in the initial metadata
  (for a failing unary call, in the trailers, as the Rust server does: trailers-only).
* Trailers always hold ``x-trailer: done`` and ``x-trailer-bin: b"\\xfe\\x00\\x01"``; a
  failing call also carries ``grpc-status-details-bin: b"details:" + status_message``.
* Unary: nap ``delay_ms`` (cut short by a cancel), then fail with status_code if set, else
  echo (message, index 0, payload).
* ServerStream: ``count`` answers, ``delay_ms`` apart, then status_code if set.
* ClientStream: joins messages with ",", index = number of requests; fails with the first
  request's status_code if any had one.
* Bidi: answers each request at once; a request with a status_code ends the call.
* NapStats: message "<naps started>,<naps cancelled>", index = naps cancelled.
* ``x-response-compression: gzip`` (or ``deflate``) compresses the responses.
"""

from __future__ import annotations

import argparse
import sys
import threading
from concurrent import futures

import grpc

SERVICE = "plexus.peer.Echo"
TRAILERS = (("x-trailer", "done"), ("x-trailer-bin", b"\xfe\x00\x01"))

_lock = threading.Lock()
_naps = {"started": 0, "cancelled": 0}


def _echoed(context):
    """The x-echo-* request entries; also applies x-response-compression, as the Rust server
    does."""
    for key, value in context.invocation_metadata():
        if key == "x-response-compression":
            context.set_compression(
                {"gzip": grpc.Compression.Gzip, "deflate": grpc.Compression.Deflate}[value]
            )
    return tuple((k, v) for k, v in context.invocation_metadata() if k.startswith("x-echo-"))


def _nap(ms: int, context) -> bool:
    """Sleeps ms, or less if the call ends (is cancelled) first; True if cut short."""
    if ms <= 0:
        return False
    with _lock:
        _naps["started"] += 1
    ended = threading.Event()
    if not context.add_callback(ended.set):
        ended.set()
    if ended.wait(ms / 1000.0) and not context.is_active():
        _count_cancel()
        return True
    return False


def _count_cancel() -> None:
    with _lock:
        _naps["cancelled"] += 1


def _fail(context, request, extra=()):
    code = {c.value[0]: c for c in grpc.StatusCode}.get(
        request.status_code, grpc.StatusCode.UNKNOWN
    )
    context.set_trailing_metadata(
        TRAILERS
        + tuple(extra)
        + (("grpc-status-details-bin", b"details:" + request.status_message.encode()),)
    )
    context.abort(code, request.status_message)


def build(echo_pb2):
    Req, Resp = echo_pb2.EchoRequest, echo_pb2.EchoResponse

    def unary(request, context):
        _nap(request.delay_ms, context)
        if request.status_code:
            _fail(context, request, _echoed(context))
        context.send_initial_metadata(_echoed(context))
        context.set_trailing_metadata(TRAILERS)
        return Resp(message=request.message, index=0, payload=request.payload)

    def server_stream(request, context):
        # grpcio may stop iterating a cancelled call's generator between two answers, before
        # the nap: a stream cut short by a cancel counts as a cancelled nap either way.
        counted = finished = False
        try:
            context.send_initial_metadata(_echoed(context))
            context.set_trailing_metadata(TRAILERS)
            for index in range(request.count):
                if index > 0:
                    counted = _nap(request.delay_ms, context)
                    if not context.is_active():
                        return
                yield Resp(message=request.message, index=index, payload=request.payload)
            finished = True
        finally:
            if not finished and not counted and request.delay_ms > 0 and not context.is_active():
                _count_cancel()
        if request.status_code:
            _fail(context, request)

    def client_stream(request_iterator, context):
        messages, payload, failure = [], b"", None
        for request in request_iterator:
            payload += request.payload
            if request.status_code and failure is None:
                failure = request
            messages.append(request.message)
        if failure is not None:
            _fail(context, failure)
        context.send_initial_metadata(_echoed(context))
        context.set_trailing_metadata(TRAILERS)
        return Resp(message=",".join(messages), index=len(messages), payload=payload)

    def bidi(request_iterator, context):
        context.send_initial_metadata(_echoed(context))
        context.set_trailing_metadata(TRAILERS)
        for index, request in enumerate(request_iterator):
            if request.status_code:
                _fail(context, request)
            yield Resp(message=request.message, index=index, payload=request.payload)

    def nap_stats(request, context):
        with _lock:
            started, cancelled = _naps["started"], _naps["cancelled"]
        return Resp(message=f"{started},{cancelled}", index=cancelled)

    def handler(kind, fn):
        return kind(
            fn, request_deserializer=Req.FromString, response_serializer=Resp.SerializeToString
        )

    return grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "Unary": handler(grpc.unary_unary_rpc_method_handler, unary),
            "ServerStream": handler(grpc.unary_stream_rpc_method_handler, server_stream),
            "ClientStream": handler(grpc.stream_unary_rpc_method_handler, client_stream),
            "Bidi": handler(grpc.stream_stream_rpc_method_handler, bidi),
            "NapStats": handler(grpc.unary_unary_rpc_method_handler, nap_stats),
        },
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stubs", required=True, help="directory holding echo_pb2.py")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    sys.path.insert(0, args.stubs)
    import echo_pb2

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=128))
    server.add_generic_rpc_handlers((build(echo_pb2),))
    port = server.add_insecure_port(f"127.0.0.1:{args.port}")
    server.start()
    print(f"LISTENING {port}", flush=True)
    server.wait_for_termination()


if __name__ == "__main__":
    main()
