"""grpc.aio's client interceptors on plexus.aio channels. Every scenario runs twice against
the same echo server (each of the two servers): once on a grpc.aio channel and once on a
plexus.aio channel, given the same interceptors; both runs must record the same events and
give the same results, and the test then checks what those are."""

from __future__ import annotations

import asyncio

import echo_pb2
import echo_pb2_grpc
import grpc
import grpc.aio
import pytest
from conftest import WAIT, run_async

import plexus
import plexus.aio

Req = echo_pb2.EchoRequest
Resp = echo_pb2.EchoResponse

CLIENTS = {"grpcio": grpc.aio.insecure_channel, "plexus": plexus.aio.insecure_channel}


def both(target, scenario):
    """Runs `scenario(make_channel)` on grpc.aio and on plexus.aio, where
    `make_channel(interceptors)` opens that client's channel to `target`; asserts both gave
    the same result and returns it."""
    results = {}
    for name, insecure_channel in CLIENTS.items():

        def make_channel(interceptors, insecure_channel=insecure_channel):
            return insecure_channel(target, interceptors=interceptors)

        results[name] = run_async(scenario(make_channel))
    assert results["plexus"] == results["grpcio"]
    return results["plexus"]


def echoed(metadata) -> list:
    """The x-echo-* entries of some metadata, sorted (grpcio and plexus order them alike, but
    their containers differ)."""
    return sorted((k, v) for k, v in (metadata or ()) if k.startswith("x-echo-"))


def replace(details, **changes):
    """`details` with some fields changed, as a new grpc.aio.ClientCallDetails."""
    fields = {
        "method": details.method,
        "timeout": details.timeout,
        "metadata": details.metadata,
        "credentials": details.credentials,
        "wait_for_ready": details.wait_for_ready,
    }
    fields.update(changes)
    return grpc.aio.ClientCallDetails(**fields)


def method_name(details) -> str:
    method = details.method
    return method.decode() if isinstance(method, bytes) else method


async def requests(*messages):
    for message in messages:
        yield Req(message=message)


# --------------------------------------------------------------------------- interceptors


class Record:
    """Records (name, kind, "before"/"after", method) around the rest of the chain."""

    def __init__(self, name: str, events: list) -> None:
        self.name = name
        self.events = events

    async def around(self, kind, continuation, details, request):
        self.events.append((self.name, kind, "before", method_name(details)))
        call = await continuation(details, request)
        self.events.append((self.name, kind, "after"))
        return call


class RecordUU(Record, grpc.aio.UnaryUnaryClientInterceptor):
    async def intercept_unary_unary(self, continuation, details, request):
        return await self.around("UU", continuation, details, request)


class RecordUS(Record, grpc.aio.UnaryStreamClientInterceptor):
    async def intercept_unary_stream(self, continuation, details, request):
        return await self.around("US", continuation, details, request)


class RecordSU(Record, grpc.aio.StreamUnaryClientInterceptor):
    async def intercept_stream_unary(self, continuation, details, request_iterator):
        return await self.around("SU", continuation, details, request_iterator)


class RecordSS(Record, grpc.aio.StreamStreamClientInterceptor):
    async def intercept_stream_stream(self, continuation, details, request_iterator):
        return await self.around("SS", continuation, details, request_iterator)


def recorders(name: str, events: list) -> list:
    """One recorder per call kind (grpc.aio counts an interceptor for one kind only)."""
    return [cls(name, events) for cls in (RecordUU, RecordUS, RecordSU, RecordSS)]


async def four_calls(stub) -> dict:
    """One call of each kind; the stream-request calls use write()/done_writing()."""
    out = {}
    out["unary"] = (await stub.Unary(Req(message="u"), timeout=WAIT)).message
    out["server_stream"] = [
        r.index async for r in stub.ServerStream(Req(message="s", count=3), timeout=WAIT)
    ]
    call = stub.ClientStream(timeout=WAIT)
    for message in ("a", "b"):
        await call.write(Req(message=message))
    await call.done_writing()
    out["client_stream"] = (await call).message
    call = stub.Bidi(timeout=WAIT)
    answers = []
    for message in ("x", "y"):
        await call.write(Req(message=message))
        answers.append((await call.read()).message)
    await call.done_writing()
    answers.append(await call.read() is grpc.aio.EOF)
    out["bidi"] = answers
    out["bidi_code"] = await call.code()
    return out


# --------------------------------------------------------------------------- tests


def test_four_kinds_run_interceptors_outermost_first(target):
    async def scenario(make_channel):
        events: list = []
        interceptors = recorders("outer", events) + recorders("inner", events)
        async with make_channel(interceptors) as channel:
            results = await four_calls(echo_pb2_grpc.EchoStub(channel))
            # Request iterators (sync and async) go through the chain as well.
            stub = echo_pb2_grpc.EchoStub(channel)
            results["client_iter"] = (
                await stub.ClientStream(iter([Req(message="i"), Req(message="j")]), timeout=WAIT)
            ).message
            results["bidi_iter"] = [
                r.message async for r in stub.Bidi(requests("p", "q"), timeout=WAIT)
            ]
        return events, results

    events, results = both(target, scenario)
    assert results == {
        "unary": "u",
        "server_stream": [0, 1, 2],
        "client_stream": "a,b",
        "bidi": ["x", "y", True],
        "bidi_code": grpc.StatusCode.OK,
        "client_iter": "i,j",
        "bidi_iter": ["p", "q"],
    }
    expected = []
    for kind, method in [
        ("UU", "Unary"),
        ("US", "ServerStream"),
        ("SU", "ClientStream"),
        ("SS", "Bidi"),
        ("SU", "ClientStream"),
        ("SS", "Bidi"),
    ]:
        path = f"/plexus.peer.Echo/{method}"
        expected += [
            ("outer", kind, "before", path),
            ("inner", kind, "before", path),
            ("inner", kind, "after"),
            ("outer", kind, "after"),
        ]
    assert events == expected


class AddsMetadata(
    grpc.aio.UnaryUnaryClientInterceptor,
):
    """Adds an entry to new details and one to the metadata object in place."""

    async def intercept_unary_unary(self, continuation, details, request):
        details.metadata.add("x-echo-in-place", "yes")
        metadata = list(details.metadata) + [("x-echo-added", "by-interceptor")]
        return await continuation(replace(details, metadata=metadata), request)


class AddsMetadataStreams(grpc.aio.StreamStreamClientInterceptor):
    async def intercept_stream_stream(self, continuation, details, request_iterator):
        metadata = list(details.metadata) + [("x-echo-added-bin", b"\x00\xff")]
        return await continuation(replace(details, metadata=metadata), request_iterator)


class AddsMetadataServerStream(grpc.aio.UnaryStreamClientInterceptor):
    async def intercept_unary_stream(self, continuation, details, request):
        metadata = list(details.metadata) + [("x-echo-added", "stream")]
        return await continuation(replace(details, metadata=metadata), request)


def test_metadata_added_by_an_interceptor_reaches_the_server(target):
    async def scenario(make_channel):
        interceptors = [AddsMetadata(), AddsMetadataStreams(), AddsMetadataServerStream()]
        async with make_channel(interceptors) as channel:
            stub = echo_pb2_grpc.EchoStub(channel)
            call = stub.Unary(Req(message="m"), metadata=[("x-echo-user", "1")], timeout=WAIT)
            unary = (await call).message, echoed(await call.initial_metadata())
            call = stub.ServerStream(Req(message="s", count=1), timeout=WAIT)
            stream = [r.message async for r in call], echoed(await call.initial_metadata())
            call = stub.Bidi(requests("b"), timeout=WAIT)
            bidi = [r.message async for r in call], echoed(await call.initial_metadata())
        return unary, stream, bidi

    unary, stream, bidi = both(target, scenario)
    assert unary == (
        "m",
        [("x-echo-added", "by-interceptor"), ("x-echo-in-place", "yes"), ("x-echo-user", "1")],
    )
    assert stream == (["s"], [("x-echo-added", "stream")])
    assert bidi == (["b"], [("x-echo-added-bin", b"\x00\xff")])


class ShortensTimeout(grpc.aio.UnaryUnaryClientInterceptor):
    """Gives the call a short deadline and records the outcome it observes."""

    def __init__(self, events: list) -> None:
        self.events = events

    async def intercept_unary_unary(self, continuation, details, request):
        self.events.append(("timeout given", details.timeout))
        call = await continuation(replace(details, timeout=0.2), request)
        self.events.append(("observed", await call.code()))
        return call


def test_timeout_changed_by_an_interceptor_takes_effect(target):
    async def scenario(make_channel):
        events: list = []
        async with make_channel([ShortensTimeout(events)]) as channel:
            stub = echo_pb2_grpc.EchoStub(channel)
            call = stub.Unary(Req(delay_ms=int(WAIT * 2000)), timeout=WAIT * 4)
            try:
                await call
                raised = None
            except grpc.aio.AioRpcError as exc:
                raised = exc.code()
            return events, raised, await call.code(), call.done()

    events, raised, code, done = both(target, scenario)
    assert events == [("timeout given", WAIT * 4), ("observed", grpc.StatusCode.DEADLINE_EXCEEDED)]
    assert raised is code is grpc.StatusCode.DEADLINE_EXCEEDED
    assert done


class ChangesMethod(grpc.aio.UnaryUnaryClientInterceptor):
    async def intercept_unary_unary(self, continuation, details, request):
        return await continuation(replace(details, method=b"/plexus.peer.Echo/Unary"), request)


def test_method_changed_by_an_interceptor(target):
    async def scenario(make_channel):
        async with make_channel([ChangesMethod()]) as channel:
            call = channel.unary_unary(
                "/plexus.peer.Echo/NoSuchMethod",
                request_serializer=Req.SerializeToString,
                response_deserializer=Resp.FromString,
            )
            return (await call(Req(message="moved"), timeout=WAIT)).message

    assert both(target, scenario) == "moved"


class Rejects(
    grpc.aio.UnaryUnaryClientInterceptor,
):
    """Rejects every call without starting it."""

    def __init__(self, events: list, error: Exception) -> None:
        self.events = events
        self.error = error

    async def intercept_unary_unary(self, continuation, details, request):
        self.events.append("rejected")
        raise self.error


class RejectsStreams(grpc.aio.UnaryStreamClientInterceptor):
    async def intercept_unary_stream(self, continuation, details, request):
        raise grpc.aio.AioRpcError(
            grpc.StatusCode.UNAUTHENTICATED, grpc.aio.Metadata(), grpc.aio.Metadata(), "who?"
        )


def test_rejection_by_raising(target):
    async def scenario(make_channel):
        events: list = []
        denied = grpc.aio.AioRpcError(
            grpc.StatusCode.PERMISSION_DENIED,
            grpc.aio.Metadata(),
            grpc.aio.Metadata(("x-why", "policy")),
            "denied by interceptor",
        )
        out = []
        async with make_channel([Rejects(events, denied), RejectsStreams()]) as channel:
            stub = echo_pb2_grpc.EchoStub(channel)
            call = stub.Unary(Req(message="no"), timeout=WAIT)
            try:
                await call
            except grpc.aio.AioRpcError as exc:
                out.append(("raised", exc.code(), exc.details()))
            out.append(("code", await call.code(), await call.details()))
            out.append(("trailing", list(await call.trailing_metadata())))
            out.append(("state", call.done(), call.cancelled(), call.cancel()))
            call = stub.ServerStream(Req(message="no", count=2), timeout=WAIT)
            try:
                async for _ in call:
                    out.append("unexpected response")
            except grpc.aio.AioRpcError as exc:
                out.append(("stream raised", exc.code(), exc.details()))
            out.append(("stream code", await call.code()))
        async with make_channel([Rejects(events, ValueError("broken"))]) as channel:
            call = echo_pb2_grpc.EchoStub(channel).Unary(Req(message="no"), timeout=WAIT)
            try:
                await call
            except ValueError as exc:
                out.append(("plain exception", str(exc)))
            out.append(("state", call.done(), call.cancelled()))
        return events, out

    events, out = both(target, scenario)
    assert events == ["rejected", "rejected"]
    assert out == [
        ("raised", grpc.StatusCode.PERMISSION_DENIED, "denied by interceptor"),
        ("code", grpc.StatusCode.PERMISSION_DENIED, "denied by interceptor"),
        ("trailing", [("x-why", "policy")]),
        ("state", True, False, False),
        ("stream raised", grpc.StatusCode.UNAUTHENTICATED, "who?"),
        ("stream code", grpc.StatusCode.UNAUTHENTICATED),
        ("plain exception", "broken"),
        ("state", True, False),
    ]


class Answers(grpc.aio.UnaryUnaryClientInterceptor):
    """Answers from a cache: the continuation is never called."""

    async def intercept_unary_unary(self, continuation, details, request):
        return Resp(message="cached:" + request.message)


class Transforms(grpc.aio.StreamStreamClientInterceptor):
    """Returns an async generator over the real call's responses, changed."""

    async def intercept_stream_stream(self, continuation, details, request_iterator):
        call = await continuation(details, request_iterator)

        async def upper():
            async for response in call:
                yield Resp(message=response.message.upper(), index=response.index)

        return upper()


def test_interceptor_answers_without_the_continuation(target):
    async def scenario(make_channel):
        async with make_channel([Answers(), Transforms()]) as channel:
            # A method no server has: were the continuation called, this would fail.
            call = channel.unary_unary(
                "/plexus.peer.Echo/NoSuchMethod",
                request_serializer=Req.SerializeToString,
                response_deserializer=Resp.FromString,
            )(Req(message="q"), timeout=WAIT)
            unary = (
                (await call).message,
                await call.code(),
                await call.details(),
                await call.initial_metadata(),
                call.done(),
                call.cancelled(),
            )
            stub = echo_pb2_grpc.EchoStub(channel)
            call = stub.Bidi(timeout=WAIT)
            await call.write(Req(message="abc"))
            first = (await call.read()).message
            await call.write(Req(message="def"))
            await call.done_writing()
            rest = [r.message async for r in call]
            bidi = first, rest, await call.code(), echoed(await call.initial_metadata())
        return unary, bidi

    unary, bidi = both(target, scenario)
    assert unary == ("cached:q", grpc.StatusCode.OK, "", None, True, False)
    assert bidi == ("ABC", ["DEF"], grpc.StatusCode.OK, [])


class Observes(grpc.aio.UnaryUnaryClientInterceptor):
    """Awaits the call's response, then records its code, details and trailers."""

    def __init__(self, events: list) -> None:
        self.events = events

    async def intercept_unary_unary(self, continuation, details, request):
        call = await continuation(details, request)
        try:
            response = await call
            self.events.append(("response", response.message))
        except grpc.aio.AioRpcError as exc:
            self.events.append(("error", exc.code()))
        trailers = [(k, v) for k, v in await call.trailing_metadata() if k == "x-trailer"]
        self.events.append((await call.code(), await call.details(), trailers))
        return call


class ObservesClientStream(grpc.aio.StreamUnaryClientInterceptor):
    def __init__(self, events: list) -> None:
        self.events = events

    async def intercept_stream_unary(self, continuation, details, request_iterator):
        call = await continuation(details, request_iterator)
        call.add_done_callback(lambda _call: self.events.append("client stream done"))
        return call


def test_interceptor_observes_code_and_details_after_awaiting(target):
    async def scenario(make_channel):
        events: list = []
        async with make_channel([Observes(events), ObservesClientStream(events)]) as channel:
            stub = echo_pb2_grpc.EchoStub(channel)
            ok = await stub.Unary(Req(message="fine"), timeout=WAIT)
            call = stub.Unary(Req(status_code=5, status_message="gone"), timeout=WAIT)
            try:
                await call
                failed = None
            except grpc.aio.AioRpcError as exc:
                failed = exc.code(), exc.details()
            done_in_caller = []
            call2 = stub.ClientStream(requests("c", "d"), timeout=WAIT)
            call2.add_done_callback(lambda _call: done_in_caller.append(_call is call2))
            streamed = (await call2).message
            await call2.code()
            # Done callbacks may run from the event loop after the end (bounded by run_async).
            while not (done_in_caller and "client stream done" in events):
                await asyncio.sleep(0.01)
            return events, ok.message, failed, streamed, done_in_caller

    events, ok, failed, streamed, done_in_caller = both(target, scenario)
    assert ok == "fine" and streamed == "c,d"
    assert failed == (grpc.StatusCode.NOT_FOUND, "gone")
    assert events == [
        ("response", "fine"),
        (grpc.StatusCode.OK, "", [("x-trailer", "done")]),
        ("error", grpc.StatusCode.NOT_FOUND),
        (grpc.StatusCode.NOT_FOUND, "gone", [("x-trailer", "done")]),
        "client stream done",
    ]
    assert done_in_caller == [True]


class UnaryAndBidi(
    Record, grpc.aio.UnaryUnaryClientInterceptor, grpc.aio.StreamStreamClientInterceptor
):
    """Implements two interfaces: grpc.aio counts it for the first one only."""

    async def intercept_unary_unary(self, continuation, details, request):
        return await self.around("UU", continuation, details, request)

    async def intercept_stream_stream(self, continuation, details, request_iterator):
        return await self.around("SS", continuation, details, request_iterator)


def test_interceptor_of_another_kind_is_skipped(target):
    async def scenario(make_channel):
        events: list = []
        interceptors = [RecordUS("us", events), RecordSU("su", events), UnaryAndBidi("two", events)]
        async with make_channel(interceptors) as channel:
            results = await four_calls(echo_pb2_grpc.EchoStub(channel))
        return events, results

    events, results = both(target, scenario)
    assert results["unary"] == "u" and results["bidi"] == ["x", "y", True]
    assert events == [
        ("two", "UU", "before", "/plexus.peer.Echo/Unary"),
        ("two", "UU", "after"),
        ("us", "US", "before", "/plexus.peer.Echo/ServerStream"),
        ("us", "US", "after"),
        ("su", "SU", "before", "/plexus.peer.Echo/ClientStream"),
        ("su", "SU", "after"),
    ]


class Holds(grpc.aio.UnaryUnaryClientInterceptor):
    """Starts the call, then waits for its outcome before returning."""

    def __init__(self, started: asyncio.Event) -> None:
        self.started = started

    async def intercept_unary_unary(self, continuation, details, request):
        call = await continuation(details, request)
        self.started.set()
        await call.code()
        return call


class NeverContinues(grpc.aio.UnaryUnaryClientInterceptor):
    async def intercept_unary_unary(self, continuation, details, request):
        await asyncio.Event().wait()


def test_cancel_while_interceptors_run(target):
    async def scenario(make_channel):
        out = []
        started = asyncio.Event()
        async with make_channel([Holds(started)]) as channel:
            stub = echo_pb2_grpc.EchoStub(channel)
            # Cancelled before the chain has run.
            call = stub.Unary(Req(message="early"), timeout=WAIT)
            out.append(call.cancel())
            try:
                await call
            except asyncio.CancelledError:
                out.append("cancelled")
            out.append((call.cancelled(), call.done(), await call.code(), await call.details()))
            # Cancelled while an interceptor waits on the call it started.
            call = stub.Unary(Req(delay_ms=int(WAIT * 2000)), timeout=WAIT * 4)
            await started.wait()
            out.append(call.cancel())
            try:
                await call
            except asyncio.CancelledError:
                out.append("cancelled")
            out.append((call.cancelled(), call.done(), await call.code()))
        channel = make_channel([NeverContinues()])
        call = echo_pb2_grpc.EchoStub(channel).Unary(Req(message="held"), timeout=WAIT)
        await asyncio.sleep(0)
        await channel.close()
        out.append(("closed", await call.code(), call.done()))
        return out

    assert both(target, scenario) == [
        True,
        "cancelled",
        (True, True, grpc.StatusCode.CANCELLED, "Locally cancelled by application!"),
        True,
        "cancelled",
        (True, True, grpc.StatusCode.CANCELLED),
        ("closed", grpc.StatusCode.CANCELLED, True),
    ]


def test_call_options_pass_through_interceptors(target):
    async def scenario(make_channel):
        events: list = []
        async with make_channel(recorders("r", events)) as channel:
            stub = echo_pb2_grpc.EchoStub(channel)
            reply = await stub.Unary(
                Req(message="z" * 1000),
                timeout=WAIT,
                compression=grpc.Compression.Gzip,
                wait_for_ready=True,
            )
            call = stub.ServerStream(Req(message="s", count=2), timeout=WAIT)
            streamed = [r.index async for r in call]
        return events, reply.message == "z" * 1000, streamed

    events, same, streamed = both(target, scenario)
    assert same and streamed == [0, 1]
    assert [e[1] for e in events] == ["UU", "UU", "US", "US"]


def test_time_remaining_through_interceptors(target):
    """plexus only: grpc.aio's intercepted calls raise NotImplementedError here; plexus's
    answer with the deadline (the one an interceptor set, once the call has started)."""

    async def main():
        events: list = []
        interceptors = [ShortensTimeout(events)] + recorders("r", events)[1:]
        async with plexus.aio.insecure_channel(target, interceptors=interceptors) as channel:
            stub = echo_pb2_grpc.EchoStub(channel)
            call = stub.ServerStream(Req(message="s", count=2), timeout=WAIT)
            assert 0 <= call.time_remaining() <= WAIT
            assert [r.index async for r in call] == [0, 1]
            assert 0 <= call.time_remaining() <= WAIT
            call = stub.Unary(Req(delay_ms=int(WAIT * 2000)), timeout=WAIT * 4)
            assert WAIT < call.time_remaining() <= WAIT * 4  # before the chain has run
            assert await call.code() is grpc.StatusCode.DEADLINE_EXCEEDED
            assert call.time_remaining() <= 0.2

    run_async(main())


def test_channel_takes_interceptors_and_refuses_other_objects():
    async def main():
        for insecure_channel in CLIENTS.values():
            with pytest.raises(ValueError):
                insecure_channel("127.0.0.1:1", interceptors=[object()])
            await insecure_channel("127.0.0.1:1", interceptors=recorders("r", [])).close()
            await insecure_channel("127.0.0.1:1", interceptors=[]).close()

    run_async(main())


def test_plexus_interfaces_are_grpc_aio_ones():
    assert plexus.aio.UnaryUnaryClientInterceptor is grpc.aio.UnaryUnaryClientInterceptor
    assert plexus.aio.StreamStreamClientInterceptor is grpc.aio.StreamStreamClientInterceptor
    assert plexus.aio.ClientCallDetails is grpc.aio.ClientCallDetails


class AnswersClientStream(grpc.aio.StreamUnaryClientInterceptor):
    """Reads the requests itself and answers without the continuation."""

    async def intercept_stream_unary(self, continuation, details, request_iterator):
        messages = [r.message async for r in request_iterator]
        return Resp(message="+".join(messages))


def test_write_rules_and_stream_unary_answer_through_interceptors(target):
    """plexus only: grpc.aio raises its internal UsageError for mixing the two request
    styles and does not wrap a stream-unary interceptor's own response (awaiting it fails);
    plexus raises asyncio.InvalidStateError and wraps it as it does for unary-unary."""

    async def main():
        events: list = []
        interceptors = [AnswersClientStream(), RecordSS("r", events)]
        async with plexus.aio.insecure_channel(target, interceptors=interceptors) as channel:
            stub = echo_pb2_grpc.EchoStub(channel)
            call = stub.Bidi(requests("a"), timeout=WAIT)
            with pytest.raises(asyncio.InvalidStateError):
                await call.write(Req(message="b"))
            assert [r.message async for r in call] == ["a"]
            call = stub.Bidi(timeout=WAIT)
            await call.write(Req(message="c"))
            await call.done_writing()
            await call.done_writing()  # idempotent
            with pytest.raises(asyncio.InvalidStateError):
                await call.write(Req(message="d"))
            assert [r.message async for r in call] == ["c"]
            assert await call.code() is grpc.StatusCode.OK
            # (An interceptor that reads the requests itself needs them as an iterator: write()
            # waits for the interceptors to give a call, in grpc.aio as here.)
            call = stub.ClientStream(requests("e", "f"), timeout=WAIT)
            assert (await call).message == "e+f"
            assert await call.code() is grpc.StatusCode.OK and call.done()
        assert [e[1:3] for e in events] == [("SS", "before"), ("SS", "after")] * 2

    run_async(main())
