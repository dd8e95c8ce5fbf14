"""Python stubs for the interop protos (interop/proto), generated with grpc_tools.protoc.

Nothing generated lives in the source tree: `load()` puts a directory of generated modules on
sys.path, either the one named by $PLEXUS_INTEROP_STUBS (scripts/test-interop.sh generates it
once with `python stubs.py DIR`) or a fresh temporary one removed at exit.
"""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
from pathlib import Path

PROTO_DIR = Path(__file__).resolve().parents[3] / "interop" / "proto"
PROTOS = ["empty.proto", "messages.proto", "test.proto", "benchmark_service.proto"]
ENV = "PLEXUS_INTEROP_STUBS"


def generate(out_dir: str) -> None:
    """Compiles every interop proto into `out_dir`; raises RuntimeError on failure."""
    from grpc_tools import protoc

    include = Path(protoc.__file__).resolve().parent / "_proto"
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_DIR}",
        f"-I{include}",
        f"--python_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *(str(PROTO_DIR / name) for name in PROTOS),
    ]
    rc = protoc.main(args)
    if rc != 0:
        raise RuntimeError(f"grpc_tools.protoc failed (exit {rc}) compiling {PROTO_DIR}")


def load() -> None:
    """Makes `test_pb2`, `test_pb2_grpc`, `messages_pb2`, ... importable."""
    out_dir = os.environ.get(ENV)
    if not (out_dir and (Path(out_dir) / "test_pb2_grpc.py").is_file()):
        out_dir = tempfile.mkdtemp(prefix="plexus-interop-stubs-")
        atexit.register(shutil.rmtree, out_dir, True)
        generate(out_dir)
    sys.path.insert(0, out_dir)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: stubs.py OUT_DIR")
    os.makedirs(sys.argv[1], exist_ok=True)
    generate(sys.argv[1])
