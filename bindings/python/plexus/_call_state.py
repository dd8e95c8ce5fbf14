"""The state every call keeps, whether a thread (plexus) or an event loop (plexus.aio) drives
it: the library handle, the final status, the outcome decided on this side (a cancel, the
channel's close, a request stream that failed), the deadline; and the rules that turn those
into grpcio's statuses and errors. The sync and asyncio call classes add only how they wait.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import Any, Callable, TypeVar

from . import _ffi
from ._common import (
    Deserializer,
    Metadata,
    SerializationError,
    Status,
    StatusCode,
)

_LOG = logging.getLogger("plexus")

LOCAL_CANCEL = "Locally cancelled by application!"
"""The details of a call cancelled by its cancel() (grpcio's text)."""
ITERATOR_FAILED = "Exception iterating requests!"
"""The details of a call whose request iterator raised (grpcio's text)."""
CHANNEL_CLOSED = "Channel closed!"
"""The details of a call ended by its channel's close() (grpcio's text)."""
INTERRUPTED = "Interrupted by KeyboardInterrupt"
"""The details of a call cancelled because Ctrl-C interrupted the thread waiting on it."""
NO_RESPONSE = "the server ended the call without a response message"
"""The details of a unary-response call that ended OK without a message."""

_T = TypeVar("_T")


def describe(kind: str, status: Status) -> str:
    """grpcio's text for an ended call or its error: kind, code, details."""
    return (
        f"<{kind} of RPC that terminated with:\n"
        f"\tstatus = {status.code}\n"
        f'\tdetails = "{status.details}"\n'
        f'\tdebug_error_string = "{status.debug_error_string()}"\n>'
    )


def library_status(lib: _ffi.Lib, result: int, detail: str = "") -> Status:
    """The status of an operation that the library itself failed (no gRPC status came):
    UNAVAILABLE after the library shut down, INTERNAL otherwise."""
    name: bytes | None = lib.result_name(result)
    text = f"plexus: {name.decode() if name else result}"
    if detail:
        text = f"{text}: {detail}"
    code = StatusCode.UNAVAILABLE if result == _ffi.ERR_SHUTDOWN else StatusCode.INTERNAL
    return Status.local(code, text)


def no_response(initial_metadata: Metadata) -> Status:
    """The status of a unary-response call that ended OK without a response message."""
    return Status.local(StatusCode.INTERNAL, NO_RESPONSE, initial_metadata)


def _no_metadata() -> Metadata:
    return ()


def deserialize(
    deserializer: Deserializer | None,
    data: bytes,
    error: Callable[[Status], BaseException],
    initial_metadata: Callable[[], Metadata] = _no_metadata,
) -> Any:
    """`deserializer(data)` (the bytes themselves without one). A deserializer that raises
    becomes `error(status)`, grpcio's INTERNAL status for it carrying `initial_metadata()`
    (asked for only then: reading a call's status has a cost)."""
    if deserializer is None:
        return data
    try:
        return deserializer(data)
    except Exception as exc:
        status = Status.local(
            StatusCode.INTERNAL, f"Exception deserializing response: {exc!r}", initial_metadata()
        )
        raise error(status) from exc


def local_outcome(local: Status, ended: Status | None) -> Status:
    """The status of a call ended on this side: the local code and details, with whatever
    metadata the peer had sent (`ended` is what the library reported, if anything)."""
    if ended is None:
        return Status(local.code, local.details, b"", (), ())
    return Status(local.code, local.details, b"", ended.initial_metadata, ended.trailing_metadata)


def run_callbacks(callbacks: Iterable[Callable[[_T], object]], arg: _T) -> None:
    """Calls each callback with `arg`; one that raises is logged and the rest still run."""
    for callback in callbacks:
        try:
            callback(arg)
        except Exception:
            _LOG.exception("plexus: call callback failed")


class CallState:
    """What a call knows about itself, whoever drives it.

    `_handle` is the plexus_call (0 before it starts and after it is freed). `_status` is the
    final status once known. `_local` is set when this side ends the call; the call's outcome
    is then that status, whatever the library reports afterwards. `_request_error` is the
    exception of a request iterator or serializer that failed.
    """

    _lib: _ffi.Lib
    _handle: int
    _status: Status | None
    _local: Status | None
    _deadline: float | None
    _cancelled: bool
    _request_error: BaseException | None

    def _init_state(self, lib: _ffi.Lib, timeout: float | None) -> None:
        self._lib = lib
        self._handle = 0
        self._status = None
        self._local = None
        self._deadline = None if timeout is None else time.monotonic() + max(timeout, 0)
        self._cancelled = False  # by cancel() (or, in asyncio, the awaiting task's cancel)
        self._request_error = None

    def _ended(self) -> bool:
        """Whether the call's outcome is decided."""
        return self._status is not None

    def time_remaining(self) -> float | None:
        """Seconds left before the deadline, or None without one."""
        if self._deadline is None:
            return None
        return max(0.0, self._deadline - time.monotonic())

    def cancel(self) -> bool:
        """Cancels the call if it is still running; returns whether it did."""
        return self._cancel_with(StatusCode.CANCELLED, LOCAL_CANCEL, by_user=True)

    def cancelled(self) -> bool:
        """Whether cancel() cancelled the call."""
        return self._cancelled

    def _cancel_with(self, code: StatusCode, details: str, by_user: bool = False) -> bool:
        """Ends the call here with `code` and `details`, unless it has ended already."""
        if self._ended() or self._local is not None:
            return False
        # Before the local status: whoever sees the outcome also sees that cancel() made it.
        self._cancelled = self._cancelled or by_user
        self._local = Status.local(code, details)
        self._cancel_handle()
        return True

    def _cancel_handle(self) -> None:
        """Asks the library to cancel the running call (it then ends with CANCELLED)."""
        handle = self._handle
        if handle:
            self._lib.call_cancel(handle)

    def _free_handle(self) -> None:
        handle, self._handle = self._handle, 0
        if handle:
            self._lib.call_free(handle)

    def _request_failed(self, exc: Exception) -> None:
        """Ends the call for a request stream that failed on this side, with grpcio's
        statuses: INTERNAL and its text for a serializer, UNKNOWN for the iterator."""
        self._request_error = exc
        if isinstance(exc, SerializationError):
            self._cancel_with(StatusCode.INTERNAL, exc.details())
        else:
            _LOG.debug("plexus: request iterator raised", exc_info=exc)
            self._cancel_with(StatusCode.UNKNOWN, ITERATOR_FAILED)
