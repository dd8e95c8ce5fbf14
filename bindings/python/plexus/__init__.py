"""plexus: gRPC channels over libplexus, shaped like grpcio's.

    import plexus
    with plexus.insecure_channel("localhost:50051") as channel:
        stub = echo_pb2_grpc.EchoStub(channel)      # grpcio-tools stubs work unchanged
        reply = stub.Unary(echo_pb2.EchoRequest(message="hi"), timeout=5)

`plexus.secure_channel(target, plexus.ssl_channel_credentials(ca_pem))` connects over TLS;
grpcio's credential objects work there too. `plexus.aio` has the asyncio channel.
`plexus.server(thread_pool)` serves grpcio-tools servicers on libplexus's server, with
grpc.server's shape.
When grpcio is importable, errors derive from
`grpc.RpcError` and codes are `grpc.StatusCode` members; without it plexus has its own.
The shared library is the one installed with the package, or `$PLEXUS_LIBRARY`.
"""

from __future__ import annotations

from . import _ffi
from ._channel import (
    Channel,
    StreamStreamMultiCallable,
    StreamUnaryMultiCallable,
    UnaryStreamMultiCallable,
    UnaryUnaryMultiCallable,
    insecure_channel,
    secure_channel,
)
from ._common import (
    HAVE_GRPCIO,
    ChannelConnectivity,
    Compression,
    FutureCancelledError,
    FutureTimeoutError,
    Metadatum,
    RpcError,
    SerializationError,
    StatusCode,
)
from ._credentials import (
    AuthMetadataContext,
    CallCredentials,
    ChannelCredentials,
    access_token_call_credentials,
    composite_call_credentials,
    composite_channel_credentials,
    metadata_call_credentials,
    ssl_channel_credentials,
)
from ._ffi import ForkedError, InvalidArgumentError, PlexusError
from ._options import KEYWORDS as CHANNEL_OPTIONS
from ._server import (
    SERVER_OPTIONS,
    HandlerCallDetails,
    Server,
    ServerCredentials,
    ServicerContext,
    server,
    ssl_server_credentials,
)

__version__ = "0.1.0"

__all__ = [
    "CHANNEL_OPTIONS",
    "AuthMetadataContext",
    "CallCredentials",
    "Channel",
    "ChannelCredentials",
    "ChannelConnectivity",
    "Compression",
    "ForkedError",
    "HandlerCallDetails",
    "FutureCancelledError",
    "FutureTimeoutError",
    "HAVE_GRPCIO",
    "InvalidArgumentError",
    "Metadatum",
    "PlexusError",
    "RpcError",
    "SERVER_OPTIONS",
    "Server",
    "ServerCredentials",
    "ServicerContext",
    "SerializationError",
    "StatusCode",
    "StreamStreamMultiCallable",
    "StreamUnaryMultiCallable",
    "UnaryStreamMultiCallable",
    "UnaryUnaryMultiCallable",
    "access_token_call_credentials",
    "composite_call_credentials",
    "composite_channel_credentials",
    "insecure_channel",
    "library_version",
    "metadata_call_credentials",
    "secure_channel",
    "server",
    "ssl_channel_credentials",
    "ssl_server_credentials",
]


def library_version() -> str:
    """The version of the loaded libplexus."""
    version: bytes = _ffi.current().version()
    return version.decode()
