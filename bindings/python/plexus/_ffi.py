"""The ctypes layer: finds and loads libplexus, declares its functions, maps its result codes.

Everything above this module talks to a `Lib`, one loaded copy of the shared library. A
process normally has one copy. After `os.fork()` in a process whose plexus runtime had
started, that copy refuses every call in the child (PLEXUS_ERR_FORKED: the parent's worker
threads did not survive the fork), so the at-fork hook below loads a fresh copy of the file
under another name: a fresh set of statics and a fresh runtime. Objects created before the
fork keep the copy they were made with and fail with a clear error when used.
"""

from __future__ import annotations

import ctypes
import gc
import os
import sys
import tempfile
from ctypes import (
    POINTER,
    Structure,
    byref,
    c_bool,
    c_char_p,
    c_double,
    c_int32,
    c_int64,
    c_size_t,
    c_uint32,
    c_uint64,
    c_void_p,
)
from typing import TYPE_CHECKING, Any

LIBRARY_ENV = "PLEXUS_LIBRARY"
"""Environment variable naming a prebuilt libplexus to load instead of the packaged one."""

# Result codes (include/plexus.h, enum plexus_result): stable values.
OK = 0
ERR_NULL_ARGUMENT = 1
ERR_INVALID_ARGUMENT = 2
ERR_INVALID_UTF8 = 3
ERR_RPC = 4
ERR_TIMEOUT = 5
END_OF_STREAM = 6
ERR_WRONG_STATE = 7
ERR_BUSY = 8
ERR_SHUTDOWN = 9
ERR_FORKED = 10
ERR_PANIC = 11
ERR_SYSTEM = 12

# Completion-queue operations (enum plexus_op).
OP_UNARY = 1
OP_START = 2
OP_SEND = 3
OP_RECV = 4
OP_CLOSE_SEND = 5
OP_FINISH = 6
OP_INITIAL_METADATA = 7
OP_STATE_CHANGE = 8
OP_SERVER_CALL = 9
OP_SEND_INITIAL_METADATA = 10
OP_SERVER_DONE = 11
OP_SERVER_SHUTDOWN = 12

# Server method kinds (enum plexus_method_kind).
METHOD_UNARY = 0
METHOD_CLIENT_STREAMING = 1
METHOD_SERVER_STREAMING = 2
METHOD_BIDI_STREAMING = 3

# plexus_server_call_send flags.
SEND_NO_COMPRESS = 1

# Connectivity states (enum plexus_connectivity_state).
STATE_IDLE = 0
STATE_SHUTDOWN = 4


class Event(Structure):
    """struct plexus_event: one finished asynchronous operation."""

    _fields_ = [
        ("tag", c_void_p),
        ("op", c_int32),
        ("result", c_int32),
        ("call", c_void_p),
        ("message", c_void_p),
        ("status", c_void_p),
        ("metadata", c_void_p),
        ("state", c_int32),
        ("server_call", c_void_p),
    ]


class MetadataEntry(Structure):
    """struct plexus_metadata_entry: one borrowed metadata entry."""

    _fields_ = [
        ("key", c_void_p),
        ("key_len", c_size_t),
        ("value", c_void_p),
        ("value_len", c_size_t),
        ("binary", c_bool),
    ]


class ChannelStats(Structure):
    """struct plexus_channel_stats."""

    _fields_ = [
        ("calls_started", c_uint64),
        ("calls_succeeded", c_uint64),
        ("calls_failed", c_uint64),
        ("active_streams", c_uint64),
        ("connections", c_uint64),
        ("endpoints", c_uint64),
        ("state", c_int32),
    ]


_P = c_void_p
_OUT = POINTER(c_void_p)
_R = c_int32

# name: (restype, argtypes). Handles are plain c_void_p: ctypes passes ints and None as is.
_SIGNATURES = {
    "plexus_version": (c_char_p, []),
    "plexus_last_error": (c_char_p, []),
    "plexus_result_name": (c_char_p, [c_int32]),
    "plexus_init": (_R, [c_uint32]),
    "plexus_runtime_threads": (_R, [POINTER(c_uint32)]),
    "plexus_shutdown": (_R, []),
    "plexus_bytes_copy": (_R, [c_char_p, c_size_t, _OUT]),
    "plexus_bytes_data": (_R, [_P, _OUT, POINTER(c_size_t)]),
    "plexus_bytes_free": (None, [_P]),
    "plexus_call_start": (_R, [_P, c_char_p, _P, c_int64, _OUT, _OUT]),
    "plexus_call_start_server_streaming": (_R, [_P, c_char_p, _P, _P, c_int64, _OUT, _OUT]),
    "plexus_call_send": (_R, [_P, _P, c_int64]),
    "plexus_call_recv": (_R, [_P, c_int64, _OUT]),
    "plexus_call_close_send": (_R, [_P, c_int64]),
    "plexus_call_initial_metadata": (_R, [_P, c_int64, _OUT]),
    "plexus_call_finish": (_R, [_P, c_int64, _OUT]),
    "plexus_call_cancel": (_R, [_P]),
    "plexus_call_free": (None, [_P]),
    "plexus_call_start_async": (_R, [_P, c_char_p, _P, _P, _P]),
    "plexus_call_start_server_streaming_async": (_R, [_P, c_char_p, _P, _P, _P, _P]),
    "plexus_call_send_async": (_R, [_P, _P, _P, _P]),
    "plexus_call_recv_async": (_R, [_P, _P, _P]),
    "plexus_call_close_send_async": (_R, [_P, _P, _P]),
    "plexus_call_initial_metadata_async": (_R, [_P, _P, _P]),
    "plexus_call_finish_async": (_R, [_P, _P, _P]),
    "plexus_channel_new": (_R, [c_char_p, _P, _OUT]),
    "plexus_channel_free": (None, [_P]),
    "plexus_channel_get_stats": (_R, [_P, POINTER(ChannelStats)]),
    "plexus_channel_state": (_R, [_P, POINTER(c_int32)]),
    "plexus_channel_connect": (_R, [_P, c_int64]),
    "plexus_channel_watch_state_async": (_R, [_P, c_int32, c_int64, _P, _P]),
    "plexus_cq_new": (_R, [_OUT]),
    "plexus_cq_next": (_R, [_P, c_int64, POINTER(Event)]),
    "plexus_cq_fd": (_R, [_P, POINTER(c_int32)]),
    "plexus_cq_shutdown": (_R, [_P]),
    "plexus_cq_free": (None, [_P]),
    "plexus_metadata_new": (_R, [_OUT]),
    "plexus_metadata_append": (_R, [_P, c_char_p, c_char_p]),
    "plexus_metadata_append_bin": (_R, [_P, c_char_p, c_char_p, c_size_t]),
    "plexus_metadata_len": (_R, [_P, POINTER(c_size_t)]),
    "plexus_metadata_get_entry": (_R, [_P, c_size_t, POINTER(MetadataEntry)]),
    "plexus_metadata_free": (None, [_P]),
    "plexus_channel_options_new": (_R, [_OUT]),
    "plexus_channel_options_free": (None, [_P]),
    "plexus_channel_options_set_shared": (_R, [_P, c_bool]),
    "plexus_channel_options_set_max_receive_message_size": (_R, [_P, c_size_t]),
    "plexus_channel_options_set_max_send_message_size": (_R, [_P, c_size_t]),
    "plexus_channel_options_set_initial_stream_window_size": (_R, [_P, c_uint32]),
    "plexus_channel_options_set_initial_connection_window_size": (_R, [_P, c_uint32]),
    "plexus_channel_options_set_adaptive_window": (_R, [_P, c_bool]),
    "plexus_channel_options_set_keepalive_time_ms": (_R, [_P, c_uint64]),
    "plexus_channel_options_set_keepalive_timeout_ms": (_R, [_P, c_uint64]),
    "plexus_channel_options_set_keepalive_permit_without_calls": (_R, [_P, c_bool]),
    "plexus_channel_options_set_max_frame_size": (_R, [_P, c_uint32]),
    "plexus_channel_options_set_connect_timeout_ms": (_R, [_P, c_uint64]),
    "plexus_channel_options_set_multiple_connections": (_R, [_P, c_bool]),
    "plexus_channel_options_set_max_connections_per_endpoint": (_R, [_P, c_size_t]),
    "plexus_channel_options_set_backoff": (_R, [_P, c_uint64, c_double, c_double, c_uint64]),
    "plexus_channel_options_set_idle_timeout_ms": (_R, [_P, c_uint64]),
    "plexus_channel_options_set_resolve_interval_ms": (_R, [_P, c_uint64]),
    "plexus_channel_options_set_min_resolve_interval_ms": (_R, [_P, c_uint64]),
    "plexus_channel_options_set_lb_policy": (_R, [_P, c_char_p]),
    "plexus_channel_options_set_user_agent": (_R, [_P, c_char_p]),
    "plexus_channel_options_set_service_config": (_R, [_P, c_char_p]),
    "plexus_channel_options_set_enable_retries": (_R, [_P, c_bool]),
    "plexus_channel_options_set_health_checking": (_R, [_P, c_bool]),
    "plexus_channel_options_set_authority": (_R, [_P, c_char_p]),
    "plexus_channel_options_set_per_call_retry_buffer_size": (_R, [_P, c_size_t]),
    "plexus_channel_options_set_retry_buffer_size": (_R, [_P, c_size_t]),
    "plexus_call_options_new": (_R, [_OUT]),
    "plexus_call_options_free": (None, [_P]),
    "plexus_call_options_set_timeout_ms": (_R, [_P, c_int64]),
    "plexus_call_options_set_metadata": (_R, [_P, _P]),
    "plexus_call_options_set_wait_for_ready": (_R, [_P, c_bool]),
    "plexus_call_options_set_max_receive_message_size": (_R, [_P, c_size_t]),
    "plexus_call_options_set_max_send_message_size": (_R, [_P, c_size_t]),
    "plexus_call_options_set_compression": (_R, [_P, c_char_p]),
    "plexus_channel_options_set_compression": (_R, [_P, c_char_p]),
    "plexus_channel_options_set_tls": (_R, [_P, c_bool]),
    "plexus_channel_options_add_tls_ca_pem": (_R, [_P, c_char_p, c_size_t]),
    "plexus_channel_options_set_tls_native_roots": (_R, [_P, c_bool]),
    "plexus_channel_options_set_tls_server_name": (_R, [_P, c_char_p]),
    "plexus_channel_options_set_tls_identity_pem": (
        _R,
        [_P, c_char_p, c_size_t, c_char_p, c_size_t],
    ),
    "plexus_status_code": (_R, [_P, POINTER(c_int32)]),
    "plexus_status_message": (_R, [_P, POINTER(c_char_p), POINTER(c_size_t)]),
    "plexus_status_details": (_R, [_P, _OUT, POINTER(c_size_t)]),
    "plexus_status_trailing_metadata": (_R, [_P, _OUT]),
    "plexus_status_initial_metadata": (_R, [_P, _OUT]),
    "plexus_status_free": (None, [_P]),
    "plexus_unary": (_R, [_P, c_char_p, _P, _P, c_int64, _OUT, _OUT]),
    "plexus_unary_async": (_R, [_P, c_char_p, _P, _P, _P, _P]),
    "plexus_unary_call_async": (_R, [_P, c_char_p, _P, _P, _P, _P, _OUT]),
    # --- server ABI ---
    "plexus_server_options_new": (_R, [_OUT]),
    "plexus_server_options_free": (None, [_P]),
    "plexus_server_options_set_max_concurrent_calls": (_R, [_P, c_uint32]),
    "plexus_server_options_set_max_concurrent_streams": (_R, [_P, c_uint32]),
    "plexus_server_options_set_max_receive_message_size": (_R, [_P, c_size_t]),
    "plexus_server_options_set_max_send_message_size": (_R, [_P, c_size_t]),
    "plexus_server_options_set_initial_stream_window_size": (_R, [_P, c_uint32]),
    "plexus_server_options_set_initial_connection_window_size": (_R, [_P, c_uint32]),
    "plexus_server_options_set_adaptive_window": (_R, [_P, c_bool]),
    "plexus_server_options_set_max_frame_size": (_R, [_P, c_uint32]),
    "plexus_server_options_set_keepalive_time_ms": (_R, [_P, c_int64]),
    "plexus_server_options_set_keepalive_timeout_ms": (_R, [_P, c_int64]),
    "plexus_server_options_set_keepalive_min_ping_interval_ms": (_R, [_P, c_int64]),
    "plexus_server_options_set_keepalive_permit_without_calls": (_R, [_P, c_bool]),
    "plexus_server_options_set_handshake_timeout_ms": (_R, [_P, c_int64]),
    "plexus_server_options_set_max_header_list_size": (_R, [_P, c_uint32]),
    "plexus_server_options_set_max_connection_idle_ms": (_R, [_P, c_int64]),
    "plexus_server_options_set_max_connection_age_ms": (_R, [_P, c_int64]),
    "plexus_server_options_set_max_connection_age_grace_ms": (_R, [_P, c_int64]),
    "plexus_server_options_set_compression": (_R, [_P, c_char_p]),
    "plexus_server_tls_new": (_R, [c_char_p, c_char_p, _OUT]),
    "plexus_server_tls_set_client_ca_pem": (_R, [_P, c_char_p, c_bool]),
    "plexus_server_tls_free": (None, [_P]),
    "plexus_server_new": (_R, [_P, _OUT]),
    "plexus_server_register_method": (_R, [_P, c_char_p, c_int32, _P, _P]),
    "plexus_server_register_catch_all": (_R, [_P, _P, _P]),
    "plexus_server_add_listener": (_R, [_P, c_char_p, _P, POINTER(c_int32)]),
    "plexus_server_start": (_R, [_P]),
    "plexus_server_shutdown": (_R, [_P, c_int64]),
    "plexus_server_shutdown_async": (_R, [_P, c_int64, _P, _P]),
    "plexus_server_free": (None, [_P]),
    "plexus_server_call_method": (_R, [_P, POINTER(c_char_p)]),
    "plexus_server_call_peer": (_R, [_P, POINTER(c_char_p)]),
    "plexus_server_call_metadata": (_R, [_P, _OUT]),
    "plexus_server_call_deadline": (_R, [_P, POINTER(c_int64)]),
    "plexus_server_call_is_cancelled": (_R, [_P, POINTER(c_bool)]),
    "plexus_server_call_peer_certificate": (_R, [_P, _OUT, POINTER(c_size_t)]),
    "plexus_server_call_set_compression": (_R, [_P, c_char_p]),
    "plexus_server_call_recv": (_R, [_P, c_int64, _OUT]),
    "plexus_server_call_recv_async": (_R, [_P, _P, _P]),
    "plexus_server_call_send_initial_metadata": (_R, [_P, _P, c_int64]),
    "plexus_server_call_send_initial_metadata_async": (_R, [_P, _P, _P, _P]),
    "plexus_server_call_send": (_R, [_P, _P, c_uint32, c_int64]),
    "plexus_server_call_send_async": (_R, [_P, _P, c_uint32, _P, _P]),
    "plexus_server_call_finish": (_R, [_P, _P, c_int32, c_char_p, _P]),
    "plexus_server_call_cancel": (_R, [_P]),
    "plexus_server_call_done_async": (_R, [_P, _P, _P]),
    "plexus_server_call_free": (None, [_P]),
    "plexus_call_options_set_parent": (_R, [_P, _P]),
    # --- end of server ABI ---
}

# Functions that return at once and call back into no Python: they run with the GIL held.
# ctypes releases the GIL around every other call, and each release lets another thread take
# the GIL, so a served call that released it half a dozen times switched threads as often.
# Everything that can wait (blocking calls, cq_next with a timeout, the frees that join
# threads) releases it as usual.
_KEEP_GIL = frozenset(
    f"plexus_{name}"
    for name in (
        "last_error result_name bytes_copy bytes_data bytes_free "
        "metadata_new metadata_append metadata_append_bin metadata_len metadata_get_entry "
        "metadata_free status_code status_message status_details status_trailing_metadata "
        "status_initial_metadata status_free call_options_new call_options_free "
        "call_options_set_timeout_ms call_options_set_metadata call_options_set_wait_for_ready "
        "call_options_set_compression call_options_set_parent "
        "server_call_method server_call_peer server_call_metadata server_call_deadline "
        "server_call_is_cancelled server_call_set_compression server_call_recv_async "
        "server_call_send_initial_metadata_async server_call_send_async server_call_finish "
        "server_call_cancel server_call_done_async server_call_free"
    ).split()
)


class PlexusError(RuntimeError):
    """A failure reported by libplexus itself (not a gRPC status): `result` is its code."""

    def __init__(self, message: str, result: int) -> None:
        super().__init__(message)
        self.result = result


class InvalidArgumentError(PlexusError, ValueError):
    """libplexus rejected an argument (a bad target, option value or metadata key)."""


class ForkedError(PlexusError):
    """The object was created before os.fork() in a parent whose plexus runtime had started."""


_FORKED_TEXT = (
    "this object was created before os.fork(), in a process whose plexus runtime had "
    "started; it cannot be used in the child: create a new channel in the child"
)


class Lib:
    """One loaded copy of libplexus, its functions bound with their C signatures.

    `lib.foo` is the C function `plexus_foo`, except `lib.c_last_error` for
    `plexus_last_error` (`lib.last_error()` decodes it).
    """

    def __init__(self, path: str, generation: int) -> None:
        try:
            dll = ctypes.CDLL(path)
        except OSError as exc:
            raise ImportError(f"plexus: could not load libplexus from {path!r}: {exc}") from exc
        self.path = path
        self.generation = generation
        self.dll = dll
        # Call options holding only a timeout, shared by every call (see _common).
        self.timeout_options: dict[float, int] = {}
        self.shared_options: set[int] = set()
        # The same loaded library, its functions called without releasing the GIL.
        holding = ctypes.PyDLL(path, handle=dll._handle)
        for name, (restype, argtypes) in _SIGNATURES.items():
            try:
                fn = getattr(holding if name in _KEEP_GIL else dll, name)
            except AttributeError:
                raise ImportError(
                    f"plexus: the libplexus at {path!r} has no {name}: it is older than this "
                    "package; rebuild it (cargo build --release -p plexus-ffi)"
                ) from None
            fn.restype = restype
            fn.argtypes = argtypes
            short = name[len("plexus_") :]
            setattr(self, "c_" + short if short == "last_error" else short, fn)
        # plexus_cq_next for a timeout of 0 only: takes an event that is there, keeping the GIL.
        self.cq_poll = holding.plexus_cq_next
        self.cq_poll.restype = _R
        self.cq_poll.argtypes = self.cq_next.argtypes

    if TYPE_CHECKING:
        # The C functions are attributes set from _SIGNATURES above; ctypes decides their
        # argument and result types at run time.
        def __getattr__(self, name: str) -> Any: ...

    def last_error(self) -> str:
        """The text of the calling thread's last failure in this copy."""
        raw: bytes | None = self.c_last_error()
        return raw.decode("utf-8", "replace") if raw else ""

    def error(self, rc: int, what: str = "") -> Exception:
        """The exception for result `rc`, carrying the library's text."""
        text = self.last_error()
        if what:
            text = f"{what}: {text}" if text else what
        if rc in (ERR_INVALID_ARGUMENT, ERR_INVALID_UTF8):
            return InvalidArgumentError(text, rc)
        if rc == ERR_FORKED:
            return ForkedError(f"{_FORKED_TEXT} ({text})", rc)
        if rc == ERR_SYSTEM:
            return OSError(text)
        raw: bytes | None = self.result_name(rc)
        name = raw.decode() if raw else str(rc)
        return PlexusError(f"{name}: {text}" if text else name, rc)

    def check(self, rc: int, what: str = "") -> None:
        """Raises for a result other than OK."""
        if rc != OK:
            raise self.error(rc, what)


def handle(out: c_void_p) -> int:
    """The handle a call wrote to an output parameter, as an int (0 for NULL)."""
    return out.value or 0


def _library_path() -> str:
    override = os.environ.get(LIBRARY_ENV)
    if override:
        if not os.path.isfile(override):
            raise ImportError(f"plexus: {LIBRARY_ENV}={override!r} is not a file")
        return os.path.abspath(override)
    here = os.path.dirname(os.path.abspath(__file__))
    for name in ("libplexus.so", "libplexus.dylib"):
        candidate = os.path.join(here, name)
        if os.path.isfile(candidate):
            return candidate
    raise ImportError(
        "plexus: libplexus is not installed next to the package; install the package with "
        f"`pip install ./bindings/python` (which builds it with cargo) or set {LIBRARY_ENV} "
        "to a prebuilt libplexus.so"
    )


_source_path = _library_path()
_current = Lib(_source_path, 0)
_reload_error: Exception | None = None


def current() -> Lib:
    """The copy of the library new objects use in this process."""
    if _reload_error is not None:
        raise PlexusError(
            f"plexus could not load a fresh copy of libplexus after os.fork(): {_reload_error}",
            ERR_FORKED,
        )
    return _current


def _fresh_copy(generation: int) -> Lib:
    """Loads the library file again under a new name: an independent copy with its own
    statics and runtime. On Linux the copy lives in a memfd (nothing touches the disk);
    elsewhere, or if that fails, in a temporary file removed right after loading."""
    with open(_source_path, "rb") as src:
        image = src.read()
    if sys.platform.startswith("linux") and hasattr(os, "memfd_create"):
        try:
            fd = os.memfd_create("libplexus-fork", 0)
        except OSError:
            fd = -1
        if fd >= 0:
            try:
                _write_all(fd, image)
                return Lib(f"/proc/self/fd/{fd}", generation)
            except (OSError, ImportError):
                pass
            finally:
                # dlopen keeps its own mapping: the descriptor is not needed any more.
                os.close(fd)
    handle, path = tempfile.mkstemp(prefix="libplexus-fork-", suffix=".so")
    try:
        _write_all(handle, image)
        os.close(handle)
        handle = -1
        return Lib(path, generation)
    finally:
        if handle >= 0:
            os.close(handle)
        os.unlink(path)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _after_fork_in_child() -> None:
    """In a forked child: keep the library if it still works here, else load a fresh copy.

    No garbage collection runs meanwhile: a collection here would finalize other libraries'
    objects before their own fork handlers ran (grpcio's, collected this early in a forked
    child, spin forever waiting for the fork to end).
    """
    collecting = gc.isenabled()
    gc.disable()
    try:
        _keep_or_reload()
    finally:
        if collecting:
            gc.enable()


def _keep_or_reload() -> None:
    """The probe is a call that needs no runtime; it fails with PLEXUS_ERR_FORKED exactly when
    the parent had started the runtime of this copy."""
    global _current, _reload_error
    lib = _current
    probe = c_void_p()
    rc = lib.metadata_new(byref(probe))
    if rc == OK:
        lib.metadata_free(probe)
        return
    if rc != ERR_FORKED:
        return
    try:
        _current = _fresh_copy(lib.generation + 1)
    except Exception as exc:  # reported by current() at the next use
        _reload_error = exc


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
