"""The asyncio server: grpc.aio.server's shape over libplexus's server.

Incoming calls and every operation on them are libplexus `_async` operations reported on the
event loop's completion queue, the same queue (and the same reader callback on its file
descriptor) that plexus.aio's channels use: no thread runs per call or per server. Each call
is one asyncio task running its handler with a `ServicerContext`; handlers written as plain
functions (grpcio's sync style) run in `migration_thread_pool` or the loop's default
executor, as grpc.aio runs them.

Methods given to `add_registered_method_handlers` (grpcio-tools' generated
`add_XServicer_to_server` does) are registered with the library by path and kind, so a
unary call arrives with its request in the same event; other methods reach generic handlers
through one catch-all registration.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import logging
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import Executor
from ctypes import byref, c_bool, c_char_p, c_int32, c_int64, c_void_p
from typing import TYPE_CHECKING, Any, Callable, NoReturn, Optional
from collections.abc import Sequence

from .. import _common, _ffi
from .._common import CompressionArg, Metadata, StatusCode
from .._common import _metadata_handle
from .._common import compression_name, read_metadata, take_bytes
from .._ffi import END_OF_STREAM, OK
from ._channel import EOF, _free_event, _Poller, _poller_for, _submit
from .._server import UNIMPLEMENTED_DETAILS as METHOD_NOT_FOUND
from .._server import HandlerCallDetails, auth_context_of, method_kind
from .._server import server_options_handle as server_options
from .._server import server_tls_handle as server_tls
from ._server_context import NO_REQUEST, metadata_tuple, unexpected

_LOG = logging.getLogger("plexus.aio")

_grpc_aio: Any = importlib.import_module("grpc.aio") if _common.HAVE_GRPCIO else None

if TYPE_CHECKING or _grpc_aio is None:

    class _ServerBase:
        """Stand-in for grpc.aio.Server."""

    class _ContextBase:
        """Stand-in for grpc.aio.ServicerContext."""

else:
    _ServerBase = _grpc_aio.Server
    _ContextBase = _grpc_aio.ServicerContext

_EventFields = tuple[int, int, int, int, int]


class AbortError(Exception):
    """Raised by `ServicerContext.abort()`: the call ends with the status given to it."""


class _CallOver(Exception):
    """An operation found the call over (cancelled, deadline passed, server stopped)."""


def _code_value(code: Any) -> int:
    value = getattr(code, "value", None)
    if isinstance(value, tuple):
        return int(value[0])
    raise TypeError(f"code must be a grpc.StatusCode, not {code!r}")


# --------------------------------------------------------------------------- the context


class ServicerContext(_ContextBase):
    """One incoming call as its handler sees it (grpc.aio.ServicerContext)."""

    def __init__(self, server: Server, handle: int, request: int, method_handler: Any) -> None:
        self._server = server
        self._lib = server._lib
        self._loop = server._running_loop()
        self._poller = server._poller_now()
        self._handle = handle
        self._request = request  # the unary request's plexus_bytes, owned until read
        self._method_handler = method_handler  # None: looked up by path (generic handlers)
        self._code: StatusCode | None = None
        self._details: str | None = None
        self._trailers: Metadata = ()
        self._metadata: Metadata | None = None
        self._deserializer: Callable[[bytes], Any] | None = None
        self._serializer: Callable[[Any], bytes] | None = None
        self._finished = False  # the status went to the library
        self._over = False  # the library said the call is over
        self._cancelled = False
        self._eof = False
        self._aborted = False
        self._no_compress_next = False
        self._callbacks: list[Callable[[Any], object]] = []
        self._task: asyncio.Task[None] | None = None

    # -- lifecycle (the server's side) --

    def _begin(self) -> None:
        """Asks for the end-of-call event and starts the handler's task."""
        lib = self._lib
        fut = _submit(lib, self._poller, self._loop, lib.server_call_done_async, self._handle)
        fut.add_done_callback(self._on_done)
        task = self._task = self._loop.create_task(self._serve())
        task.add_done_callback(self._on_task_done)

    def _on_done(self, fut: asyncio.Future[_EventFields]) -> None:
        result, _call, _message, status, _md = fut.result()
        if status:
            self._lib.status_free(status)
        self._over = True
        if result != OK:
            self._cancelled = True
            task = self._task
            if task is not None and not task.done():
                task.cancel()
        callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            try:
                callback(self)
            except Exception:
                _LOG.exception("plexus.aio: a server call's done callback failed")
        self._release()

    def _on_task_done(self, task: asyncio.Task[None]) -> None:
        if not self._finished:
            # The task ended without a status (cancelled from outside): the client learns.
            self._finished = True
            self._lib.server_call_cancel(self._handle)
        self._release()

    def _release(self) -> None:
        task = self._task
        if self._over and task is not None and task.done() and self._handle:
            handle, self._handle = self._handle, 0
            request, self._request = self._request, 0
            if request:
                self._lib.bytes_free(request)
            self._lib.server_call_free(handle)
            self._server._calls.discard(self)

    async def _serve(self) -> None:
        try:
            handler = await self._server._handler_for(self)
            if handler is None:
                self._finish(StatusCode.UNIMPLEMENTED, METHOD_NOT_FOUND)
                return
            self._deserializer = handler.request_deserializer
            self._serializer = handler.response_serializer
            await self._run(handler)
        except AbortError:
            self._finish(self._code or StatusCode.UNKNOWN, self._details or "")
        except _CallOver:
            pass  # the end-of-call event says how it ended
        except asyncio.CancelledError:
            if not self._over:
                raise  # cancelled from outside (the loop is closing): the call is cancelled
        except Exception as exc:
            if self._aborted:
                self._finish(self._code or StatusCode.UNKNOWN, self._details or "")
                return
            _LOG.exception("plexus.aio: unexpected %r raised by a servicer method", exc)
            code = self._code
            if code is None or code is StatusCode.OK:
                code = StatusCode.UNKNOWN
            self._finish(code, unexpected(exc))

    async def _run(self, handler: Any) -> None:
        request_streaming, response_streaming, fn, sync, asyncgen = _plan(handler)
        if fn is None:
            self._finish(StatusCode.UNIMPLEMENTED, METHOD_NOT_FOUND)
            return
        if request_streaming:
            argument: Any = self._sync_requests() if sync else self._requests()
        else:
            argument = await self._unary_request()
            if argument is _NO_REQUEST:
                self._finish(StatusCode.INTERNAL, NO_REQUEST)
                return
        if not response_streaming:
            if sync:
                response = await self._in_executor(fn, argument, _SyncServicerContext(self))
            else:
                response = await fn(argument, self)
            data: bytes | None = self._serialize(response)
            if self._no_compress_next and data is not None:
                await self._send(data)
                data = None
            self._finish_ok(data)
            return
        if asyncgen:
            async for response in fn(argument, self):
                await self.write(response)
        elif sync:
            responses = await self._in_executor(fn, argument, _SyncServicerContext(self))
            if responses is not None:
                iterator = iter(responses)
                while True:
                    response = await self._in_executor(next, iterator, _DONE)
                    if response is _DONE:
                        break
                    await self.write(response)
        else:
            await fn(argument, self)
        self._finish_ok(None)

    async def _in_executor(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await self._loop.run_in_executor(self._server._thread_pool, fn, *args)

    async def _unary_request(self) -> Any:
        request = await self.read()
        return _NO_REQUEST if request is EOF else request

    def _finish_ok(self, data: bytes | None) -> None:
        """The handler returned: its status (OK unless set_code said otherwise) after `data`;
        a handler that swallowed its abort() still ends with the abort's status."""
        code = self._code or StatusCode.OK
        self._finish(code, self._details or "", None if self._aborted else data)

    def _finish(self, code: StatusCode, details: str, data: bytes | None = None) -> None:
        """Sends the status (after `data`, a last response message) and the trailers."""
        if self._finished or not self._handle:
            return
        self._finished = True
        lib = self._lib
        message = c_void_p()
        trailers = 0
        try:
            try:
                trailers = self._trailers_handle()
            except Exception as exc:
                code, details, data = StatusCode.UNKNOWN, unexpected(exc), None
            if data is not None:
                lib.check(lib.bytes_copy(data, len(data), byref(message)))
            rc = lib.server_call_finish(
                self._handle, message.value, _code_value(code), details.encode("utf-8"), trailers
            )
            if rc:
                _LOG.error("plexus.aio: could not finish a call: %s", lib.error(rc))
        finally:
            if message.value:
                lib.bytes_free(message)
            if trailers:
                lib.metadata_free(trailers)

    def _trailers_handle(self) -> int:
        """The trailing metadata for plexus_server_call_finish (0: none); a
        grpc-status-details-bin entry (abort_with_status) becomes the status details."""
        if not self._trailers:
            return 0
        return _metadata_handle(self._lib, self._trailers)

    # -- messages --

    def _serialize(self, message: Any) -> bytes:
        serializer = self._serializer
        data = serializer(message) if serializer is not None else message
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"the response serializer returned {type(data).__name__}, not bytes")
        return bytes(data)

    async def _operation(self, start: Callable[..., int], *args: Any) -> _EventFields:
        if self._over or not self._handle:
            raise _CallOver()
        fut = _submit(self._lib, self._poller, self._loop, start, self._handle, *args)
        return await fut

    async def read(self) -> Any:
        """The next request message, or grpc.aio.EOF once the client has sent them all."""
        request, self._request = self._request, 0
        if request:
            self._eof = True  # a call registered with one request has no more
            data = take_bytes(self._lib, request)
        else:
            if self._eof:
                return EOF
            result, _call, message, status, _md = await self._operation(
                self._lib.server_call_recv_async
            )
            if status:
                self._lib.status_free(status)
            if result == END_OF_STREAM:
                self._eof = True
                return EOF
            if result != OK:
                raise _CallOver()
            data = take_bytes(self._lib, message)
        deserializer = self._deserializer
        return deserializer(data) if deserializer is not None else data

    async def _requests(self) -> AsyncIterator[Any]:
        while True:
            request = await self.read()
            if request is EOF:
                return
            yield request

    def _sync_requests(self) -> Iterator[Any]:
        loop = self._loop
        while True:
            request = asyncio.run_coroutine_threadsafe(self.read(), loop).result()
            if request is EOF:
                return
            yield request

    async def write(self, message: Any) -> None:
        """Sends one response message (waits until the connection has taken it)."""
        if self._finished:
            raise RuntimeError("write() after the call's status was sent")
        await self._send(self._serialize(message))

    async def _send(self, data: bytes) -> None:
        lib = self._lib
        flags = _ffi.SEND_NO_COMPRESS if self._no_compress_next else 0
        self._no_compress_next = False
        message = c_void_p()
        lib.check(lib.bytes_copy(data, len(data), byref(message)))
        try:
            fut = self._operation(lib.server_call_send_async, message.value, flags)
            result, _call, _message, status, _md = await fut
        finally:
            lib.bytes_free(message)
        if status:
            lib.status_free(status)
        if result != OK:
            raise _CallOver()

    async def send_initial_metadata(self, initial_metadata: Sequence[Any]) -> None:
        """Sends the response headers now, with `initial_metadata` (before any message)."""
        lib = self._lib
        handle = _metadata_handle(lib, initial_metadata) if initial_metadata else 0
        try:
            fut = self._operation(lib.server_call_send_initial_metadata_async, handle)
            result, _call, _message, status, _md = await fut
        finally:
            if handle:
                lib.metadata_free(handle)
        if status:
            lib.status_free(status)
        if result == _ffi.ERR_WRONG_STATE:
            raise RuntimeError("send_initial_metadata() after the response headers were sent")
        if result != OK:
            raise _CallOver()

    # -- status --

    async def abort(
        self, code: StatusCode, details: str = "", trailing_metadata: Sequence[Any] = ()
    ) -> NoReturn:
        """Ends the call now with `code`, `details` (and trailers), then raises AbortError.
        A second abort raises RuntimeError and changes nothing, as grpc.aio."""
        self._abort(code, details, trailing_metadata)
        self._finish(self._code or StatusCode.UNKNOWN, self._details or "")
        raise AbortError()

    def _abort(self, code: StatusCode, details: str, trailing_metadata: Sequence[Any]) -> None:
        """Records the abort's status (sent by the caller, or by _serve once AbortError
        reaches it from a handler thread)."""
        if self._aborted:
            raise RuntimeError("Abort already called!")
        self._aborted = True
        if code is StatusCode.OK:
            _LOG.error("abort() called with StatusCode.OK; returning UNKNOWN")
            code = StatusCode.UNKNOWN
        _code_value(code)
        self._code = code
        self._details = details
        if trailing_metadata:
            self._trailers = metadata_tuple(trailing_metadata)

    async def abort_with_status(self, status: Any) -> NoReturn:
        """abort() with a grpc.Status (code, details, trailing_metadata)."""
        await self.abort(status.code, status.details, status.trailing_metadata)

    def set_trailing_metadata(self, trailing_metadata: Sequence[Any]) -> None:
        """Sets the trailing metadata sent with the status."""
        self._trailers = metadata_tuple(trailing_metadata)

    def trailing_metadata(self) -> Metadata:
        """The trailing metadata set so far."""
        return self._trailers

    def set_code(self, code: StatusCode) -> None:
        """Sets the status code sent when the handler returns."""
        _code_value(code)
        self._code = code

    def code(self) -> StatusCode | None:
        """The status code set so far (None: not set)."""
        return self._code

    def set_details(self, details: str) -> None:
        """Sets the status message sent when the handler returns."""
        self._details = details

    def details(self) -> str | None:
        """The status message set so far (None: not set)."""
        return self._details

    def set_compression(self, compression: CompressionArg) -> None:
        """Compresses this call's responses (if the client accepts the algorithm)."""
        name = compression_name(compression)
        if name is not None and self._handle:
            self._lib.check(self._lib.server_call_set_compression(self._handle, name))

    def disable_next_message_compression(self) -> None:
        """Sends the next response message uncompressed."""
        self._no_compress_next = True

    # -- what the call carries --

    def invocation_metadata(self) -> Metadata:
        """The request metadata."""
        if self._metadata is None:
            out = c_void_p()
            if self._handle and self._lib.server_call_metadata(self._handle, byref(out)) == OK:
                self._metadata = read_metadata(self._lib, out.value)  # borrowed: not freed
            else:
                self._metadata = ()
        return self._metadata

    def _method(self) -> str:
        out = c_char_p()
        if self._handle:
            self._lib.check(self._lib.server_call_method(self._handle, byref(out)))
        return (out.value or b"").decode("utf-8", "replace")

    def peer(self) -> str:
        """The client's address in grpc's form ("ipv4:127.0.0.1:5555")."""
        out = c_char_p()
        if self._handle:
            self._lib.check(self._lib.server_call_peer(self._handle, byref(out)))
        return (out.value or b"").decode("utf-8", "replace")

    def peer_identities(self) -> Sequence[bytes] | None:
        """The client's TLS identities: not exposed by libplexus (None)."""
        return None

    def peer_identity_key(self) -> str | None:
        """The property naming the client's identity: not exposed by libplexus (None)."""
        return None

    def auth_context(self) -> dict[str, Sequence[bytes]]:
        """The client's TLS certificate (`x509_pem_cert`) and `transport_security_type`, when
        it presented one; empty otherwise."""
        return dict(auth_context_of(self._lib, self._handle))

    def time_remaining(self) -> float | None:
        """Seconds left before the client's deadline (0 once passed); None without one."""
        remaining = c_int64(-1)
        if self._handle:
            self._lib.server_call_deadline(self._handle, byref(remaining))
        return None if remaining.value < 0 else remaining.value / 1000.0

    def cancelled(self) -> bool:
        """Whether the call ended without the handler's status (cancelled by the client,
        deadline passed, connection lost, server stopped)."""
        if self._cancelled or not self._handle:
            return self._cancelled
        flag = c_bool(False)
        self._lib.server_call_is_cancelled(self._handle, byref(flag))
        return bool(flag.value) and not self._finished

    def done(self) -> bool:
        """Whether the call is over."""
        return self._over

    def add_done_callback(self, callback: Callable[[Any], object]) -> None:
        """Calls `callback(context)` on the loop when the call is over (at once if it is)."""
        if self._over:
            callback(self)
        else:
            self._callbacks.append(callback)


_DONE = object()
_NO_REQUEST = object()

_Plan = tuple[bool, bool, Optional[Callable[..., Any]], bool, bool]
_plans: dict[int, tuple[Any, _Plan]] = {}
_PLANS_LIMIT = 4096


def _plan(handler: Any) -> _Plan:
    """How to run a grpc.RpcMethodHandler: (request streaming, response streaming, the
    behaviour, whether it is a plain function, whether it is an async generator). Kept
    per handler object (with the object, so that its id stays its own): asking inspect on
    every call costs more than the rest of a unary call's Python."""
    found = _plans.get(id(handler))
    if found is not None and found[0] is handler:
        return found[1]
    request_streaming = bool(handler.request_streaming)
    response_streaming = bool(handler.response_streaming)
    if request_streaming:
        fn = handler.stream_stream if response_streaming else handler.stream_unary
    else:
        fn = handler.unary_stream if response_streaming else handler.unary_unary
    asyncgen = inspect.isasyncgenfunction(fn)
    sync = not (asyncgen or inspect.iscoroutinefunction(fn))
    plan = (request_streaming, response_streaming, fn, sync, asyncgen)
    if len(_plans) >= _PLANS_LIMIT:
        _plans.clear()  # generic handlers may build a handler per call: never grow unbounded
    _plans[id(handler)] = (handler, plan)
    return plan


class _SyncServicerContext:
    """The context a plain-function handler gets in its executor thread: grpc.aio's
    coroutine methods as blocking ones run on the server's loop; the rest as is."""

    def __init__(self, context: ServicerContext) -> None:
        self._context = context

    def __getattr__(self, name: str) -> Any:
        return getattr(self._context, name)

    def _wait(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._context._loop).result()

    def read(self) -> Any:
        """The next request message, or grpc.aio.EOF."""
        return self._wait(self._context.read())

    def write(self, message: Any) -> None:
        """Sends one response message."""
        self._wait(self._context.write(message))

    def send_initial_metadata(self, initial_metadata: Sequence[Any]) -> None:
        """Sends the response headers now."""
        self._wait(self._context.send_initial_metadata(initial_metadata))

    def abort(
        self, code: StatusCode, details: str = "", trailing_metadata: Sequence[Any] = ()
    ) -> NoReturn:
        """Ends the call with this status (raises)."""
        self._context._abort(code, details, trailing_metadata)
        raise AbortError()

    def abort_with_status(self, status: Any) -> NoReturn:
        """abort() with a grpc.Status."""
        self.abort(status.code, status.details, status.trailing_metadata)


# --------------------------------------------------------------------------- the server

_NEW, _STARTED, _STOPPING, _STOPPED = range(4)


class Server(_ServerBase):
    """An asyncio gRPC server on libplexus, shaped like grpc.aio.Server. Create it with
    `plexus.aio.server(...)`, inside the event loop that will run it."""

    def __init__(
        self,
        migration_thread_pool: Executor | None,
        handlers: Sequence[Any] | None,
        interceptors: Sequence[Any] | None,
        options: Sequence[tuple[str, Any]] | None,
        maximum_concurrent_rpcs: int | None,
        compression: CompressionArg,
    ) -> None:
        for interceptor in interceptors or ():
            if not callable(getattr(interceptor, "intercept_service", None)):
                raise ValueError(
                    "Interceptor must be ServerInterceptor, the following are invalid: "
                    f"{interceptor!r}"
                )
        lib = self._lib = _ffi.current()
        self._handle = 0
        opts = server_options(lib, options, maximum_concurrent_rpcs, compression)
        out = c_void_p()
        try:
            lib.check(lib.server_new(opts, byref(out)), "could not create the server")
        finally:
            lib.server_options_free(opts)
        self._handle = _ffi.handle(out)
        self._thread_pool = migration_thread_pool
        self._generic: list[Any] = list(handlers or ())
        self._registered: dict[str, Any] = {}
        self._interceptors = tuple(interceptors or ())
        self._state = _NEW
        self._loop: asyncio.AbstractEventLoop | None = None
        self._poller: _Poller | None = None
        self._tags: list[int] = []
        self._calls: set[ServicerContext] = set()
        self._terminated: asyncio.Event | None = None

    # -- set-up --

    def add_generic_rpc_handlers(self, generic_rpc_handlers: Sequence[Any]) -> None:
        """Adds grpc.GenericRpcHandlers (asked in order for methods not registered)."""
        for handler in generic_rpc_handlers:
            if not callable(getattr(handler, "service", None)):
                raise AttributeError(f"{handler!r} is not a grpc.GenericRpcHandler")
        self._generic.extend(generic_rpc_handlers)

    def add_registered_method_handlers(
        self, service_name: str, method_handlers: dict[str, Any]
    ) -> None:
        """Registers `method_handlers` (method name -> grpc.RpcMethodHandler) of
        `service_name`; they take precedence over generic handlers."""
        for method, handler in method_handlers.items():
            path = f"/{service_name}/{method}"
            self._registered[path] = handler
            if self._state != _NEW:
                continue  # after start: found by the catch-all, by path
            method_kind(handler)

    def add_insecure_port(self, address: str) -> int:
        """Listens on `address` ("host:port", port 0 picks one; "unix:PATH"); returns the
        port."""
        return self._listen(address, 0)

    def add_secure_port(self, address: str, server_credentials: Any) -> int:
        """Listens with TLS (`grpc.ssl_server_credentials(...)`) on `address`; returns the
        port."""
        tls = server_tls(self._lib, server_credentials)
        try:
            return self._listen(address, tls)
        finally:
            self._lib.server_tls_free(tls)

    def _listen(self, address: str, tls: int) -> int:
        if isinstance(address, bytes):
            address = address.decode("utf-8")
        if not isinstance(address, str):
            raise TypeError(f"address must be a str, not {type(address).__name__}")
        port = c_int32(0)
        rc = self._lib.server_add_listener(
            self._handle, address.encode("utf-8"), tls or None, byref(port)
        )
        if rc:
            raise RuntimeError(f"Failed to bind to address {address}: {self._lib.last_error()}")
        return port.value

    # -- running --

    def _running_loop(self) -> asyncio.AbstractEventLoop:
        assert self._loop is not None
        return self._loop

    def _poller_now(self) -> _Poller:
        assert self._poller is not None
        return self._poller

    async def start(self) -> None:
        """Starts serving on the running event loop (once)."""
        if self._state != _NEW:
            raise RuntimeError("the server was already started")
        lib = self._lib
        loop = self._loop = asyncio.get_running_loop()
        poller = self._poller = _poller_for(lib, loop)
        self._terminated = asyncio.Event()
        for path, handler in self._registered.items():
            tag = self._listen_for(handler)
            rc = lib.server_register_method(
                self._handle, path.encode("utf-8"), method_kind(handler), poller.cq, tag
            )
            if rc:
                raise lib.error(rc, f"could not register {path}")
        tag = self._listen_for(None)
        lib.check(lib.server_register_catch_all(self._handle, poller.cq, tag))
        lib.check(lib.server_start(self._handle), "could not start the server")
        self._state = _STARTED

    def _listen_for(self, method_handler: Any) -> int:
        """A completion-queue tag whose SERVER_CALL events start calls of `method_handler`
        (None: found by path). The tag stays registered for every call that comes."""
        poller = self._poller_now()
        handlers = poller.handlers
        tag = 0

        def on_call(result: int, call: int, message: int, status: int, metadata: int) -> None:
            handlers[tag] = on_call
            server_call = poller.event.server_call or 0
            if status:
                self._lib.status_free(status)
            if result != OK or not server_call:
                if message:
                    self._lib.bytes_free(message)
                return
            context = ServicerContext(self, server_call, message, method_handler)
            self._calls.add(context)
            context._begin()

        tag = poller.register(on_call)
        self._tags.append(tag)
        return tag

    async def _handler_for(self, context: ServicerContext) -> Any:
        """The grpc.RpcMethodHandler for a call: its registration's, or the first generic
        handler's answer; through the interceptors when the server has some."""
        preset = context._method_handler
        interceptors = self._interceptors
        if preset is not None and not interceptors:
            return preset
        details = HandlerCallDetails(context._method(), context.invocation_metadata())

        def lookup(d: Any) -> Any:
            if preset is not None:
                return preset
            found = self._registered.get(d.method)
            if found is not None:
                return found
            for generic in self._generic:
                found = generic.service(d)
                if found is not None:
                    return found
            return None

        if not interceptors:
            return lookup(details)

        async def through(index: int, d: Any) -> Any:
            if index == len(interceptors):
                return lookup(d)
            return await interceptors[index].intercept_service(lambda nd: through(index + 1, nd), d)

        return await through(0, details)

    async def stop(self, grace: float | None) -> None:
        """Stops accepting calls; calls in flight get `grace` seconds (None: none) to finish,
        then are cancelled. Returns once every handler has returned. Idempotent."""
        if self._state == _NEW:
            self._state = _STOPPED
            self._free()
            return
        lib = self._lib
        loop, poller = self._running_loop(), self._poller_now()
        if self._state == _STARTED:
            self._state = _STOPPING
        if self._handle:
            grace_ms = 0 if grace is None else max(0, int(grace * 1000))
            fut = _submit(lib, poller, loop, lib.server_shutdown_async, self._handle, grace_ms)
            await fut
        tasks = [c._task for c in list(self._calls) if c._task is not None and not c._task.done()]
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        if self._state != _STOPPED:
            self._state = _STOPPED
            self._retire_tags()
            assert self._terminated is not None
            self._terminated.set()

    def _retire_tags(self) -> None:
        """After shutdown no call comes; a late event is answered without this server."""
        poller = self._poller_now()
        lib = self._lib
        for tag in self._tags:

            def refuse(
                result: int, call: int, message: int, status: int, metadata: int, tag: int = tag
            ) -> None:
                poller.handlers[tag] = refuse
                server_call = poller.event.server_call
                if server_call:
                    lib.server_call_free(server_call)
                _free_event(lib, call, message, status, metadata)

            poller.handlers[tag] = refuse

    async def wait_for_termination(self, timeout: float | None = None) -> bool:
        """Waits until the server has stopped; returns True if `timeout` passed first."""
        if self._state == _STOPPED:
            return False
        if self._terminated is None:
            self._terminated = asyncio.Event()
        try:
            await asyncio.wait_for(asyncio.shield(self._terminated.wait()), timeout)
        except asyncio.TimeoutError:
            return True
        return False

    def _free(self) -> None:
        handle, self._handle = self._handle, 0
        if handle:
            self._lib.server_free(handle)

    def __del__(self) -> None:
        handle = getattr(self, "_handle", 0)
        if handle:
            self._handle = 0
            try:
                self._lib.server_free(handle)
            except Exception:
                pass


def server(
    migration_thread_pool: Executor | None = None,
    handlers: Sequence[Any] | None = None,
    interceptors: Sequence[Any] | None = None,
    options: Sequence[tuple[str, Any]] | None = None,
    maximum_concurrent_rpcs: int | None = None,
    compression: CompressionArg = None,
) -> Server:
    """An asyncio server shaped like grpc.aio.server(): `migration_thread_pool` runs
    plain-function handlers, `handlers` are grpc.GenericRpcHandlers, `interceptors`
    grpc.aio.ServerInterceptors, `options` grpcio server arguments,
    `maximum_concurrent_rpcs` refuses calls beyond it with RESOURCE_EXHAUSTED, and
    `compression` compresses responses by default."""
    return Server(
        migration_thread_pool, handlers, interceptors, options, maximum_concurrent_rpcs, compression
    )
