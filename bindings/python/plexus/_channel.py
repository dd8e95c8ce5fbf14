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
import threading
import time
import weakref
from ctypes import byref, c_int32, c_void_p

from . import _common, _ffi, _options
from ._common import (
    RpcError,
    Status,
    StatusCode,
    call_options,
    free_options,
    closed_channel_error,
    read_status,
    serialize,
    take_bytes,
    take_metadata,
)
from ._ffi import END_OF_STREAM, ERR_RPC, OK

_LOG = logging.getLogger("plexus")

_LOCAL_CANCEL = "Locally cancelled by application!"
_ITERATOR_FAILED = "Exception iterating requests!"
_CHANNEL_CLOSED = "Channel closed!"


def _deserialize(deserializer, data: bytes):
    if deserializer is None:
        return data
    try:
        return deserializer(data)
    except Exception as exc:
        raise _InactiveRpcError(
            Status.local(StatusCode.INTERNAL, f"Exception deserializing response: {exc!r}")
        ) from exc


def _method(method) -> bytes:
    if isinstance(method, bytes):
        method = method.decode("utf-8")
    if not isinstance(method, str):
        raise TypeError(f"method must be a str like '/package.Service/Method', not {method!r}")
    if not method.startswith("/") or "\0" in method:
        raise ValueError(f"method must look like '/package.Service/Method', not {method!r}")
    return method.encode("utf-8")


def _describe(kind: str, status: Status) -> str:
    return (
        f"<{kind} of RPC that terminated with:\n"
        f"\tstatus = {status.code}\n"
        f'\tdetails = "{status.details}"\n'
        f'\tdebug_error_string = "{status.debug_error_string()}"\n>'
    )


# --------------------------------------------------------------------------- finished calls


class _Finished(_common._CallBase, _common._FutureBase):
    """A call that has ended: grpc.Call and grpc.Future over its Status."""

    _status: Status

    def initial_metadata(self):
        """The response's initial metadata (waits for the response headers)."""
        return self._status.initial_metadata

    def trailing_metadata(self):
        """The trailing metadata (waits for the call to end)."""
        return self._status.trailing_metadata

    def code(self):
        """The call's status code (waits for the call to end)."""
        return self._status.code

    def details(self):
        """The call's status message (waits for the call to end)."""
        return self._status.details

    def debug_error_string(self) -> str:
        """A description of the final status, for logs."""
        return self._status.debug_error_string()

    def is_active(self) -> bool:
        """Whether the call is still in progress."""
        return False

    def time_remaining(self):
        """Seconds left before the deadline, or None without one."""
        return None

    def cancel(self) -> bool:
        """Cancels the call if it is still running; returns whether it did."""
        return False

    def add_callback(self, callback) -> bool:
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

    def add_done_callback(self, fn) -> None:
        """Calls `fn(self)` when the call ends (at once if it has)."""
        fn(self)


class _InactiveRpcError(RpcError, _Finished):
    """A call that ended with a status other than OK (grpcio's `_InactiveRpcError`)."""

    def __init__(self, status: Status) -> None:
        super().__init__(status.details)
        self._status = status

    def __str__(self) -> str:
        return _describe(type(self).__name__, self._status)

    __repr__ = __str__

    def result(self, timeout=None):
        """The response, waiting up to `timeout` seconds; raises the RpcError of a failed call."""
        raise self

    def exception(self, timeout=None):
        """The RpcError of a failed call (None on success), waiting up to `timeout`."""
        return self

    def traceback(self, timeout=None):
        """The traceback of exception(), or None."""
        return self.__traceback__


class _CompletedCall(_Finished):
    """The call object `with_call` returns for a successful unary call."""

    def __init__(self, status: Status, response) -> None:
        self._status = status
        self._response = response

    def result(self, timeout=None):
        """The response, waiting up to `timeout` seconds; raises the RpcError of a failed call."""
        return self._response

    def exception(self, timeout=None):
        """The RpcError of a failed call (None on success), waiting up to `timeout`."""
        return None

    def traceback(self, timeout=None):
        """The traceback of exception(), or None."""
        return None


# --------------------------------------------------------------------------- the channel


class Channel:
    """A channel to one target, shaped like grpc.Channel.

    Create it with `plexus.insecure_channel(target, options=None, **plexus_options)`.
    Thread-safe. `close()` (or leaving a `with` block) cancels its streaming calls and
    futures and releases its connections once calls still running in other threads return.
    """

    def __init__(self, target: str, options=None, compression=None, **plexus_options) -> None:
        self._lib, self._handle, self._target = open_channel(
            target, options, compression, plexus_options
        )
        self._lock = threading.Lock()
        self._users = 0
        self._closed = False
        self._calls: weakref.WeakSet = weakref.WeakSet()
        self._subscriptions: list = []
        self._watcher = None
        self._connecting = False

    # -- lifetime --

    def _acquire(self) -> int:
        with self._lock:
            if self._closed:
                raise closed_channel_error()
            self._users += 1
        return self._handle

    def _release(self) -> None:
        with self._lock:
            self._users -= 1
            if self._closed and self._users == 0:
                self._free()

    def _free(self) -> None:
        handle, self._handle = self._handle, None
        if handle:
            self._lib.channel_free(handle)

    def _track(self, call) -> None:
        with self._lock:
            if self._closed:
                raise closed_channel_error()
            self._calls.add(call)

    def close(self) -> None:
        """Closes the channel: its streaming calls and futures end with CANCELLED, new
        calls raise ValueError, and the connections close (when no other channel shares
        them) once blocking calls running in other threads return. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            calls = list(self._calls)
            if self._users == 0:
                self._free()
        for call in calls:
            call._cancel_with(StatusCode.CANCELLED, _CHANNEL_CLOSED)
        self._subscriptions.clear()

    def __enter__(self) -> Channel:
        return self

    def __exit__(self, *exc) -> bool:
        self.close()
        return False

    def __del__(self) -> None:
        try:
            if not self._closed and self._handle:
                self._closed = True
                self._lib.channel_free(self._handle)
                self._handle = None
        except Exception:
            pass

    # -- multicallables --

    def unary_unary(self, method, request_serializer=None, response_deserializer=None, **kwargs):
        """A callable for a unary-unary method (`kwargs` such as grpcio's
        `_registered_method` are accepted and ignored)."""
        return UnaryUnaryMultiCallable(self, method, request_serializer, response_deserializer)

    def unary_stream(self, method, request_serializer=None, response_deserializer=None, **kwargs):
        """A callable for a unary-stream (server streaming) method."""
        return UnaryStreamMultiCallable(self, method, request_serializer, response_deserializer)

    def stream_unary(self, method, request_serializer=None, response_deserializer=None, **kwargs):
        """A callable for a stream-unary (client streaming) method."""
        return StreamUnaryMultiCallable(self, method, request_serializer, response_deserializer)

    def stream_stream(self, method, request_serializer=None, response_deserializer=None, **kwargs):
        """A callable for a stream-stream (bidirectional streaming) method."""
        return StreamStreamMultiCallable(self, method, request_serializer, response_deserializer)

    # -- plexus extras and connectivity --

    def stats(self) -> dict:
        """A snapshot of the channel's statistics (shared channels report the same)."""
        handle = self._acquire()
        try:
            stats = _ffi.ChannelStats()
            self._lib.check(self._lib.channel_get_stats(handle, byref(stats)))
        finally:
            self._release()
        out = {name: getattr(stats, name) for name, _ in _ffi.ChannelStats._fields_}
        out["state"] = _common.connectivity(stats.state)
        return out

    def get_state(self, try_to_connect: bool = False):
        """The channel's ChannelConnectivity state; `try_to_connect` starts connecting."""
        handle = self._acquire()
        try:
            state = c_int32()
            self._lib.check(self._lib.channel_state(handle, byref(state)))
        finally:
            self._release()
        if try_to_connect and state.value == 0:
            self._kick_connect()
        return _common.connectivity(state.value)

    def _kick_connect(self) -> None:
        """Starts connecting without blocking the caller. plexus_channel_connect with a
        zero wait drops its attempt if name resolution has not finished, so one helper
        thread runs a bounded blocking connect instead (at most one per channel)."""
        with self._lock:
            if self._closed or self._connecting:
                return
            self._connecting = True
            self._users += 1

        def connect() -> None:
            try:
                self._lib.channel_connect(self._handle, _CONNECT_WAIT_MS)
            finally:
                self._connecting = False
                self._release()

        threading.Thread(target=connect, name="plexus-connect", daemon=True).start()

    def connect(self, timeout=None) -> None:
        """Connects now and waits up to `timeout` seconds for READY; raises on failure."""
        ms = -1 if timeout is None else _common.timeout_ms(timeout)
        handle = self._acquire()
        try:
            rc = self._lib.channel_connect(handle, ms)
            if rc:
                raise self._lib.error(rc, f"could not connect to {self._target!r}")
        finally:
            self._release()

    def subscribe(self, callback, try_to_connect: bool = False) -> None:
        """Calls `callback(state)` with the current ChannelConnectivity state and on each
        change, from a watcher thread (as grpcio does)."""
        with self._lock:
            if self._closed:
                raise closed_channel_error()
            self._subscriptions.append(callback)
            if self._watcher is None:
                self._watcher = threading.Thread(
                    target=_watch,
                    args=(weakref.ref(self),),
                    name="plexus-connectivity",
                    daemon=True,
                )
                self._watcher.start()
        if try_to_connect:
            self.get_state(try_to_connect=True)

    def unsubscribe(self, callback) -> None:
        """Stops calling `callback`."""
        with self._lock:
            self._subscriptions = [c for c in self._subscriptions if c is not callback]


def open_channel(target, options, compression, plexus_options):
    """Validates the arguments and creates a plexus_channel: (lib, handle, target)."""
    if isinstance(target, bytes):
        target = target.decode("utf-8")
    if not isinstance(target, str):
        raise TypeError(f"target must be a str like 'host:port', not {type(target).__name__}")
    if not target or "\0" in target:
        raise ValueError(f"invalid target {target!r}")
    if target[:8].lower() == "https://":
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
        rc = lib.channel_new(target.encode("utf-8"), opts, byref(out))
    finally:
        lib.channel_options_free(opts)
    if rc:
        raise lib.error(rc, f"cannot create a channel to {target!r}")
    return lib, out.value, target


_WATCH_INTERVAL = 0.05
_CONNECT_WAIT_MS = 60_000  # longer than plexus's default 20 s connect timeout


def _watch(ref) -> None:
    """Connectivity watcher: polls the state (libplexus has no change callback) and calls
    the subscribers on every change, starting with the current state."""
    last = None
    while True:
        channel = ref()
        if channel is None or channel._closed:
            return
        subscribers = list(channel._subscriptions)
        if subscribers:
            try:
                state = channel.get_state()
            except Exception:
                return
            if state is not last:
                for callback in subscribers:
                    try:
                        callback(state)
                    except Exception:
                        _LOG.exception("plexus: connectivity callback failed")
                last = state
        del channel
        time.sleep(_WATCH_INTERVAL)


# --------------------------------------------------------------------------- unary-unary


class _MultiCallable:
    __slots__ = ("_channel", "_method", "_serializer", "_deserializer", "_lib")

    def __init__(self, channel: Channel, method, serializer, deserializer) -> None:
        self._channel = channel
        self._method = _method(method)
        self._serializer = serializer
        self._deserializer = deserializer
        self._lib = channel._lib


class UnaryUnaryMultiCallable(_MultiCallable):
    """Calls one unary-unary method: `callable(request, timeout=None, metadata=None, ...)`."""

    __slots__ = ()

    def _blocking(self, request, timeout, metadata, credentials, wait_for_ready, compression):
        lib = self._lib
        data = serialize(self._serializer, request)
        opts = call_options(lib, timeout, metadata, credentials, wait_for_ready, compression)
        req = c_void_p()
        resp = c_void_p()
        st = c_void_p()
        channel = self._channel
        try:
            rc = lib.bytes_copy(data, len(data), byref(req))
            if rc:
                raise lib.error(rc)
            handle = channel._acquire()
            try:
                rc = lib.unary(handle, self._method, req, opts, -1, byref(resp), byref(st))
            finally:
                channel._release()
        finally:
            lib.bytes_free(req)
            free_options(lib, opts)
        if rc == OK:
            return take_bytes(lib, resp.value), st.value
        if rc == ERR_RPC:
            raise _InactiveRpcError(read_status(lib, st.value))
        raise lib.error(rc, "unary call failed")

    def __call__(
        self,
        request,
        timeout=None,
        metadata=None,
        credentials=None,
        wait_for_ready=None,
        compression=None,
    ):
        """Makes the call and returns the response; raises RpcError for a non-OK status."""
        data, status = self._blocking(
            request, timeout, metadata, credentials, wait_for_ready, compression
        )
        self._lib.status_free(status)
        return _deserialize(self._deserializer, data)

    def with_call(
        self,
        request,
        timeout=None,
        metadata=None,
        credentials=None,
        wait_for_ready=None,
        compression=None,
    ):
        """Makes the call and returns `(response, call)`; `call` has the metadata."""
        data, status = self._blocking(
            request, timeout, metadata, credentials, wait_for_ready, compression
        )
        status = read_status(self._lib, status)
        response = _deserialize(self._deserializer, data)
        return response, _CompletedCall(status, response)

    def future(
        self,
        request,
        timeout=None,
        metadata=None,
        credentials=None,
        wait_for_ready=None,
        compression=None,
    ):
        """Starts the call and returns a future (also a grpc.Call) at once."""
        data = serialize(self._serializer, request)
        future = _UnaryFuture(self._channel, self._deserializer, timeout)
        future._start(
            self._method, data, timeout, metadata, credentials, wait_for_ready, compression
        )
        return future


# --------------------------------------------------------------------------- futures


class _Dispatcher:
    """One completion queue and the thread that drains it, for one copy of libplexus."""

    def __init__(self, lib: _ffi.Lib) -> None:
        out = c_void_p()
        lib.check(lib.cq_new(byref(out)))
        self.lib = lib
        self.cq = out.value
        self.handlers: dict = {}
        self._tags = itertools.count(1).__next__
        self._thread = threading.Thread(target=self._run, name="plexus-futures", daemon=True)
        self._thread.start()

    def register(self, handler) -> int:
        """Records `handler` for a new tag and returns the tag."""
        tag = self._tags()
        self.handlers[tag] = handler
        return tag

    def _run(self) -> None:
        lib = self.lib
        event = _ffi.Event()
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


_dispatchers: dict = {}
_dispatcher_lock = threading.Lock()


def _dispatcher(lib: _ffi.Lib) -> _Dispatcher:
    found = _dispatchers.get(lib.generation)
    if found is not None and found.lib is lib:
        return found
    with _dispatcher_lock:
        found = _dispatchers.get(lib.generation)
        if found is None or found.lib is not lib:
            found = _dispatchers[lib.generation] = _Dispatcher(lib)
        return found


@atexit.register
def _stop_dispatchers() -> None:
    for dispatcher in list(_dispatchers.values()):
        try:
            dispatcher.shutdown()
        except Exception:
            pass


class _FutureState:
    """The waiting and callback part of a grpc.Future."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._done = False
        self._callbacks: list = []
        self._rpc_callbacks: list = []

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
        for fn in callbacks:
            try:
                fn(self)
            except Exception:
                _LOG.exception("plexus: future done-callback failed")

    def _wait(self, timeout) -> None:
        with self._cond:
            if not self._done and not self._cond.wait_for(lambda: self._done, timeout):
                raise _common.FutureTimeoutError()

    def add_done_callback(self, fn) -> None:
        """Calls `fn(self)` when the call ends (at once if it has)."""
        with self._cond:
            if not self._done:
                self._callbacks.append(fn)
                return
        fn(self)

    def add_callback(self, callback) -> bool:
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


class _CallFuture(_FutureState, RpcError, _common._CallBase, _common._FutureBase):
    """A unary-response call in progress: grpc.Future and grpc.Call; raised as itself
    (an RpcError) when it fails, as grpcio's rendezvous is."""

    def __init__(self, channel: Channel, deserializer, timeout) -> None:
        _FutureState.__init__(self)
        RpcError.__init__(self)
        self._channel = channel
        self._lib = channel._lib
        self._deserializer = deserializer
        self._deadline = None if timeout is None else time.monotonic() + max(timeout, 0)
        self._status: Status | None = None
        self._response = None
        self._error: BaseException | None = None
        self._cancelled = False  # by cancel(): result() raises FutureCancelledError
        self._local: Status | None = None  # ended here: by cancel() or the channel's close()
        self._handle = None  # the plexus_call, once started
        self._handle_lock = threading.Lock()

    # grpc.Future
    def cancel(self) -> bool:
        """Cancels the call if it is still running; returns whether it did."""
        with self._handle_lock:
            if self._done or self._local is not None:
                return False
            self._cancelled = True
        return self._cancel_with(StatusCode.CANCELLED, _LOCAL_CANCEL, force=True)

    def _cancel_with(self, code, details, force: bool = False) -> bool:
        with self._handle_lock:
            if self._done or (self._local is not None and not force):
                return False
            self._local = Status.local(code, details)
            if self._handle:
                self._lib.call_cancel(self._handle)
        return True

    def cancelled(self) -> bool:
        """Whether cancel() cancelled the call."""
        return self._cancelled

    def result(self, timeout=None):
        """The response, waiting up to `timeout` seconds; raises the RpcError of a failed call."""
        self._wait(timeout)
        if self._cancelled:
            raise _common.FutureCancelledError()
        if self._error is not None:
            raise self._error
        if self._status.code is not StatusCode.OK:
            raise self
        return self._response

    def exception(self, timeout=None):
        """The RpcError of a failed call (None on success), waiting up to `timeout`."""
        self._wait(timeout)
        if self._cancelled:
            raise _common.FutureCancelledError()
        if self._error is not None:
            return self._error
        if self._status.code is not StatusCode.OK:
            return self
        return None

    def traceback(self, timeout=None):
        """The traceback of exception(), or None."""
        error = self.exception(timeout)
        return None if error is None else error.__traceback__

    # grpc.Call
    def _status_now(self) -> Status:
        self._wait(None)
        return (
            self._status
            if self._status is not None
            else Status.local(StatusCode.INTERNAL, repr(self._error))
        )

    def initial_metadata(self):
        """The response's initial metadata (waits for the response headers)."""
        return self._status_now().initial_metadata

    def trailing_metadata(self):
        """The trailing metadata (waits for the call to end)."""
        return self._status_now().trailing_metadata

    def code(self):
        """The call's status code (waits for the call to end)."""
        return self._status_now().code

    def details(self):
        """The call's status message (waits for the call to end)."""
        return self._status_now().details

    def debug_error_string(self) -> str:
        """A description of the final status, for logs."""
        return self._status_now().debug_error_string()

    def is_active(self) -> bool:
        """Whether the call is still in progress."""
        return not self._done

    def time_remaining(self):
        """Seconds left before the deadline, or None without one."""
        if self._deadline is None:
            return None
        return max(0.0, self._deadline - time.monotonic())

    def __str__(self) -> str:
        if not self._done:
            return f"<{type(self).__name__} of in-flight RPC>"
        return _describe(type(self).__name__, self._status_now())

    __repr__ = __str__

    def _finish(self, status: Status, payload) -> None:
        """Records the outcome (on the dispatcher or worker thread) and wakes waiters. After
        a successful cancel() the outcome is the local CANCELLED status, whatever raced it."""
        if self._local is not None:
            local = self._local
            status = Status(
                local.code, local.details, b"", status.initial_metadata, status.trailing_metadata
            )
        elif status.code is StatusCode.OK:
            if payload is None:
                status = Status.local(
                    StatusCode.INTERNAL,
                    "the server ended the call without a response message",
                    status.initial_metadata,
                )
            else:
                try:
                    self._response = _deserialize(self._deserializer, payload)
                except RpcError as exc:
                    status = exc._status
        self._status = status
        handle, self._handle = self._handle, None
        if handle:
            self._lib.call_free(handle)
        self._resolve()


class _UnaryFuture(_CallFuture):
    """A unary-unary future: one event (plexus_unary_call_async) on the process's dispatcher
    brings the response and the status."""

    def _start(
        self, method, data, timeout, metadata, credentials, wait_for_ready, compression
    ) -> None:
        lib = self._lib
        channel = self._channel
        channel._track(self)
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
                        self._handle = out.value
            finally:
                channel._release()
            if rc:
                dispatcher.handlers.pop(tag, None)
                raise lib.error(rc, "could not start the call")
        finally:
            lib.bytes_free(req)
            free_options(lib, opts)

    def _on_event(self, op, result, call, message, status) -> None:
        lib = self._lib
        payload = take_bytes(lib, message) if message else None
        if status:
            final = read_status(lib, status)
        else:
            text = lib.result_name(result)
            final = Status.local(
                StatusCode.UNAVAILABLE if result == _ffi.ERR_SHUTDOWN else StatusCode.INTERNAL,
                f"plexus: {text.decode() if text else result}",
            )
        with self._handle_lock:
            pass  # the starting thread has stored the handle
        self._finish(final, payload)


# --------------------------------------------------------------------------- streaming


class _StreamingCall(_FutureState, RpcError, _common._CallBase, _common._FutureBase):
    """A call with streamed responses: an iterator of response messages that is also a
    grpc.Call and grpc.Future, and is raised as itself (an RpcError) when the call fails,
    as grpcio's rendezvous is.

    `initial_metadata()` waits for the response headers. `code()`, `details()` and
    `trailing_metadata()` wait for the call to end and discard messages not yet read.
    """

    def __init__(self, channel: Channel, deserializer, timeout) -> None:
        _FutureState.__init__(self)
        RpcError.__init__(self)
        self._lib = channel._lib
        self._deserializer = deserializer
        self._deadline = None if timeout is None else time.monotonic() + max(timeout, 0)
        self._handle = None
        self._recv_lock = threading.Lock()
        self._status: Status | None = None
        self._initial = None
        self._local: Status | None = None

    def _open(self, channel: Channel, method, first, opts) -> None:
        """Starts the call (blocking until the stream opens or the call fails)."""
        lib = self._lib
        out = c_void_p()
        st = c_void_p()
        handle = channel._acquire()
        try:
            if first is None:
                rc = lib.call_start(handle, method, opts, -1, byref(out), byref(st))
            else:
                rc = lib.call_start_server_streaming(
                    handle, method, first, opts, -1, byref(out), byref(st)
                )
        finally:
            channel._release()
        if rc == OK:
            self._handle = out.value
            channel._track(self)
        elif rc == ERR_RPC:
            self._set_status(read_status(lib, st.value))
            self._resolve()
        else:
            raise lib.error(rc, "could not start the call")

    def __del__(self) -> None:
        handle, self._handle = getattr(self, "_handle", None), None
        if handle:
            try:
                self._lib.call_free(handle)
            except Exception:
                pass

    # -- iteration --

    def __iter__(self):
        return self

    def __next__(self):
        lib = self._lib
        with self._recv_lock:
            if self._status is None:
                msg = c_void_p()
                rc = lib.call_recv(self._handle, -1, byref(msg))
                if rc == OK:
                    data = take_bytes(lib, msg.value)
                    return self._decode(data)
                if rc != END_OF_STREAM:
                    raise lib.error(rc, "receiving a response failed")
                self._finish_locked()
        self._resolve()
        if self._status.code is StatusCode.OK:
            raise StopIteration()
        raise self

    next = __next__

    def _decode(self, data: bytes):
        try:
            return _deserialize(self._deserializer, data)
        except RpcError as exc:
            self._cancel_with(StatusCode.INTERNAL, exc.details())
            raise

    def _finish_locked(self) -> None:
        """Waits for the end of the call and records its status (recv lock held)."""
        if self._status is not None:
            return
        lib = self._lib
        if self._handle is None:
            return
        st = c_void_p()
        rc = lib.call_finish(self._handle, -1, byref(st))
        if rc not in (OK, ERR_RPC):
            status = Status.local(StatusCode.UNKNOWN, str(lib.error(rc)))
        else:
            status = read_status(lib, st.value)
        if self._local is not None:
            status = Status(
                self._local.code,
                self._local.details,
                b"",
                status.initial_metadata or (self._initial or ()),
                status.trailing_metadata,
            )
        self._set_status(status)

    def _set_status(self, status: Status) -> None:
        """Records the final status; the caller runs `_resolve()` once it holds no lock."""
        if not status.initial_metadata and self._initial:
            status.initial_metadata = self._initial
        self._status = status

    def _wait_end(self) -> Status:
        if self._status is None:
            with self._recv_lock:
                self._finish_locked()
            self._resolve()
        return self._status

    # -- grpc.Call --

    def initial_metadata(self):
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
                rc = self._lib.call_initial_metadata(self._handle, -1, byref(md))
                if rc == OK:
                    self._initial = take_metadata(self._lib, md.value)
                    return self._initial
                self._finish_locked()
        self._resolve()
        return self._status.initial_metadata

    def trailing_metadata(self):
        """The trailing metadata (waits for the call to end)."""
        return self._wait_end().trailing_metadata

    def code(self):
        """The call's status code (waits for the call to end)."""
        return self._wait_end().code

    def details(self):
        """The call's status message (waits for the call to end)."""
        return self._wait_end().details

    def debug_error_string(self) -> str:
        """A description of the final status, for logs."""
        return self._wait_end().debug_error_string()

    def is_active(self) -> bool:
        """Whether the call is still in progress."""
        return self._status is None

    def time_remaining(self):
        """Seconds left before the deadline, or None without one."""
        if self._deadline is None:
            return None
        return max(0.0, self._deadline - time.monotonic())

    def cancel(self) -> bool:
        """Cancels the call if it is still running; returns whether it did."""
        return self._cancel_with(StatusCode.CANCELLED, _LOCAL_CANCEL)

    def _cancel_with(self, code, details) -> bool:
        if self._status is not None or self._local is not None:
            return False
        self._local = Status.local(code, details)
        handle = self._handle
        if handle:
            self._lib.call_cancel(handle)
        return True

    # -- grpc.Future --

    def cancelled(self) -> bool:
        """Whether cancel() cancelled the call."""
        return self._local is not None and self._local.details == _LOCAL_CANCEL

    def result(self, timeout=None):
        """Waits up to `timeout` seconds for the end (None); raises a failed call's RpcError."""
        self._wait(timeout)
        if self._status.code is not StatusCode.OK:
            raise self
        return None

    def exception(self, timeout=None):
        """The RpcError of a failed call (None on success), waiting up to `timeout`."""
        self._wait(timeout)
        return None if self._status.code is StatusCode.OK else self

    def traceback(self, timeout=None):
        """The traceback of exception(), or None."""
        error = self.exception(timeout)
        return None if error is None else error.__traceback__

    def __str__(self) -> str:
        status = self._status
        if status is None:
            return f"<{type(self).__name__} of in-flight RPC>"
        return _describe(type(self).__name__, status)

    __repr__ = __str__


def _consume_requests(call, lib, requests, serializer) -> None:
    """Sends every request of `requests`, then half-closes; on a failing iterator or
    serializer the call is cancelled with grpcio's status for it. Runs in its own thread
    (stream-stream calls, stream-unary futures) or the caller's (blocking stream-unary)."""
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
    except _common.SerializationError as exc:
        call._cancel_with(StatusCode.INTERNAL, exc.details())
        call._request_error = exc
        return
    except Exception as exc:
        _LOG.debug("plexus: request iterator raised", exc_info=True)
        call._cancel_with(StatusCode.UNKNOWN, _ITERATOR_FAILED)
        call._request_error = exc
        return
    lib.call_close_send(handle, -1)


def _start_consumer(call, lib, requests, serializer) -> None:
    thread = threading.Thread(
        target=_consume_requests,
        args=(call, lib, requests, serializer),
        name="plexus-requests",
        daemon=True,
    )
    thread.start()


class _ResponseIterator(_StreamingCall):
    """The response iterator of a unary-stream or stream-stream call."""

    _request_error = None


class UnaryStreamMultiCallable(_MultiCallable):
    """Calls one unary-stream method: returns an iterator of responses (also a grpc.Call)."""

    __slots__ = ()

    def __call__(
        self,
        request,
        timeout=None,
        metadata=None,
        credentials=None,
        wait_for_ready=None,
        compression=None,
    ):
        """Starts the call; see the class docstring for what it returns."""
        lib = self._lib
        data = serialize(self._serializer, request)
        opts = call_options(lib, timeout, metadata, credentials, wait_for_ready, compression)
        req = c_void_p()
        call = _ResponseIterator(self._channel, self._deserializer, timeout)
        try:
            lib.check(lib.bytes_copy(data, len(data), byref(req)))
            call._open(self._channel, self._method, req, opts)
        finally:
            lib.bytes_free(req)
            free_options(lib, opts)
        return call


class StreamStreamMultiCallable(_MultiCallable):
    """Calls one stream-stream method: `callable(request_iterator, ...)` returns an iterator
    of responses; the requests are consumed by a thread as the server takes them."""

    __slots__ = ()

    def __call__(
        self,
        request_iterator,
        timeout=None,
        metadata=None,
        credentials=None,
        wait_for_ready=None,
        compression=None,
    ):
        """Starts the call; see the class docstring for what it returns."""
        lib = self._lib
        requests = iter(request_iterator)
        opts = call_options(lib, timeout, metadata, credentials, wait_for_ready, compression)
        call = _ResponseIterator(self._channel, self._deserializer, timeout)
        try:
            call._open(self._channel, self._method, None, opts)
        finally:
            free_options(lib, opts)
        if call._handle:
            _start_consumer(call, lib, requests, self._serializer)
        return call


class _StreamUnaryCall(_ResponseIterator):
    """A stream-unary call: requests go out, then one response and the status come back."""

    def _response(self):
        """Reads the single response and the status; returns the response."""
        lib = self._lib
        payload = None
        with self._recv_lock:
            if self._status is None and self._handle:
                msg = c_void_p()
                rc = lib.call_recv(self._handle, -1, byref(msg))
                if rc == OK:
                    payload = take_bytes(lib, msg.value)
                elif rc != END_OF_STREAM:
                    raise lib.error(rc, "receiving the response failed")
                self._finish_locked()
        self._resolve()
        status = self._status
        if status.code is not StatusCode.OK:
            if isinstance(self._request_error, _common.SerializationError):
                raise self._request_error
            raise _InactiveRpcError(status)
        if payload is None:
            raise _InactiveRpcError(
                Status.local(
                    StatusCode.INTERNAL,
                    "the server ended the call without a response message",
                    status.initial_metadata,
                )
            )
        response = _deserialize(self._deserializer, payload)
        return response


class StreamUnaryMultiCallable(_MultiCallable):
    """Calls one stream-unary method: `callable(request_iterator, ...)` returns the response."""

    __slots__ = ()

    def _open(self, timeout, metadata, credentials, wait_for_ready, compression):
        lib = self._lib
        opts = call_options(lib, timeout, metadata, credentials, wait_for_ready, compression)
        call = _StreamUnaryCall(self._channel, self._deserializer, timeout)
        try:
            call._open(self._channel, self._method, None, opts)
        finally:
            free_options(lib, opts)
        return call

    def _blocking(
        self, request_iterator, timeout, metadata, credentials, wait_for_ready, compression
    ):
        requests = iter(request_iterator)
        call = self._open(timeout, metadata, credentials, wait_for_ready, compression)
        if call._handle:
            _consume_requests(call, self._lib, requests, self._serializer)
        return call._response(), call

    def __call__(
        self,
        request_iterator,
        timeout=None,
        metadata=None,
        credentials=None,
        wait_for_ready=None,
        compression=None,
    ):
        """Starts the call; see the class docstring for what it returns."""
        return self._blocking(
            request_iterator, timeout, metadata, credentials, wait_for_ready, compression
        )[0]

    def with_call(
        self,
        request_iterator,
        timeout=None,
        metadata=None,
        credentials=None,
        wait_for_ready=None,
        compression=None,
    ):
        """Makes the call and returns `(response, call)`; `call` has the metadata."""
        response, call = self._blocking(
            request_iterator, timeout, metadata, credentials, wait_for_ready, compression
        )
        return response, _CompletedCall(call._status, response)

    def future(
        self,
        request_iterator,
        timeout=None,
        metadata=None,
        credentials=None,
        wait_for_ready=None,
        compression=None,
    ):
        """Starts the call and returns a future; one thread runs the call."""
        requests = iter(request_iterator)
        future = _StreamUnaryFuture(self._channel, self._deserializer, timeout)
        self._channel._track(future)
        threading.Thread(
            target=future._run,
            args=(self, requests, timeout, metadata, credentials, wait_for_ready, compression),
            name="plexus-stream-unary",
            daemon=True,
        ).start()
        return future


class _StreamUnaryFuture(_CallFuture):
    """A stream-unary future: one thread runs the blocking call and resolves it."""

    _stream = None

    def _run(
        self, multicallable, requests, timeout, metadata, credentials, wait_for_ready, compression
    ):
        status = None
        try:
            call = multicallable._open(timeout, metadata, credentials, wait_for_ready, compression)
            with self._handle_lock:
                self._stream = call
                local = self._local
            if local is not None:
                call._cancel_with(local.code, local.details)
            if call._handle:
                _consume_requests(call, self._lib, requests, multicallable._serializer)
            try:
                self._response = call._response()
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
            status = Status(
                self._local.code,
                self._local.details,
                b"",
                status.initial_metadata,
                status.trailing_metadata,
            )
        self._status = status
        self._resolve()

    def _cancel_with(self, code, details, force: bool = False) -> bool:
        with self._handle_lock:
            if self._done or (self._local is not None and not force):
                return False
            self._local = Status.local(code, details)
            stream = self._stream
        if stream is not None:
            stream._cancel_with(code, details)
        return True


def insecure_channel(target: str, options=None, compression=None, **plexus_options) -> Channel:
    """A channel to `target` without TLS, shaped like grpc.insecure_channel.

    `options` takes grpcio's `[("grpc.keepalive_time_ms", 10000), ...]`; plexus options go
    by keyword (see `plexus.CHANNEL_OPTIONS`)."""
    return Channel(target, options, compression, **plexus_options)
