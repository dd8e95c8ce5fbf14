"""plexus.aio: asyncio channels over libplexus, shaped like grpc.aio's.

    async with plexus.aio.insecure_channel("localhost:50051") as channel:
        stub = echo_pb2_grpc.EchoStub(channel)
        reply = await stub.Unary(echo_pb2.EchoRequest(message="hi"), timeout=5)
        async for response in stub.ServerStream(request):
            ...

Calls wait on one completion queue per event loop through `loop.add_reader` on its file
descriptor: no helper thread per call.
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
)

__all__ = [
    "EOF",
    "AioRpcError",
    "Channel",
    "StreamStreamCall",
    "StreamStreamMultiCallable",
    "StreamUnaryCall",
    "StreamUnaryMultiCallable",
    "UnaryStreamCall",
    "UnaryStreamMultiCallable",
    "UnaryUnaryCall",
    "UnaryUnaryMultiCallable",
    "insecure_channel",
]
