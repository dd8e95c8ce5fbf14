"""grpc.aio's texts and metadata form, for the asyncio server (the server options, TLS
material and handler-lookup details it shares with the synchronous server, in `_server`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .. import _common
from .._common import Metadata

NO_REQUEST = "the client ended the request stream before sending the request message"
"""Details of a unary-request call whose client sent no message (INTERNAL, as gRPC)."""

SERVER_STOPPED = "the server is stopping"
"""Details of a call that reached a handler lookup after stop() began (UNAVAILABLE)."""


def unexpected(exc: BaseException) -> str:
    """grpc.aio's details for an exception raised by a handler (status UNKNOWN)."""
    return f"Unexpected {type(exc)}: {exc}"


def metadata_tuple(metadata: Sequence[Any] | None) -> Metadata:
    """grpcio-style metadata as a tuple of Metadatum (checked when it is sent)."""
    if not metadata:
        return ()
    return tuple(_common.Metadatum(key, value) for key, value in metadata)
