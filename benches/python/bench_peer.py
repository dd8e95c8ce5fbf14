"""The Python peers of the benchmark harness: a BenchmarkService server, and a load generator
that drives grpcio's or plexus's asyncio channel with the same grpcio-tools stubs.

    python bench_peer.py server --listen 127.0.0.1:0 [--impl grpcio|plexus] [--api aio|sync]
    python bench_peer.py client --impl grpcio|plexus --target HOST:PORT --rpc unary|streaming
        --concurrency N --payload BYTES --duration S --warmup S [--json]

The client takes the flags of `plexus-bench client` and prints the same report (one JSON line
with --json). Latency percentiles are exact (every sample of the window is kept and sorted),
not from an HDR histogram: a Python client completes few enough calls for that. The client uses
asyncio (grpc.aio), grpcio's fastest Python API. The server runs one grpcio-generated servicer
on grpcio's server or on plexus's (plexus.server / plexus.aio.server, the Rust server under a
grpcio-shaped API), with async methods for `--api aio` and plain ones on a thread pool of
`--workers` threads for `--api sync`, so the pairs compare the same Python code. The stubs are generated at run time from
interop/proto by tests/interop/py/stubs.py ($PLEXUS_INTEROP_STUBS names a directory that
already holds them).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests" / "interop" / "py"))

import stubs  # noqa: E402

stubs.load()

import benchmark_service_pb2_grpc  # noqa: E402
import messages_pb2  # noqa: E402

WARMUP, MEASURE, STOP = 0, 1, 2


def bench_request(payload: int):
    return messages_pb2.SimpleRequest(
        response_size=payload,
        payload=messages_pb2.Payload(body=b"\0" * payload),
    )


def check(response, payload: int) -> None:
    got = len(response.payload.body)
    if got != payload:
        raise RuntimeError(f"response payload is {got} bytes, asked for {payload}")


class Run:
    """Shared state of one load run: the phase and every measured latency (ns)."""

    def __init__(self) -> None:
        self.phase = WARMUP
        self.latencies: list[int] = []
        self.total = 0

    def completed(self, started: int) -> bool:
        """Notes a call that started at `started` (perf_counter_ns); False once stopped."""
        elapsed = time.perf_counter_ns() - started
        self.total += 1
        if self.phase == MEASURE:
            self.latencies.append(elapsed)
            return True
        return self.phase == WARMUP


async def unary_worker(stub, request, payload: int, run: Run) -> None:
    while True:
        started = time.perf_counter_ns()
        response = await stub.UnaryCall(request)
        check(response, payload)
        if not run.completed(started):
            return


async def streaming_worker(stub, request, payload: int, run: Run) -> None:
    call = stub.StreamingCall()
    while True:
        started = time.perf_counter_ns()
        await call.write(request)
        response = await call.read()
        if response is None or not hasattr(response, "payload"):
            raise RuntimeError("the server ended the stream early")
        check(response, payload)
        if not run.completed(started):
            break
    await call.done_writing()
    while True:
        rest = await call.read()
        if rest is None or not hasattr(rest, "payload"):
            break
    code = await call.code()
    if getattr(code, "name", "OK") != "OK":
        raise RuntimeError(f"the stream ended with {code}")


def percentile(sorted_ns: list[int], q: float) -> float:
    if not sorted_ns:
        return 0.0
    index = min(len(sorted_ns) - 1, max(0, int(q * len(sorted_ns) + 0.5) - 1))
    return sorted_ns[index] / 1000.0


def cpu_seconds() -> tuple[float, float]:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime, usage.ru_stime


async def client(args) -> dict:
    if args.impl == "grpcio":
        import grpc.aio as aio
    else:
        import plexus.aio as aio  # the plexus Python package (bindings/python)
    request = bench_request(args.payload)
    channel = aio.insecure_channel(args.target)
    try:
        stub = benchmark_service_pb2_grpc.BenchmarkServiceStub(channel)
        check(await stub.UnaryCall(request), args.payload)  # connect before the clock
        run = Run()
        worker = unary_worker if args.rpc == "unary" else streaming_worker
        tasks = [
            asyncio.ensure_future(worker(stub, request, args.payload, run))
            for _ in range(args.concurrency)
        ]
        done, _ = await asyncio.wait(tasks, timeout=args.warmup, return_when=asyncio.FIRST_EXCEPTION)
        for t in done:
            t.result()
        user0, sys0 = cpu_seconds()
        began = time.perf_counter()
        run.phase = MEASURE
        done, _ = await asyncio.wait(tasks, timeout=args.duration, return_when=asyncio.FIRST_EXCEPTION)
        run.phase = STOP
        elapsed = time.perf_counter() - began
        user1, sys1 = cpu_seconds()
        for t in done:
            t.result()
        await asyncio.gather(*tasks)
    finally:
        await channel.close()
    lat = sorted(run.latencies)
    calls = len(lat)
    rate = calls / elapsed if elapsed > 0 else 0.0
    cpu = (user1 - user0) + (sys1 - sys0)
    return {
        "client": "grpcio-py" if args.impl == "grpcio" else "plexus-py",
        "rpc": args.rpc,
        "concurrency": args.concurrency,
        "payload": args.payload,
        "duration_s": elapsed,
        "calls": calls,
        "calls_total": run.total,
        "calls_per_s": rate,
        "p50_us": percentile(lat, 0.50),
        "p90_us": percentile(lat, 0.90),
        "p99_us": percentile(lat, 0.99),
        "max_us": lat[-1] / 1000.0 if lat else 0.0,
        "mean_us": sum(lat) / calls / 1000.0 if calls else 0.0,
        "bytes_per_s": rate * 2 * args.payload,
        "cpu_user_s": user1 - user0,
        "cpu_system_s": sys1 - sys0,
        "cpu_s": cpu,
        "cpu_us_per_call": cpu * 1e6 / calls if calls else 0.0,
    }


def bench_response(request, context):
    import grpc

    if request.response_type != messages_pb2.COMPRESSABLE:
        context.set_code(grpc.StatusCode.INVALID_ARGUMENT)
        context.set_details(f"unsupported response_type {request.response_type}")
        return None
    if request.response_size < 0:
        context.set_code(grpc.StatusCode.INVALID_ARGUMENT)
        context.set_details(f"response size {request.response_size} is negative")
        return None
    return messages_pb2.SimpleResponse(
        payload=messages_pb2.Payload(body=b"\0" * request.response_size)
    )


class SyncBenchmarkService(benchmark_service_pb2_grpc.BenchmarkServiceServicer):
    """UnaryCall and StreamingCall as the plexus interop server answers them, for the
    thread-pool servers; the other methods stay UNIMPLEMENTED (the harness does not drive
    them)."""

    def UnaryCall(self, request, context):
        response = bench_response(request, context)
        if response is None:
            context.abort(context.code(), context.details())
        return response

    def StreamingCall(self, request_iterator, context):
        for request in request_iterator:
            response = bench_response(request, context)
            if response is None:
                context.abort(context.code(), context.details())
            yield response


class BenchmarkService(benchmark_service_pb2_grpc.BenchmarkServiceServicer):
    """The same service with async methods, for the asyncio servers."""

    async def UnaryCall(self, request, context):
        response = bench_response(request, context)
        if response is None:
            await context.abort(context.code(), context.details())
        return response

    async def StreamingCall(self, request_iterator, context):
        async for request in request_iterator:
            response = bench_response(request, context)
            if response is None:
                await context.abort(context.code(), context.details())
            yield response


def listening(args, port: int) -> None:
    if port == 0:
        raise SystemExit(f"cannot listen on {args.listen}")
    host = args.listen.rsplit(":", 1)[0]
    print(f"listening on {host}:{port}", flush=True)


async def aio_server(args) -> None:
    if args.impl == "plexus":
        import plexus.aio as aio
    else:
        import grpc.aio as aio

    srv = aio.server()
    benchmark_service_pb2_grpc.add_BenchmarkServiceServicer_to_server(BenchmarkService(), srv)
    port = srv.add_insecure_port(args.listen)
    await srv.start()
    listening(args, port)
    await srv.wait_for_termination()


def sync_server(args) -> None:
    from concurrent import futures

    if args.impl == "plexus":
        import plexus as impl
    else:
        import grpc as impl

    srv = impl.server(futures.ThreadPoolExecutor(max_workers=args.workers))
    benchmark_service_pb2_grpc.add_BenchmarkServiceServicer_to_server(SyncBenchmarkService(), srv)
    port = srv.add_insecure_port(args.listen)
    srv.start()
    listening(args, port)
    srv.wait_for_termination()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("server")
    s.add_argument("--listen", default="127.0.0.1:0")
    s.add_argument("--impl", choices=("grpcio", "plexus"), default="grpcio")
    s.add_argument("--api", choices=("aio", "sync"), default="aio")
    # grpcio's examples use 10; the harness drives up to 64 calls at once.
    s.add_argument("--workers", type=int, default=64)
    c = sub.add_parser("client")
    c.add_argument("--impl", choices=("grpcio", "plexus"), default="grpcio")
    c.add_argument("--target", required=True)
    c.add_argument("--rpc", choices=("unary", "streaming"), default="unary")
    c.add_argument("--concurrency", type=int, default=1)
    c.add_argument("--payload", type=int, default=0)
    c.add_argument("--duration", type=float, default=5.0)
    c.add_argument("--warmup", type=float, default=1.0)
    c.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.command == "server":
        try:
            if args.api == "aio":
                asyncio.run(aio_server(args))
            else:
                sync_server(args)
        except KeyboardInterrupt:
            pass
        return
    if args.concurrency < 1:
        raise SystemExit("--concurrency must be at least 1")
    report = asyncio.run(client(args))
    if args.json:
        print(json.dumps(report), flush=True)
    else:
        print(
            f"{report['client']} {args.rpc} x{args.concurrency} payload {args.payload} B: "
            f"{report['calls_per_s']:.0f} calls/s, latency p50 {report['p50_us']:.1f} µs "
            f"p90 {report['p90_us']:.1f} µs p99 {report['p99_us']:.1f} µs, "
            f"client CPU {report['cpu_s']:.2f} s",
            flush=True,
        )


if __name__ == "__main__":
    main()
