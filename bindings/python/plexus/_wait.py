"""How a Python thread waits for libplexus without losing Ctrl-C.

A thread blocked inside a C function does not run Python's signal handlers: SIGINT would
only raise KeyboardInterrupt once the call returned. Python delivers signals to the main
thread alone, so there (only) every wait is cut into slices of `SLICE_MS`: between two
slices the interpreter runs the handlers and KeyboardInterrupt surfaces. Other threads wait
without a limit, which costs nothing extra.

Operations that cannot be sliced (a call's start, a blocking unary call, whose timeout would
cancel them) run as `_async` operations on the thread's own completion queue instead, and the
thread waits on the queue in slices. An interrupted wait frees the queue: the library then
cancels what was still running on it and frees its resources.
"""

from __future__ import annotations

import os
import threading
from ctypes import byref, c_void_p
from typing import Any, Callable

from . import _ffi
from ._ffi import ERR_TIMEOUT

SLICE_MS = 50
"""The longest a main-thread wait stays inside libplexus before the interpreter checks for
signals: a bound on how late KeyboardInterrupt is raised."""


def on_main_thread() -> bool:
    """Whether the calling thread is the one Python delivers signals to."""
    return threading.get_ident() == threading.main_thread().ident


def sliced(fn: Callable[[Any, int, Any], int], handle: int, out: Any) -> int:
    """`fn(handle, timeout_ms, out)` without a limit, for a receive-side function whose
    timeout loses nothing (plexus_call_recv, _finish, _initial_metadata); in slices on the
    main thread so that signals are handled."""
    if not on_main_thread():
        return fn(handle, -1, out)
    rc = fn(handle, SLICE_MS, out)
    while rc == ERR_TIMEOUT:
        rc = fn(handle, SLICE_MS, out)
    return rc


class Waiter:
    """A completion queue of one thread, for its own blocking operations: at most one is
    pending at a time, so the next event is always the one waited for. `limit` is how long
    one plexus_cq_next may wait on this thread (a slice on the main thread)."""

    __slots__ = ("lib", "cq", "next", "limit", "event", "event_ref", "out", "out_ref")

    def __init__(self, lib: _ffi.Lib) -> None:
        out = c_void_p()
        lib.check(lib.cq_new(byref(out)))
        self.lib = lib
        self.cq = _ffi.handle(out)
        self.next = lib.cq_next
        self.limit = SLICE_MS if on_main_thread() else -1
        self.event = _ffi.Event()
        self.event_ref = byref(self.event)
        # The output parameter of the operation's start (the call handle), reused.
        self.out = c_void_p()
        self.out_ref = byref(self.out)

    def wait(self) -> int:
        """Waits for the event and returns the result of plexus_cq_next; `event` holds it.
        On an exception (KeyboardInterrupt) the queue is freed with what was pending."""
        try:
            rc: int = self.next(self.cq, self.limit, self.event_ref)
            while rc == ERR_TIMEOUT:
                rc = self.next(self.cq, self.limit, self.event_ref)
            return rc
        except BaseException:
            self.discard()
            raise

    def discard(self) -> None:
        """Frees the queue (the library cancels and frees what is still pending on it);
        the thread's next operation gets a new one."""
        if getattr(_local, "waiter", None) is self:
            _local.waiter = None
        cq, self.cq = self.cq, 0
        if cq:
            self.lib.cq_free(cq)

    def __del__(self) -> None:
        cq, self.cq = getattr(self, "cq", 0), 0
        if cq:
            try:
                self.lib.cq_free(cq)
            except Exception:
                pass


_local = threading.local()


def waiter(lib: _ffi.Lib) -> Waiter:
    """The calling thread's Waiter for `lib` (freed when the thread ends)."""
    found: Waiter | None = getattr(_local, "waiter", None)
    if found is None or found.lib is not lib:
        found = _local.waiter = Waiter(lib)
    return found


def _forget_after_fork() -> None:
    """In a forked child the forking thread is the main thread: its waiter is renewed so
    that its waits are sliced again (the old queue is left alone: it may belong to the
    parent's copy of the library)."""
    _local.waiter = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_after_fork)
