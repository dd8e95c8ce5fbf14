#!/usr/bin/env bash
# Runs every test suite of plexus, installing what it needs: Rust unit, integration and doc
# tests, lint and dependency checks, and the peer tests against grpcio in a local venv.
# Usage: ./scripts/test.sh        (from anywhere; CI runs it through .ci/run)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

step() { printf "\n==> %s  [%ss]\n" "$*" "$SECONDS"; }

# One clean build per run: incremental compilation state would only double target/debug
# (1.1 GB) on a machine that never rebuilds.
export CARGO_INCREMENTAL=0

step "toolchain"
cargo --version
# Disk: a full run writes about 2.5 GB (target/ and .venv); say what is free up front.
df -h "$root" | tail -1 | awk '{print "disk free at " $6 ": " $4 " of " $2}'
if ! command -v python3 >/dev/null 2>&1; then
    apt-get update -qq && apt-get install -y -qq python3 python3-venv python3-pip
fi
python3 --version

step "dependency policy: tokio only with the I/O traits h2 needs (no runtime, net or time)"
tree=$(cargo tree -p plexus -e normal,features --prefix none)
if grep -E '^tokio feature "(rt|rt-multi-thread|net|time|full|macros|process|signal|fs)"' <<<"$tree"; then
    echo "plexus pulls in a tokio runtime feature (see above)" >&2
    exit 1
fi
grep -E '^tokio feature' <<<"$tree" | sort -u

step "format and lints"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --quiet -- -D warnings

step "plexus without its default features (no TLS) still builds, lint-clean"
cargo clippy -p plexus --no-default-features --all-targets --quiet -- -D warnings

step "Rust tests (unit, integration on smol and on a thread pool, doc tests)"
cargo test --workspace --quiet 2>&1 | tee /tmp/plexus-cargo-test.log
if grep -q "test result: FAILED" /tmp/plexus-cargo-test.log; then exit 1; fi

step "a user crate outside the workspace builds from plexus-build with no protoc, from clean (scripts/test-codegen.sh)"
"$root/scripts/test-codegen.sh"

step "peer tests against grpcio (Python venv in .venv)"
cargo build --release --quiet -p plexus-peer
venv="$root/.venv"
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv" || {
        apt-get update -qq && apt-get install -y -qq python3-venv
        python3 -m venv "$venv"
    }
fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r tests/peer/py/requirements.txt
PLEXUS_PEER_BIN="$root/target/release/plexus-peer" "$venv/bin/python" -m pytest tests/peer/py -q

step "interop matrix: plexus, grpcio and grpc-js clients and servers (scripts/test-interop.sh)"
"$root/scripts/test-interop.sh"

step "nginx (grpc_pass) in front of two plexus servers"
scripts/test-nginx.sh

step "C ABI: C and C++ tests, sanitizers, valgrind (scripts/test-c.sh)"
"$root/scripts/test-c.sh"

step "Python package: pip install ./bindings/python and its pytest suite (scripts/test-python.sh)"
"$root/scripts/test-python.sh"

step "benchmark harness smoke run (scripts/test-bench.sh)"
scripts/test-bench.sh
