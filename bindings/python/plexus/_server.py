"""plexus.server: grpcio's synchronous server, served by libplexus's HTTP/2 server.

    server = plexus.server(futures.ThreadPoolExecutor(max_workers=16))
    echo_pb2_grpc.add_EchoServicer_to_server(EchoServicer(), server)   # grpcio-tools code
    port = server.add_insecure_port("[::]:0")
    server.start()
    server.wait_for_termination()

Threads: a `concurrent.futures.ThreadPoolExecutor` (or anything with `_max_workers`) gets
one serving loop per worker. Each loop waits on the server's completion queue and runs the
handler of the call it took on its own thread, with the blocking ABI functions (ctypes
releases the GIL while they wait): no hand-off between an I/O thread and a worker per call,
and at most `max_workers` handlers run at once, as with grpcio. The pool's threads serve
until `stop()`; work submitted to the same pool by others waits until then. Another kind of
executor gets the calls submitted to it one by one from a dispatching thread.

Registered methods (`add_registered_method_handlers`, which grpcio-tools code calls) are
registered with libplexus by kind, so a unary request arrives with the call; every other
path goes to the generic handlers (`add_generic_rpc_handlers`) through a catch-all.

TLS: `add_secure_port` takes `plexus.ssl_server_credentials(...)` or grpcio's
`grpc.ssl_server_credentials(...)`. grpcio's object keeps its PEMs inside C, so importing
plexus wraps `grpc.ssl_server_credentials` to remember the arguments on the object it
returns; credentials made before plexus was imported (or through a reference taken before)
are refused with a clear error. libplexus serves one certificate per listener: the first
key/certificate pair is used and the others are ignored with a warning.
"""

from __future__ import annotations

import contextvars
import gc
import ssl
import importlib
import logging
import threading
import time
from collections import namedtuple
from collections.abc import Iterable, Iterator, Mapping, Sequence
from ctypes import byref, c_bool, c_char_p, c_int32, c_int64, c_size_t, c_void_p, string_at
from typing import TYPE_CHECKING, Any, Callable, Optional, Tuple

from . import _ffi
from ._common import (
    CompressionArg,
    Metadata,
    RpcError,
    StatusCode,
    _grpc,
    _metadata_handle,
    compression_name,
    read_metadata,
    take_bytes,
)
from ._ffi import (
    END_OF_STREAM,
    ERR_RPC,
    ERR_SHUTDOWN,
    ERR_TIMEOUT,
    ERR_WRONG_STATE,
    OK,
    OP_SERVER_CALL,
    OP_SERVER_DONE,
    SEND_NO_COMPRESS,
)

_LOG = logging.getLogger("plexus.server")

# grpcio's status texts (grpc/_server.py), so that clients see the same details.
UNIMPLEMENTED_DETAILS = "Method not found!"
"""Details of UNIMPLEMENTED for a path no handler serves."""
HANDLER_LOOKUP_FAILED = "Error in service handler!"
"""Details of UNKNOWN when a generic handler or an interceptor raised."""
DESERIALIZE_FAILED = "Exception deserializing request!"
"""Details of INTERNAL when the request_deserializer failed."""
SERIALIZE_FAILED = "Failed to serialize response!"
"""Details of INTERNAL when the response_serializer failed (or a unary handler returned None)."""
ABORTED_DETAILS = "RPC Aborted"
"""Details of an abort whose details were never set."""
APPLICATION_FAILED = "Exception calling application: {}"
"""Details of UNKNOWN for a handler that raised, formatted with the exception."""
ITERATION_FAILED = "Exception iterating responses: {}"
"""Details of UNKNOWN for a response iterator that raised, formatted with the exception."""
_BIND_FAILED = (
    "Failed to bind to address %s; set GRPC_VERBOSITY=debug environment variable to see "
    "detailed error message."
)

_CODE_NUMBERS = {code: code.value[0] for code in StatusCode}
_INT_MAX = 2**31 - 1
_SIZE_MAX = 2**64 - 1
_CATCH_ALL_TAG = 1
_FIRST_METHOD_TAG = 2
_KIND = {  # (request_streaming, response_streaming) -> plexus_method_kind
    (False, False): _ffi.METHOD_UNARY,
    (True, False): _ffi.METHOD_CLIENT_STREAMING,
    (False, True): _ffi.METHOD_SERVER_STREAMING,
    (True, True): _ffi.METHOD_BIDI_STREAMING,
}


def auth_context_of(lib: _ffi.Lib, call: int) -> dict[str, list[bytes]]:
    """grpcio's auth context of a server call, as far as libplexus knows it: for a client
    that presented a TLS certificate, the transport ("ssl") and that certificate as PEM
    (grpcio's `x509_pem_cert`); empty otherwise (plaintext, or TLS without a client
    certificate: the two are not told apart)."""
    der = c_void_p()
    length = c_size_t()
    if not call or lib.server_call_peer_certificate(call, byref(der), byref(length)) != OK:
        return {}
    if not length.value:
        return {}
    pem = ssl.DER_cert_to_PEM_cert(string_at(der.value or 0, length.value))
    return {"transport_security_type": [b"ssl"], "x509_pem_cert": [pem.encode("ascii")]}


def method_kind(handler: Any) -> int:
    """The libplexus method kind of a grpc.RpcMethodHandler."""
    return _KIND[(bool(handler.request_streaming), bool(handler.response_streaming))]

if not TYPE_CHECKING and _grpc is not None:
    _ContextBase = _grpc.ServicerContext
    _ServerBase = _grpc.Server
    _DetailsBases: tuple[type, ...] = (
        (_grpc.HandlerCallDetails,) if isinstance(_grpc.HandlerCallDetails, type) else ()
    )
else:

    class _ContextBase:
        """Stand-in for grpc.ServicerContext."""

    class _ServerBase:
        """Stand-in for grpc.Server."""

    _DetailsBases = ()


class HandlerCallDetails(
    namedtuple("HandlerCallDetails", ("method", "invocation_metadata")),
    *_DetailsBases,  # type: ignore[misc]
):
    """grpc.HandlerCallDetails: what generic handlers and interceptors get (`method`, the
    path as a str, and `invocation_metadata`)."""

    __slots__ = ()


class CallEndedError(RpcError):
    """Raised inside a handler by the request iterator or send_initial_metadata when the call
    is already over (the client cancelled, the deadline passed); the server then sends no
    status of its own."""

    def code(self) -> StatusCode:
        """CANCELLED: the call ended before the handler did."""
        return StatusCode.CANCELLED

    def details(self) -> str:
        """What ended the call."""
        return str(self)


class _AbortError(Exception):
    """What ServicerContext.abort raises: it ends the handler and the call with the status
    given to abort (a plain Exception subclass, as grpcio's)."""


# --------------------------------------------------------------------------- credentials


class ServerCredentials:
    """TLS settings of a secure port: one certificate chain and key, and optionally the roots
    that client certificates must chain to."""

    __slots__ = ("certificate_chain", "private_key", "root_certificates", "require_client_auth")

    def __init__(
        self,
        certificate_chain: bytes,
        private_key: bytes,
        root_certificates: bytes | None,
        require_client_auth: bool,
    ) -> None:
        self.certificate_chain = certificate_chain
        self.private_key = private_key
        self.root_certificates = root_certificates
        self.require_client_auth = require_client_auth

    def __repr__(self) -> str:
        mtls = "required" if self.require_client_auth else bool(self.root_certificates)
        return f"<plexus.ServerCredentials client certificates: {mtls}>"


def _pem(what: str, value: object) -> bytes:
    if isinstance(value, str):
        value = value.encode("utf-8")
    if isinstance(value, (bytes, bytearray, memoryview)):
        out = bytes(value)
        if b"\0" in out:
            raise ValueError(f"{what} contains a NUL byte")
        return out
    raise TypeError(f"{what} must be PEM bytes, not {type(value).__name__}")


def ssl_server_credentials(
    private_key_certificate_chain_pairs: Sequence[Tuple[Any, Any]],
    root_certificates: bytes | str | None = None,
    require_client_auth: bool = False,
) -> ServerCredentials:
    """grpc.ssl_server_credentials's arguments: [(private key PEM, certificate chain PEM)],
    optional client root PEMs, and whether clients must present a certificate. libplexus
    serves one certificate per port: pairs after the first are ignored with a warning."""
    pairs = list(private_key_certificate_chain_pairs or ())
    if not pairs:
        raise ValueError("At least one private key-certificate chain pair is required!")
    if require_client_auth and root_certificates is None:
        raise ValueError(
            "Illegal to require client auth without providing root certificates!"
        )
    if len(pairs) > 1:
        _LOG.warning(
            "plexus serves one certificate per port: using the first of %d key/certificate "
            "pairs",
            len(pairs),
        )
    try:
        key, chain = pairs[0]
    except (TypeError, ValueError):
        raise TypeError(
            "private_key_certificate_chain_pairs must hold (private key, certificate chain) "
            f"pairs, not {pairs[0]!r}"
        ) from None
    roots = None if root_certificates is None else _pem("root_certificates", root_certificates)
    return ServerCredentials(
        _pem("certificate chain", chain), _pem("private key", key), roots, bool(require_client_auth)
    )


_GRPCIO_ATTR = "_plexus_server_credentials"


def _remember_grpcio_arguments() -> None:
    """Wraps grpc.ssl_server_credentials so that the object it returns also carries plexus's
    reading of its arguments (grpcio keeps them in C, out of reach)."""
    if _grpc is None:
        return
    original = getattr(_grpc, "ssl_server_credentials", None)
    if original is None or getattr(original, "_plexus_wrapped", False):
        return

    def ssl_server_credentials_wrapper(*args: Any, **kwargs: Any) -> Any:
        made = original(*args, **kwargs)
        try:
            setattr(made, _GRPCIO_ATTR, _reading_of(*args, **kwargs))
        except Exception:  # grpcio accepted arguments plexus cannot serve: say so when used
            pass
        return made

    ssl_server_credentials_wrapper.__doc__ = original.__doc__
    ssl_server_credentials_wrapper.__wrapped__ = original  # type: ignore[attr-defined]
    ssl_server_credentials_wrapper._plexus_wrapped = True  # type: ignore[attr-defined]
    _grpc.ssl_server_credentials = ssl_server_credentials_wrapper


def _reading_of(
    private_key_certificate_chain_pairs: Any,
    root_certificates: Any = None,
    require_client_auth: bool = False,
) -> ServerCredentials:
    return ssl_server_credentials(
        private_key_certificate_chain_pairs, root_certificates, require_client_auth
    )


_remember_grpcio_arguments()


def _read_grpcio_object(credentials: object) -> ServerCredentials | None:
    """The TLS material of a grpc.ssl_server_credentials(...) made before `import plexus`.

    grpcio keeps the PEMs inside its Cython object, reachable only through the references the
    garbage collector sees: the list [root_certificates, [SslPemKeyCertPair, ...]]. Whether a
    client certificate was required is not reachable: with client roots, plexus requires one
    (it refuses what grpcio might have let in, never the reverse)."""
    inner = getattr(credentials, "_credentials", None)
    for ref in gc.get_referents(inner) if inner is not None else ():
        if not (isinstance(ref, list) and len(ref) == 2 and isinstance(ref[1], list)):
            continue
        roots, pairs = ref
        if not pairs or type(pairs[0]).__name__ != "SslPemKeyCertPair":
            continue
        keys_and_chains = [(p.private_key, p.certificate_chain) for p in pairs]
        return ssl_server_credentials(keys_and_chains, roots, roots is not None)
    return None


def as_server_credentials(credentials: object) -> ServerCredentials:
    """plexus's ServerCredentials for plexus's or grpcio's (grpc.ssl_server_credentials)."""
    if isinstance(credentials, ServerCredentials):
        return credentials
    remembered = getattr(credentials, _GRPCIO_ATTR, None)
    if isinstance(remembered, ServerCredentials):
        return remembered
    if type(credentials).__name__ == "ServerCredentials":
        read = _read_grpcio_object(credentials)
        if read is not None:
            return read
        raise TypeError(
            "cannot read these grpc.ServerCredentials: grpcio keeps their PEMs in C. Create "
            "them with grpc.ssl_server_credentials(...) after `import plexus` (plexus then "
            "remembers the arguments), or use plexus.ssl_server_credentials(...)"
        )
    raise TypeError(
        "server credentials must come from plexus.ssl_server_credentials or "
        f"grpc.ssl_server_credentials, not {type(credentials).__name__}"
    )


def server_tls_handle(lib: _ffi.Lib, credentials: object) -> int:
    """A plexus_server_tls for server credentials; the caller frees it."""
    creds = as_server_credentials(credentials)
    out = c_void_p()
    lib.check(
        lib.server_tls_new(creds.certificate_chain, creds.private_key, byref(out)),
        "server credentials",
    )
    handle = _ffi.handle(out)
    if creds.root_certificates is not None:
        rc = lib.server_tls_set_client_ca_pem(
            handle, creds.root_certificates, creds.require_client_auth
        )
        if rc != OK:
            lib.server_tls_free(handle)
            raise lib.error(rc, "root_certificates")
    return handle


# --------------------------------------------------------------------------- options


def _opt_int(key: str, value: Any, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"server option {key!r} must be an int, not {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"server option {key!r} must be at least {minimum}, not {value}")
    return value


def _size(key: str, value: Any) -> int:
    value = _opt_int(key, value, minimum=-1)
    return _SIZE_MAX if value == -1 else value


def _ms_or_never(key: str, value: Any) -> int:
    """grpc's INT_MAX (and above) means "never"; plexus takes a negative value for that."""
    value = _opt_int(key, value)
    return -1 if value >= _INT_MAX else value


def _keepalive_time(key: str, value: Any) -> int:
    value = _opt_int(key, value)
    return -1 if value == 0 or value >= _INT_MAX else value


def _flag(key: str, value: Any) -> bool:
    if isinstance(value, bool) or (isinstance(value, int) and value in (0, 1)):
        return bool(value)
    raise TypeError(f"server option {key!r} must be a bool (or 0/1), not {value!r}")


def _u32(key: str, value: Any) -> int:
    return min(_opt_int(key, value), 2**32 - 1)


_COMPRESSION_ALGORITHMS = {0: b"identity", 1: b"deflate", 2: b"gzip"}


def _compression_option(key: str, value: Any) -> bytes:
    name = _COMPRESSION_ALGORITHMS.get(_opt_int(key, value))
    if name is None:
        raise ValueError(f"server option {key!r} must be 0, 1 or 2 (grpc_compression_algorithm)")
    return name


# grpcio's server channel arguments that libplexus has a setting for: key -> (setter, convert).
SERVER_OPTIONS: dict[str, tuple[str, Callable[[str, Any], Any]]] = {
    "grpc.max_receive_message_length": ("max_receive_message_size", _size),
    "grpc.max_send_message_length": ("max_send_message_size", _size),
    "grpc.max_concurrent_streams": ("max_concurrent_streams", _u32),
    "grpc.keepalive_time_ms": ("keepalive_time_ms", _keepalive_time),
    "grpc.keepalive_timeout_ms": ("keepalive_timeout_ms", _ms_or_never),
    "grpc.keepalive_permit_without_calls": ("keepalive_permit_without_calls", _flag),
    "grpc.http2.min_ping_interval_without_data_ms": (
        "keepalive_min_ping_interval_ms",
        _ms_or_never,
    ),
    "grpc.http2.min_recv_ping_interval_without_data_ms": (
        "keepalive_min_ping_interval_ms",
        _ms_or_never,
    ),
    "grpc.max_connection_idle_ms": ("max_connection_idle_ms", _ms_or_never),
    "grpc.max_connection_age_ms": ("max_connection_age_ms", _ms_or_never),
    "grpc.max_connection_age_grace_ms": ("max_connection_age_grace_ms", _ms_or_never),
    "grpc.max_metadata_size": ("max_header_list_size", _u32),
    "grpc.http2.max_frame_size": ("max_frame_size", _u32),
    "grpc.server_handshake_timeout_ms": ("handshake_timeout_ms", _ms_or_never),
    "grpc.default_compression_algorithm": ("compression", _compression_option),
}
"""grpcio server options plexus applies; every other key is ignored, as grpcio ignores keys
it does not know (grpc.http2.max_ping_strikes among them: libplexus polices pings its own
way)."""


def server_options_handle(
    lib: _ffi.Lib,
    options: Iterable[Tuple[str, Any]] | None,
    maximum_concurrent_rpcs: int | None,
    compression: CompressionArg,
) -> int:
    """A plexus_server_options for grpc.server's arguments; the caller frees it."""
    settings: dict[str, Any] = {}
    for item in options or ():
        try:
            key, value = item
        except (TypeError, ValueError):
            raise TypeError(f"server options must be (key, value) pairs, not {item!r}") from None
        if isinstance(key, bytes):
            key = key.decode("utf-8", "replace")
        known = SERVER_OPTIONS.get(key)
        if known is not None:
            setter, convert = known
            settings[setter] = convert(key, value)
    if maximum_concurrent_rpcs is not None:
        limit = _opt_int("maximum_concurrent_rpcs", maximum_concurrent_rpcs, minimum=1)
        settings["max_concurrent_calls"] = min(limit, 2**32 - 1)
    name = compression_name(compression)
    if name is not None:
        settings["compression"] = name
    out = c_void_p()
    lib.check(lib.server_options_new(byref(out)))
    handle = _ffi.handle(out)
    try:
        for setter, value in settings.items():
            rc = getattr(lib, "server_options_set_" + setter)(handle, value)
            if rc != OK:
                raise lib.error(rc, f"server option {setter}")
    except BaseException:
        lib.server_options_free(handle)
        raise
    return handle


# --------------------------------------------------------------------------- the context


def _code_number(code: Any) -> int:
    number = _CODE_NUMBERS.get(code)
    if number is None:
        value = getattr(code, "value", None)
        if isinstance(value, tuple) and value and isinstance(value[0], int):
            return value[0] if 0 <= value[0] <= 16 else 2
        return 2  # UNKNOWN, as grpcio does for what is not a StatusCode
    return number


def _details_bytes(details: Any) -> bytes:
    if details is None:
        return b""
    if isinstance(details, str):
        details = details.encode("utf-8")
    elif not isinstance(details, bytes):
        details = str(details).encode("utf-8")
    out: bytes = details.replace(b"\0", b"\\0")
    return out


class ServicerContext(_ContextBase):
    """grpc.ServicerContext of one call served by plexus.server."""

    __slots__ = (
        "_server",
        "_lib",
        "_call",
        "_method",
        "_metadata",
        "_peer",
        "_code",
        "_details",
        "_trailers",
        "_aborted",
        "_headers_sent",
        "_finished",
        "_no_compress",
        "_callbacks",
        "_refs",
        "_rpc_errors",
    )

    def __init__(self, server: _ServerState, call: int, method: str | None) -> None:
        self._server = server
        self._lib = server.lib
        self._call = call
        self._method = method
        self._metadata: Metadata | None = None
        self._peer: str | None = None
        self._code: Any = None
        self._details: bytes | None = None
        self._trailers: Any = None
        self._aborted = False
        self._headers_sent = False
        self._finished = False
        self._no_compress = False
        self._callbacks: list[Callable[[], None]] | None = []
        self._refs = 1
        self._rpc_errors: list[BaseException] = []

    # ---- what the client sent

    def _text(self, fetch: Any) -> str:
        """A string of the call that libplexus lends (method, peer); "" once the call is freed."""
        raw = c_char_p()
        if self._call and fetch(self._call, byref(raw)) == OK:
            return (raw.value or b"").decode("utf-8", "replace")
        return ""

    def _path(self) -> str:
        """The path of the call ("/package.Service/Method")."""
        if self._method is None:
            self._method = self._text(self._lib.server_call_method)
        return self._method

    def invocation_metadata(self) -> Metadata:
        """The request metadata, as (key, value) Metadatum pairs."""
        if self._metadata is None:
            md = c_void_p()
            if self._call and self._lib.server_call_metadata(self._call, byref(md)) == OK:
                self._metadata = read_metadata(self._lib, md.value)
            else:
                self._metadata = ()
        return self._metadata

    def peer(self) -> str:
        """The client's address in grpc's form ("ipv4:127.0.0.1:5555", "ipv6:[::1]:5555")."""
        if self._peer is None:
            self._peer = self._text(self._lib.server_call_peer)
        return self._peer

    def peer_identities(self) -> Optional[Sequence[bytes]]:
        """None: plexus does not expose the client certificate's identities."""
        return None

    def peer_identity_key(self) -> Optional[str]:
        """None: plexus does not expose the client certificate's identities."""
        return None

    def auth_context(self) -> Mapping[str, Sequence[bytes]]:
        """The client's TLS certificate (`x509_pem_cert`) and `transport_security_type`, when
        it presented one; empty otherwise."""
        return auth_context_of(self._lib, self._call)

    def time_remaining(self) -> Optional[float]:
        """Seconds left before the client's deadline (0 once passed), None without one."""
        remaining = c_int64(-1)
        if self._call:
            self._lib.server_call_deadline(self._call, byref(remaining))
        return None if remaining.value < 0 else remaining.value / 1000.0

    def is_active(self) -> bool:
        """Whether the call still runs: not cancelled, not past its deadline, no status sent."""
        if self._finished or not self._call:
            return False
        cancelled = c_bool(False)
        self._lib.server_call_is_cancelled(self._call, byref(cancelled))
        return not cancelled.value

    def cancel(self) -> None:
        """Ends the call now with CANCELLED (the handler may go on; its sends fail)."""
        if self._call:
            self._lib.server_call_cancel(self._call)
        self._finished = True  # nothing more goes out: is_active() is False from now

    def add_callback(self, callback: Callable[[], None]) -> bool:
        """Runs `callback()` once the call is over (finished, cancelled or timed out); False
        when it is already over."""
        return self._server.watch(self, callback)

    # ---- what goes back

    def set_compression(self, compression: Any) -> None:
        """Response compression for this call (grpc.Compression), if the client accepts it
        and no response header went out yet."""
        name = compression_name(compression)
        if name is not None and self._call:
            self._lib.check(self._lib.server_call_set_compression(self._call, name))

    def disable_next_message_compression(self) -> None:
        """Sends the next response message uncompressed."""
        self._no_compress = True

    def send_initial_metadata(self, initial_metadata: Any) -> None:
        """Sends the response headers now, with this metadata; only before the first
        response (later: ValueError, as grpcio)."""
        if self._headers_sent or self._finished:
            raise ValueError("Initial metadata no longer allowed!")
        lib = self._lib
        md = _metadata_handle(lib, initial_metadata or ())
        try:
            rc = lib.server_call_send_initial_metadata(self._call, md, -1)
        finally:
            lib.metadata_free(md)
        self._headers_sent = True
        if rc == OK:
            return
        if rc == ERR_WRONG_STATE:
            raise ValueError("Initial metadata no longer allowed!")
        if rc == ERR_RPC:
            raise self._ended()
        raise lib.error(rc, "send_initial_metadata")

    def set_trailing_metadata(self, trailing_metadata: Any) -> None:
        """The trailing metadata the status goes out with."""
        self._trailers = trailing_metadata

    def trailing_metadata(self) -> Any:
        """What set_trailing_metadata set (None until then)."""
        return self._trailers

    def abort(self, code: Any, details: str) -> None:
        """Ends the handler (raises) and the call with `code` and `details`; OK becomes
        UNKNOWN with empty details, as in grpcio."""
        if code == StatusCode.OK:
            _LOG.error("abort() called with StatusCode.OK; returning UNKNOWN")
            code = StatusCode.UNKNOWN
            details = ""
        self._code = code
        self._details = _details_bytes(details)
        self._aborted = True
        raise _AbortError()

    def abort_with_status(self, status: Any) -> None:
        """abort() with a grpc.Status: its code, details and trailing metadata (a
        grpc-status-details-bin entry there becomes the rich status)."""
        self._trailers = status.trailing_metadata
        self.abort(status.code, status.details)

    def set_code(self, code: Any) -> None:
        """The status code the call ends with (OK unless set)."""
        self._code = code

    def code(self) -> Any:
        """What set_code (or abort) set; None until then."""
        return self._code

    def set_details(self, details: str) -> None:
        """The status details the call ends with."""
        self._details = _details_bytes(details)

    def details(self) -> Optional[bytes]:
        """What set_details (or abort) set, encoded (grpcio returns bytes); None until then."""
        return self._details

    def _finalize_state(self) -> None:
        """grpcio's hook for interceptors; nothing to do here."""

    # ---- the serving side

    def _ended(self) -> CallEndedError:
        error = CallEndedError("the call is over (cancelled by the client or past its deadline)")
        self._rpc_errors.append(error)
        return error

    def _send(self, data: bytes) -> bool:
        """Sends one response message; False once the call is over."""
        lib = self._lib
        out = c_void_p()
        lib.check(lib.bytes_copy(data, len(data), byref(out)))
        flags = 0
        if self._no_compress:
            self._no_compress = False
            flags = SEND_NO_COMPRESS
        rc = lib.server_call_send(self._call, out, flags, -1)
        lib.bytes_free(out)
        self._headers_sent = True
        if rc == OK:
            return True
        if rc in (ERR_RPC, ERR_WRONG_STATE):
            return False
        self._fail(StatusCode.INTERNAL, f"sending a response failed: {lib.error(rc)}")
        return False

    def _finish(self, data: bytes | None) -> None:
        """Ends the call: the last response (if any), then the status set on the context."""
        code = 0 if self._code is None else _code_number(self._code)
        self._finish_with(data, code, self._details)

    def _fail(self, code: StatusCode, details: str) -> None:
        """Ends the call with an error; a code and details set on the context win, as in
        grpcio."""
        number = _code_number(code if self._code is None else self._code)
        text = self._details if self._details is not None else _details_bytes(details)
        self._finish_with(None, number, text)

    def _finish_with(self, data: bytes | None, code: int, details: bytes | None) -> None:
        if self._finished:
            return
        self._finished = True
        lib = self._lib
        call = self._call
        msg = None
        if data is not None:
            if self._no_compress:
                # finish() has no flags: send the message on its own, uncompressed.
                if not self._send(data):
                    return
            else:
                out = c_void_p()
                lib.check(lib.bytes_copy(data, len(data), byref(out)))
                msg = out
        trailers = None
        try:
            if self._trailers:
                trailers = _metadata_handle(lib, self._trailers)
            rc = lib.server_call_finish(call, msg, code, details or None, trailers)
        except Exception as exc:
            _LOG.error("plexus.server: bad trailing metadata %r: %s", self._trailers, exc)
            rc = lib.server_call_finish(
                call, None, _CODE_NUMBERS[StatusCode.INTERNAL], b"bad trailing metadata", None
            )
        finally:
            if msg is not None:
                lib.bytes_free(msg)
            if trailers:
                lib.metadata_free(trailers)
        if rc not in (OK, ERR_WRONG_STATE):
            _LOG.error("plexus.server: finishing a call failed: %s", lib.error(rc))

    def _on_exception(self, exc: BaseException, template: str) -> None:
        """What an exception out of the handler (or its response iterator) does to the call,
        as grpcio decides it."""
        if self._aborted:
            self._fail(StatusCode.UNKNOWN, ABORTED_DETAILS)
        elif any(exc is known for known in self._rpc_errors):
            pass  # the call was over already: nothing goes out
        else:
            try:
                details = template.format(exc)
            except Exception:
                details = "Calling application raised unprintable Exception!"
            _LOG.exception(details)
            self._fail(StatusCode.UNKNOWN, details)


class _RequestIterator(Iterator[Any]):
    """The request stream of a client- or bidi-streaming call: each next() waits for the
    next message (the GIL is released while it waits)."""

    __slots__ = ("_context", "_deserializer", "_first", "_done")

    def __init__(
        self, context: ServicerContext, deserializer: Any, first: bytes | None = None
    ) -> None:
        self._context = context
        self._deserializer = deserializer
        self._first = first
        self._done = False

    def __iter__(self) -> _RequestIterator:
        return self

    def __next__(self) -> Any:
        ctx = self._context
        if self._done:
            raise StopIteration
        raw = self._first
        if raw is not None:
            self._first = None
        else:
            lib = ctx._lib
            out = c_void_p()
            rc = lib.server_call_recv(ctx._call, -1, byref(out))
            if rc == END_OF_STREAM:
                self._done = True
                if not ctx.is_active() and not ctx._finished:
                    raise ctx._ended()
                raise StopIteration
            if rc != OK:
                self._done = True
                if rc == ERR_RPC:
                    raise ctx._ended()
                raise lib.error(rc, "receiving a request")
            raw = take_bytes(lib, _ffi.handle(out))
        deserializer = self._deserializer
        if deserializer is None:
            return raw
        try:
            request = deserializer(raw)
        except Exception:
            _LOG.exception("Exception deserializing message!")
            request = None
        if request is None:
            self._done = True
            ctx._fail(StatusCode.INTERNAL, DESERIALIZE_FAILED)
            raise ctx._ended()
        return request

    def next(self) -> Any:
        """Python 2 spelling, which grpcio's iterator also has."""
        return self.__next__()


# --------------------------------------------------------------------------- serving


class _Method:
    """One registered method: its path, handler and libplexus kind."""

    __slots__ = ("path", "handler", "kind")

    def __init__(self, path: str, handler: Any, kind: int) -> None:
        self.path = path
        self.handler = handler
        self.kind = kind


def _serialize(serializer: Any, response: Any) -> bytes | None:
    try:
        data = serializer(response) if serializer is not None else response
    except Exception:
        _LOG.exception("Exception serializing message!")
        return None
    if type(data) is bytes:
        return data
    if isinstance(data, (bytearray, memoryview)):
        return bytes(data)
    return None


def _intercepted(interceptors: tuple[Any, ...], lookup: Callable[[Any], Any], details: Any) -> Any:
    """grpc.ServerInterceptor semantics: each interceptor gets a continuation that runs the
    next one, the last continuation looks the handler up."""

    def at(index: int, call_details: Any) -> Any:
        if index < len(interceptors):
            return interceptors[index].intercept_service(
                lambda d: at(index + 1, d), call_details
            )
        return lookup(call_details)

    return at(0, details)


class _ServerState:
    """Everything the serving loops share."""

    def __init__(self, lib: _ffi.Lib, options: int, interceptors: tuple[Any, ...]) -> None:
        self.lib = lib
        out = c_void_p()
        lib.check(lib.server_new(options, byref(out)))
        self.server = _ffi.handle(out)
        try:
            lib.check(lib.cq_new(byref(out)))
        except BaseException:
            lib.server_free(self.server)
            raise
        self.cq = _ffi.handle(out)
        self.interceptors = interceptors
        self.generic: list[Any] = []
        self.registered: dict[str, Any] = {}
        self.by_tag: dict[int, _Method] = {}
        self.lock = threading.Lock()
        self.started = False
        self.stopping = False
        self.termination = threading.Event()
        self.loops = 0
        self.cq_shut = False
        # Calls whose end someone waits for (add_callback), by tag on done_cq.
        self.done_cq = 0
        self.watched: dict[int, ServicerContext] = {}
        self.next_watch = 1

    # ---- handler lookup

    def _generic_lookup(self, details: Any) -> Any:
        registered = self.registered.get(details.method)
        if registered is not None:
            return registered
        for generic in self.generic:
            handler = generic.service(details)
            if handler is not None:
                return handler
        return None

    def _lookup(self, method: _Method | None, ctx: ServicerContext) -> Any:
        if method is not None and not self.interceptors:
            return method.handler
        details = HandlerCallDetails(ctx._path(), ctx.invocation_metadata())
        if self.interceptors:
            return _intercepted(self.interceptors, self._generic_lookup, details)
        return self._generic_lookup(details)

    # ---- one call

    def handle(self, tag: int, call: int, message: int) -> None:
        """Serves one incoming call on this thread, in a fresh contextvars context (as grpcio
        runs each call)."""
        contextvars.Context().run(self._handle, tag, call, message)

    def _handle(self, tag: int, call: int, message: int) -> None:
        lib = self.lib
        method = self.by_tag.get(tag)
        raw = take_bytes(lib, message) if message else None
        ctx = ServicerContext(self, call, method.path if method is not None else None)
        try:
            try:
                handler = self._lookup(method, ctx)
            except Exception as exc:
                _LOG.exception("Exception servicing handler: %s", exc)
                ctx._finish_with(None, _CODE_NUMBERS[StatusCode.UNKNOWN], b"Error in service handler!")
                return
            if handler is None:
                ctx._finish_with(
                    None, _CODE_NUMBERS[StatusCode.UNIMPLEMENTED], UNIMPLEMENTED_DETAILS.encode()
                )
                return
            self._run(ctx, handler, raw)
        except Exception:
            _LOG.exception("plexus.server: serving %s failed", ctx._path())
            ctx._fail(StatusCode.INTERNAL, "the server failed to serve the call")
        finally:
            self.release(ctx)

    def _run(self, ctx: ServicerContext, handler: Any, raw: bytes | None) -> None:
        deserializer = handler.request_deserializer
        if handler.request_streaming:
            argument: Any = _RequestIterator(ctx, deserializer, raw)
            behavior = handler.stream_stream if handler.response_streaming else handler.stream_unary
        else:
            if raw is None:
                out = c_void_p()
                rc = self.lib.server_call_recv(ctx._call, -1, byref(out))
                if rc == END_OF_STREAM:
                    if ctx.is_active():
                        ctx._fail(
                            StatusCode.UNIMPLEMENTED,
                            f'"{ctx._path()}" requires exactly one request message.',
                        )
                    return
                if rc != OK:
                    return  # the call is over (plexus sent the status if it had one to send)
                raw = take_bytes(self.lib, _ffi.handle(out))
            if deserializer is None:
                argument = raw
            else:
                try:
                    argument = deserializer(raw)
                except Exception:
                    _LOG.exception("Exception deserializing message!")
                    argument = None
                if argument is None:
                    ctx._fail(StatusCode.INTERNAL, DESERIALIZE_FAILED)
                    return
            behavior = handler.unary_stream if handler.response_streaming else handler.unary_unary
        try:
            result = behavior(argument, ctx)
        except Exception as exc:
            ctx._on_exception(exc, APPLICATION_FAILED)
            return
        serializer = handler.response_serializer
        if not handler.response_streaming:
            data = _serialize(serializer, result)
            if data is None:
                ctx._fail(StatusCode.INTERNAL, SERIALIZE_FAILED)
            else:
                ctx._finish(data)
            return
        while True:
            try:
                response = next(result)
            except StopIteration:
                break
            except Exception as exc:
                ctx._on_exception(exc, ITERATION_FAILED)
                return
            if response is None:
                break  # grpcio ends the stream at a None response
            data = _serialize(serializer, response)
            if data is None:
                ctx._fail(StatusCode.INTERNAL, SERIALIZE_FAILED)
                return
            if not ctx._send(data):
                return
        ctx._finish(None)

    # ---- the end of calls (add_callback)

    def watch(self, ctx: ServicerContext, callback: Callable[[], None]) -> bool:
        """Queues `callback` for the end of the call; False when the call is already over."""
        lib = self.lib
        with self.lock:
            callbacks = ctx._callbacks
            if callbacks is None or not ctx._call:
                return False
            if ctx._refs > 1:
                callbacks.append(callback)
                return True
            if not self.done_cq:
                out = c_void_p()
                lib.check(lib.cq_new(byref(out)))
                self.done_cq = _ffi.handle(out)
                threading.Thread(
                    target=self._watch_loop, args=(self.done_cq,), name="plexus-server-done",
                    daemon=True,
                ).start()
            key = self.next_watch
            self.next_watch += 1
            if lib.server_call_done_async(ctx._call, self.done_cq, key) != OK:
                return False
            self.watched[key] = ctx
            ctx._refs += 1
            callbacks.append(callback)
            return True

    def _watch_loop(self, cq: int) -> None:
        lib = self.lib
        event = _ffi.Event()
        while True:
            rc = lib.cq_next(cq, -1, byref(event))
            if rc == ERR_TIMEOUT:
                continue
            if rc != OK:
                break
            if event.status:
                lib.status_free(event.status)
            if event.op != OP_SERVER_DONE:
                continue
            with self.lock:
                ctx = self.watched.pop(event.tag or 0, None)
                if ctx is None:
                    continue
                callbacks, ctx._callbacks = ctx._callbacks, None
            for callback in callbacks or ():
                try:
                    callback()
                except Exception:
                    _LOG.exception("Exception calling callback!")
            self.release(ctx)
        lib.cq_free(cq)

    def release(self, ctx: ServicerContext) -> None:
        """Drops one user of the call handle (the handler, or a wait for its end); the last
        one frees it."""
        with self.lock:
            ctx._refs -= 1
            if ctx._refs > 0:
                return
            call, ctx._call = ctx._call, 0
            ctx._callbacks = None
        self.lib.server_call_free(call)

    # ---- loops

    def serve(self) -> None:
        """One serving loop: takes incoming calls and serves them on this thread until the
        server's queue is shut down."""
        lib = self.lib
        cq = self.cq
        event = _ffi.Event()
        ref = byref(event)
        try:
            while True:
                # A call already queued is taken without letting go of the GIL (no switch to
                # another serving thread); only an empty queue is waited on.
                rc = lib.cq_poll(cq, 0, ref)
                if rc == ERR_TIMEOUT:
                    rc = lib.cq_next(cq, -1, ref)
                if rc == OK:
                    if event.op == OP_SERVER_CALL:
                        self.handle(event.tag or 0, event.server_call or 0, event.message or 0)
                    elif event.status:
                        lib.status_free(event.status)
                elif rc == ERR_TIMEOUT:
                    continue
                else:
                    if rc != ERR_SHUTDOWN:
                        _LOG.error("plexus.server: waiting for calls failed: %s", lib.error(rc))
                    break
        finally:
            self.loop_exited()

    def dispatch(self, executor: Any) -> None:
        """The loop for an executor without a known size: each call is submitted to it."""
        lib = self.lib
        event = _ffi.Event()
        try:
            while True:
                rc = lib.cq_next(self.cq, -1, byref(event))
                if rc == OK:
                    if event.op == OP_SERVER_CALL:
                        args = (event.tag or 0, event.server_call or 0, event.message or 0)
                        try:
                            executor.submit(self.handle, *args)
                        except Exception:
                            _LOG.exception("plexus.server: the executor refused a call")
                            if args[2]:
                                lib.bytes_free(args[2])
                            lib.server_call_free(args[1])
                elif rc != ERR_TIMEOUT:
                    break
        finally:
            self.loop_exited()

    def loop_exited(self) -> None:
        """Bookkeeping of a loop that ended: the last one after shutdown frees the queue."""
        with self.lock:
            self.loops -= 1
        self._free_queue()

    def _free_queue(self) -> None:
        with self.lock:
            if self.loops > 0 or not self.cq_shut or not self.cq:
                return
            cq, self.cq = self.cq, 0
            done_cq = self.done_cq
        self.lib.cq_free(cq)
        if done_cq:
            # The watcher takes the remaining ends of calls, then frees its queue.
            self.lib.cq_shutdown(done_cq)

    def shut_down(self, grace: float | None) -> None:
        """Runs plexus's graceful shutdown (blocking), then lets the loops end."""
        lib = self.lib
        ms = 0 if grace is None else max(0, int(grace * 1000))
        try:
            rc = lib.server_shutdown(self.server, ms)
            if rc != OK:
                _LOG.error("plexus.server: shutdown failed: %s", lib.error(rc))
        finally:
            # Later calls on the Server see a NULL handle (a clear error), never a freed one.
            server, self.server = self.server, 0
            lib.server_free(server)
            lib.cq_shutdown(self.cq)
            with self.lock:
                self.cq_shut = True
            self._free_queue()
            _running.discard(self)
            self.termination.set()


_running: set[_ServerState] = set()


def _stop_all_at_exit() -> None:
    """At interpreter exit, servers still running stop at once, so that the thread pools
    their loops occupy can be joined."""
    for state in list(_running):
        try:
            _begin_stop(state, None)
        except Exception:
            pass
    for state in list(_running):
        state.termination.wait(5.0)


_register_atexit = getattr(threading, "_register_atexit", None)
if _register_atexit is not None:
    # concurrent.futures.thread registers the hook that joins pool workers when it is first
    # imported; importing it first makes this hook the later one, which runs first.
    importlib.import_module("concurrent.futures.thread")
    _register_atexit(_stop_all_at_exit)
else:  # pragma: no cover - every supported Python has it
    import atexit

    atexit.register(_stop_all_at_exit)


def _begin_stop(state: _ServerState, grace: float | None) -> bool:
    """Starts the shutdown once; False when it had started already."""
    with state.lock:
        if state.stopping:
            return False
        state.stopping = True
    if not state.started:
        state.shut_down(grace)
        return True
    threading.Thread(
        target=state.shut_down, args=(grace,), name="plexus-server-stop", daemon=True
    ).start()
    return True


class Server(_ServerBase):
    """grpc.Server served by libplexus: see the module documentation."""

    def __init__(
        self,
        thread_pool: Any,
        handlers: Sequence[Any] | None = None,
        interceptors: Sequence[Any] | None = None,
        options: Sequence[Tuple[str, Any]] | None = None,
        maximum_concurrent_rpcs: int | None = None,
        compression: CompressionArg = None,
    ) -> None:
        if thread_pool is None or not callable(getattr(thread_pool, "submit", None)):
            raise TypeError(
                "thread_pool must be a concurrent.futures executor "
                f"(futures.ThreadPoolExecutor(max_workers=...)), not {thread_pool!r}"
            )
        intercepts = tuple(interceptors or ())
        for interceptor in intercepts:
            if not callable(getattr(interceptor, "intercept_service", None)):
                raise TypeError(f"{interceptor!r} is not a grpc.ServerInterceptor")
        lib = _ffi.current()
        opts = server_options_handle(lib, options, maximum_concurrent_rpcs, compression)
        try:
            self._state = _ServerState(lib, opts, intercepts)
        finally:
            lib.server_options_free(opts)
        self._pool = thread_pool
        if handlers:
            self.add_generic_rpc_handlers(handlers)

    def add_generic_rpc_handlers(self, generic_rpc_handlers: Iterable[Any]) -> None:
        """Adds grpc.GenericRpcHandler objects: asked in order, by `service(details)`, for
        paths without a registered handler."""
        handlers = list(generic_rpc_handlers)
        for handler in handlers:
            if getattr(handler, "service", None) is None:
                raise AttributeError(
                    f'"{handler}" must conform to grpc.GenericRpcHandler type but does not '
                    'have "service" method!'
                )
        with self._state.lock:
            self._state.generic.extend(handlers)

    def add_registered_method_handlers(
        self, service_name: str, method_handlers: Mapping[str, Any]
    ) -> None:
        """Registers `/service_name/method` paths with their grpc.RpcMethodHandler (what
        grpcio-tools code calls): served without asking the generic handlers. Ignored with a
        warning once the server started, as in grpcio."""
        state = self._state
        if state.started:
            _LOG.warning("Cannot register method handlers once server has started")
            return
        lib = state.lib
        for name, handler in method_handlers.items():
            path = f"/{service_name}/{name}"
            if path in state.registered:
                state.registered[path] = handler
                continue
            kind = method_kind(handler)
            tag = _FIRST_METHOD_TAG + len(state.by_tag)
            rc = lib.server_register_method(state.server, path.encode("utf-8"), kind, state.cq, tag)
            if rc != OK:
                raise lib.error(rc, f"registering {path}")
            state.by_tag[tag] = _Method(path, handler, kind)
            state.registered[path] = handler

    def _add_port(self, address: str, tls: int | None) -> int:
        if isinstance(address, bytes):
            address = address.decode("utf-8")
        if not isinstance(address, str):
            raise TypeError(f"address must be a str like '[::]:50051', not {address!r}")
        lib = self._state.lib
        port = c_int32(0)
        rc = lib.server_add_listener(self._state.server, address.encode("utf-8"), tls, byref(port))
        if rc != OK:
            raise RuntimeError(f"{_BIND_FAILED % address} ({lib.error(rc)})")
        if port.value == 0 and address.startswith(("unix:", "unix-abstract:")):
            return 1  # grpcio's value for a bound Unix socket
        return port.value

    def add_insecure_port(self, address: str) -> int:
        """Listens on `address` ("[::]:50051", "localhost:0", "unix:path"); returns the port
        (the bound one for port 0)."""
        return self._add_port(address, None)

    def add_secure_port(self, address: str, server_credentials: object) -> int:
        """Listens with TLS: credentials from grpc.ssl_server_credentials or
        plexus.ssl_server_credentials. Returns the port."""
        lib = self._state.lib
        tls = server_tls_handle(lib, server_credentials)
        try:
            return self._add_port(address, tls)
        finally:
            lib.server_tls_free(tls)

    def start(self) -> None:
        """Starts serving: the thread pool's workers become serving loops."""
        state = self._state
        lib = state.lib
        with state.lock:
            if state.started or state.stopping:
                raise ValueError("Cannot start already-started server!")
            state.started = True
        lib.check(
            lib.server_register_catch_all(state.server, state.cq, _CATCH_ALL_TAG), "catch-all"
        )
        lib.check(lib.server_start(state.server), "starting the server")
        _running.add(state)
        workers = getattr(self._pool, "_max_workers", None)
        if isinstance(workers, int) and workers > 0:
            with state.lock:
                state.loops = workers
            for _ in range(workers):
                self._pool.submit(state.serve)
        else:
            with state.lock:
                state.loops = 1
            threading.Thread(
                target=state.dispatch, args=(self._pool,), name="plexus-server", daemon=True
            ).start()

    def stop(self, grace: Optional[float]) -> threading.Event:
        """Stops accepting calls; calls in flight get `grace` seconds to finish (None: they
        are cancelled now), then are cancelled. Returns an Event set once the server has
        stopped; with grace None it waits for that first, as grpcio does."""
        state = self._state
        _begin_stop(state, grace)
        if grace is None:
            return _waited(state.termination)
        return state.termination

    def wait_for_termination(self, timeout: Optional[float] = None) -> bool:
        """Blocks until the server stopped or `timeout` seconds passed; True when it timed
        out (grpcio's answer)."""
        end = None if timeout is None else time.monotonic() + timeout
        termination = self._state.termination
        while not termination.is_set():
            slice_ = 0.25
            if end is not None:
                left = end - time.monotonic()
                if left <= 0:
                    return True
                slice_ = min(slice_, left)
            termination.wait(slice_)
        return False

    def __del__(self) -> None:
        state = getattr(self, "_state", None)
        if state is not None and not state.stopping:
            try:
                _begin_stop(state, None)
            except Exception:
                pass


def _waited(event: threading.Event) -> threading.Event:
    while not event.wait(0.25):
        pass
    return event


def server(
    thread_pool: Any,
    handlers: Sequence[Any] | None = None,
    interceptors: Sequence[Any] | None = None,
    options: Sequence[Tuple[str, Any]] | None = None,
    maximum_concurrent_rpcs: int | None = None,
    compression: CompressionArg = None,
    xds: bool = False,
) -> Server:
    """grpc.server's signature: a server whose handlers run on `thread_pool`'s threads.

    `options` are grpcio's server options (SERVER_OPTIONS lists those applied; others are
    ignored), `maximum_concurrent_rpcs` refuses calls beyond it with RESOURCE_EXHAUSTED,
    `compression` (grpc.Compression) compresses responses by default. `xds` must be False.
    """
    if xds:
        raise ValueError("plexus.server does not support xDS")
    return Server(thread_pool, handlers, interceptors, options, maximum_concurrent_rpcs, compression)

