"""The blocking channel: grpcio's `grpc.Channel` shape over libplexus.

Threads: blocking calls run in the calling thread inside libplexus, with the GIL released
(ctypes does that for every CDLL call), so any number of threads share one channel. Request
iterators of stream-stream calls (and of stream-unary futures) are consumed by one daemon
thread per call, as grpcio does. Unary futures need no thread of their own: they go through
one completion queue per process, drained by a single daemon thread ("plexus-futures").
"""

from __future__ import annotations

import atexit
import itertools
import logging
import math
import threading
import time
import weakref
from collections.abc import Iterable, Iterator
from ctypes import byref, c_int32, c_void_p
from types import TracebackType
from typing import Any, Callable, Generic, Literal, Optional, Tuple

from . import _common, _credentials, _ffi, _options, _wait
from ._call_state import CHANNEL_CLOSED, INTERRUPTED, CallState, describe, deserialize
from ._call_state import library_status
from ._call_state import local_outcome, no_response, run_callbacks
from ._common import CompressionArg, Deserializer, Metadata, MetadataArg, MultiCallableBase
from ._common import Request, Response, RpcError, Serializer, Status, StatusCode, StatusView
from ._common import call_options, closed_channel_error, free_options, read_status, serialize
from ._common import take_bytes, take_metadata
from ._credentials import CredentialsFailed, authorize
from ._ffi import END_OF_STREAM, ERR_RPC, OK
from ._options import ChannelOptions

_LOG = logging.getLogger("plexus")

_UnaryResult = Tuple[bytes, int]
"""A finished blocking unary call: the response bytes and its plexus_status handle."""


# --------------------------------------------------------------------------- finished calls


class _Finished(StatusView, _common._CallBase, _common._FutureBase):
    """A call that has ended: grpc.Call and grpc.Future over its Status."""

    _status: Status

    def _final_status(self) -> Status:
        return self._status

    def is_active(self) -> bool:
        """Whether the call is still in progress."""
        return False

    def time_remaining(self) -> float | None:
        """Seconds left before the deadline, or None without one."""
        return None

    def cancel(self) -> bool:
        """Cancels the call if it is still running; returns whether it did."""
        return False

    def add_callback(self, callback: Callable[[], object]) -> bool:
        """Calls `callback()` when the call ends; False if it already has."""
        return False

    def cancelled(self) -> bool:
        """Whether cancel() cancelled the call."""
        return False

    def running(self) -> bool:
        """Whether the call is still in progress."""
        return False

    def done(self) -> bool:
        """Whether the call has ended."""
        return True

    def add_done_callback(self, fn: Callable[[Any], object]) -> None:
        """Calls `fn(self)` when the call ends (at once if it has)."""
        fn(self)


class _InactiveRpcError(RpcError, _Finished):
    """A call that ended with a status other than OK (grpcio's `_InactiveRpcError`)."""

    def __init__(self, status: Status) -> None:
        super().__init__(status.details)
        self._status = status

    def __str__(self) -> str:
        return describe(type(self).__name__, self._status)

    __repr__ = __str__

    def result(self, timeout: float | None = None) -> Any:
        """The response, waiting up to `timeout` seconds; raises the RpcError of a failed call."""
        raise self

    def exception(self, timeout: float | None = None) -> BaseException | None:
        """The RpcError of a failed call (None on success), waiting up to `timeout`."""
        return self

    def traceback(self, timeout: float | None = None) -> TracebackType | None:
        """The traceback of exception(), or None."""
        return self.__traceback__


class _CompletedCall(_Finished):
    """The call object `with_call` returns for a successful unary call."""

    def __init__(self, status: Status, response: Any) -> None:
        self._status = status
        self._response = response

    def result(self, timeout: float | None = None) -> Any:
        """The response, waiting up to `timeout` seconds; raises the RpcError of a failed call."""
        return self._response

    def exception(self, timeout: float | None = None) -> BaseException | None:
        """The RpcError of a failed call (None on success), waiting up to `timeout`."""
        return None

    def traceback(self, timeout: float | None = None) -> TracebackType | None:
        """The traceback of exception(), or None."""
        return None


# --------------------------------------------------------------------------- the channel


class Channel(
    _common.ChannelMethods[
        "UnaryUnaryMultiCallable[Any, Any]",
        "UnaryStreamMultiCallable[Any, Any]",
        "StreamUnaryMultiCallable[Any, Any]",
        "StreamStreamMultiCallable[Any, Any]",
    ]
):
    """A channel to one target, shaped like grpc.Channel.

    Create it with `plexus.insecure_channel(target, options=None, **plexus_options)` or
    `plexus.secure_channel(target, credentials, options=None, **plexus_options)`.
    Thread-safe. `close()` (or leaving a `with` block) cancels its streaming calls and
    futures and releases its connections once calls still running in other threads return.
    """

    def __init__(
        self,
        target: str,
        options: ChannelOptions | None = None,
        compression: CompressionArg = None,
        *,
        credentials: object = None,
        **plexus_options: Any,
    ) -> None:
        self._lib, self._handle, self._target, self._auth = open_channel(
            target, options, compression, plexus_options, credentials
        )
        # The channel's own call credentials (empty: calls without `credentials=` skip auth).
        self._plugins = self._auth.plugins if self._auth is not None else ()
        self._lock = threading.Lock()
        self._users = 0
        self._closed = False
        self._calls: weakref.WeakSet[_LiveCall] = weakref.WeakSet()
        # Handles of blocking unary calls in flight (close() cancels them); a handle leaves
        # the set, under the lock, before its thread frees it.
        self._inflight: set[int] = set()
        self._subscribers: list[_Subscriber] = []
        self._watching = False  # a re-arming connectivity watch is pending
        self._kinds = _KINDS

    # -- lifetime --

    def _acquire(self) -> int:
        with self._lock:
            if self._closed:
                raise closed_channel_error()
            self._users += 1
        return self._handle

    def _release(self, call: int = 0) -> None:
        """Ends a use of the handle; `call`, a blocking unary call it started, is then in
        flight (or cancelled at once if the channel closed meanwhile)."""
        with self._lock:
            self._users -= 1
            if call:
                if self._closed:
                    self._lib.call_cancel(call)
                else:
                    self._inflight.add(call)
            if self._closed and self._users == 0:
                self._free()

    def _forget(self, call: int) -> bool:
        """Takes a blocking unary call out of the in-flight set before it is freed; returns
        whether the channel was closed (a CANCELLED outcome is then the close's)."""
        with self._lock:
            self._inflight.discard(call)
            return self._closed

    def _free(self) -> None:
        handle, self._handle = self._handle, 0
        if handle:
            self._lib.channel_free(handle)

    def _track(self, call: _LiveCall) -> None:
        with self._lock:
            if self._closed:
                raise closed_channel_error()
            self._calls.add(call)

    def close(self) -> None:
        """Closes the channel: calls in progress in any thread end with CANCELLED
        ("Channel closed!", as grpcio's), new calls raise ValueError, connectivity callbacks
        stop, and the connections close when no other channel shares them. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            calls = list(self._calls)
            for call in self._inflight:
                self._lib.call_cancel(call)  # never blocks
            self._subscribers = []
            if self._users == 0:
                self._free()
        for live in calls:
            live._cancel_with(StatusCode.CANCELLED, CHANNEL_CLOSED)

    def __enter__(self) -> Channel:
        return self

    def __exit__(self, *exc: object) -> Literal[False]:
        self.close()
        return False

    def __del__(self) -> None:
        try:
            if not self._closed and self._handle:
                self._closed = True
                self._lib.channel_free(self._handle)
                self._handle = 0
        except Exception:
            pass

    # -- plexus extras and connectivity --

    def stats(self) -> dict[str, Any]:
        """A snapshot of the channel's statistics (shared channels report the same)."""
        handle = self._acquire()
        try:
            return _common.channel_stats(self._lib, handle)
        finally:
            self._release()

    def get_state(self, try_to_connect: bool = False) -> _common.ChannelConnectivity:
        """The channel's ChannelConnectivity state; `try_to_connect` starts connecting."""
        handle = self._acquire()
        try:
            state = c_int32()
            self._lib.check(self._lib.channel_state(handle, byref(state)))
            if try_to_connect and state.value == _ffi.STATE_IDLE:
                # Returns at once; resolution and connection go on in the library.
                self._lib.channel_connect(handle, 0)
        finally:
            self._release()
        return _common.connectivity(state.value)

    def connect(self, timeout: float | None = None) -> None:
        """Connects now and waits up to `timeout` seconds for READY; raises on failure."""
        ms = -1 if timeout is None else _common.timeout_ms(timeout)
        handle = self._acquire()
        try:
            if _wait.on_main_thread():
                # In slices, for Ctrl-C: an ended wait leaves the attempt running.
                deadline = None if ms < 0 else time.monotonic() + ms / 1000
                while True:
                    left = _wait.SLICE_MS
                    if deadline is not None:
                        rest = math.ceil((deadline - time.monotonic()) * 1000)
                        left = min(left, max(0, rest))
                    rc = self._lib.channel_connect(handle, left)
                    if rc != _ffi.ERR_TIMEOUT or left < _wait.SLICE_MS:
                        break
            else:
                rc = self._lib.channel_connect(handle, ms)
            if rc:
                raise self._lib.error(rc, f"could not connect to {self._target!r}")
        finally:
            self._release()

    def subscribe(
        self, callback: Callable[[_common.ChannelConnectivity], object], try_to_connect: bool = False
    ) -> None:
        """Calls `callback(state)` with the current ChannelConnectivity state at once, then
        on each change until unsubscribe() or close(), from plexus's connectivity thread
        (as grpcio does from one of its own). The changes come from the library's
        notifications (plexus_channel_watch_state_async), not from polling."""
        current = self.get_state()
        with self._lock:
            if self._closed:
                raise closed_channel_error()
            self._subscribers.append(_Subscriber(callback, current))
            rearm = not self._watching
            self._watching = True
        if rearm:
            # Pending before any connection attempt starts, so that the first change is
            # seen however quickly it happens.
            self._watch(current.value[0], True)
        # Watching from SHUTDOWN, a state an open channel is never in, ends at once: it
        # hands the subscriber its first state on the connectivity thread.
        self._watch(_ffi.STATE_SHUTDOWN, False)
        if try_to_connect:
            self.get_state(try_to_connect=True)

    def unsubscribe(self, callback: Callable[[_common.ChannelConnectivity], object]) -> None:
        """Stops calling `callback`."""
        with self._lock:
            self._subscribers = [s for s in self._subscribers if s.callback is not callback]

    def _watch(self, last: int, rearm: bool) -> None:
        """Starts a watch for a state other than `last`. The event of a re-arming watch
        reports the new state and starts the next watch; that of a one-shot watch only
        delivers the first states of new subscribers. Both on the connectivity thread."""
        lib = self._lib
        dispatcher = _dispatcher(lib, _CONNECTIVITY)
        ref = weakref.ref(self)

        def on_event(op: int, result: int, call: int, message: int, status: int) -> None:
            channel = ref()
            if channel is not None:
                channel._on_state(dispatcher.event.state if rearm else None)

        tag = dispatcher.register(on_event)
        rc = _ffi.ERR_SHUTDOWN
        try:
            handle = self._acquire()
        except ValueError:
            pass  # closed
        else:
            try:
                rc = lib.channel_watch_state_async(handle, last, _WATCH_MS, dispatcher.cq, tag)
            finally:
                self._release()
        if rc != OK:
            dispatcher.handlers.pop(tag, None)
            if rearm:
                with self._lock:
                    self._watching = False

    def _on_state(self, value: int | None) -> None:
        """A watch ended. Each subscriber gets its first state (the one when it subscribed)
        if it has not yet, then `value` (a re-arming watch's state: a change, or the state
        when its time ran out) if that differs from the last it got; in order, on this (the
        connectivity) thread. A re-arming watch then starts the next one."""
        state = None if value is None else _common.connectivity(value)
        with self._lock:
            due = []
            for subscriber in self._subscribers:
                states = []
                if subscriber.last is None:
                    subscriber.last = subscriber.first
                    states.append(subscriber.first)
                if state is not None and subscriber.last is not state:
                    subscriber.last = state
                    states.append(state)
                if states:
                    due.append((subscriber.callback, states))
            again = value is not None and not self._closed and bool(self._subscribers)
            if value is not None and not again:
                self._watching = False
        for callback, states in due:
            for each in states:
                try:
                    callback(each)
                except Exception:
                    _LOG.exception("plexus: connectivity callback failed")
        if again and value is not None:
            self._watch(value, True)


class _Subscriber:
    """A connectivity callback, the state when it subscribed and the last state it got."""

    __slots__ = ("callback", "first", "last")

    def __init__(
        self,
        callback: Callable[[_common.ChannelConnectivity], object],
        first: _common.ChannelConnectivity,
    ) -> None:
        self.callback = callback
        self.first = first
        self.last: _common.ChannelConnectivity | None = None


_CONNECTIVITY = "plexus-connectivity"
"""The name of the thread that delivers connectivity callbacks (one per process)."""
_WATCH_MS = 5_000
"""How long one connectivity watch lasts before it is renewed: a pending watch holds the
library's channel, so this bounds how long an unsubscribed or closed channel is kept."""
_CLOSED_STATUS = Status.local(StatusCode.CANCELLED, CHANNEL_CLOSED)


def open_channel(
    target: str | bytes,
    options: ChannelOptions | None,
    compression: CompressionArg,
    plexus_options: dict[str, Any],
    credentials: object = None,
) -> tuple[_ffi.Lib, int, str, _credentials.ChannelAuth | None]:
    """Validates the arguments and creates a plexus_channel, over TLS with `credentials`
    (plexus's or grpcio's ChannelCredentials): (lib, handle, target, call authorization;
    None for an insecure channel)."""
    if isinstance(target, bytes):
        target = target.decode("utf-8")
    if not isinstance(target, str):
        raise TypeError(f"target must be a str like 'host:port', not {type(target).__name__}")
    if not target or "\0" in target:
        raise ValueError(f"invalid target {target!r}")
    tls, tls_name, auth = _credentials.prepare(target, credentials, options)
    if tls is None and target[:8].lower() == "https://":
        raise ValueError(
            f"invalid target {target!r}: an https:// target needs TLS, and this is an "
            "insecure channel; use host:port or http://"
        )
    settings = _options.collect(options, plexus_options)
    if compression is not None:
        settings["compression"] = compression
    lib = _ffi.current()
    opts = _options.build(lib, settings)
    out = c_void_p()
    try:
        if tls is not None:
            _credentials.apply_tls(lib, opts, tls, tls_name)
        rc = lib.channel_new(target.encode("utf-8"), opts, byref(out))
    finally:
        lib.channel_options_free(opts)
    if rc:
        raise lib.error(rc, f"cannot create a channel to {target!r}")
    return lib, _ffi.handle(out), target, auth


# --------------------------------------------------------------------------- unary-unary


class _MultiCallable(MultiCallableBase[Channel], Generic[Request, Response]):
    __slots__ = ("_lib",)

    def __init__(
        self,
        channel: Channel,
        method: str | bytes,
        serializer: Serializer | None,
        deserializer: Deserializer | None,
    ) -> None:
        MultiCallableBase.__init__(self, channel, method, serializer, deserializer)
        self._lib = channel._lib

    def _authorize(
        self, metadata: MetadataArg, credentials: object, timeout: float | None
    ) -> tuple[MetadataArg, float | None]:
        """The call's metadata and timeout once its call credentials have run (on this
        thread); raises CredentialsFailed."""
        return authorize(self._channel._auth, self._method, metadata, credentials, timeout)


class UnaryUnaryMultiCallable(_MultiCallable[Request, Response]):
    """Calls one unary-unary method: `callable(request, timeout=None, metadata=None, ...)`."""

    __slots__ = ()

    def _blocking(
        self,
        request: Request,
        timeout: float | None,
        metadata: MetadataArg,
        credentials: object,
        wait_for_ready: bool | None,
        compression: CompressionArg,
    ) -> _UnaryResult:
        lib = self._lib
        data = serialize(self._serializer, request)
        channel = self._channel
        if credentials is not None or channel._plugins:
            try:
                metadata, timeout = authorize(
                    channel._auth, self._method, metadata, credentials, timeout
                )
            except CredentialsFailed as exc:
                raise _InactiveRpcError(exc.status) from None
            credentials = None
        opts = call_options(lib, timeout, metadata, credentials, wait_for_ready, compression)
        waiter = _wait.waiter(lib)
        req = c_void_p()
        call = 0
        try:
            rc = lib.bytes_copy(data, len(data), byref(req))
            if rc:
                raise lib.error(rc)
            # A cancellable call on this thread's queue: close() in another thread and
            # Ctrl-C (the wait is sliced on the main thread) can end it.
            handle = channel._acquire()
            try:
                rc = lib.unary_call_async(
                    handle, self._method, req, opts, waiter.cq, None, waiter.out_ref
                )
                if rc == OK:
                    call = waiter.out.value or 0
            finally:
                channel._release(call)
        finally:
            lib.bytes_free(req)
            free_options(lib, opts)
        if rc:
            raise lib.error(rc, "unary call failed")
        try:
            rc = waiter.next(waiter.cq, waiter.limit, waiter.event_ref)
            while rc == _ffi.ERR_TIMEOUT:  # a slice of the main thread's wait ended
                rc = waiter.next(waiter.cq, waiter.limit, waiter.event_ref)
        except BaseException:  # KeyboardInterrupt: the call is cancelled with its queue
            waiter.discard()
            raise
        finally:
            closed = channel._forget(call)
            lib.call_free(call)
        if rc != OK:
            raise lib.error(rc, "unary call failed")
        event = waiter.event
        rc = event.result
        if rc == OK:
            return take_bytes(lib, event.message or 0), event.status or 0
        if rc == ERR_RPC:
            status = read_status(lib, event.status or 0)
            if closed and status.code is StatusCode.CANCELLED:
                status = local_outcome(_CLOSED_STATUS, status)
            raise _InactiveRpcError(status)
        if event.status:
            lib.status_free(event.status)
        raise lib.error(rc, "unary call failed")

    def __call__(
        self,
        request: Request,
        timeout: float | None = None,
        metadata: MetadataArg = None,
        credentials: object = None,
        wait_for_ready: bool | None = None,
        compression: CompressionArg = None,
    ) -> Response:
        """Makes the call and returns the response; raises RpcError for a non-OK status."""
        data, status = self._blocking(
            request, timeout, metadata, credentials, wait_for_ready, compression
        )
        self._lib.status_free(status)
        response: Response = deserialize(self._deserializer, data, _InactiveRpcError)
        return response

    def with_call(
        self,
        request: Request,
        timeout: float | None = None,
        metadata: MetadataArg = None,
        credentials: object = None,
        wait_for_ready: bool | None = None,
        compression: CompressionArg = None,
    ) -> tuple[Response, _CompletedCall]:
        """Makes the call and returns `(response, call)`; `call` has the metadata."""
        data, handle = self._blocking(
            request, timeout, metadata, credentials, wait_for_ready, compression
        )
        status = read_status(self._lib, handle)
        response: Response = deserialize(self._deserializer, data, _InactiveRpcError)
        return response, _CompletedCall(status, response)

    def future(
        self,
        request: Request,
        timeout: float | None = None,
        metadata: MetadataArg = None,
        credentials: object = None,
        wait_for_ready: bool | None = None,
        compression: CompressionArg = None,
    ) -> _CallFuture:
        """Starts the call and returns a future (also a grpc.Call) at once."""
        data = serialize(self._serializer, request)
        future = _UnaryFuture(self._channel, self._deserializer, timeout)
        future._start(
            self._method, data, timeout, metadata, credentials, wait_for_ready, compression
        )
        return future


# --------------------------------------------------------------------------- futures

_EventHandler = Callable[[int, int, int, int, int], None]
"""What the dispatcher calls with an event's op, result, call, message and status."""


class _Dispatcher:
    """One completion queue and the thread that drains it, for one copy of libplexus.
    `event` is the event being handled (a handler may read fields it is not given)."""

    def __init__(self, lib: _ffi.Lib, name: str) -> None:
        out = c_void_p()
        lib.check(lib.cq_new(byref(out)))
        self.lib = lib
        self.cq = _ffi.handle(out)
        self.event = _ffi.Event()
        # Handlers are added by any thread and popped by the draining one: single dict
        # operations, atomic with the GIL and under free-threading's per-object locks.
        self.handlers: dict[int, _EventHandler] = {}
        self._tag_lock = threading.Lock()
        self._tags = itertools.count(1).__next__
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def register(self, handler: _EventHandler) -> int:
        """Records `handler` for a new tag and returns the tag."""
        with self._tag_lock:
            tag = self._tags()
        self.handlers[tag] = handler
        return tag

    def _run(self) -> None:
        lib = self.lib
        event = self.event
        nxt = lib.cq_next
        handlers = self.handlers
        while True:
            rc = nxt(self.cq, -1, byref(event))
            if rc != OK:
                if rc == _ffi.ERR_TIMEOUT:
                    continue
                return  # shut down (at exit), or unusable after a fork
            handler = handlers.pop(event.tag, None)
            if handler is None:
                continue
            try:
                handler(event.op, event.result, event.call, event.message, event.status)
            except Exception:
                _LOG.exception("plexus: completion handler failed")

    def shutdown(self) -> None:
        """Shuts the queue down; the draining thread then exits."""
        self.lib.cq_shutdown(self.cq)


_dispatchers: dict[tuple[int, str], _Dispatcher] = {}
_dispatcher_lock = threading.Lock()
_FUTURES = "plexus-futures"
"""The name of the thread that completes unary futures (one per process)."""


def _dispatcher(lib: _ffi.Lib, name: str = _FUTURES) -> _Dispatcher:
    """The process's dispatcher called `name` for `lib`, started on first use."""
    key = (lib.generation, name)
    found = _dispatchers.get(key)
    if found is not None and found.lib is lib:
        return found
    with _dispatcher_lock:
        found = _dispatchers.get(key)
        if found is None or found.lib is not lib:
            found = _dispatchers[key] = _Dispatcher(lib, name)
        return found


@atexit.register
def _stop_dispatchers() -> None:
    with _dispatcher_lock:
        dispatchers = list(_dispatchers.values())
    for dispatcher in dispatchers:
        try:
            dispatcher.shutdown()
        except Exception:
            pass


class _FutureState:
    """The waiting and callback part of a grpc.Future."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._done = False
        self._callbacks: list[Callable[[Any], object]] = []
        self._rpc_callbacks: list[Callable[[], object]] = []

    def _resolve(self) -> None:
        """Marks the future done and runs its callbacks, once (never under a call's lock)."""
        with self._cond:
            if self._done:
                return
            self._done = True
            self._cond.notify_all()
            callbacks, self._callbacks = self._callbacks, []
            rpc_callbacks, self._rpc_callbacks = self._rpc_callbacks, []
        for callback in rpc_callbacks:
            try:
                callback()
            except Exception:
                _LOG.exception("plexus: call callback failed")
        run_callbacks(callbacks, self)

    def _wait(self, timeout: float | None) -> None:
        with self._cond:
            if not self._done and not self._cond.wait_for(lambda: self._done, timeout):
                raise _common.FutureTimeoutError()

    def add_done_callback(self, fn: Callable[[Any], object]) -> None:
        """Calls `fn(self)` when the call ends (at once if it has)."""
        with self._cond:
            if not self._done:
                self._callbacks.append(fn)
                return
        fn(self)

    def add_callback(self, callback: Callable[[], object]) -> bool:
        """Calls `callback()` when the call ends; False if it already has."""
        with self._cond:
            if not self._done:
                self._rpc_callbacks.append(callback)
                return True
        return False

    def done(self) -> bool:
        """Whether the call has ended."""
        return self._done

    def running(self) -> bool:
        """Whether the call is still in progress."""
        return not self._done


class _LiveCall(
    CallState, _FutureState, StatusView, RpcError, _common._CallBase, _common._FutureBase
):
    """A call in progress: grpc.Call and grpc.Future over the shared call state, raised as
    itself (an RpcError) when it fails, as grpcio's rendezvous is."""

    _response: Any = None

    def __init__(
        self, channel: Channel, deserializer: Deserializer | None, timeout: float | None
    ) -> None:
        _FutureState.__init__(self)
        RpcError.__init__(self)
        self._init_state(channel._lib, timeout)
        self._deserializer = deserializer

    def _failure(self) -> BaseException | None:
        """What exception() returns once the call has ended."""
        status = self._status
        return None if status is not None and status.code is StatusCode.OK else self

    def is_active(self) -> bool:
        """Whether the call is still in progress."""
        return not self._ended()

    def result(self, timeout: float | None = None) -> Any:
        """The response (None for a streamed one), waiting up to `timeout` seconds; raises
        the RpcError of a failed call."""
        error = self.exception(timeout)
        if error is not None:
            raise error
        return self._response

    def exception(self, timeout: float | None = None) -> BaseException | None:
        """The RpcError of a failed call (None on success), waiting up to `timeout`."""
        self._wait(timeout)
        return self._failure()

    def traceback(self, timeout: float | None = None) -> TracebackType | None:
        """The traceback of exception(), or None."""
        error = self.exception(timeout)
        return None if error is None else error.__traceback__

    def __str__(self) -> str:
        if not self._ended():
            return f"<{type(self).__name__} of in-flight RPC>"
        return describe(type(self).__name__, self._final_status())

    __repr__ = __str__


class _CallFuture(_LiveCall):
    """A unary-response call in progress (grpc.Future and grpc.Call); its outcome is set
    once, by the dispatcher or worker thread, and `_handle_lock` orders that against
    cancel() and the call's start."""

    def __init__(
        self, channel: Channel, deserializer: Deserializer | None, timeout: float | None
    ) -> None:
        _LiveCall.__init__(self, channel, deserializer, timeout)
        self._channel = channel
        self._error: BaseException | None = None
        self._handle_lock = threading.Lock()

    def _ended(self) -> bool:
        return self._done

    def _cancel_with(self, code: StatusCode, details: str, by_user: bool = False) -> bool:
        with self._handle_lock:
            return CallState._cancel_with(self, code, details, by_user)

    def _failure(self) -> BaseException | None:
        if self._cancelled:
            raise _common.FutureCancelledError()
        if self._error is not None:
            return self._error
        return _LiveCall._failure(self)

    def _final_status(self) -> Status:
        self._wait(None)
        if self._status is not None:
            return self._status
        return Status.local(StatusCode.INTERNAL, repr(self._error))

    def _finish(self, status: Status, payload: bytes | None) -> None:
        """Records the outcome (on the dispatcher or worker thread) and wakes waiters. After
        a successful cancel() the outcome is the local CANCELLED status, whatever raced it."""
        if self._local is not None:
            status = local_outcome(self._local, status)
        elif status.code is StatusCode.OK:
            if payload is None:
                status = no_response(status.initial_metadata)
            else:
                try:
                    self._response = deserialize(self._deserializer, payload, _InactiveRpcError)
                except _InactiveRpcError as exc:
                    status = exc._status
        self._status = status
        with self._handle_lock:  # cancel() reads the handle under this lock
            handle, self._handle = self._handle, 0
        if handle:
            self._lib.call_free(handle)
        self._resolve()


class _UnaryFuture(_CallFuture):
    """A unary-unary future: one event (plexus_unary_call_async) on the process's dispatcher
    brings the response and the status."""

    def _start(
        self,
        method: bytes,
        data: bytes,
        timeout: float | None,
        metadata: MetadataArg,
        credentials: object,
        wait_for_ready: bool | None,
        compression: CompressionArg,
    ) -> None:
        lib = self._lib
        channel = self._channel
        channel._track(self)
        if credentials is not None or channel._plugins:
            try:
                metadata, timeout = authorize(
                    channel._auth, method, metadata, credentials, timeout
                )
            except CredentialsFailed as exc:
                self._finish(exc.status, None)
                return
            credentials = None
        dispatcher = _dispatcher(lib)
        opts = call_options(lib, timeout, metadata, credentials, wait_for_ready, compression)
        req = c_void_p()
        out = c_void_p()
        try:
            lib.check(lib.bytes_copy(data, len(data), byref(req)))
            tag = dispatcher.register(self._on_event)
            handle = channel._acquire()
            try:
                # Under the handle lock: the event may arrive before the handle is stored.
                with self._handle_lock:
                    rc = lib.unary_call_async(
                        handle, method, req, opts, dispatcher.cq, tag, byref(out)
                    )
                    if rc == OK:
                        self._handle = _ffi.handle(out)
            finally:
                channel._release()
            if rc:
                dispatcher.handlers.pop(tag, None)
                raise lib.error(rc, "could not start the call")
        finally:
            lib.bytes_free(req)
            free_options(lib, opts)

    def _on_event(self, op: int, result: int, call: int, message: int, status: int) -> None:
        lib = self._lib
        payload = take_bytes(lib, message) if message else None
        final = read_status(lib, status) if status else library_status(lib, result)
        with self._handle_lock:
            pass  # the starting thread has stored the handle
        self._finish(final, payload)


# --------------------------------------------------------------------------- streaming


class _StreamingCall(_LiveCall):
    """A call with streamed responses: an iterator of response messages that is also a
    grpc.Call and grpc.Future, and is raised as itself (an RpcError) when the call fails,
    as grpcio's rendezvous is.

    `initial_metadata()` waits for the response headers. `code()`, `details()` and
    `trailing_metadata()` wait for the call to end and discard messages not yet read.
    """

    def __init__(
        self, channel: Channel, deserializer: Deserializer | None, timeout: float | None
    ) -> None:
        _LiveCall.__init__(self, channel, deserializer, timeout)
        self._recv_lock = threading.Lock()
        self._initial: Metadata | None = None

    def _open(
        self, channel: Channel, method: bytes, first: c_void_p | None, opts: int | None
    ) -> None:
        """Starts the call (blocking until the stream opens or the call fails)."""
        lib = self._lib
        if _wait.on_main_thread():
            call, rc, st = self._start_interruptibly(channel, method, first, opts)
        else:
            out = c_void_p()
            status = c_void_p()
            handle = channel._acquire()
            try:
                if first is None:
                    rc = lib.call_start(handle, method, opts, -1, byref(out), byref(status))
                else:
                    rc = lib.call_start_server_streaming(
                        handle, method, first, opts, -1, byref(out), byref(status)
                    )
            finally:
                channel._release()
            call, st = _ffi.handle(out), _ffi.handle(status)
        if rc == OK:
            self._handle = call
            channel._track(self)
        elif rc == ERR_RPC:
            self._set_status(read_status(lib, st))
            self._resolve()
        else:
            raise lib.error(rc, "could not start the call")

    def _start_interruptibly(
        self, channel: Channel, method: bytes, first: c_void_p | None, opts: int | None
    ) -> tuple[int, int, int]:
        """Starts the call on the thread's queue and waits in slices (the main thread's way,
        so that Ctrl-C is seen while the stream opens): (call, result, status)."""
        lib = self._lib
        waiter = _wait.waiter(lib)
        handle = channel._acquire()
        try:
            if first is None:
                rc = lib.call_start_async(handle, method, opts, waiter.cq, None)
            else:
                rc = lib.call_start_server_streaming_async(
                    handle, method, first, opts, waiter.cq, None
                )
        finally:
            channel._release()
        if rc == OK:
            rc = waiter.wait()
        if rc != OK:
            return 0, rc, 0
        event = waiter.event
        return event.call or 0, event.result, event.status or 0

    def _fail_locally(self, status: Status) -> _StreamingCall:
        """Ends the call, never started, with `status` (call credentials refused it)."""
        self._set_status(status)
        self._resolve()
        return self

    def __del__(self) -> None:
        handle, self._handle = getattr(self, "_handle", 0), 0
        if handle:
            try:
                self._lib.call_free(handle)
            except Exception:
                pass

    # -- iteration --

    def __iter__(self) -> _StreamingCall:
        return self

    def __next__(self) -> Any:
        lib = self._lib
        with self._recv_lock:
            if self._status is None:
                msg = c_void_p()
                rc = self._wait_for(lib.call_recv, msg)
                if rc == OK:
                    return self._decode(take_bytes(lib, _ffi.handle(msg)))
                if rc != END_OF_STREAM:
                    raise lib.error(rc, "receiving a response failed")
                self._finish_locked()
        status = self._wait_end()
        if status.code is StatusCode.OK:
            raise StopIteration()
        raise self

    next = __next__

    def _wait_for(self, fn: Callable[[Any, int, Any], int], out: c_void_p) -> int:
        """`fn(call, no limit, &out)`, a receive-side wait; interruptible on the main thread,
        where KeyboardInterrupt also cancels the call."""
        try:
            return _wait.sliced(fn, self._handle, byref(out))
        except BaseException:
            self._cancel_with(StatusCode.CANCELLED, INTERRUPTED)
            raise

    def _decode(self, data: bytes) -> Any:
        try:
            return deserialize(self._deserializer, data, _InactiveRpcError)
        except _InactiveRpcError as exc:
            self._cancel_with(StatusCode.INTERNAL, exc.details())
            raise

    def _finish_locked(self) -> None:
        """Waits for the end of the call and records its status (recv lock held)."""
        if self._status is not None or not self._handle:
            return
        lib = self._lib
        st = c_void_p()
        rc = self._wait_for(lib.call_finish, st)
        if rc not in (OK, ERR_RPC):
            status = Status.local(StatusCode.UNKNOWN, str(lib.error(rc)))
        else:
            status = read_status(lib, _ffi.handle(st))
        if self._local is not None:
            status = local_outcome(self._local, status)
        self._set_status(status)

    def _set_status(self, status: Status) -> None:
        """Records the final status; the caller runs `_resolve()` once it holds no lock."""
        if not status.initial_metadata and self._initial:
            status.initial_metadata = self._initial
        self._status = status

    def _wait_end(self) -> Status:
        """The final status, waiting for it; resolves the future once it is known."""
        if self._status is None:
            with self._recv_lock:
                self._finish_locked()
        self._resolve()
        return self._status or _NOT_STARTED

    _final_status = _wait_end

    def initial_metadata(self) -> Metadata:
        """The response's initial metadata (waits for the response headers)."""
        if self._initial is not None:
            return self._initial
        if self._status is not None:
            return self._status.initial_metadata
        with self._recv_lock:
            if self._initial is not None:
                return self._initial
            if self._status is None:
                md = c_void_p()
                rc = self._wait_for(self._lib.call_initial_metadata, md)
                if rc == OK:
                    self._initial = take_metadata(self._lib, md.value)
                    return self._initial
                self._finish_locked()
        return self._wait_end().initial_metadata


_NOT_STARTED = Status.local(StatusCode.INTERNAL, "the call was never started")


def _consume_requests(
    call: _StreamingCall, requests: Iterator[Any], serializer: Serializer | None
) -> None:
    """Sends every request of `requests`, then half-closes; on a failing iterator or
    serializer the call is cancelled with grpcio's status for it. Runs in its own thread
    (stream-stream calls, stream-unary futures) or the caller's (blocking stream-unary)."""
    lib = call._lib
    handle = call._handle
    try:
        for request in requests:
            if call._local is not None or call._status is not None:
                return
            data = serialize(serializer, request)
            msg = c_void_p()
            lib.check(lib.bytes_copy(data, len(data), byref(msg)))
            try:
                rc = lib.call_send(handle, msg, -1)
            finally:
                lib.bytes_free(msg)
            if rc != OK:
                return  # the call ended: its status says why
    except Exception as exc:
        call._request_failed(exc)
        return
    lib.call_close_send(handle, -1)


class UnaryStreamMultiCallable(_MultiCallable[Request, Response]):
    """Calls one unary-stream method: returns an iterator of responses (also a grpc.Call)."""

    __slots__ = ()

    def __call__(
        self,
        request: Request,
        timeout: float | None = None,
        metadata: MetadataArg = None,
        credentials: object = None,
        wait_for_ready: bool | None = None,
        compression: CompressionArg = None,
    ) -> _StreamingCall:
        """Starts the call; see the class docstring for what it returns."""
        lib = self._lib
        data = serialize(self._serializer, request)
        call = _StreamingCall(self._channel, self._deserializer, timeout)
        if credentials is not None or self._channel._plugins:
            try:
                metadata, timeout = self._authorize(metadata, credentials, timeout)
            except CredentialsFailed as exc:
                return call._fail_locally(exc.status)
            credentials = None
        opts = call_options(lib, timeout, metadata, credentials, wait_for_ready, compression)
        req = c_void_p()
        try:
            lib.check(lib.bytes_copy(data, len(data), byref(req)))
            call._open(self._channel, self._method, req, opts)
        finally:
            lib.bytes_free(req)
            free_options(lib, opts)
        return call


class StreamStreamMultiCallable(_MultiCallable[Request, Response]):
    """Calls one stream-stream method: `callable(request_iterator, ...)` returns an iterator
    of responses; the requests are consumed by a thread as the server takes them."""

    __slots__ = ()

    def __call__(
        self,
        request_iterator: Iterable[Request],
        timeout: float | None = None,
        metadata: MetadataArg = None,
        credentials: object = None,
        wait_for_ready: bool | None = None,
        compression: CompressionArg = None,
    ) -> _StreamingCall:
        """Starts the call; see the class docstring for what it returns."""
        lib = self._lib
        requests = iter(request_iterator)
        call = _StreamingCall(self._channel, self._deserializer, timeout)
        if credentials is not None or self._channel._plugins:
            try:
                metadata, timeout = self._authorize(metadata, credentials, timeout)
            except CredentialsFailed as exc:
                return call._fail_locally(exc.status)
            credentials = None
        opts = call_options(lib, timeout, metadata, credentials, wait_for_ready, compression)
        try:
            call._open(self._channel, self._method, None, opts)
        finally:
            free_options(lib, opts)
        if call._handle:
            threading.Thread(
                target=_consume_requests,
                args=(call, requests, self._serializer),
                name="plexus-requests",
                daemon=True,
            ).start()
        return call


class _StreamUnaryCall(_StreamingCall):
    """A stream-unary call: requests go out, then one response and the status come back."""

    def _read_response(self) -> Any:
        """Reads the single response and the status; returns the response."""
        lib = self._lib
        payload = None
        with self._recv_lock:
            if self._status is None and self._handle:
                msg = c_void_p()
                rc = self._wait_for(lib.call_recv, msg)
                if rc == OK:
                    payload = take_bytes(lib, _ffi.handle(msg))
                elif rc != END_OF_STREAM:
                    raise lib.error(rc, "receiving the response failed")
                self._finish_locked()
        status = self._wait_end()
        if status.code is not StatusCode.OK:
            if isinstance(self._request_error, _common.SerializationError):
                raise self._request_error
            raise _InactiveRpcError(status)
        if payload is None:
            raise _InactiveRpcError(no_response(status.initial_metadata))
        return deserialize(self._deserializer, payload, _InactiveRpcError)


_StreamUnaryArgs = Tuple[
    Optional[float], MetadataArg, object, Optional[bool], CompressionArg
]
"""A stream-unary call's keyword arguments, in order: timeout, metadata, credentials,
wait_for_ready, compression."""


class StreamUnaryMultiCallable(_MultiCallable[Request, Response]):
    """Calls one stream-unary method: `callable(request_iterator, ...)` returns the response."""

    __slots__ = ()

    def _open(self, args: _StreamUnaryArgs) -> _StreamUnaryCall:
        lib = self._lib
        timeout, metadata, credentials, wait_for_ready, compression = args
        call = _StreamUnaryCall(self._channel, self._deserializer, timeout)
        if credentials is not None or self._channel._plugins:
            try:
                metadata, timeout = self._authorize(metadata, credentials, timeout)
            except CredentialsFailed as exc:
                call._fail_locally(exc.status)
                return call
            credentials = None
        opts = call_options(lib, timeout, metadata, credentials, wait_for_ready, compression)
        try:
            call._open(self._channel, self._method, None, opts)
        finally:
            free_options(lib, opts)
        return call

    def _blocking(
        self, request_iterator: Iterable[Request], args: _StreamUnaryArgs
    ) -> tuple[Response, _StreamUnaryCall]:
        requests = iter(request_iterator)
        call = self._open(args)
        if call._handle:
            _consume_requests(call, requests, self._serializer)
        response: Response = call._read_response()
        return response, call

    def __call__(
        self,
        request_iterator: Iterable[Request],
        timeout: float | None = None,
        metadata: MetadataArg = None,
        credentials: object = None,
        wait_for_ready: bool | None = None,
        compression: CompressionArg = None,
    ) -> Response:
        """Starts the call; see the class docstring for what it returns."""
        args = (timeout, metadata, credentials, wait_for_ready, compression)
        return self._blocking(request_iterator, args)[0]

    def with_call(
        self,
        request_iterator: Iterable[Request],
        timeout: float | None = None,
        metadata: MetadataArg = None,
        credentials: object = None,
        wait_for_ready: bool | None = None,
        compression: CompressionArg = None,
    ) -> tuple[Response, _CompletedCall]:
        """Makes the call and returns `(response, call)`; `call` has the metadata."""
        args = (timeout, metadata, credentials, wait_for_ready, compression)
        response, call = self._blocking(request_iterator, args)
        return response, _CompletedCall(call._wait_end(), response)

    def future(
        self,
        request_iterator: Iterable[Request],
        timeout: float | None = None,
        metadata: MetadataArg = None,
        credentials: object = None,
        wait_for_ready: bool | None = None,
        compression: CompressionArg = None,
    ) -> _CallFuture:
        """Starts the call and returns a future; one thread runs the call."""
        requests = iter(request_iterator)
        args = (timeout, metadata, credentials, wait_for_ready, compression)
        future = _StreamUnaryFuture(self._channel, self._deserializer, timeout)
        self._channel._track(future)
        threading.Thread(
            target=future._run,
            args=(self, requests, args),
            name="plexus-stream-unary",
            daemon=True,
        ).start()
        return future


_KINDS = (
    UnaryUnaryMultiCallable,
    UnaryStreamMultiCallable,
    StreamUnaryMultiCallable,
    StreamStreamMultiCallable,
)


class _StreamUnaryFuture(_CallFuture):
    """A stream-unary future: one thread runs the blocking call and resolves it."""

    _stream: _StreamUnaryCall | None = None

    def _run(
        self,
        multicallable: StreamUnaryMultiCallable[Any, Any],
        requests: Iterator[Any],
        args: _StreamUnaryArgs,
    ) -> None:
        status = None
        try:
            call = multicallable._open(args)
            with self._handle_lock:
                self._stream = call
                local = self._local
            if local is not None:
                call._cancel_with(local.code, local.details)
            if call._handle:
                _consume_requests(call, requests, multicallable._serializer)
            try:
                self._response = call._read_response()
            except _common.SerializationError as exc:
                self._error = exc
            except RpcError:
                pass
            status = call._status
        except BaseException as exc:  # handed to whoever waits on the future
            self._error = exc
        if status is None:
            status = Status.local(StatusCode.INTERNAL, repr(self._error))
        if self._local is not None:
            status = local_outcome(self._local, status)
        self._status = status
        self._resolve()

    def _cancel_handle(self) -> None:
        stream, local = self._stream, self._local
        if stream is not None and local is not None:
            stream._cancel_with(local.code, local.details)

    def _cancel_with(self, code: StatusCode, details: str, by_user: bool = False) -> bool:
        """Ends the call here (cancel(), the channel's close()). The future is done at once,
        as grpcio's is: its worker thread may be blocked in the request iterator for as long
        as that iterator blocks, and the outcome is decided already."""
        if not _CallFuture._cancel_with(self, code, details, by_user):
            return False
        local = self._local
        if local is not None:
            self._status = local
        self._resolve()
        return True


def insecure_channel(
    target: str,
    options: ChannelOptions | None = None,
    compression: CompressionArg = None,
    **plexus_options: Any,
) -> Channel:
    """A channel to `target` without TLS, shaped like grpc.insecure_channel.

    `options` takes grpcio's `[("grpc.keepalive_time_ms", 10000), ...]`; plexus options go
    by keyword (see `plexus.CHANNEL_OPTIONS`)."""
    return Channel(target, options, compression, **plexus_options)


def secure_channel(
    target: str,
    credentials: object,
    options: ChannelOptions | None = None,
    compression: CompressionArg = None,
    **plexus_options: Any,
) -> Channel:
    """A TLS channel to `target`, shaped like grpc.secure_channel.

    `credentials` are `plexus.ssl_channel_credentials(...)` (or grpcio's, when grpcio is
    installed), optionally composed with call credentials. `options` also takes grpcio's
    `grpc.ssl_target_name_override` (the name the server's certificate is checked against,
    sent as SNI) and `grpc.default_authority` (every call's `:authority`, and the name checked
    when there is no override), as grpcio does."""
    if credentials is None:
        raise TypeError("secure_channel needs credentials (plexus.ssl_channel_credentials)")
    return Channel(target, options, compression, credentials=credentials, **plexus_options)
