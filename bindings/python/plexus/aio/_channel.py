"""The asyncio channel: grpc.aio's shape over libplexus's completion queue.

Every operation is one of libplexus's `_async` functions, started from the event loop's
thread with an integer tag; finished operations come back as events on one completion queue
per event loop, whose file descriptor (an eventfd) the loop watches with `add_reader`. The
reader callback drains the queue and hands each event to the operation's handler. No thread
is started per call, or at all: the library's own worker pool does the I/O.
"""

from __future__ import annotations

import asyncio
import importlib
import itertools
import logging
import threading
import weakref
from collections.abc import AsyncIterable, AsyncIterator, Generator, Iterable
from ctypes import byref, c_int32, c_void_p
from typing import TYPE_CHECKING, Any, Callable, Generic, Tuple, TypeVar, Union

from .. import _common, _ffi
from .._call_state import CallState, describe, deserialize, library_status
from .._call_state import local_outcome, no_response, run_callbacks
from .._channel import open_channel
from .._credentials import call_plugins
from .._common import CompressionArg, Deserializer, LazyStatus, Metadata, MetadataArg
from .._common import MultiCallableBase, Request, Response, RpcError, Serializer, Status
from .._common import StatusCode, StatusView, call_options, closed_channel_error, free_options
from .._common import method_path, read_status, serialize, take_bytes, take_metadata
from .._ffi import END_OF_STREAM, OK
from .._options import ChannelOptions

if TYPE_CHECKING:
    # The intercepted call classes are named in the multicallables' type arguments below.
    from ._interceptor import (  # noqa: F401
        InterceptedStreamStreamCall,
        InterceptedStreamUnaryCall,
        InterceptedUnaryStreamCall,
        InterceptedUnaryUnaryCall,
        Interceptors,
    )

_LOG = logging.getLogger("plexus.aio")

_grpc_aio: Any = importlib.import_module("grpc.aio") if _common.HAVE_GRPCIO else None

# The type checker reads the stand-ins; at run time grpc.aio's own EOF and AioRpcError base
# are used when grpcio is importable.
if TYPE_CHECKING or _grpc_aio is None:

    class _EOFType:
        """The end of a response stream, as `read()` returns it (grpc.aio.EOF)."""

        def __repr__(self) -> str:
            return "<plexus.aio.EOF>"

        def __bool__(self) -> bool:
            return False

    EOF = _EOFType()

    _AioRpcErrorBase = RpcError
else:
    EOF = _grpc_aio.EOF

    class _AioRpcErrorBase(_grpc_aio.AioRpcError, RpcError):
        """grpc.aio.AioRpcError and plexus.RpcError at once."""


class AioRpcError(StatusView, _AioRpcErrorBase):
    """An asyncio call that ended with a status other than OK (grpc.aio.AioRpcError when
    grpcio is importable)."""

    def __init__(self, status: Status) -> None:
        if _grpc_aio is not None:
            _grpc_aio.AioRpcError.__init__(
                self,
                status.code,
                status.initial_metadata,
                status.trailing_metadata,
                status.details,
                status.debug_error_string(),
            )
        else:
            RpcError.__init__(self, status.details)
        self._plexus_status = status

    def _final_status(self) -> Status:
        return self._plexus_status

    def __str__(self) -> str:
        return describe("AioRpcError", self._plexus_status)

    __repr__ = __str__


# --------------------------------------------------------------------------- the poller

_Event = Tuple[int, int, int, int, int]
"""A finished operation: its result, call, message, status and metadata handles."""
_Handler = Callable[[int, int, int, int, int], None]


class _Poller:
    """One completion queue for one event loop, drained by the loop's reader callback."""

    def __init__(self, lib: _ffi.Lib, loop: asyncio.AbstractEventLoop) -> None:
        out = c_void_p()
        lib.check(lib.cq_new(byref(out)))
        self.lib = lib
        self.loop = loop
        self.cq = _ffi.handle(out)
        fd = c_int32()
        rc = lib.cq_fd(self.cq, byref(fd))
        if rc:
            lib.cq_free(self.cq)
            raise lib.error(rc, "no file descriptor for the completion queue")
        self.fd = fd.value
        self.handlers: dict[int, _Handler] = {}
        self.register = self._register
        self._tags = itertools.count(1).__next__
        # The event being handled (a handler may read fields it is not given: `state`).
        self.event = _ffi.Event()
        self._event_ref = byref(self.event)
        loop.add_reader(self.fd, self._drain)

    def _register(self, handler: _Handler) -> int:
        tag = self._tags()
        self.handlers[tag] = handler
        return tag

    def _drain(self) -> None:
        nxt = self.lib.cq_poll
        cq = self.cq
        ev = self.event
        ref = self._event_ref
        pop = self.handlers.pop
        while nxt(cq, 0, ref) == OK:
            handler = pop(ev.tag, None)
            if handler is None:
                _free_event(self.lib, ev.call, ev.message, ev.status, ev.metadata)
                continue
            try:
                handler(ev.result, ev.call, ev.message, ev.status, ev.metadata)
            except Exception:
                _LOG.exception("plexus.aio: completion handler failed")

    def close(self) -> None:
        """Stops watching the queue's fd and shuts the queue down."""
        try:
            self.loop.remove_reader(self.fd)
        except Exception:
            pass
        self.lib.cq_shutdown(self.cq)

    def __del__(self) -> None:
        cq, self.cq = getattr(self, "cq", 0), 0
        if cq:
            try:
                if not self.loop.is_closed():
                    self.loop.remove_reader(self.fd)
            except Exception:
                pass
            try:
                self.lib.cq_free(cq)
            except Exception:
                pass


def _free_event(lib: _ffi.Lib, call: int, message: int, status: int, metadata: int) -> None:
    """Frees what an event nobody waits for any more carries."""
    if call:
        lib.call_free(call)
    if message:
        lib.bytes_free(message)
    if status:
        lib.status_free(status)
    if metadata:
        lib.metadata_free(metadata)


_pollers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Poller] = (
    weakref.WeakKeyDictionary()
)


_pollers_lock = threading.Lock()  # event loops in several threads look up the table


def _submit(
    lib: _ffi.Lib,
    poller: _Poller,
    loop: asyncio.AbstractEventLoop,
    start: Callable[..., int],
    *args: Any,
) -> asyncio.Future[_Event]:
    """Starts one `_async` operation on `poller`'s queue; the future gets its event's
    fields (freed if the future was cancelled first)."""
    fut: asyncio.Future[_Event] = loop.create_future()

    def handler(result: int, call: int, message: int, status: int, metadata: int) -> None:
        if fut.cancelled():
            _free_event(lib, call, message, status, metadata)
        else:
            fut.set_result((result, call, message, status, metadata))

    tag = poller.register(handler)
    rc = start(*args, poller.cq, tag)
    if rc:
        poller.handlers.pop(tag, None)
        raise lib.error(rc)
    return fut


def _poller_for(lib: _ffi.Lib, loop: asyncio.AbstractEventLoop) -> _Poller:
    with _pollers_lock:
        found = _pollers.get(loop)
        if found is None or found.lib is not lib:
            found = _pollers[loop] = _Poller(lib, loop)
        return found


_WATCH_MS = 5_000
"""How long one connectivity watch lasts before wait_for_state_change renews it: a pending
watch holds the library's channel, so this bounds how long a cancelled wait keeps it."""


def _library_status(lib: _ffi.Lib, result: int) -> Status:
    return library_status(lib, result, lib.last_error())


# --------------------------------------------------------------------------- calls


class _Call(CallState):
    """What every asyncio call has: grpc.aio.Call's methods over the shared call state,
    waiting on the event loop. A successful call's status stays unread in the library
    (`_lazy`) until someone asks for it."""

    def __init__(
        self,
        channel: Channel,
        loop: asyncio.AbstractEventLoop,
        poller: _Poller,
        timeout: float | None,
        serializer: Serializer | None,
        deserializer: Deserializer | None,
    ) -> None:
        self._init_state(channel._lib, timeout)
        self._serializer = serializer
        self._deserializer = deserializer
        self._channel = channel
        self._loop = loop
        self._poller = poller
        self._lazy: LazyStatus | None = None
        self._done_callbacks: list[Callable[[Any], object]] | None = None
        self._done: asyncio.Future[None] | None = None  # created when someone waits for the end
        self._prepare()

    def _prepare(self) -> None:
        """Sets up what this kind of call adds to the state (on the event loop's thread)."""

    # -- state --

    def _ended(self) -> bool:
        return self._status is not None or self._lazy is not None

    def _status_now(self) -> Status:
        status = self._status
        if status is None:
            if self._lazy is None:
                return _NOT_ENDED
            status = self._status = self._lazy.get()
        return status

    def _end(self, status: Status | None, lazy: LazyStatus | None = None) -> None:
        """Records the final status (given, or read lazily from `lazy`) and runs callbacks."""
        if self._local is not None:
            status = local_outcome(self._local, status or (lazy.get() if lazy else None))
            lazy = None
        self._status = status
        self._lazy = lazy
        self._free_handle()
        self._channel._calls.pop(id(self), None)
        done = self._done
        if done is not None and not done.done():
            done.set_result(None)
        callbacks, self._done_callbacks = self._done_callbacks, None
        if callbacks:
            run_callbacks(callbacks, self)

    def _open(self, channel_handle: int, method: bytes, req: int | None, opts: int | None) -> None:
        """Starts the call in the library, with its one request message `req` if it has one;
        the events come to this call's poller."""
        raise NotImplementedError

    # -- grpc.aio.Call --

    def done(self) -> bool:
        """Whether the call has ended."""
        return self._ended()

    def add_done_callback(self, callback: Callable[[Any], object]) -> None:
        """Calls `fn(self)` when the call ends (at once if it has)."""
        if self._ended():
            callback(self)
            return
        if self._done_callbacks is None:
            self._done_callbacks = []
        self._done_callbacks.append(callback)

    async def wait_for_connection(self) -> None:
        """Waits until the call has its response headers (or has ended)."""
        await self.initial_metadata()

    async def initial_metadata(self) -> Metadata:
        """The response's initial metadata (waits for the response headers)."""
        return (await self._final()).initial_metadata

    async def code(self) -> StatusCode:
        """The call's status code (waits for the call to end)."""
        return (await self._final()).code

    async def details(self) -> str:
        """The call's status message (waits for the call to end)."""
        return (await self._final()).details

    async def trailing_metadata(self) -> Metadata:
        """The trailing metadata (waits for the call to end)."""
        return (await self._final()).trailing_metadata

    async def debug_error_string(self) -> str:
        """A description of the final status, for logs."""
        return (await self._final()).debug_error_string()

    async def _final(self) -> Status:
        await self._wait_end()
        return self._status_now()

    async def _wait_end(self) -> None:
        if not self._ended():
            await asyncio.shield(self._end_future())

    def _end_future(self) -> asyncio.Future[None]:
        if self._done is None:
            self._done = self._loop.create_future()
            if self._ended():
                self._done.set_result(None)
        return self._done

    def _error(self) -> AioRpcError:
        return AioRpcError(self._status_now())

    def __repr__(self) -> str:
        if not self._ended():
            return f"<{type(self).__name__} of in-flight RPC>"
        s = self._status_now()
        return (
            f"<{type(self).__name__} of RPC that terminated with: "
            f'status = {s.code}, details = "{s.details}">'
        )


_NOT_ENDED = Status.local(StatusCode.INTERNAL, "the call has not ended")


class UnaryUnaryCall(_Call):
    """An asyncio unary call: `await call` gives the response. One event on the loop's
    completion queue (plexus_unary_call_async) brings the response and the status."""

    def _prepare(self) -> None:
        self._payload: bytes | None = None
        self._result: asyncio.Future[Any] = self._loop.create_future()
        self._result.add_done_callback(self._on_result_done)

    def _open(self, channel_handle: int, method: bytes, req: int | None, opts: int | None) -> None:
        poller = self._poller
        tag = poller.register(self._on_event)
        out = c_void_p()
        rc = self._lib.unary_call_async(
            channel_handle, method, req, opts, poller.cq, tag, byref(out)
        )
        if rc:
            poller.handlers.pop(tag, None)
            raise self._lib.error(rc, "could not start the call")
        self._handle = _ffi.handle(out)

    def _on_result_done(self, fut: asyncio.Future[Any]) -> None:
        # The awaiting task was cancelled: cancel the RPC too (grpc.aio does).
        if fut.cancelled() and not self._ended():
            self.cancel()

    def _on_event(self, result: int, call: int, message: int, status: int, metadata: int) -> None:
        if message:
            self._payload = take_bytes(self._lib, message)
        self._complete(result, status)

    def _complete(self, result: int, status_handle: int) -> None:
        lib = self._lib
        fut = self._result
        fut.remove_done_callback(self._on_result_done)
        if result == OK and self._local is None:
            lazy = LazyStatus(lib, status_handle)
            payload = self._payload
            try:
                if payload is None:
                    raise AioRpcError(no_response(lazy.get().initial_metadata))
                response = deserialize(
                    self._deserializer, payload, AioRpcError, lambda: lazy.get().initial_metadata
                )
            except AioRpcError as exc:
                self._end(exc._plexus_status)
                if not fut.done():
                    fut.set_exception(self._error())
                return
            self._end(None, lazy)
            if not fut.done():
                fut.set_result(response)
            return
        if status_handle:
            status = read_status(lib, status_handle)
        else:
            status = _library_status(lib, result)
        self._end(status)
        if not fut.done():
            if self.cancelled():
                fut.cancel()
            else:
                fut.set_exception(self._error())

    def __await__(self) -> Generator[Any, None, Any]:
        return self._result.__await__()


class _StreamingCall(_Call):
    """Calls with a request stream or a response stream: operations are awaited one at a
    time per side, each an asyncio future resolved by its event."""

    def _prepare(self) -> None:
        self._started: asyncio.Future[bool] = self._loop.create_future()
        self._recv_lock = asyncio.Lock()
        self._initial: Metadata | None = None
        self._writer_task: asyncio.Task[None] | None = None
        self._write_closed = False

    # -- plumbing --

    def _submit(self, start: Callable[..., int], *args: Any) -> asyncio.Future[_Event]:
        """Starts one asynchronous operation; the future gets its event's fields."""
        return _submit(self._lib, self._poller, self._loop, start, *args)

    def _open(self, channel_handle: int, method: bytes, req: int | None, opts: int | None) -> None:
        lib = self._lib
        if req is None:
            fut = self._submit(lib.call_start_async, channel_handle, method, opts)
        else:
            fut = self._submit(
                lib.call_start_server_streaming_async, channel_handle, method, req, opts
            )
        fut.add_done_callback(self._on_start)

    def _on_start(self, fut: asyncio.Future[_Event]) -> None:
        if fut.cancelled():
            return
        result, call, _message, status, _md = fut.result()
        if result == OK:
            self._handle = call
            if self._local is not None:
                self._lib.call_cancel(call)
            self._started.set_result(True)
            return
        self._end(read_status(self._lib, status) if status else _library_status(self._lib, result))
        self._started.set_result(False)

    async def _wait_started(self) -> bool:
        return await asyncio.shield(self._started)

    async def _finish(self) -> None:
        """Reads the status (discarding unread messages); the recv lock is held."""
        if self._ended():
            return
        fut = self._submit(self._lib.call_finish_async, self._handle)
        result, _call, _message, status, _md = await asyncio.shield(fut)
        if self._ended():
            if status:
                self._lib.status_free(status)
            return
        if not status:
            self._end(_library_status(self._lib, result))
        elif result == OK and self._local is None:
            self._end(None, LazyStatus(self._lib, status))
        else:
            self._end(read_status(self._lib, status))

    async def _wait_end(self) -> None:
        if self._ended():
            return
        if not await self._wait_started():
            return
        async with self._recv_lock:
            await self._finish()

    # -- reading --

    async def read(self) -> Any:
        """The next response message, or EOF once the stream ended with OK; raises
        AioRpcError when the call failed."""
        if not await self._wait_started():
            raise self._error()
        async with self._recv_lock:
            if not self._ended():
                fut = self._submit(self._lib.call_recv_async, self._handle)
                try:
                    result, _call, message, _status, _md = await fut
                except asyncio.CancelledError:
                    self.cancel()
                    raise
                if result == OK:
                    data = take_bytes(self._lib, message)
                    try:
                        return deserialize(self._deserializer, data, AioRpcError)
                    except AioRpcError as exc:
                        self._cancel_with(StatusCode.INTERNAL, exc.details())
                        await self._finish()
                        raise self._error() from exc.__cause__
                if result != END_OF_STREAM:
                    self._end(_library_status(self._lib, result))
                else:
                    await self._finish()
        if self._status_now().code is StatusCode.OK:
            return EOF
        if self.cancelled():
            raise asyncio.CancelledError()
        raise self._error()

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Any]:
        while True:
            message = await self.read()
            if message is EOF:
                return
            yield message

    async def initial_metadata(self) -> Metadata:
        """The response's initial metadata (waits for the response headers)."""
        if self._initial is not None:
            return self._initial
        if not await self._wait_started():
            return self._status_now().initial_metadata
        async with self._recv_lock:
            if self._initial is not None:
                return self._initial
            if self._ended():
                return self._status_now().initial_metadata
            fut = self._submit(self._lib.call_initial_metadata_async, self._handle)
            result, _call, _message, status, metadata = await asyncio.shield(fut)
            if result == OK:
                self._initial = take_metadata(self._lib, metadata)
                return self._initial
            if status:
                self._lib.status_free(status)
            await self._finish()
            return self._status_now().initial_metadata

    # -- writing --

    async def write(self, request: Any) -> None:
        """Sends one request; raises AioRpcError if the call already ended."""
        if self._writer_task is not None and asyncio.current_task() is not self._writer_task:
            raise asyncio.InvalidStateError(
                "this call consumes a request iterator: write() and done_writing() are not "
                "allowed on it (grpc.aio does not mix the two styles either)"
            )
        if self._write_closed:
            raise asyncio.InvalidStateError("write() after done_writing()")
        data = serialize(self._serializer, request)
        if not await self._wait_started() or self._ended():
            self._raise_ended()
        lib = self._lib
        msg = c_void_p()
        lib.check(lib.bytes_copy(data, len(data), byref(msg)))
        try:
            fut = self._submit(lib.call_send_async, self._handle, msg.value)
        finally:
            lib.bytes_free(msg)
        result, _call, _message, status, _md = await asyncio.shield(fut)
        if status:
            lib.status_free(status)
        if result != OK:
            await self._wait_end()
            raise self._error()

    async def done_writing(self) -> None:
        """Ends the request stream (half-close)."""
        if self._write_closed:
            return
        self._write_closed = True
        if not await self._wait_started() or self._ended():
            return
        fut = self._submit(self._lib.call_close_send_async, self._handle)
        result, _call, _message, status, _md = await asyncio.shield(fut)
        if status:
            self._lib.status_free(status)

    def _raise_ended(self) -> None:
        """Raises for an operation on a call that has ended."""
        if self._status_now().code is StatusCode.OK:
            raise asyncio.InvalidStateError("the call has ended")
        raise self._error()

    def _consume(self, request_iterator: RequestIterator) -> None:
        self._writer_task = self._loop.create_task(self._write_all(request_iterator))

    async def _write_all(self, requests: RequestIterator) -> None:
        try:
            if isinstance(requests, AsyncIterable):
                async for request in requests:
                    if self._ended() or self._local is not None:
                        return
                    await self.write(request)
            else:
                for request in requests:
                    if self._ended() or self._local is not None:
                        return
                    await self.write(request)
            await self.done_writing()
        except _common.SerializationError as exc:
            self._request_failed(exc)
        except RpcError:
            pass  # the call ended: its status says why
        except asyncio.CancelledError:
            self.cancel()
            raise
        except Exception as exc:
            self._request_failed(exc)

    def cancel(self) -> bool:
        """Cancels the call if it is still running; returns whether it did."""
        cancelled = _Call.cancel(self)
        task = self._writer_task
        if task is asyncio.current_task():
            return cancelled
        if cancelled and task is not None and not task.done():
            task.cancel()
        return cancelled


RequestIterator = Union[Iterable[Any], AsyncIterable[Any]]
"""The requests of a client-streaming call: an iterator or an async iterator."""

_CallT = TypeVar("_CallT", bound=_StreamingCall)


class UnaryStreamCall(_StreamingCall):
    """An asyncio unary-stream call: `async for response in call`, or `await call.read()`."""


class StreamStreamCall(_StreamingCall):
    """An asyncio stream-stream call: `write()`/`done_writing()` (or a request iterator)
    and `read()`/`async for`."""


class StreamUnaryCall(_StreamingCall):
    """An asyncio stream-unary call: `write()`/`done_writing()` (or a request iterator),
    then `await call` for the response."""

    def __await__(self) -> Generator[Any, None, Any]:
        return self._await_response().__await__()

    async def _await_response(self) -> Any:
        if not await self._wait_started():
            raise self._error()
        if self._writer_task is not None:
            try:
                await asyncio.shield(self._writer_task)
            except asyncio.CancelledError:
                self.cancel()
                raise
        message = await self.read()
        if message is EOF:
            raise AioRpcError(no_response(self._status_now().initial_metadata))
        await self._wait_end()
        status = self._status_now()
        if status.code is not StatusCode.OK:
            if self.cancelled():
                raise asyncio.CancelledError()
            raise self._error()
        return message


# --------------------------------------------------------------------------- multicallables


_AnyCallT = TypeVar("_AnyCallT", bound=_Call)
_InterceptedT = TypeVar("_InterceptedT")
_Loop = Tuple[asyncio.AbstractEventLoop, _Poller]


class _MultiCallable(
    MultiCallableBase["Channel"], Generic[Request, Response, _AnyCallT, _InterceptedT]
):
    __slots__ = ()
    _kind: type[_AnyCallT]
    _slot: int  # the call kind's index in the channel's interceptors

    def _start(
        self,
        loop: _Loop,
        request: bytes | None,
        timeout: float | None,
        metadata: MetadataArg,
        credentials: object,
        wait_for_ready: bool | None,
        compression: CompressionArg,
        method: bytes | None = None,
    ) -> _AnyCallT:
        """Starts a call of this method's kind (or of `method`, which an interceptor chose),
        with its one request (None for a request stream)."""
        channel = self._channel
        lib = channel._lib
        opts = call_options(lib, timeout, metadata, credentials, wait_for_ready, compression)
        req = c_void_p()
        try:
            if request is not None:
                lib.check(lib.bytes_copy(request, len(request), byref(req)))
            call = self._kind(channel, *loop, timeout, self._serializer, self._deserializer)
            call._open(channel._live_handle(), method or self._method, req.value, opts)
        finally:
            lib.bytes_free(req)
            free_options(lib, opts)
        channel._track(call)
        return call

    def _chain(self, credentials: object) -> tuple[Any, ...]:
        """The interceptors a call of this kind goes through (empty: none, the direct path):
        the channel's, then the one running call credentials if there are any."""
        channel = self._channel
        if credentials is not None or channel._plugins:
            return self._with_credentials(credentials)
        interceptors = channel._interceptors
        return interceptors[self._slot] if interceptors is not None else ()

    def _with_credentials(self, credentials: object) -> tuple[Any, ...]:
        """The channel's interceptors for this kind, then the one running call credentials.
        Checks `credentials` first: an object that is not call credentials raises here."""
        from ._interceptor import CredentialsInterceptor

        if credentials is not None:
            call_plugins(credentials)
        interceptors = self._channel._interceptors
        mine = interceptors[self._slot] if interceptors is not None else ()
        return (*mine, CredentialsInterceptor(self._channel))

    def _intercepted(
        self,
        loop: _Loop,
        interceptors: tuple[Any, ...],
        request: Any,
        timeout: float | None,
        metadata: MetadataArg,
        credentials: object,
        wait_for_ready: bool | None,
        compression: CompressionArg,
    ) -> _InterceptedT:
        """Starts the call through the channel's interceptors for this kind. Compression is
        not part of grpc.aio's ClientCallDetails: it reaches the call as given."""
        from . import _interceptor

        streaming_request = self._slot >= _interceptor.STREAM_UNARY

        def start(details: Any, chain_request: Any) -> _AnyCallT:
            method = method_path(details.method)
            data = None if streaming_request else serialize(self._serializer, chain_request)
            call = self._start(
                loop,
                data,
                details.timeout,
                details.metadata,
                details.credentials,
                details.wait_for_ready,
                compression,
                method,
            )
            if streaming_request and isinstance(call, _StreamingCall) and chain_request is not None:
                call._consume(chain_request)
            return call

        intercepted: _InterceptedT = _interceptor.intercept(
            self._slot,
            self._channel,
            loop[0],
            interceptors,
            start,
            self._method,
            timeout,
            metadata,
            credentials,
            wait_for_ready,
            request,
        )
        return intercepted


class _UnaryRequestMultiCallable(_MultiCallable[Request, Response, _AnyCallT, _InterceptedT]):
    __slots__ = ()

    def __call__(
        self,
        request: Request,
        *,
        timeout: float | None = None,
        metadata: MetadataArg = None,
        credentials: object = None,
        wait_for_ready: bool | None = None,
        compression: CompressionArg = None,
    ) -> _AnyCallT | _InterceptedT:
        """Starts the call; see the class docstring for what it returns."""
        loop = self._channel._loop_and_poller()
        chain = self._chain(credentials)
        if chain:
            return self._intercepted(
                loop, chain, request, timeout, metadata, credentials, wait_for_ready, compression
            )
        data = serialize(self._serializer, request)
        return self._start(
            loop, data, timeout, metadata, credentials, wait_for_ready, compression
        )


class UnaryUnaryMultiCallable(
    _UnaryRequestMultiCallable[Request, Response, UnaryUnaryCall, "InterceptedUnaryUnaryCall"]
):
    """`callable(request, timeout=None, metadata=None, ...)` returns an awaitable call."""

    __slots__ = ()
    _kind = UnaryUnaryCall
    _slot = 0


class UnaryStreamMultiCallable(
    _UnaryRequestMultiCallable[Request, Response, UnaryStreamCall, "InterceptedUnaryStreamCall"]
):
    """`callable(request, ...)` returns a call to iterate with `async for`."""

    __slots__ = ()
    _kind = UnaryStreamCall
    _slot = 1


class _StreamRequestMultiCallable(_MultiCallable[Request, Response, _CallT, _InterceptedT]):
    __slots__ = ()

    def __call__(
        self,
        request_iterator: RequestIterator | None = None,
        *,
        timeout: float | None = None,
        metadata: MetadataArg = None,
        credentials: object = None,
        wait_for_ready: bool | None = None,
        compression: CompressionArg = None,
    ) -> _CallT | _InterceptedT:
        """Starts the call; see the class docstring for what it returns."""
        channel = self._channel
        loop = channel._loop_and_poller()
        if request_iterator is not None and not (
            hasattr(request_iterator, "__aiter__") or hasattr(request_iterator, "__iter__")
        ):
            raise TypeError(
                f"request_iterator must be an iterator or async iterator, not "
                f"{type(request_iterator).__name__}"
            )
        chain = self._chain(credentials)
        if chain:
            return self._intercepted(
                loop,
                chain,
                request_iterator,
                timeout,
                metadata,
                credentials,
                wait_for_ready,
                compression,
            )
        call = self._start(loop, None, timeout, metadata, credentials, wait_for_ready, compression)
        if request_iterator is not None:
            call._consume(request_iterator)
        return call


class StreamUnaryMultiCallable(
    _StreamRequestMultiCallable[Request, Response, StreamUnaryCall, "InterceptedStreamUnaryCall"]
):
    """`callable(request_iterator=None, ...)` returns a call to write to and await."""

    __slots__ = ()
    _kind = StreamUnaryCall
    _slot = 2


class StreamStreamMultiCallable(
    _StreamRequestMultiCallable[
        Request, Response, StreamStreamCall, "InterceptedStreamStreamCall"
    ]
):
    """`callable(request_iterator=None, ...)` returns a call to write to and read from."""

    __slots__ = ()
    _kind = StreamStreamCall
    _slot = 3


# --------------------------------------------------------------------------- the channel


class Channel(
    _common.ChannelMethods[
        UnaryUnaryMultiCallable[Any, Any],
        UnaryStreamMultiCallable[Any, Any],
        StreamUnaryMultiCallable[Any, Any],
        StreamStreamMultiCallable[Any, Any],
    ]
):
    """An asyncio channel to one target, shaped like grpc.aio.Channel.

    Create it with `plexus.aio.insecure_channel(target, options=None, compression=None,
    interceptors=None, **plexus_options)` or `plexus.aio.secure_channel(target, credentials,
    ...)` with the same arguments after `credentials`; `interceptors` are grpc.aio's client
    interceptors.
    Calls made from one event loop share that loop's completion queue; the channel itself
    may be used from several loops (one at a time per call)."""

    def __init__(
        self,
        target: str,
        options: ChannelOptions | None = None,
        compression: CompressionArg = None,
        interceptors: Iterable[object] | None = None,
        *,
        credentials: object = None,
        **plexus_options: Any,
    ) -> None:
        # grpc.aio's interceptors by call kind; None without any (the calls' fast path).
        self._interceptors: Interceptors | None = None
        if interceptors is not None:
            from ._interceptor import sort_interceptors

            sorted_interceptors = sort_interceptors(interceptors)
            if any(sorted_interceptors):
                self._interceptors = sorted_interceptors
        # Intercepted calls whose interceptors are still running (close() cancels them).
        self._intercepting: set[Any] = set()
        self._lib, self._handle, self._target, self._auth = open_channel(
            target, options, compression, plexus_options, credentials
        )
        # The channel's own call credentials (empty: calls without `credentials=` skip auth).
        self._plugins = self._auth.plugins if self._auth is not None else ()
        self._closed = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._poller: _Poller | None = None
        self._calls: dict[int, _Call] = {}  # calls in flight, by id; each removes itself at its end
        self._kinds = _KINDS

    def _loop_and_poller(self) -> tuple[asyncio.AbstractEventLoop, _Poller]:
        loop = asyncio.get_running_loop()
        poller = self._poller
        if loop is not self._loop or poller is None:
            poller = self._poller = _poller_for(self._lib, loop)
            self._loop = loop
        return loop, poller

    def _live_handle(self) -> int:
        if self._closed:
            raise closed_channel_error()
        return self._handle

    def _track(self, call: _Call) -> None:
        if not call._ended():
            self._calls[id(call)] = call

    async def close(self, grace: float | None = None) -> None:
        """Closes the channel. With `grace` (seconds), calls in progress get that long to
        finish; then (or at once) they are cancelled as by their cancel(), as grpc.aio does.
        Idempotent."""
        if self._closed:
            return
        self._closed = True
        calls = [c for c in list(self._calls.values()) if not c._ended()]
        if grace and calls:
            waits = [asyncio.shield(c._end_future()) for c in calls]
            await asyncio.wait(waits, timeout=grace)
        # As grpc.aio: each call is cancel()ed, so awaiting it raises CancelledError and
        # its details are "Locally cancelled by application!".
        for call in calls:
            call.cancel()
        for intercepted in list(self._intercepting):
            intercepted._cancel_chain()
        self._free()

    def _free(self) -> None:
        handle, self._handle = self._handle, 0
        if handle:
            self._lib.channel_free(handle)

    async def __aenter__(self) -> Channel:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close(None)

    def __del__(self) -> None:
        handle = getattr(self, "_handle", 0)
        if handle:
            self._handle = 0
            try:
                self._lib.channel_free(handle)
            except Exception:
                pass

    def get_state(self, try_to_connect: bool = False) -> _common.ChannelConnectivity:
        """The channel's ChannelConnectivity state; `try_to_connect` starts connecting."""
        handle = self._live_handle()
        state = c_int32()
        self._lib.check(self._lib.channel_state(handle, byref(state)))
        if try_to_connect and state.value == _ffi.STATE_IDLE:
            # Returns at once; resolution and connection go on in the library.
            self._lib.channel_connect(handle, 0)
        return _common.connectivity(state.value)

    async def wait_for_state_change(
        self, last_observed_state: _common.ChannelConnectivity
    ) -> None:
        """Returns once the state differs from `last_observed_state`: the library reports
        the change on the loop's completion queue (plexus_channel_watch_state_async)."""
        loop, poller = self._loop_and_poller()
        last = int(last_observed_state.value[0])
        lib = self._lib
        while True:
            handle = self._live_handle()
            changed: asyncio.Future[tuple[int, int]] = loop.create_future()

            def on_event(
                result: int, call: int, message: int, status: int, metadata: int,
                changed: asyncio.Future[tuple[int, int]] = changed,
            ) -> None:
                if not changed.done():
                    changed.set_result((result, poller.event.state))

            tag = poller.register(on_event)
            rc = lib.channel_watch_state_async(handle, last, _WATCH_MS, poller.cq, tag)
            if rc:
                poller.handlers.pop(tag, None)
                raise lib.error(rc, "could not watch the channel's state")
            # A watch that ran out of time (it is bounded so that a cancelled wait does not
            # hold the channel for long) is renewed unless the state moved meanwhile.
            result, state = await changed
            if result == OK or state != last:
                return

    async def channel_ready(self) -> None:
        """Connects if needed and returns once the channel is READY."""
        state = self.get_state(try_to_connect=True)
        while state is not _common.ChannelConnectivity.READY:
            await self.wait_for_state_change(state)
            state = self.get_state(try_to_connect=True)

    def stats(self) -> dict[str, Any]:
        """A snapshot of the channel's statistics."""
        return _common.channel_stats(self._lib, self._live_handle())


_KINDS = (
    UnaryUnaryMultiCallable,
    UnaryStreamMultiCallable,
    StreamUnaryMultiCallable,
    StreamStreamMultiCallable,
)


def insecure_channel(
    target: str,
    options: ChannelOptions | None = None,
    compression: CompressionArg = None,
    interceptors: Iterable[object] | None = None,
    **plexus_options: Any,
) -> Channel:
    """An asyncio channel to `target` without TLS, shaped like grpc.aio.insecure_channel
    (`interceptors`: grpc.aio's client interceptors, outermost first)."""
    return Channel(target, options, compression, interceptors, **plexus_options)


def secure_channel(
    target: str,
    credentials: object,
    options: ChannelOptions | None = None,
    compression: CompressionArg = None,
    interceptors: Iterable[object] | None = None,
    **plexus_options: Any,
) -> Channel:
    """An asyncio TLS channel to `target`, shaped like grpc.aio.secure_channel: `credentials`
    are `plexus.ssl_channel_credentials(...)` or grpcio's (see `plexus.secure_channel`)."""
    if credentials is None:
        raise TypeError("secure_channel needs credentials (plexus.ssl_channel_credentials)")
    return Channel(
        target, options, compression, interceptors, credentials=credentials, **plexus_options
    )
