"""Unary calls per second: plexus's Python client against grpcio's, same server, same run.

    .venv/bin/python benches/python/bench_unary.py [--seconds 3] [--rounds 3] [--target HOST:PORT]

Without --target it starts the Rust echo server (target/release/plexus-peer, or
$PLEXUS_PEER_BIN) on a free port; both clients call its /plexus.peer.Echo/Unary method
with the same small request (grpcio-tools stubs, generated into a temporary directory).
Each configuration -- {plexus, grpcio} x {sync: 1 and 64 threads, aio: 1 and 64 tasks} --
runs for --seconds in a fresh process, in interleaved rounds; the table shows the median
calls/s of the rounds and the plexus/grpcio ratio. Every call has a 10 s deadline.
Needs grpcio and grpcio-tools (tests/python/requirements.txt) and the plexus package
(pip install ./bindings/python, or PLEXUS_LIBRARY + PYTHONPATH).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROTO_DIR = ROOT / "tests" / "peer" / "proto"


def generate_stubs() -> str:
    from grpc_tools import protoc

    out = tempfile.mkdtemp(prefix="plexus-bench-stubs-")
    include = Path(protoc.__file__).resolve().parent / "_proto"
    rc = protoc.main(
        [
            "grpc_tools.protoc",
            f"-I{PROTO_DIR}",
            f"-I{include}",
            f"--python_out={out}",
            f"--grpc_python_out={out}",
            str(PROTO_DIR / "echo.proto"),
        ]
    )
    if rc != 0:
        raise SystemExit(f"grpc_tools.protoc failed with exit code {rc}")
    return out


def start_server():
    binary = os.environ.get("PLEXUS_PEER_BIN") or str(ROOT / "target" / "release" / "plexus-peer")
    if not os.access(binary, os.X_OK):
        raise SystemExit(
            f"no echo server at {binary}: run `cargo build --release -p plexus-peer` "
            "or pass --target"
        )
    proc = subprocess.Popen(
        [binary, "server", "--listen", "127.0.0.1:0"],
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    line = proc.stdout.readline().decode()
    match = re.match(r"LISTENING (\d+)", line)
    if not match:
        proc.kill()
        raise SystemExit(f"the echo server did not start: {line!r}")
    return proc, f"127.0.0.1:{match.group(1)}"


def sync_rate(stub_method, request, threads: int, seconds: float) -> float:
    stub_method(request, timeout=10)  # connect first
    counts = [0] * threads
    start = threading.Barrier(threads + 1)
    stop_at = [0.0]

    def worker(index: int) -> None:
        start.wait()
        deadline = stop_at[0]
        n = 0
        now = time.monotonic
        while now() < deadline:
            stub_method(request, timeout=10)
            n += 1
        counts[index] = n

    pool = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for t in pool:
        t.start()
    began = time.monotonic()
    stop_at[0] = began + seconds
    start.wait()
    for t in pool:
        t.join()
    return sum(counts) / (time.monotonic() - began)


async def aio_rate(stub_method, request, tasks: int, seconds: float) -> float:
    await stub_method(request, timeout=10)
    count = 0
    deadline = time.monotonic() + seconds

    async def worker() -> None:
        nonlocal count
        now = time.monotonic
        while now() < deadline:
            await stub_method(request, timeout=10)
            count += 1

    began = time.monotonic()
    await asyncio.gather(*(worker() for _ in range(tasks)))
    return count / (time.monotonic() - began)


def worker(args) -> None:
    """Runs one configuration in this process and prints its calls/s."""
    sys.path.insert(0, args.stubs)
    import echo_pb2
    import echo_pb2_grpc

    client, api, in_flight = args.worker
    in_flight = int(in_flight)
    request = echo_pb2.EchoRequest(message="hello")
    if client == "plexus":
        import plexus as sync_module
        import plexus.aio as aio_module
    else:
        import grpc as sync_module
        import grpc.aio as aio_module
    if api == "sync":
        channel = sync_module.insecure_channel(args.target)
        rate = sync_rate(echo_pb2_grpc.EchoStub(channel).Unary, request, in_flight, args.seconds)
        channel.close()
    else:

        async def run() -> float:
            channel = aio_module.insecure_channel(args.target)
            try:
                stub = echo_pb2_grpc.EchoStub(channel)
                return await aio_rate(stub.Unary, request, in_flight, args.seconds)
            finally:
                await channel.close()

        rate = asyncio.run(run())
    print(f"RATE {rate:.1f}", flush=True)


CONFIGS = [
    (api, in_flight, client)
    for api in ("sync", "aio")
    for in_flight in (1, 64)
    for client in ("plexus", "grpcio")
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="per configuration and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--target", help="an echo server already running (HOST:PORT)")
    parser.add_argument("--only", choices=("sync", "aio"), help="run one API only")
    parser.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--stubs", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return

    stubs = generate_stubs()
    server = None
    target = args.target
    if target is None:
        server, target = start_server()
    results: dict = {}
    try:
        for round_no in range(1, args.rounds + 1):
            print(f"round {round_no}/{args.rounds} (target {target})", flush=True)
            for api, in_flight, client in CONFIGS:
                if args.only and api != args.only:
                    continue
                name = f"{client} {api} x{in_flight}"
                # Each configuration in a fresh process: no client's background threads
                # (grpcio's poller, plexus's dispatcher) compete with the other's.
                proc = subprocess.run(
                    [
                        sys.executable,
                        __file__,
                        "--worker",
                        client,
                        api,
                        str(in_flight),
                        "--seconds",
                        str(args.seconds),
                        "--target",
                        target,
                        "--stubs",
                        stubs,
                    ],
                    stdout=subprocess.PIPE,
                    check=False,
                    timeout=args.seconds * 10 + 60,
                )
                out = proc.stdout.decode()
                match = re.search(r"^RATE ([0-9.]+)", out, re.M)
                if proc.returncode != 0 or not match:
                    raise SystemExit(f"{name} failed (exit {proc.returncode}):\n{out}")
                rate = float(match.group(1))
                results.setdefault(name, []).append(rate)
                print(f"  {name:<24} {rate:10.0f} calls/s", flush=True)
    finally:
        if server is not None:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        shutil.rmtree(stubs, ignore_errors=True)

    print(f"\nmedian of {args.rounds} rounds of {args.seconds:g} s, unary calls/s:")
    print(f"{'':<14}{'plexus':>12}{'grpcio':>12}{'ratio':>9}   per-round ratios")
    for api in ("sync", "aio"):
        for in_flight in (1, 64):
            p = results.get(f"plexus {api} x{in_flight}")
            g = results.get(f"grpcio {api} x{in_flight}")
            if not p or not g:
                continue
            pm, gm = statistics.median(p), statistics.median(g)
            # Each round measures plexus and grpcio back to back: their ratio drifts less
            # with the machine's load than the absolute figures do.
            rounds = " ".join(f"{p[i] / g[i]:.2f}" for i in range(min(len(p), len(g))))
            print(
                f"{api + ' x' + str(in_flight):<14}{pm:12.0f}{gm:12.0f}{pm / gm:8.2f}x   {rounds}"
            )


if __name__ == "__main__":
    main()
