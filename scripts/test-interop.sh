#!/usr/bin/env bash
# The gRPC interop matrix: every interop case (interop/src/client.rs) in five directions,
#   plexus -> plexus, plexus -> grpcio, grpcio -> plexus, plexus -> grpc-js, grpc-js -> plexus,
# with the plexus binaries from interop/ and the peers from tests/interop/ (Python in the repo's
# .venv, Node from npm). Prints a table of results and fails if a case that should pass does
# not, or if a case listed below as expected to fail passes (so the lists stay true).
# Usage: scripts/test-interop.sh      (scripts/test.sh runs it as one step)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

# ---- cases expected not to pass, in one place ----------------------------------------------
# Entries are "DIRECTION:CASE" shell patterns. Remove them as the features land; a listed case
# that passes fails the run until its entry is gone.
#
# What this build of plexus lacks (each entry must fail saying "not supported"): nothing.
BUILD_LACKS=()
# What the peers' libraries cannot do, whatever plexus does (see each peer's header comment).
PEER_LIMITS=(
    # grpcio and grpc-js servers cannot see whether a request arrived compressed, so they
    # cannot answer the CompressedRequest probe.
    "plexus->grpcio:client_compressed_*"
    "plexus->grpc-js:client_compressed_*"
    # grpc-js servers cannot compress a single call or message.
    "plexus->grpc-js:server_compressed_*"
)

CASES=(
    empty_unary large_unary client_compressed_unary server_compressed_unary client_streaming
    client_compressed_streaming server_streaming server_compressed_streaming ping_pong
    empty_stream custom_metadata status_code_and_message special_status_message
    unimplemented_method unimplemented_service cancel_after_begin cancel_after_first_response
    timeout_on_sleeping_server concurrent_large_unary benchmark_unary benchmark_streaming
)
DIRECTIONS=("plexus->plexus" "plexus->grpcio" "grpcio->plexus" "plexus->grpc-js" "grpc-js->plexus")
# Per case: generous for 1000 concurrent large calls through a Python server on two busy cores.
CASE_TIMEOUT=150
SERVER_START_TIMEOUT=60

step() { printf '\n==> %s\n' "$*"; }

work=$(mktemp -d -t plexus-interop.XXXXXX)
server_pids=()
cleanup() {
    for pid in "${server_pids[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${server_pids[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$work"
}
trap cleanup EXIT

step "interop: build the plexus interop binaries"
cargo build --release --quiet -p plexus-interop
server_bin="$root/target/release/interop-server"
client_bin="$root/target/release/interop-client"

step "interop: grpcio peer (Python venv in .venv)"
venv="$root/.venv"
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv" || {
        apt-get update -qq && apt-get install -y -qq python3-venv
        python3 -m venv "$venv"
    }
fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r tests/interop/requirements.txt
python="$venv/bin/python"
export PLEXUS_INTEROP_STUBS="$work/stubs"
"$python" tests/interop/py/stubs.py "$PLEXUS_INTEROP_STUBS"

step "interop: grpc-js peer (npm)"
node_skip=""
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    apt-get update -qq && apt-get install -y -qq nodejs npm >/dev/null 2>&1 || true
fi
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    node_skip="node/npm are not installed and apt-get could not install them"
elif ! (cd tests/interop/node && npm ci --no-audit --no-fund --loglevel=error >"$work/npm.log" 2>&1); then
    node_skip="npm ci failed in tests/interop/node: $(tail -n 3 "$work/npm.log" | tr '\n' ' ')"
fi
if [ -n "$node_skip" ]; then
    echo "SKIPPING the grpc-js directions: $node_skip"
else
    echo "node $(node --version), @grpc/grpc-js $(node -p "require('./tests/interop/node/node_modules/@grpc/grpc-js/package.json').version")"
fi

# Starts a server that prints "... listening on port N" and sets $port; its output goes to $2.
start_server() {
    local name=$1 log=$2
    shift 2
    : >"$log" # exists before the background job opens it, for the polling below
    "$@" >"$log" 2>&1 &
    server_pids+=("$!")
    local pid=$! waited=0
    port=""
    while [ -z "$port" ]; do
        port=$(sed -n 's/.*listening on port \([0-9][0-9]*\).*/\1/p' "$log" | head -n 1)
        [ -n "$port" ] && break
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "the $name server exited before listening:" >&2
            cat "$log" >&2
            exit 1
        fi
        if [ "$waited" -ge $((SERVER_START_TIMEOUT * 10)) ]; then
            echo "the $name server did not start listening within ${SERVER_START_TIMEOUT} s:" >&2
            cat "$log" >&2
            exit 1
        fi
        sleep 0.1
        waited=$((waited + 1))
    done
    echo "$name server on port $port"
}

step "interop: servers"
start_server plexus "$work/server-plexus.log" "$server_bin" --port=0
plexus_port=$port
start_server grpcio "$work/server-grpcio.log" "$python" tests/interop/py/interop_server.py --port=0
grpcio_port=$port
grpcjs_port=""
if [ -z "$node_skip" ]; then
    start_server grpc-js "$work/server-grpc-js.log" node tests/interop/node/interop_server.js --port=0
    grpcjs_port=$port
fi

# The client command of a direction, without --test_case.
client_cmd() {
    local common=(--server_host=127.0.0.1)
    case $1 in
        "plexus->plexus") echo "$client_bin" "${common[@]}" --server_port="$plexus_port" ;;
        "plexus->grpcio") echo "$client_bin" "${common[@]}" --server_port="$grpcio_port" ;;
        "grpcio->plexus") echo "$python" tests/interop/py/interop_client.py "${common[@]}" --server_port="$plexus_port" ;;
        "plexus->grpc-js") echo "$client_bin" "${common[@]}" --server_port="$grpcjs_port" ;;
        "grpc-js->plexus") echo node tests/interop/node/interop_client.js "${common[@]}" --server_port="$plexus_port" ;;
    esac
}

matches() {
    local key=$1
    shift
    local pattern
    for pattern in "$@"; do
        # shellcheck disable=SC2053 # the entries are patterns on purpose
        [[ $key == $pattern ]] && return 0
    done
    return 1
}

declare -A result
failures=()
total_pass=0
total_fail=0
step "interop: running ${#CASES[@]} cases in ${#DIRECTIONS[@]} directions"
started=$SECONDS
for direction in "${DIRECTIONS[@]}"; do
    if [[ $direction == *grpc-js* && -n "$node_skip" ]]; then
        for case in "${CASES[@]}"; do result[$direction:$case]="skip"; done
        continue
    fi
    read -r -a cmd <<<"$(client_cmd "$direction")"
    direction_started=$SECONDS
    for case in "${CASES[@]}"; do
        log="$work/${direction//>/}-$case.log"
        if timeout "$CASE_TIMEOUT" "${cmd[@]}" --test_case="$case" >"$log" 2>&1; then
            passed=1
        else
            passed=0
        fi
        key="$direction:$case"
        expected=""
        if matches "$key" "${PEER_LIMITS[@]}"; then
            expected="peer"
        elif matches "$key" "${BUILD_LACKS[@]}"; then
            expected="xfail"
        fi
        if [ "$passed" = 1 ] && [ -z "$expected" ]; then
            result[$key]="pass"
            total_pass=$((total_pass + 1))
        elif [ "$passed" = 0 ] && [ "$expected" = xfail ] && ! grep -q "not supported" "$log"; then
            # Missing compression must say so; any other failure of these cases is a bug.
            result[$key]="FAIL"
            total_fail=$((total_fail + 1))
            failures+=("$key failed for another reason than a missing feature: $(tail -c 600 "$log" | tr '\n' ' ')")
        elif [ "$passed" = 0 ] && [ -n "$expected" ]; then
            result[$key]="$expected"
        elif [ "$passed" = 1 ]; then
            result[$key]="XPASS"
            total_fail=$((total_fail + 1))
            failures+=("$key passed but is listed as expected to fail ($expected): remove its entry in scripts/test-interop.sh")
        else
            result[$key]="FAIL"
            total_fail=$((total_fail + 1))
            failures+=("$key failed: $(tail -c 600 "$log" | tr '\n' ' ')")
        fi
    done
    echo "$direction: $((SECONDS - direction_started)) s"
done
elapsed=$((SECONDS - started))

step "interop: results (${elapsed} s)"
printf '%-30s' "case"
for direction in "${DIRECTIONS[@]}"; do printf ' %-16s' "$direction"; done
printf '\n'
for case in "${CASES[@]}"; do
    printf '%-30s' "$case"
    for direction in "${DIRECTIONS[@]}"; do printf ' %-16s' "${result[$direction:$case]}"; done
    printf '\n'
done
printf '%-30s' "passed"
for direction in "${DIRECTIONS[@]}"; do
    n=0
    for case in "${CASES[@]}"; do [ "${result[$direction:$case]}" = pass ] && n=$((n + 1)); done
    printf ' %-16s' "$n/${#CASES[@]}"
done
printf '\n\n'
echo "pass: passed; xfail: needs a feature this build lacks (BUILD_LACKS); peer: the peer's library"
echo "cannot do it (PEER_LIMITS); skip: the peer could not be installed; FAIL / XPASS: wrong."
echo "benchmark_unary and benchmark_streaming are plexus's own cases (BenchmarkService)."
if [ "${#failures[@]}" -gt 0 ]; then
    printf '\n'
    for failure in "${failures[@]}"; do echo "- $failure"; done
fi
printf '\ninterop: %d passed, %d failed\n' "$total_pass" "$total_fail"
[ "$total_fail" -eq 0 ]
