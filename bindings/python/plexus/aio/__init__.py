"""plexus.aio: asyncio channels over libplexus, shaped like grpc.aio's.

    async with plexus.aio.insecure_channel("localhost:50051") as channel:
        stub = echo_pb2_grpc.EchoStub(channel)
        reply = await stub.Unary(echo_pb2.EchoRequest(message="hi"), timeout=5)
        async for response in stub.ServerStream(request):
            ...

Calls wait on one completion queue per event loop through `loop.add_reader` on its file
descriptor: no helper thread per call.

`secure_channel(target, credentials, ...)` connects over TLS (see plexus.secure_channel).
`insecure_channel(target, interceptors=[...])` takes grpc.aio's client interceptors (the
interfaces below are grpc.aio's own when grpcio is importable).

`server(migration_thread_pool=None, handlers=None, interceptors=None, options=None,
maximum_concurrent_rpcs=None, compression=None)` serves grpc.aio-style servicers (async
handlers; grpcio-tools' generated add_XServicer_to_server works unchanged) on the same
completion queue.
"""

from __future__ import annotations

from ._channel import (
    EOF,
    AioRpcError,
    Channel,
    StreamStreamCall,
    StreamStreamMultiCallable,
    StreamUnaryCall,
    StreamUnaryMultiCallable,
    UnaryStreamCall,
    UnaryStreamMultiCallable,
    UnaryUnaryCall,
    UnaryUnaryMultiCallable,
    insecure_channel,
    secure_channel,
)
from ._server import AbortError, Server, ServicerContext, server
from ._interceptor import (
    ClientCallDetails,
    ClientInterceptor,
    StreamStreamClientInterceptor,
    StreamUnaryClientInterceptor,
    UnaryStreamClientInterceptor,
    UnaryUnaryClientInterceptor,
)

__all__ = [
    "EOF",
    "AioRpcError",
    "Channel",
    "ClientCallDetails",
    "ClientInterceptor",
    "StreamStreamCall",
    "StreamStreamClientInterceptor",
    "StreamStreamMultiCallable",
    "StreamUnaryCall",
    "StreamUnaryClientInterceptor",
    "StreamUnaryMultiCallable",
    "UnaryStreamCall",
    "UnaryStreamClientInterceptor",
    "UnaryStreamMultiCallable",
    "UnaryUnaryCall",
    "UnaryUnaryClientInterceptor",
    "UnaryUnaryMultiCallable",
    "insecure_channel",
    "secure_channel",
    "server",
    "AbortError",
    "Server",
    "ServicerContext",
]
