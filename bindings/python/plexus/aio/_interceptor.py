"""grpc.aio's client interceptors on plexus.aio channels.

A channel sorts its interceptors by the call kind they intercept, as grpc.aio does: the first
of the four interfaces an interceptor implements decides. A call on a channel with interceptors
for its kind returns an intercepted call at once, and a task runs the chain: each interceptor
gets a continuation that runs the rest of the chain and, at its end, starts the plexus call
with the ClientCallDetails it was handed. The intercepted call answers from what the chain
gave: the call, a response (or response iterator) an interceptor returned in its place, or
the exception an interceptor raised to reject the call.
"""

from __future__ import annotations

import abc
import asyncio
import time
from collections.abc import AsyncIterator, Generator, Iterable
from typing import TYPE_CHECKING, Any, Callable, NamedTuple, Tuple

from .._call_state import LOCAL_CANCEL
from .._common import Metadata, MetadataArg, StatusCode, method_path
from .._credentials import CredentialsFailed, needs_thread, plugins_for, run_plugins
from ._channel import EOF, AioRpcError, _Call, _grpc_aio

UNARY_UNARY, UNARY_STREAM, STREAM_UNARY, STREAM_STREAM = range(4)
"""The call kinds, in the order grpc.aio tries an interceptor's interfaces."""

_METHODS = (
    "intercept_unary_unary",
    "intercept_unary_stream",
    "intercept_stream_unary",
    "intercept_stream_stream",
)

# The type checker reads the stand-ins; at run time grpc.aio's own classes are used when
# grpcio is importable, so interceptors written against grpc.aio work unchanged.
if TYPE_CHECKING or _grpc_aio is None:

    class ClientCallDetails(NamedTuple):
        """The parts of a call an interceptor may change (grpc.aio.ClientCallDetails)."""

        method: Any
        timeout: float | None
        metadata: Any
        credentials: Any
        wait_for_ready: bool | None

    class ClientInterceptor(abc.ABC):  # noqa: B024 (a marker base, as grpc.aio's)
        """The base of the four client interceptor interfaces (grpc.aio.ClientInterceptor)."""

    class UnaryUnaryClientInterceptor(ClientInterceptor):
        """Intercepts unary-unary calls (grpc.aio.UnaryUnaryClientInterceptor)."""

        @abc.abstractmethod
        async def intercept_unary_unary(
            self, continuation: Any, client_call_details: ClientCallDetails, request: Any
        ) -> Any:
            """Returns the call `await continuation(details, request)` gives, or a response."""

    class UnaryStreamClientInterceptor(ClientInterceptor):
        """Intercepts unary-stream calls (grpc.aio.UnaryStreamClientInterceptor)."""

        @abc.abstractmethod
        async def intercept_unary_stream(
            self, continuation: Any, client_call_details: ClientCallDetails, request: Any
        ) -> Any:
            """Returns the call the continuation gives, or an async iterator of responses."""

    class StreamUnaryClientInterceptor(ClientInterceptor):
        """Intercepts stream-unary calls (grpc.aio.StreamUnaryClientInterceptor)."""

        @abc.abstractmethod
        async def intercept_stream_unary(
            self, continuation: Any, client_call_details: ClientCallDetails, request_iterator: Any
        ) -> Any:
            """Returns the call `await continuation(details, request_iterator)` gives."""

    class StreamStreamClientInterceptor(ClientInterceptor):
        """Intercepts stream-stream calls (grpc.aio.StreamStreamClientInterceptor)."""

        @abc.abstractmethod
        async def intercept_stream_stream(
            self, continuation: Any, client_call_details: ClientCallDetails, request_iterator: Any
        ) -> Any:
            """Returns the call the continuation gives, or an async iterator of responses."""

    _ERRORS: tuple[type[BaseException], ...] = (AioRpcError,)
    _CALL_TYPES: tuple[type, ...] = ()

    def _metadata(metadata: MetadataArg) -> Any:
        return tuple(metadata or ())

else:
    ClientCallDetails = _grpc_aio.ClientCallDetails
    ClientInterceptor = _grpc_aio.ClientInterceptor
    UnaryUnaryClientInterceptor = _grpc_aio.UnaryUnaryClientInterceptor
    UnaryStreamClientInterceptor = _grpc_aio.UnaryStreamClientInterceptor
    StreamUnaryClientInterceptor = _grpc_aio.StreamUnaryClientInterceptor
    StreamStreamClientInterceptor = _grpc_aio.StreamStreamClientInterceptor
    _ERRORS = (_grpc_aio.AioRpcError,)  # plexus.aio.AioRpcError derives from it
    _CALL_TYPES = (_grpc_aio.Call,)

    def _metadata(metadata: MetadataArg) -> Any:
        # What grpc.aio hands its interceptors: always a grpc.aio.Metadata.
        if isinstance(metadata, _grpc_aio.Metadata):
            return metadata
        return _grpc_aio.Metadata.from_tuple(tuple(metadata or ()))


_INTERFACES = (
    UnaryUnaryClientInterceptor,
    UnaryStreamClientInterceptor,
    StreamUnaryClientInterceptor,
    StreamStreamClientInterceptor,
)

Interceptors = Tuple[Tuple[Any, ...], Tuple[Any, ...], Tuple[Any, ...], Tuple[Any, ...]]
"""A channel's interceptors by call kind (UNARY_UNARY ... STREAM_STREAM), each in order."""


def sort_interceptors(interceptors: Iterable[object]) -> Interceptors:
    """The interceptors by the call kind each intercepts. Like grpc.aio, an interceptor counts
    for the first of the four interfaces it implements (an object with one of the four
    `intercept_*` methods counts too); anything else is a ValueError."""
    kinds: tuple[list[Any], list[Any], list[Any], list[Any]] = ([], [], [], [])
    for interceptor in interceptors:
        kind = _kind_of(interceptor)
        if kind is None:
            raise ValueError(
                f"{interceptor!r} is not a client interceptor: interceptors must be "
                "UnaryUnaryClientInterceptor, UnaryStreamClientInterceptor, "
                "StreamUnaryClientInterceptor or StreamStreamClientInterceptor"
            )
        kinds[kind].append(interceptor)
    return tuple(kinds[0]), tuple(kinds[1]), tuple(kinds[2]), tuple(kinds[3])


def _kind_of(interceptor: object) -> int | None:
    for kind, interface in enumerate(_INTERFACES):
        if isinstance(interceptor, interface):
            return kind
    for kind, name in enumerate(_METHODS):
        if callable(getattr(interceptor, name, None)):
            return kind
    return None


def _is_call(value: object) -> bool:
    """Whether an interceptor returned a call (rather than a response or an iterator)."""
    return isinstance(value, (_Call, _InterceptedCall, _ResponseCall, _IteratorCall)) or (
        isinstance(value, _CALL_TYPES)
    )


Start = Callable[[Any, Any], Any]
"""Starts the plexus call for (ClientCallDetails, request or request iterator)."""


# --------------------------------------------------------------------------- stand-in calls


class _ResponseCall:
    """The call behind a response an interceptor returned instead of a call: done and OK,
    without metadata, as grpc.aio's stand-in for it."""

    def __init__(self, response: Any) -> None:
        self._response = response

    def cancel(self) -> bool:
        """A finished call cannot be cancelled."""
        return False

    def cancelled(self) -> bool:
        """Never cancelled."""
        return False

    def done(self) -> bool:
        """Always done."""
        return True

    def add_done_callback(self, callback: Callable[[Any], object]) -> None:
        """Calls `callback(self)` at once: the call is done."""
        callback(self)

    def time_remaining(self) -> float | None:
        """No deadline."""
        return None

    async def initial_metadata(self) -> Metadata | None:
        """None: no server sent any."""
        return None

    async def trailing_metadata(self) -> Metadata | None:
        """None: no server sent any."""
        return None

    async def code(self) -> StatusCode:
        """OK."""
        return StatusCode.OK

    async def details(self) -> str:
        """Empty."""
        return ""

    async def debug_error_string(self) -> str | None:
        """None: nothing failed."""
        return None

    async def wait_for_connection(self) -> None:
        """Returns at once."""

    async def _value(self) -> Any:
        return self._response

    def __await__(self) -> Generator[Any, None, Any]:
        return self._value().__await__()


class _IteratorCall:
    """A streaming call whose responses come from an iterator an interceptor returned; the
    rest (status, metadata, cancel) is the call the rest of the chain gave, if any."""

    def __init__(self, call: Any, responses: Any) -> None:
        self._call = call
        self._responses = responses
        self._reader: Any = None

    def cancel(self) -> bool:
        """Cancels the underlying call."""
        return bool(self._call.cancel())

    def cancelled(self) -> bool:
        """Whether the underlying call was cancelled."""
        return bool(self._call.cancelled())

    def done(self) -> bool:
        """Whether the underlying call is done."""
        return bool(self._call.done())

    def add_done_callback(self, callback: Callable[[Any], object]) -> None:
        """Calls `callback` when the underlying call ends."""
        self._call.add_done_callback(callback)

    def time_remaining(self) -> float | None:
        """The underlying call's time left."""
        remaining: float | None = self._call.time_remaining()
        return remaining

    async def initial_metadata(self) -> Any:
        """The underlying call's initial metadata."""
        return await self._call.initial_metadata()

    async def trailing_metadata(self) -> Any:
        """The underlying call's trailing metadata."""
        return await self._call.trailing_metadata()

    async def code(self) -> Any:
        """The underlying call's status code."""
        return await self._call.code()

    async def details(self) -> Any:
        """The underlying call's status message."""
        return await self._call.details()

    async def debug_error_string(self) -> Any:
        """The underlying call's debug string."""
        return await self._call.debug_error_string()

    async def wait_for_connection(self) -> None:
        """Waits for the underlying call's response headers."""
        await self._call.wait_for_connection()

    def __aiter__(self) -> Any:
        if self._reader is None:
            self._reader = self._responses.__aiter__()
        return self._reader

    async def read(self) -> Any:
        """The interceptor's next response, or EOF."""
        try:
            return await self.__aiter__().__anext__()
        except StopAsyncIteration:
            return EOF

    async def write(self, request: Any) -> None:
        """Writes to the underlying call."""
        await self._call.write(request)

    async def done_writing(self) -> None:
        """Half-closes the underlying call."""
        await self._call.done_writing()


# --------------------------------------------------------------------------- intercepted calls

_END_OF_WRITES = object()

_STYLE_ERROR = (
    "this call consumes a request iterator: write() and done_writing() are not allowed on it "
    "(grpc.aio does not mix the two styles either)"
)
_FINISHED = "the call has ended"
_HALF_CLOSED = "write() after done_writing()"


class _InterceptedCall:
    """What every intercepted call has: grpc.aio.Call's methods, answered from the chain's
    task until it has given a call, then by that call."""

    _kind: int

    def __init__(
        self,
        channel: Any,
        loop: asyncio.AbstractEventLoop,
        interceptors: tuple[Any, ...],
        start: Start,
        details: Any,
        request: Any,
    ) -> None:
        self._loop = loop
        self._channel = channel
        timeout = details.timeout
        self._deadline: float | None = None
        if timeout is not None:
            self._deadline = time.monotonic() + max(timeout, 0)
        self._callbacks: list[Callable[[Any], object]] = []
        self._last: Any = None  # what the chain's last finished level gave
        self._rpc: Any = None  # the plexus call the chain started last
        self._responses: AsyncIterator[Any] | None = None
        self._queue: asyncio.Queue[Any] | None = None
        self._writes_closed = False
        self._call_ended: asyncio.Future[None] | None = None
        request = self._chain_request(request)
        self._task: asyncio.Task[Any] = loop.create_task(
            self._level(interceptors, 0, start, details, request)
        )
        self._task.add_done_callback(self._on_chain_done)
        channel._intercepting.add(self)

    def _chain_request(self, request: Any) -> Any:
        """What the chain gets as the request (stream-request calls may substitute theirs)."""
        return request

    async def _level(
        self, interceptors: tuple[Any, ...], index: int, start: Start, details: Any, request: Any
    ) -> Any:
        """Runs interceptor `index` (or, past the last, starts the call)."""
        if index == len(interceptors):
            self._rpc = self._last = start(details, request)
            return self._rpc

        async def next_level(client_call_details: Any, request: Any) -> Any:
            return await self._level(interceptors, index + 1, start, client_call_details, request)

        # grpc.aio's parameter names, for interceptors that pass them by keyword.
        async def next_level_streaming(client_call_details: Any, request_iterator: Any) -> Any:
            return await next_level(client_call_details, request_iterator)

        continuation = next_level if self._kind < STREAM_UNARY else next_level_streaming
        intercept = getattr(interceptors[index], _METHODS[self._kind])
        returned = await intercept(continuation, details, request)
        if not _is_call(returned):
            returned = self._adopt(returned)
        self._last = returned
        return returned

    def _adopt(self, returned: Any) -> Any:
        """The call standing for what an interceptor returned instead of a call."""
        return _ResponseCall(returned)

    def _on_chain_done(self, task: asyncio.Task[Any]) -> None:
        self._channel._intercepting.discard(self)
        callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            self._when_done(task, callback)

    def _when_done(self, task: asyncio.Task[Any], callback: Callable[[Any], object]) -> None:
        """Runs `callback(self)` now if the outcome is known, else when the call ends."""
        if task.cancelled() or task.exception() is not None:
            callback(self)
            return
        call = task.result()
        if call.done():
            callback(self)
        else:
            call.add_done_callback(lambda _call: callback(self))

    def _cancel_chain(self) -> None:
        """Cancels a chain still running (the channel closed)."""
        if not self._task.done():
            self.cancel()

    # -- grpc.aio.Call --

    def cancel(self) -> bool:
        """Cancels the call: the chain if it is still running (and the call it started),
        else the call it gave. Returns whether it did."""
        task = self._task
        if task.cancelled():
            return False
        if not task.done():
            if self._rpc is not None:
                # An interceptor holding the call may be waiting on its outcome.
                self._rpc.cancel()
            return task.cancel()
        if task.exception() is not None:
            return False
        return bool(task.result().cancel())

    def cancelled(self) -> bool:
        """Whether the call was cancelled."""
        task = self._task
        if task.cancelled():
            return True
        if not task.done():
            return False
        error = task.exception()
        if error is not None:
            return isinstance(error, _ERRORS) and _code(error) is StatusCode.CANCELLED
        return bool(task.result().cancelled())

    def done(self) -> bool:
        """Whether the call has ended (a rejected or cancelled chain has)."""
        task = self._task
        if not task.done():
            return False
        if task.cancelled() or task.exception() is not None:
            return True
        return bool(task.result().done())

    def add_done_callback(self, callback: Callable[[Any], object]) -> None:
        """Calls `callback(self)` when the call ends (at once if it has)."""
        if not self._task.done():
            self._callbacks.append(callback)
        else:
            self._when_done(self._task, callback)

    def time_remaining(self) -> float | None:
        """Seconds left before the call's deadline (the one an interceptor set, once the call
        has started), or None without one."""
        task = self._task
        if task.done() and not task.cancelled() and task.exception() is None:
            remaining: float | None = task.result().time_remaining()
            return remaining
        if self._deadline is None:
            return None
        return max(0.0, self._deadline - time.monotonic())

    async def _chain(self) -> Any:
        """The call the chain gave; raises what the chain raised. Cancelling the waiter does
        not cancel the call."""
        try:
            return await asyncio.shield(self._task)
        except asyncio.CancelledError:
            if self._task.cancelled():
                raise _ChainCancelled() from None
            raise

    async def initial_metadata(self) -> Any:
        """The response's initial metadata."""
        try:
            call = await self._chain()
        except _ERRORS as error:
            return _any(error).initial_metadata()
        except _ChainCancelled:
            return None
        return await call.initial_metadata()

    async def trailing_metadata(self) -> Any:
        """The trailing metadata (waits for the call to end)."""
        try:
            call = await self._chain()
        except _ERRORS as error:
            return _any(error).trailing_metadata()
        except _ChainCancelled:
            return None
        return await call.trailing_metadata()

    async def code(self) -> StatusCode:
        """The status code (waits for the call to end)."""
        try:
            call = await self._chain()
        except _ERRORS as error:
            return _code(error)
        except _ChainCancelled:
            return StatusCode.CANCELLED
        code: StatusCode = await call.code()
        return code

    async def details(self) -> str:
        """The status message (waits for the call to end)."""
        try:
            call = await self._chain()
        except _ERRORS as error:
            return str(_any(error).details())
        except _ChainCancelled:
            return LOCAL_CANCEL
        return str(await call.details())

    async def debug_error_string(self) -> Any:
        """A description of the final status, for logs."""
        try:
            call = await self._chain()
        except _ERRORS as error:
            return _any(error).debug_error_string()
        except _ChainCancelled:
            return ""
        return await call.debug_error_string()

    async def wait_for_connection(self) -> None:
        """Waits until the call has its response headers."""
        call = await self._task
        await call.wait_for_connection()

    def __repr__(self) -> str:
        state = "done" if self.done() else "in flight"
        return f"<{type(self).__name__} ({state})>"


class _ChainCancelled(Exception):
    """The chain's task was cancelled (not the task waiting on it)."""


_STOPPED: tuple[type[BaseException], ...] = (_ChainCancelled, *_ERRORS)
"""What awaiting a chain that gave no call raises."""


def _any(value: object) -> Any:
    return value


def _code(error: BaseException) -> StatusCode:
    code: StatusCode = _any(error).code()
    return code


class _UnaryResponse(_InterceptedCall):
    """`await call` gives the response."""

    def __await__(self) -> Generator[Any, None, Any]:
        call = yield from self._task.__await__()
        response = yield from call.__await__()
        return response


class _StreamResponse(_InterceptedCall):
    """`async for response in call`, or `await call.read()`; both read one stream."""

    def _adopt(self, returned: Any) -> Any:
        call = self._last if self._last is not None else _ResponseCall(None)
        return _IteratorCall(call, returned)

    async def _iterate(self) -> AsyncIterator[Any]:
        call = await self._task
        async for response in call:
            yield response

    def __aiter__(self) -> AsyncIterator[Any]:
        if self._responses is None:
            self._responses = self._iterate()
        return self._responses

    async def read(self) -> Any:
        """The next response, or EOF at the end of the stream."""
        try:
            return await self.__aiter__().__anext__()
        except StopAsyncIteration:
            return EOF


class _StreamRequest(_InterceptedCall):
    """`write()` and `done_writing()` when the caller passed no request iterator: the chain
    then gets an async iterator over what is written."""

    def _chain_request(self, request: Any) -> Any:
        if request is not None:
            return request
        self._queue = asyncio.Queue(maxsize=1)
        return self._written()

    async def _written(self) -> AsyncIterator[Any]:
        queue = self._queue
        assert queue is not None
        while True:
            item = await queue.get()
            if item is _END_OF_WRITES:
                return
            yield item

    async def write(self, request: Any) -> None:
        """Sends one request (queued for the call's writer)."""
        if self._queue is None:
            raise asyncio.InvalidStateError(_STYLE_ERROR)
        try:
            call = await self._chain()
        except _STOPPED:
            raise asyncio.InvalidStateError(_FINISHED) from None
        if call.done():
            raise asyncio.InvalidStateError(_FINISHED)
        if self._writes_closed:
            raise asyncio.InvalidStateError(_HALF_CLOSED)
        await self._put(request, call)
        if call.done():
            raise asyncio.InvalidStateError(_FINISHED)

    async def done_writing(self) -> None:
        """Ends the request stream (half-close). Idempotent."""
        if self._queue is None:
            raise asyncio.InvalidStateError(_STYLE_ERROR)
        if self._writes_closed:
            return
        self._writes_closed = True
        try:
            call = await self._chain()
        except _STOPPED:
            return
        await self._put(_END_OF_WRITES, call)

    async def _put(self, item: Any, call: Any) -> None:
        """Queues `item`, unless the call ends first."""
        queue = self._queue
        assert queue is not None
        ended = self._call_ended
        if ended is None:
            ended = self._call_ended = self._loop.create_future()
            end = ended

            def on_end(_call: Any) -> None:
                if not end.done():
                    end.set_result(None)

            call.add_done_callback(on_end)
        put = self._loop.create_task(queue.put(item))
        try:
            await asyncio.wait((put, ended), return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not put.done():
                put.cancel()


class InterceptedUnaryUnaryCall(_UnaryResponse):
    """A unary-unary call through interceptors: `await call` gives the response."""

    _kind = UNARY_UNARY


class InterceptedUnaryStreamCall(_StreamResponse):
    """A unary-stream call through interceptors: `async for`, or `read()`."""

    _kind = UNARY_STREAM


class InterceptedStreamUnaryCall(_UnaryResponse, _StreamRequest):
    """A stream-unary call through interceptors: `write()`/`done_writing()` (or a request
    iterator), then `await call`."""

    _kind = STREAM_UNARY


class InterceptedStreamStreamCall(_StreamResponse, _StreamRequest):
    """A stream-stream call through interceptors: `write()`/`done_writing()` (or a request
    iterator) and `read()`/`async for`."""

    _kind = STREAM_STREAM


_CLASSES: tuple[type[_InterceptedCall], ...] = (
    InterceptedUnaryUnaryCall,
    InterceptedUnaryStreamCall,
    InterceptedStreamUnaryCall,
    InterceptedStreamStreamCall,
)


def intercept(
    kind: int,
    channel: Any,
    loop: asyncio.AbstractEventLoop,
    interceptors: tuple[Any, ...],
    start: Start,
    method: bytes,
    timeout: float | None,
    metadata: MetadataArg,
    credentials: object,
    wait_for_ready: bool | None,
    request: Any,
) -> Any:
    """Starts a call of `kind` through `interceptors`; `start` opens the plexus call at the
    chain's end."""
    details = ClientCallDetails(method, timeout, _metadata(metadata), credentials, wait_for_ready)
    return _CLASSES[kind](channel, loop, interceptors, start, details, request)


class CredentialsInterceptor:
    """The innermost interceptor of a call with call credentials: runs them (metadata
    plugins on a worker thread, never on the event loop) and starts the call with their
    metadata added, or rejects it with the status they give."""

    def __init__(self, channel: Any) -> None:
        self._channel = channel

    async def _authorize(self, continuation: Any, details: Any, request: Any) -> Any:
        auth = self._channel._auth
        metadata, timeout = details.metadata, details.timeout
        try:
            plugins = plugins_for(auth, details.credentials)
            if plugins:
                authority = auth.authority if auth is not None else ""
                args = (plugins, authority, method_path(details.method), metadata, timeout)
                if needs_thread(plugins):
                    loop = asyncio.get_running_loop()
                    metadata, timeout = await loop.run_in_executor(None, run_plugins, *args)
                else:
                    metadata, timeout = run_plugins(*args)
        except CredentialsFailed as exc:
            raise AioRpcError(exc.status) from None
        authorized = ClientCallDetails(
            details.method, timeout, _metadata(metadata), None, details.wait_for_ready
        )
        return await continuation(authorized, request)

    intercept_unary_unary = _authorize
    intercept_unary_stream = _authorize
    intercept_stream_unary = _authorize
    intercept_stream_stream = _authorize
