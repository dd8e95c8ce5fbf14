#!/usr/bin/env bash
# The wheel and the sdist of the Python package as users install them:
# 1. builds the manylinux_2_17 wheel (scripts/build-wheel.sh: the glibc and auditwheel checks
#    run there), installs it with pip --no-index into a fresh venv whose PATH has no cargo,
#    rustc or rustup, and runs the four call kinds (and an asyncio call, and an error status)
#    against the Rust echo server with nothing but the standard library beside plexus, and
#    the same from every other CPython 3.9+ found here (pyenv's, python3.N on PATH);
# 2. builds the sdist, installs it into another fresh venv with cargo present (libplexus
#    compiled from the sdist's own Rust sources, into target/ so that built dependencies are
#    reused) and makes a call;
# 3. prints the wheel's and the sdist's sizes and the import time of `plexus` from the wheel
#    beside that of `grpc` (grpcio in the repo's .venv, when it is there). Not checked.
# Usage: ./scripts/test-wheel.sh [--release]
#   --release builds the wheel's libplexus with the release profile's fat LTO (minutes longer);
#   without it, LTO is off: what the test checks does not depend on it.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

fast=(--fast)
case ${1:-} in
--release) fast=() ;;
"") ;;
*) echo "usage: scripts/test-wheel.sh [--release]" >&2; exit 2 ;;
esac

step() { printf '\n==> %s\n' "$*"; }

mkdir -p "$root/target"
work=$(mktemp -d "$root/target/wheel-test.XXXXXX")
server_pid=
cleanup() {
    if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

# The interpreter itself, not a shim that might look for other tools on PATH.
python=$(python3 -c 'import sys; print(sys.executable)')

step "wheel: build the manylinux wheel (scripts/build-wheel.sh manylinux ${fast[*]})"
"$root/scripts/build-wheel.sh" manylinux "${fast[@]}" --out "$work/dist"
wheel=$(echo "$work"/dist/plexus-*-py3-none-manylinux_2_17_x86_64.whl)
[ -f "$wheel" ] || { echo "test-wheel.sh: build-wheel.sh made no manylinux wheel" >&2; exit 1; }

step "wheel: the Rust echo server (plexus-peer, release)"
cargo build --release --quiet -p plexus-peer
"$root/target/release/plexus-peer" server --listen 127.0.0.1:0 >"$work/server.out" 2>"$work/server.err" &
server_pid=$!
port=
for _ in $(seq 600); do # a generous bound on start-up, not a timing check
    port=$(sed -n 's/^LISTENING \([0-9]*\)$/\1/p' "$work/server.out")
    [ -z "$port" ] || break
    kill -0 "$server_pid" 2>/dev/null || { cat "$work/server.err" >&2; exit 1; }
    sleep 0.1
done
[ -n "$port" ] || { echo "test-wheel.sh: plexus-peer did not listen" >&2; exit 1; }
target="127.0.0.1:$port"
echo "echo server on $target"

step "wheel: pip install into a fresh venv with no cargo, rustc or rustup on PATH"
no_rust_path=
IFS=: read -ra dirs <<<"$PATH"
for dir in "${dirs[@]}"; do
    [ -n "$dir" ] || continue
    if [ -e "$dir/cargo" ] || [ -e "$dir/rustc" ] || [ -e "$dir/rustup" ]; then continue; fi
    no_rust_path+="${no_rust_path:+:}$dir"
done
no_rust=(env -u CARGO -u RUSTC -u RUSTUP_HOME -u RUSTUP_TOOLCHAIN -u CARGO_HOME
    -u PLEXUS_LIBRARY -u PLEXUS_SOURCE_DIR -u PYTHONPATH "PATH=$no_rust_path")
if found=$("${no_rust[@]}" sh -c 'command -v cargo || command -v rustc || command -v rustup'); then
    echo "test-wheel.sh: $found is still on the PATH meant to have no Rust" >&2
    exit 1
fi
echo "PATH without Rust: $no_rust_path"
"${no_rust[@]}" "$python" -m venv "$work/venv-wheel"
# --no-index: the wheel needs nothing from anywhere else.
"${no_rust[@]}" "$work/venv-wheel/bin/python" -m pip install --quiet --no-index \
    --disable-pip-version-check "$wheel"

# Every call kind on raw bytes: the echo messages are encoded by hand (a few protobuf fields),
# so the venv holds plexus and the standard library only.
smoke='
import asyncio
import os
import sys

import plexus
import plexus.aio
from plexus import _ffi

target, expect_dir = sys.argv[1], sys.argv[2]
WAIT = 30.0  # bound for each call on a loaded machine
failed = 0


def check(name, ok, detail=""):
    global failed
    print(("PASS " if ok else "FAIL ") + name + ("" if ok else f": {detail}"))
    failed += not ok


def varint(n):
    out = bytearray()
    while True:
        out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)


def request(message="", count=0, status=0):
    data = message.encode()
    out = b"\x0a" + varint(len(data)) + data if data else b""
    out += b"\x10" + varint(count) if count else b""
    return out + (b"\x20" + varint(status) if status else b"")


def response(data):
    """(message, index) of an EchoResponse."""
    fields, i = {}, 0
    while i < len(data):
        key, i = _varint(data, i)
        if key & 7 == 0:
            fields[key >> 3], i = _varint(data, i)
        else:
            size, i = _varint(data, i)
            fields[key >> 3], i = data[i : i + size], i + size
    return fields.get(1, b"").decode(), fields.get(2, 0)


def _varint(data, i):
    n = shift = 0
    while True:
        byte = data[i]
        i += 1
        n |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return n, i


lib = os.path.realpath(_ffi.current().path)
check("libplexus comes from the installed package", lib.startswith(os.path.realpath(expect_dir)), lib)
try:
    import grpc  # noqa: F401

    check("no grpc in the venv", False, "grpc is importable")
except ImportError:
    check("no grpc in the venv", True)

svc = "/plexus.peer.Echo/"
with plexus.insecure_channel(target) as channel:
    reply = channel.unary_unary(svc + "Unary")(request("hi"), timeout=WAIT)
    check("unary-unary", response(reply) == ("hi", 0), response(reply))
    replies = list(channel.unary_stream(svc + "ServerStream")(request("s", 3), timeout=WAIT))
    indices = [response(r)[1] for r in replies]
    check("unary-stream", indices == [0, 1, 2], indices)
    reqs = iter([request("a"), request("b")])
    reply = channel.stream_unary(svc + "ClientStream")(reqs, timeout=WAIT)
    check("stream-unary", response(reply)[1] == 2, response(reply))
    reqs = iter([request("x"), request("y")])
    replies = list(channel.stream_stream(svc + "Bidi")(reqs, timeout=WAIT))
    check("stream-stream", [response(r)[0] for r in replies] == ["x", "y"], replies)
    try:
        channel.unary_unary(svc + "Unary")(request(status=5), timeout=WAIT)
        check("an error status raises plexus.RpcError", False, "no error")
    except plexus.RpcError as err:
        ok = err.code() is plexus.StatusCode.NOT_FOUND
        check("an error status raises plexus.RpcError", ok, err.code())


async def aio():
    async with plexus.aio.insecure_channel(target) as channel:
        return await channel.unary_unary(svc + "Unary")(request("aio"), timeout=WAIT)


reply = asyncio.run(asyncio.wait_for(aio(), WAIT))
check("asyncio unary-unary", response(reply)[0] == "aio", reply)
sys.exit(1 if failed else 0)
'

step "wheel: the four call kinds against the echo server, from the wheel's venv"
site=$("$work/venv-wheel/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["platlib"])')
(cd "$work" && "${no_rust[@]}" "$work/venv-wheel/bin/python" -c "$smoke" "$target" "$site")

step "wheel: the same calls from every other CPython 3.9+ on this machine (one py3-none wheel)"
# Other interpreters: pyenv's, and python3.N on PATH; each version once.
seen=" $("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])') "
candidates=()
if command -v pyenv >/dev/null 2>&1; then
    candidates+=("$(pyenv root)"/versions/*/bin/python3)
fi
for minor in $(seq 9 20); do
    candidates+=("$(command -v "python3.$minor" 2>/dev/null || true)")
done
for candidate in "${candidates[@]}"; do
    [ -x "$candidate" ] || continue
    version=$("${no_rust[@]}" "$candidate" -c 'import sys; print("%d.%d" % sys.version_info[:2])' \
        2>/dev/null) || continue
    if [ "${version%%.*}" != 3 ] || [ "${version#3.}" -lt 9 ]; then continue; fi
    case $seen in *" $version "*) continue ;; esac
    seen+="$version "
    echo "CPython $version ($candidate)"
    "${no_rust[@]}" "$candidate" -m venv "$work/venv-$version"
    "${no_rust[@]}" "$work/venv-$version/bin/python" -m pip install --quiet --no-index \
        --disable-pip-version-check "$wheel"
    site=$("$work/venv-$version/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["platlib"])')
    (cd "$work" && "${no_rust[@]}" "$work/venv-$version/bin/python" -c "$smoke" "$target" "$site")
done
echo "CPython versions run:$seen"

step "sdist: build it, pip install it into a fresh venv with cargo present, the same calls"
sdist=$("$python" - "$work/dist" <<'EOF'
import sys

sys.path.insert(0, "bindings/python/build_backend")
import plexus_build

print(plexus_build.build_sdist(sys.argv[1]))
EOF
)
sdist="$work/dist/$sdist"
"$python" -m venv "$work/venv-sdist"
seconds=$SECONDS
# The sdist's own workspace builds libplexus (release profile) into target/, where the
# dependencies are already built; --no-index: the build backend needs nothing from PyPI.
(cd "$work" && env -u PLEXUS_LIBRARY -u PLEXUS_SOURCE_DIR CARGO_TARGET_DIR="$root/target" \
    "$work/venv-sdist/bin/python" -m pip install --quiet --no-index \
    --disable-pip-version-check "$sdist")
echo "installed from the sdist in $((SECONDS - seconds))s"
site=$("$work/venv-sdist/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["platlib"])')
(cd "$work" && env -u PLEXUS_LIBRARY "$work/venv-sdist/bin/python" -c "
$smoke" "$target" "$site")

step "wheel: sizes and import time (printed, not checked)"
size() { printf '%s: %s bytes\n' "$(basename "$1")" "$(stat -c %s "$1")"; }
size "$wheel"
size "$sdist"
unzip_size=$("$python" -c '
import sys, zipfile
z = zipfile.ZipFile(sys.argv[1])
print(sum(i.file_size for i in z.infolist()))' "$wheel")
echo "installed (unpacked) wheel: $unzip_size bytes"
# The best of five runs of `python -X importtime -c "import NAME"`: NAME's cumulative time.
import_us() { # python module
    local best=
    for _ in 1 2 3 4 5; do
        local us
        us=$(cd "$work" && "$1" -X importtime -c "import $2" 2>&1 >/dev/null |
            awk -F'|' -v m="$2" '{ gsub(/ /, "", $3) } $3 == m { v = $2 } END { gsub(/ /, "", v); print v }')
        if [ -z "$best" ] || [ "$us" -lt "$best" ]; then best=$us; fi
    done
    echo "$best"
}
echo "import plexus (from the wheel): $(import_us "$work/venv-wheel/bin/python" plexus) us"
if [ -x "$root/.venv/bin/python" ] && "$root/.venv/bin/python" -c 'import grpc' 2>/dev/null; then
    grpc_version=$("$root/.venv/bin/python" -c 'import grpc; print(grpc.__version__)')
    echo "import grpc (grpcio $grpc_version, .venv): $(import_us "$root/.venv/bin/python" grpc) us"
else
    echo "import grpc: no grpcio in .venv to compare with"
fi
