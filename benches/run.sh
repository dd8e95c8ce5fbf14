#!/usr/bin/env bash
# Runs the benchmark matrix: servers {plexus, plexus-smol, plexus-c, tonic, grpcio} x clients
# {plexus, plexus-smol, plexus-c, plexus-py, tonic, grpcio} x the five cases, alternating rounds,
# medians; writes benches/results/latest.{json,md,svg} (latest-loadN.* with --load N, N CPU
# hogs beside each pair). plexus-smol is plexus with everything on SmolExecutor. Installs what
# it needs: grpcio into the repo's .venv, the release build of plexus-bench (and of libplexus,
# when the C ABI is in the checkout).
#
# Usage: benches/run.sh [--debug] [plexus-bench matrix flags...]
#   benches/run.sh --update-readme          the full run (about 30 minutes on 2 cores)
#   benches/run.sh --load 2 --update-readme the same beside two CPU hogs
#   benches/run.sh --duration 1 --rounds 1  a quick look
#   benches/run.sh --debug --smoke --out DIR  what scripts/test-bench.sh runs
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

profile=release
if [ "${1:-}" = "--debug" ]; then
    profile=debug
    shift
fi

venv="$root/.venv"
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv" || {
        apt-get update -qq && apt-get install -y -qq python3-venv
        python3 -m venv "$venv"
    }
fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r benches/python/requirements.txt

# The C and Python clients of plexus load libplexus from the same profile (the matrix and
# benches/c/build-bench-client.sh read PLEXUS_BENCH_PROFILE).
export PLEXUS_BENCH_PROFILE=$profile
flag=""
[ "$profile" = release ] && flag="--release"
cargo build $flag --quiet -p plexus-benches --bin plexus-bench
if [ -f ffi/Cargo.toml ]; then
    cargo build $flag --quiet -p plexus-ffi
fi
exec "$root/target/$profile/plexus-bench" matrix --root "$root" --python "$venv/bin/python" "$@"
