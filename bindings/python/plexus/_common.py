"""What the sync and asyncio channels share: status codes, errors, metadata, call options,
statuses read from the library, and the serializer checks.

When grpcio is importable, `StatusCode` and `ChannelConnectivity` are grpcio's own enums and
`RpcError` derives from `grpc.RpcError`, so `except grpc.RpcError` and
`e.code() == grpc.StatusCode.NOT_FOUND` keep working. Without grpcio the package defines
equivalents and never imports it.
"""

from __future__ import annotations

import enum
import importlib
import math
from collections.abc import Sequence
from ctypes import byref, c_char_p, c_int32, c_size_t, c_void_p, string_at
from typing import TYPE_CHECKING, Any, Callable, Generic, NamedTuple, Optional, Tuple, TypeVar, Union

from . import _ffi

_grpc: Any
try:  # grpcio is optional: its types are used when present (typed as Any: no stubs needed).
    _grpc = importlib.import_module("grpc")
except ImportError:
    _grpc = None

HAVE_GRPCIO = _grpc is not None
"""Whether grpcio is importable (its exception and enum types are used)."""

# The type checker reads the stand-ins below, which have the shape of grpcio's types; at run
# time grpcio's own types are used when it is importable.
if not TYPE_CHECKING and _grpc is not None:
    StatusCode = _grpc.StatusCode
    ChannelConnectivity = _grpc.ChannelConnectivity
    Compression = _grpc.Compression
    _RpcErrorBase = _grpc.RpcError
    _CallBase = _grpc.Call
    _FutureBase = _grpc.Future
    FutureTimeoutError = _grpc.FutureTimeoutError
    FutureCancelledError = _grpc.FutureCancelledError
else:

    class StatusCode(enum.Enum):
        """gRPC status codes: `value` is (code, name) as in grpcio."""

        OK = (0, "ok")
        CANCELLED = (1, "cancelled")
        UNKNOWN = (2, "unknown")
        INVALID_ARGUMENT = (3, "invalid argument")
        DEADLINE_EXCEEDED = (4, "deadline exceeded")
        NOT_FOUND = (5, "not found")
        ALREADY_EXISTS = (6, "already exists")
        PERMISSION_DENIED = (7, "permission denied")
        RESOURCE_EXHAUSTED = (8, "resource exhausted")
        FAILED_PRECONDITION = (9, "failed precondition")
        ABORTED = (10, "aborted")
        OUT_OF_RANGE = (11, "out of range")
        UNIMPLEMENTED = (12, "unimplemented")
        INTERNAL = (13, "internal")
        UNAVAILABLE = (14, "unavailable")
        DATA_LOSS = (15, "data loss")
        UNAUTHENTICATED = (16, "unauthenticated")

    class ChannelConnectivity(enum.Enum):
        """Channel connectivity states: `value` is (code, name) as in grpcio."""

        IDLE = (0, "idle")
        CONNECTING = (1, "connecting")
        READY = (2, "ready")
        TRANSIENT_FAILURE = (3, "transient failure")
        SHUTDOWN = (4, "shutdown")

    class Compression(enum.IntEnum):
        """Message compression algorithms, as grpc.Compression."""

        NoCompression = 0
        Deflate = 1
        Gzip = 2

    class _RpcErrorBase(Exception):
        """Base of every RPC failure raised by plexus (grpc.RpcError's stand-in)."""

    class _CallBase:
        """Stand-in for grpc.Call: plexus's call objects implement its methods."""

    class _FutureBase:
        """Stand-in for grpc.Future: plexus's futures implement its methods."""

    class FutureTimeoutError(Exception):
        """A future's result() or exception() timed out (grpc.FutureTimeoutError)."""

    class FutureCancelledError(Exception):
        """result() or exception() of a cancelled future (grpc.FutureCancelledError)."""


_CODES = {code.value[0]: code for code in StatusCode}
_COMPRESSION_NAMES = {0: b"identity", 1: b"deflate", 2: b"gzip"}
_COMPRESSION_BY_NAME = {
    b"identity": b"identity",
    b"none": b"identity",
    b"gzip": b"gzip",
    b"deflate": b"deflate",
}


CompressionArg = Union[Compression, int, str, None]
"""A compression choice: grpc.Compression, its int value, "gzip", "deflate", "identity", None."""


def compression_name(compression: CompressionArg) -> bytes | None:
    """The libplexus name for a grpcio compression value (grpc.Compression, its int, or a
    name: "gzip", "deflate", "identity"); None for None."""
    if compression is None:
        return None
    if isinstance(compression, str):
        name = _COMPRESSION_BY_NAME.get(compression.lower().encode())
        if name is not None:
            return name
    elif isinstance(compression, int) and not isinstance(compression, bool):
        name = _COMPRESSION_NAMES.get(int(compression))
        if name is not None:
            return name
    raise TypeError(
        "compression must be a grpc.Compression value (NoCompression, Deflate, Gzip), "
        f'"gzip", "deflate", "identity" or None, not {compression!r}'
    )


_STATES = {state.value[0]: state for state in ChannelConnectivity}


def status_code(value: int) -> StatusCode:
    """The StatusCode member for an integer code (UNKNOWN for a value outside 0..16)."""
    return _CODES.get(value, StatusCode.UNKNOWN)


def connectivity(value: int) -> ChannelConnectivity:
    """The ChannelConnectivity member for a plexus connectivity state."""
    return _STATES.get(value, ChannelConnectivity.SHUTDOWN)


class RpcError(_RpcErrorBase):
    """An RPC that ended with a status other than OK.

    Derives from grpc.RpcError when grpcio is importable. `code()`, `details()`,
    `initial_metadata()`, `trailing_metadata()` and `debug_error_string()` describe it.
    """


class Metadatum(NamedTuple):
    """One metadata entry, as grpcio returns them: `key` str, `value` str or bytes (-bin)."""

    key: str
    value: str | bytes


Metadata = Tuple[Tuple[str, Union[str, bytes]], ...]
"""Metadata as calls return it (grpcio's shape): a tuple of Metadatum (key, value) pairs."""

MetadataArg = Optional[Sequence[Tuple[str, Union[str, bytes]]]]
"""Metadata as calls take it: (key, value) pairs; values of `-bin` keys are bytes."""

Request = TypeVar("Request")
Response = TypeVar("Response")
Serializer = Callable[[Any], bytes]
"""A request_serializer: message to bytes."""
Deserializer = Callable[[bytes], Any]
"""A response_deserializer: bytes to message."""

STATUS_DETAILS_KEY = "grpc-status-details-bin"


class Status:
    """How a call ended, read once from a plexus_status and then freed."""

    __slots__ = ("code", "details", "binary_details", "initial_metadata", "trailing_metadata")

    def __init__(
        self,
        code: StatusCode,
        details: str,
        binary_details: bytes,
        initial_metadata: Metadata,
        trailing_metadata: Metadata,
    ) -> None:
        self.code = code
        self.details = details
        self.binary_details = binary_details
        self.initial_metadata = initial_metadata
        self.trailing_metadata = trailing_metadata

    @classmethod
    def local(cls, code: StatusCode, details: str, initial_metadata: Metadata = ()) -> Status:
        """A status decided on this side (a cancel, a serializer failure)."""
        return cls(code, details, b"", tuple(initial_metadata), ())

    def debug_error_string(self) -> str:
        """A one-line description of the status, for logs."""
        return f"plexus status {self.code.name}: {self.details}"


class StatusView:
    """grpc.Call's status accessors, read from the status `_final_status()` returns (which
    waits for the end of a call in progress)."""

    __slots__ = ()

    def _final_status(self) -> Status:
        raise NotImplementedError

    def code(self) -> StatusCode:
        """The call's status code (waits for the call to end)."""
        return self._final_status().code

    def details(self) -> str:
        """The call's status message (waits for the call to end)."""
        return self._final_status().details

    def initial_metadata(self) -> Metadata:
        """The response's initial metadata (waits for the response headers)."""
        return self._final_status().initial_metadata

    def trailing_metadata(self) -> Metadata:
        """The trailing metadata (waits for the call to end)."""
        return self._final_status().trailing_metadata

    def debug_error_string(self) -> str:
        """A description of the final status, for logs."""
        return self._final_status().debug_error_string()


def read_status(lib: _ffi.Lib, handle: int) -> Status:
    """Reads everything from a plexus_status handle, then frees it."""
    try:
        code = c_int32()
        lib.status_code(handle, byref(code))
        message = c_char_p()
        length = c_size_t()
        lib.status_message(handle, byref(message), byref(length))
        text = string_at(message, length.value).decode("utf-8", "replace") if length.value else ""
        details = c_void_p()
        lib.status_details(handle, byref(details), byref(length))
        binary = string_at(details.value or 0, length.value) if length.value else b""
        md = c_void_p()
        lib.status_initial_metadata(handle, byref(md))
        initial = read_metadata(lib, md.value)
        lib.status_trailing_metadata(handle, byref(md))
        trailing = read_metadata(lib, md.value)
    finally:
        lib.status_free(handle)
    if binary and not any(key == STATUS_DETAILS_KEY for key, _ in trailing):
        # grpcio exposes the details in the trailers (grpc_status.rpc_status reads them there).
        trailing = trailing + (Metadatum(STATUS_DETAILS_KEY, binary),)
    return Status(status_code(code.value), text, binary, initial, trailing)


class LazyStatus:
    """A plexus_status kept unread until someone asks (most successful calls never do);
    freed when read or when this object dies."""

    __slots__ = ("_lib", "_handle", "_status")

    def __init__(self, lib: _ffi.Lib, handle: int) -> None:
        self._lib = lib
        self._handle = handle
        self._status: Status | None = None

    def get(self) -> Status:
        """The status, read from the library on first use."""
        if self._status is None:
            handle, self._handle = self._handle, 0
            self._status = read_status(self._lib, handle)
        return self._status

    def __del__(self) -> None:
        handle = self._handle
        if handle:
            self._handle = 0
            try:
                self._lib.status_free(handle)
            except Exception:
                pass


def read_metadata(lib: _ffi.Lib, handle: int | None) -> Metadata:
    """A metadata list as a tuple of Metadatum (does not free it)."""
    if not handle:
        return ()
    count = c_size_t()
    lib.metadata_len(handle, byref(count))
    if not count.value:
        return ()
    entry = _ffi.MetadataEntry()
    out = []
    for index in range(count.value):
        lib.metadata_get_entry(handle, index, byref(entry))
        key = string_at(entry.key, entry.key_len).decode("ascii", "replace")
        raw = string_at(entry.value, entry.value_len) if entry.value_len else b""
        value = raw if entry.binary else raw.decode("ascii", "replace")
        out.append(Metadatum(key, value))
    return tuple(out)


def take_metadata(lib: _ffi.Lib, handle: int | None) -> Metadata:
    """Reads an owned metadata list and frees it."""
    try:
        return read_metadata(lib, handle)
    finally:
        if handle:
            lib.metadata_free(handle)


def _metadata_handle(lib: _ffi.Lib, metadata: Sequence[Any]) -> int:
    """Builds a plexus_metadata from grpcio-style metadata; the caller frees it."""
    out = c_void_p()
    lib.check(lib.metadata_new(byref(out)))
    handle = _ffi.handle(out)
    try:
        for item in metadata:
            try:
                key, value = item
            except (TypeError, ValueError):
                raise TypeError(
                    f"metadata entries must be (key, value) pairs, not {item!r}"
                ) from None
            if isinstance(key, bytes):
                key = key.decode("ascii", "replace")
            if not isinstance(key, str):
                raise TypeError(f"metadata key must be str, not {type(key).__name__}: {key!r}")
            bkey = key.encode("utf-8")
            if key.endswith("-bin"):
                if isinstance(value, str):
                    value = value.encode("utf-8")
                elif isinstance(value, (bytearray, memoryview)):
                    value = bytes(value)
                elif not isinstance(value, bytes):
                    raise TypeError(
                        f"value of binary metadata key {key!r} must be bytes, "
                        f"not {type(value).__name__}"
                    )
                rc = lib.metadata_append_bin(handle, bkey, value, len(value))
            else:
                if isinstance(value, (bytes, bytearray)):
                    bvalue = bytes(value)
                elif isinstance(value, str):
                    bvalue = value.encode("utf-8")
                else:
                    raise TypeError(
                        f"value of metadata key {key!r} must be str, not {type(value).__name__}"
                    )
                if b"\0" in bvalue:
                    raise ValueError(f"value of metadata key {key!r} contains a NUL byte")
                rc = lib.metadata_append(handle, bkey, bvalue)
            if rc:
                raise lib.error(rc, f"invalid metadata entry {key!r}")
    except BaseException:
        lib.metadata_free(handle)
        raise
    return handle


def timeout_ms(timeout: float) -> int:
    """A grpcio timeout in seconds as whole milliseconds (rounded up; never negative)."""
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError(f"timeout must be a number of seconds, not {type(timeout).__name__}")
    if timeout != timeout:
        raise ValueError("timeout must be a number of seconds, not NaN")
    if timeout <= 0:
        return 0
    if timeout == math.inf:
        return -1
    return min(math.ceil(timeout * 1000), 1 << 62)


_OPTIONS_CACHE_LIMIT = 256
"""Distinct timeouts whose call options are kept for reuse (a program uses a handful)."""


def call_options(
    lib: _ffi.Lib,
    timeout: float | None,
    metadata: MetadataArg,
    credentials: object,
    wait_for_ready: bool | None,
    compression: CompressionArg = None,
) -> int | None:
    """A plexus_call_options handle for these grpcio call arguments, or None when all are
    defaults. Release it with `free_options`.

    Options holding only a timeout are kept and shared: libplexus starts each call's
    deadline when the call starts and copies what it needs, so one handle serves every call
    with that timeout, from any thread, and the hot path makes no option calls at all."""
    if credentials is not None:
        raise ValueError(
            "call credentials need a secure channel; plexus channels are insecure "
            "(plexus.insecure_channel)"
        )
    if metadata or wait_for_ready or compression is not None:
        return _new_options(lib, timeout, metadata, wait_for_ready, compression)
    if timeout is None:
        return None
    kind = type(timeout)
    cache = lib.timeout_options
    if kind is float or kind is int:
        handle = cache.get(timeout)
        if handle is not None:
            return handle
    handle = _new_options(lib, timeout, None, False, None)
    if (kind is float or kind is int) and len(cache) < _OPTIONS_CACHE_LIMIT:
        # Marked shared before another thread can find it in the cache, so that no
        # free_options() frees it; the loser of a race frees its own copy.
        shared = lib.shared_options
        shared.add(handle)
        kept = cache.setdefault(timeout, handle)
        if kept != handle:
            shared.discard(handle)
            lib.call_options_free(handle)
        return kept
    return handle


def free_options(lib: _ffi.Lib, handle: int | None) -> None:
    """Releases what `call_options` returned (shared handles stay)."""
    if handle and handle not in lib.shared_options:
        lib.call_options_free(handle)


def _new_options(
    lib: _ffi.Lib,
    timeout: float | None,
    metadata: MetadataArg,
    wait_for_ready: bool | None,
    compression: CompressionArg,
) -> int:
    name = compression_name(compression)
    out = c_void_p()
    lib.check(lib.call_options_new(byref(out)))
    handle = _ffi.handle(out)
    try:
        if timeout is not None:
            ms = timeout_ms(timeout)
            if ms >= 0:
                lib.call_options_set_timeout_ms(handle, ms)
        if metadata:
            md = _metadata_handle(lib, metadata)
            try:
                lib.check(lib.call_options_set_metadata(handle, md))
            finally:
                lib.metadata_free(md)
        if wait_for_ready:
            lib.call_options_set_wait_for_ready(handle, True)
        if name is not None:
            lib.check(lib.call_options_set_compression(handle, name))
    except BaseException:
        lib.call_options_free(handle)
        raise
    return handle


class SerializationError(StatusView, RpcError, TypeError):
    """A request_serializer raised or returned something other than bytes.

    Also a TypeError; as an RpcError its code is INTERNAL, as in grpcio.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self._status = Status.local(StatusCode.INTERNAL, message)

    def _final_status(self) -> Status:
        return self._status

    def debug_error_string(self) -> str:
        """A description of the failure, for logs."""
        return self._status.details


def serialize(serializer: Serializer | None, message: Any) -> bytes:
    """The request's bytes: `serializer(message)`, or the message itself without one."""
    if serializer is not None:
        try:
            data = serializer(message)
        except Exception as exc:
            raise SerializationError(
                f"Exception serializing request: request_serializer raised {exc!r}"
            ) from exc
    else:
        data = message
    if type(data) is bytes:
        return data
    if isinstance(data, (bytes, bytearray, memoryview)):
        return bytes(data)
    what = "request_serializer returned" if serializer is not None else "the request is"
    raise SerializationError(
        f"{what} {type(data).__name__}, not bytes"
        + ("" if serializer is not None else " (pass request_serializer=...)")
    )


def take_bytes(lib: _ffi.Lib, handle: int) -> bytes:
    """Copies a received plexus_bytes into a Python bytes and frees it."""
    ptr = c_void_p()
    length = c_size_t()
    lib.bytes_data(handle, byref(ptr), byref(length))
    data = string_at(ptr.value or 0, length.value) if length.value else b""
    lib.bytes_free(handle)
    return data


def closed_channel_error() -> ValueError:
    """What calls on a closed channel raise (grpcio's text)."""
    return ValueError("Cannot invoke RPC on closed channel!")


def method_path(method: str | bytes) -> bytes:
    """A method name ('/package.Service/Method') checked and encoded for the library."""
    if isinstance(method, bytes):
        method = method.decode("utf-8")
    if not isinstance(method, str):
        raise TypeError(f"method must be a str like '/package.Service/Method', not {method!r}")
    if not method.startswith("/") or "\0" in method:
        raise ValueError(f"method must look like '/package.Service/Method', not {method!r}")
    return method.encode("utf-8")


def channel_stats(lib: _ffi.Lib, handle: int) -> dict[str, Any]:
    """A snapshot of a channel's statistics, with `state` as a ChannelConnectivity."""
    stats = _ffi.ChannelStats()
    lib.check(lib.channel_get_stats(handle, byref(stats)))
    names = [field[0] for field in _ffi.ChannelStats._fields_]
    out: dict[str, Any] = {name: getattr(stats, name) for name in names}
    out["state"] = connectivity(stats.state)
    return out


_ChannelT = TypeVar("_ChannelT")


class MultiCallableBase(Generic[_ChannelT]):
    """What every multicallable holds: its channel, method and (de)serializers."""

    __slots__ = ("_channel", "_method", "_serializer", "_deserializer")

    def __init__(
        self,
        channel: _ChannelT,
        method: str | bytes,
        serializer: Serializer | None,
        deserializer: Deserializer | None,
    ) -> None:
        self._channel = channel
        self._method = method_path(method)
        self._serializer = serializer
        self._deserializer = deserializer


_UU = TypeVar("_UU", bound=MultiCallableBase[Any])
_US = TypeVar("_US", bound=MultiCallableBase[Any])
_SU = TypeVar("_SU", bound=MultiCallableBase[Any])
_SS = TypeVar("_SS", bound=MultiCallableBase[Any])


class ChannelMethods(Generic[_UU, _US, _SU, _SS]):
    """grpc.Channel's four multicallable factories, over the channel's own multicallable
    classes (`_kinds`: unary-unary, unary-stream, stream-unary, stream-stream). grpcio's
    `_registered_method` (positional, as grpc.intercept_channel passes it, or by keyword) and
    other keyword arguments are accepted and ignored."""

    _kinds: tuple[type[_UU], type[_US], type[_SU], type[_SS]]

    def unary_unary(
        self,
        method: str,
        request_serializer: Serializer | None = None,
        response_deserializer: Deserializer | None = None,
        _registered_method: bool | None = None,
        **kwargs: Any,
    ) -> _UU:
        """A callable for a unary-unary method."""
        return self._kinds[0](self, method, request_serializer, response_deserializer)

    def unary_stream(
        self,
        method: str,
        request_serializer: Serializer | None = None,
        response_deserializer: Deserializer | None = None,
        _registered_method: bool | None = None,
        **kwargs: Any,
    ) -> _US:
        """A callable for a unary-stream (server streaming) method."""
        return self._kinds[1](self, method, request_serializer, response_deserializer)

    def stream_unary(
        self,
        method: str,
        request_serializer: Serializer | None = None,
        response_deserializer: Deserializer | None = None,
        _registered_method: bool | None = None,
        **kwargs: Any,
    ) -> _SU:
        """A callable for a stream-unary (client streaming) method."""
        return self._kinds[2](self, method, request_serializer, response_deserializer)

    def stream_stream(
        self,
        method: str,
        request_serializer: Serializer | None = None,
        response_deserializer: Deserializer | None = None,
        _registered_method: bool | None = None,
        **kwargs: Any,
    ) -> _SS:
        """A callable for a stream-stream (bidirectional streaming) method."""
        return self._kinds[3](self, method, request_serializer, response_deserializer)
