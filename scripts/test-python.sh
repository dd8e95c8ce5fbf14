#!/usr/bin/env bash
# The Python package's suite: installs bindings/python into the repo's .venv the way users
# do (pip install ./bindings/python, which builds libplexus with cargo through the package's
# own PEP 517 backend), installs the pinned test requirements, type-checks the package with
# mypy --strict, and runs tests/python against the Rust echo server and a grpcio one. Ends
# with a short smoke run of the benchmark (its numbers are not checked; run
# benches/python/bench_unary.py for real figures).
# Usage: ./scripts/test-python.sh        (scripts/test.sh runs it)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
# shellcheck source=install.sh
source "$root/scripts/install.sh"

step() { printf '\n==> %s\n' "$*"; }

if ! command -v python3 >/dev/null 2>&1; then
    apt_install "the Python tests and peers" python3 python3-venv python3-pip
fi
venv="$root/.venv"
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv" || {
        apt_install "Python virtual environments" python3-venv
        python3 -m venv "$venv"
    }
fi
py="$venv/bin/python"

step "python: the Rust echo server (plexus-peer)"
cargo build --release --quiet -p plexus-peer

step "python: pip install ./bindings/python (builds libplexus with cargo)"
"$py" -m pip install --quiet --disable-pip-version-check -r tests/python/requirements.txt
# Never a stale copy: reinstall from the tree every time (cargo rebuilds only what changed).
"$py" -m pip install --quiet --disable-pip-version-check --force-reinstall --no-deps ./bindings/python
# The tests import the installed package, with the library it carries.
unset PLEXUS_LIBRARY
"$py" -c 'import plexus, plexus._ffi as f; print("plexus", plexus.__version__, "library", f.current().path)'

step "python: mypy --strict bindings/python/plexus"
"$py" -m mypy --strict bindings/python/plexus

step "python: pytest tests/python"
PLEXUS_PEER_BIN="$root/target/release/plexus-peer" "$py" -m pytest tests/python -q

step "python: benchmark smoke run (benches/python/bench_unary.py, numbers not checked)"
bench_log=$(mktemp "$root/target/python-bench.XXXXXX.log")
PLEXUS_PEER_BIN="$root/target/release/plexus-peer" \
    "$py" benches/python/bench_unary.py --seconds 0.3 --rounds 1 >"$bench_log" 2>&1 || {
    cat "$bench_log"
    exit 1
}
echo "(a smoke run: these figures are not meaningful and are not checked)"
tail -6 "$bench_log"
rm -f "$bench_log"
