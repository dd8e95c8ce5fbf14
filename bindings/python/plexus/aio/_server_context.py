"""What the asyncio server needs besides the event loop: grpcio's texts, grpcio's server
arguments mapped onto libplexus's server options, the TLS material of grpcio's
`ssl_server_credentials`, and the handler-lookup details grpcio passes to generic handlers.
"""

from __future__ import annotations

import gc
from collections.abc import Iterable
from ctypes import byref, c_void_p
from typing import Any, Callable
from collections.abc import Sequence

from .. import _common, _ffi
from .._common import CompressionArg, Metadata, compression_name

METHOD_NOT_FOUND = "Method not found!"
"""grpcio's details for a call to a method no handler serves (UNIMPLEMENTED)."""

NO_REQUEST = "the client ended the request stream before sending the request message"
"""Details of a unary-request call whose client sent no message (INTERNAL, as gRPC)."""

SERVER_STOPPED = "the server is stopping"
"""Details of a call that reached a handler lookup after stop() began (UNAVAILABLE)."""


def unexpected(exc: BaseException) -> str:
    """grpc.aio's details for an exception raised by a handler (status UNKNOWN)."""
    return f"Unexpected {type(exc)}: {exc}"


class HandlerCallDetails(_common._grpc.HandlerCallDetails if _common.HAVE_GRPCIO else object):  # type: ignore[misc]
    """What generic handlers and server interceptors see of an incoming call
    (grpc.HandlerCallDetails): `method` ('/pkg.Service/Method') and `invocation_metadata`."""

    __slots__ = ("method", "invocation_metadata")

    def __init__(self, method: str, invocation_metadata: Metadata) -> None:
        self.method = method
        self.invocation_metadata = invocation_metadata

    def __repr__(self) -> str:
        return f"HandlerCallDetails(method={self.method!r})"


def method_kind(handler: Any) -> int:
    """The libplexus method kind of a grpc.RpcMethodHandler."""
    request_streaming = bool(handler.request_streaming)
    response_streaming = bool(handler.response_streaming)
    if request_streaming:
        return _ffi.METHOD_BIDI_STREAMING if response_streaming else _ffi.METHOD_CLIENT_STREAMING
    return _ffi.METHOD_SERVER_STREAMING if response_streaming else _ffi.METHOD_UNARY


# --------------------------------------------------------------------------- options

_SIZE_MAX = 2**64 - 1
_INT_MAX = 2**31 - 1  # grpc's "never" for connection ages and idle times


def _int(key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"server option {key!r}: value must be an int, not {type(value).__name__}")
    return int(value)


def _size(key: str, value: Any) -> int:
    size = _int(key, value)
    if size < -1:
        raise ValueError(f"server option {key!r}: {size} is not a size (-1 means unlimited)")
    return _SIZE_MAX if size == -1 else size


def _u32(key: str, value: Any) -> int:
    number = _int(key, value)
    if not 0 <= number <= 2**32 - 1:
        raise ValueError(f"server option {key!r}: {number} is out of range")
    return number


def _ms(key: str, value: Any) -> int:
    """A grpc duration in ms; grpc's INT_MAX (and negative values) mean never (-1)."""
    ms = _int(key, value)
    return -1 if ms < 0 or ms >= _INT_MAX else ms


def _flag(key: str, value: Any) -> bool:
    return bool(_int(key, value))


def _compression(key: str, value: Any) -> bytes:
    name = compression_name(_int(key, value))
    assert name is not None
    return name


_Setter = tuple[str, Callable[[str, Any], Any]]

SERVER_KEYS: dict[str, _Setter] = {
    "grpc.max_receive_message_length": ("max_receive_message_size", _size),
    "grpc.max_send_message_length": ("max_send_message_size", _size),
    "grpc.max_concurrent_streams": ("max_concurrent_streams", _u32),
    "grpc.keepalive_time_ms": ("keepalive_time_ms", _ms),
    "grpc.keepalive_timeout_ms": ("keepalive_timeout_ms", _ms),
    "grpc.keepalive_permit_without_calls": ("keepalive_permit_without_calls", _flag),
    # The server-side enforcement of client pings (grpc's ping policing).
    "grpc.http2.min_recv_ping_interval_without_data_ms": ("keepalive_min_ping_interval_ms", _ms),
    "grpc.http2.min_ping_interval_without_data_ms": ("keepalive_min_ping_interval_ms", _ms),
    "grpc.http2.max_frame_size": ("max_frame_size", _u32),
    "grpc.max_metadata_size": ("max_header_list_size", _u32),
    "grpc.max_connection_idle_ms": ("max_connection_idle_ms", _ms),
    "grpc.max_connection_age_ms": ("max_connection_age_ms", _ms),
    "grpc.max_connection_age_grace_ms": ("max_connection_age_grace_ms", _ms),
    "grpc.server_handshake_timeout_ms": ("handshake_timeout_ms", _ms),
    "grpc.default_compression_algorithm": ("compression", _compression),
}
"""grpcio server arguments plexus applies: key -> (server option setter, converter). Other
keys are ignored, as grpcio ignores arguments nobody reads."""


def server_options(
    lib: _ffi.Lib,
    options: Iterable[tuple[str, Any]] | None,
    maximum_concurrent_rpcs: int | None,
    compression: CompressionArg,
) -> int:
    """A plexus_server_options for grpcio's server arguments (caller frees it)."""
    settings: dict[str, Any] = {}
    for item in options or ():
        if not isinstance(item, (tuple, list)) or len(item) != 2:
            raise TypeError(f"each server option must be a (key, value) pair, not {item!r}")
        key, value = item
        if isinstance(key, bytes):
            key = key.decode("utf-8")
        if not isinstance(key, str):
            raise TypeError(f"server option keys must be str, not {type(key).__name__}")
        known = SERVER_KEYS.get(key)
        if known is not None:
            settings[known[0]] = known[1](key, value)
    if maximum_concurrent_rpcs is not None:
        calls = _int("maximum_concurrent_rpcs", maximum_concurrent_rpcs)
        if calls < 1:
            raise ValueError("maximum_concurrent_rpcs should be a positive integer")
        settings["max_concurrent_calls"] = min(calls, 2**32 - 1)
    name = compression_name(compression)
    if name is not None:
        settings["compression"] = name
    out = c_void_p()
    lib.check(lib.server_options_new(byref(out)))
    handle = _ffi.handle(out)
    try:
        for setting, value in settings.items():
            setter = getattr(lib, "server_options_set_" + setting)
            lib.check(setter(handle, value), f"server option {setting}")
    except BaseException:
        lib.server_options_free(handle)
        raise
    return handle


# --------------------------------------------------------------------------- TLS


def _pem(what: str, value: object) -> bytes:
    if isinstance(value, str):
        value = value.encode("utf-8")
    if not isinstance(value, bytes) or not value:
        raise TypeError(f"{what} must be PEM bytes, not {type(value).__name__}")
    return value


def _grpcio_tls(credentials: object) -> tuple[bytes, bytes, bytes | None, bool]:
    """(key, chain, client roots, require client cert) of grpc.ssl_server_credentials(...).

    grpcio keeps the PEMs inside its Cython object, reachable only through the references the
    garbage collector sees: the list [root_certificates, [SslPemKeyCertPair, ...]]. Whether
    the client certificate was required is not reachable: with client roots, plexus requires
    one (it refuses what grpcio might have let in, never the reverse)."""
    inner = getattr(credentials, "_credentials", None)
    for ref in gc.get_referents(inner) if inner is not None else ():
        if not (isinstance(ref, list) and len(ref) == 2 and isinstance(ref[1], list)):
            continue
        roots, pairs = ref
        if not pairs or type(pairs[0]).__name__ != "SslPemKeyCertPair":
            continue
        if len(pairs) > 1:
            raise ValueError("plexus serves one certificate chain per port, not several")
        key, chain = pairs[0].private_key, pairs[0].certificate_chain
        client_roots = _pem("root_certificates", roots) if roots is not None else None
        return _pem("private key", key), _pem("certificate chain", chain), client_roots, True
    raise TypeError(
        "server_credentials must come from grpc.ssl_server_credentials(...), "
        f"not {type(credentials).__name__}"
    )


def server_tls(lib: _ffi.Lib, credentials: object) -> int:
    """A plexus_server_tls for grpc.ssl_server_credentials(...) (caller frees it)."""
    key, chain, roots, require = _grpcio_tls(credentials)
    out = c_void_p()
    lib.check(lib.server_tls_new(chain, key, byref(out)), "invalid server credentials")
    handle = _ffi.handle(out)
    if roots is not None:
        rc = lib.server_tls_set_client_ca_pem(handle, roots, require)
        if rc:
            lib.server_tls_free(handle)
            raise lib.error(rc, "invalid client root certificates")
    return handle


def metadata_tuple(metadata: Sequence[Any] | None) -> Metadata:
    """grpcio-style metadata as a tuple of Metadatum (checked when it is sent)."""
    if not metadata:
        return ()
    return tuple(_common.Metadatum(key, value) for key, value in metadata)
