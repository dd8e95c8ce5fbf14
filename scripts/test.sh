#!/usr/bin/env bash
# Runs every test suite of plexus, installing what it needs: Rust unit, integration and doc
# tests, lint and dependency checks, and the peer tests against grpcio in a local venv.
# Usage: ./scripts/test.sh        (from anywhere; CI runs it through .ci/run)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
# shellcheck source=install.sh
source "$root/scripts/install.sh"

# Everything this run prints also goes to a log of its own under target/, so each step's test
# counts can be read back for the summary, and two runs (or checkouts) never share a file.
mkdir -p "$root/target"
run_dir=$(mktemp -d "$root/target/test-run.XXXXXX")
log="$run_dir/output.log"
exec 3>&1 4>&2
exec > >(tee -a "$log") 2>&1
tee_pid=$!

# Each step starts with its "==> name" line in the output, so the log splits into steps exactly
# (at the names listed in $run_dir/steps: sub-scripts print "==> " lines of their own).
step_names=() step_starts=()
step() {
    end_step
    step_names+=("$*")
    step_starts+=("$SECONDS")
    printf "%s\n" "$*" >>"$run_dir/steps"
    printf "\n==> %s\n" "$*"
}
# Prints the duration of the step that is ending.
end_step() {
    local n=${#step_names[@]}
    [ "$n" -gt 0 ] || return 0
    printf -- "--- %s: %ss\n" "${step_names[n - 1]}" "$((SECONDS - step_starts[n - 1]))"
}
# Per step, "N passed, M failed" from its output: cargo's, pytest's and the C, interop and
# peer suites' summaries ("...: N passed, M failed"), and PASS/FAIL lines; "-" for a step
# that runs no counted tests.
count_tests() {
    awk '
        function add(   i) {
            for (i = 2; i <= NF; i++) {
                if ($(i) ~ /^passed[;,]?$/) p[s] += $(i - 1)
                if ($(i) ~ /^failed[;,]?$/) f[s] += $(i - 1)
            }
        }
        FILENAME == ARGV[1]                 { is_step["==> " $0] = 1; next }
        is_step[$0]                         { s++; next }
        /test result: /                     { add(); next }
        /(^|[ :=])[0-9]+ passed/            { add(); next }
        /^PASS /                            { p[s]++ }
        /^FAIL /                            { f[s]++ }
        END {
            for (i = 1; i <= s; i++)
                if (p[i] + f[i] == 0) print "-"; else printf "%d passed, %d failed\n", p[i], f[i]
        }' "$run_dir/steps" "$log"
}
summary() {
    local status=$?
    end_step
    # Let tee write everything out before the log is read.
    exec 1>&3 2>&4
    wait "$tee_pid" 2>/dev/null || true
    local n=${#step_names[@]} counts
    mapfile -t counts < <(count_tests)
    {
        printf "\n==> summary: %ss in all (output in %s)\n" "$SECONDS" "${log#"$root"/}"
        printf "%-6s  %6s  %-22s  %s\n" result time tests step
        for ((i = 0; i < n; i++)); do
            local result=ok time
            if [ $((i + 1)) -lt "$n" ]; then
                time=$((step_starts[i + 1] - step_starts[i]))
            else
                time=$((SECONDS - step_starts[i]))
                [ "$status" -eq 0 ] || result=FAILED
            fi
            printf "%-6s  %5ss  %-22s  %s\n" "$result" "$time" "${counts[i]:--}" "${step_names[i]}"
        done
        if [ "$status" -eq 0 ]; then echo "all steps passed"; else echo "FAILED (exit $status)"; fi
    } | tee -a "$log"
}
trap summary EXIT

# One clean build per run: incremental compilation state would only double target/debug
# (1.1 GB) on a machine that never rebuilds.
export CARGO_INCREMENTAL=0

step "toolchain"
cargo --version
# Disk: a full run writes about 2.5 GB (target/ and .venv); say what is free up front.
df -h "$root" | tail -1 | awk '{print "disk free at " $6 ": " $4 " of " $2}'
if ! command -v python3 >/dev/null 2>&1; then
    apt_install "the Python tests and peers" python3 python3-venv python3-pip
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

step "plexus without its default features (no TLS), and with tracing, still builds, lint-clean"
cargo clippy -p plexus --no-default-features --all-targets --quiet -- -D warnings
cargo clippy -p plexus --features tracing --all-targets --quiet -- -D warnings

step "Rust tests (unit, integration on smol and on a thread pool, doc tests)"
cargo test --workspace --quiet 2>&1 | tee "$run_dir/cargo-test.log"
if grep -q "test result: FAILED" "$run_dir/cargo-test.log"; then exit 1; fi
# Calls as tracing spans: a test that needs the optional feature.
cargo test -p plexus --features tracing --test spans --quiet

step "the examples run: quickstart and route_guide (debug build, reused from the tests)"
cargo run --quiet -p plexus-examples --example quickstart
cargo run --quiet -p plexus-examples --example route_guide

step "a user crate outside the workspace builds from plexus-build with no protoc, from clean (scripts/test-codegen.sh)"
"$root/scripts/test-codegen.sh"

step "peer tests against grpcio (Python venv in .venv)"
# interop-server too, for the health and reflection tests (found beside plexus-peer, or by
# PLEXUS_INTEROP_SERVER_BIN); the interop matrix below builds the same two packages, so it
# reuses this build.
cargo build --release --quiet -p plexus-interop -p plexus-peer
venv="$root/.venv"
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv" || {
        apt_install "Python virtual environments" python3-venv
        python3 -m venv "$venv"
    }
fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r tests/peer/py/requirements.txt
PLEXUS_PEER_BIN="$root/target/release/plexus-peer" \
    PLEXUS_INTEROP_SERVER_BIN="$root/target/release/interop-server" \
    "$venv/bin/python" -m pytest tests/peer/py -q

step "DNS scale-out: round_robin and pick_first channels against dnsmasq, servers coming and going"
if ! command -v dnsmasq >/dev/null 2>&1 && [ ! -x /usr/sbin/dnsmasq ]; then
    apt_install "a real DNS server for the scale-out test" dnsmasq-base
fi
cargo test --quiet -p plexus-peer --features dnsmasq --test dns_scale_out

step "interop matrix: plexus, grpcio and grpc-js clients and servers (scripts/test-interop.sh)"
"$root/scripts/test-interop.sh"

step "nginx (grpc_pass) in front of two plexus servers"
scripts/test-nginx.sh

step "C ABI: C and C++ tests, sanitizers, valgrind (scripts/test-c.sh)"
"$root/scripts/test-c.sh"

step "Python package: pip install ./bindings/python and its pytest suite (scripts/test-python.sh)"
"$root/scripts/test-python.sh"

step "Python wheel: installs and makes every call kind with no Rust on PATH; the sdist installs with cargo (scripts/test-wheel.sh)"
"$root/scripts/test-wheel.sh"

step "benchmark harness smoke run (scripts/test-bench.sh)"
scripts/test-bench.sh
