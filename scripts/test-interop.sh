#!/usr/bin/env bash
# The gRPC interop matrix: every interop case (interop/src/client.rs) in eleven directions,
#   plexus -> plexus, plexus -> grpcio, grpcio -> plexus, plexus -> grpc-js, grpc-js -> plexus,
#   and plexus, grpcio and grpc-js -> plexus-cpp (the C++ interop server on plexus.hpp) and
#   -> plexus-py (grpcio's interop servicers on plexus.server),
# each in plaintext and over TLS ("+tls": certificates generated now by `plexus-peer certs`, the
# client verifying the name foo.test.google.fr as the standard interop runs do), with the plexus
# binaries from interop/ and the peers from tests/interop/ (Python in the repo's .venv, Node
# from npm). Prints a table of results and fails if a case that should pass does not, or if a
# case listed below as expected to fail passes (so the lists stay true).
# Usage: scripts/test-interop.sh      (scripts/test.sh runs it as one step)
#        PLEXUS_INTEROP_DIRECTIONS="*plexus-py* grpcio->plexus" scripts/test-interop.sh
#        runs only the directions matching those shell patterns.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
# shellcheck source=install.sh
source "$root/scripts/install.sh"

# ---- cases expected not to pass, in one place ----------------------------------------------
# Entries are "DIRECTION:CASE" shell patterns (the trailing * of a direction covers its +tls
# twin). A listed case that passes fails the run until its entry is gone. plexus itself lacks
# nothing; these are what the peers' libraries cannot do, whatever plexus does (see each peer's
# header comment).
PEER_LIMITS=(
    # grpcio and grpc-js servers cannot see whether a request arrived compressed, so they
    # cannot answer the CompressedRequest probe.
    "plexus->grpcio*:client_compressed_*"
    "plexus->grpc-js*:client_compressed_*"
    # grpc-js servers cannot compress a single call or message.
    "plexus->grpc-js*:server_compressed_*"
)

CASES=(
    empty_unary large_unary client_compressed_unary server_compressed_unary client_streaming
    client_compressed_streaming server_streaming server_compressed_streaming ping_pong
    empty_stream custom_metadata status_code_and_message special_status_message
    unimplemented_method unimplemented_service cancel_after_begin cancel_after_first_response
    timeout_on_sleeping_server concurrent_large_unary benchmark_unary benchmark_streaming
)
PLAIN_DIRECTIONS=("plexus->plexus" "plexus->grpcio" "grpcio->plexus" "plexus->grpc-js" "grpc-js->plexus")
# ---- plexus-py: the grpcio interop servicers, unchanged, on plexus.server (Python) ----
PLAIN_DIRECTIONS+=("grpcio->plexus-py" "grpc-js->plexus-py" "plexus->plexus-py")
# Its servicers are grpcio's: they cannot see whether a request arrived compressed either.
PEER_LIMITS+=("*->plexus-py*:client_compressed_*")
# ---- end of plexus-py ----
TLS_DIRECTIONS=()
for direction in "${PLAIN_DIRECTIONS[@]}"; do TLS_DIRECTIONS+=("$direction+tls"); done
DIRECTIONS=("${PLAIN_DIRECTIONS[@]}" "${TLS_DIRECTIONS[@]}")
# The name the TLS clients verify (and send as SNI and :authority) instead of 127.0.0.1; the
# test server certificate is valid for *.test.google.fr, as grpc's bundled one is.
TLS_NAME=foo.test.google.fr
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

step "interop: build the plexus interop binaries, and test certificates"
cargo build --release --quiet -p plexus-interop -p plexus-peer
server_bin="$root/target/release/interop-server"
client_bin="$root/target/release/interop-client"
certs="$work/certs"
"$root/target/release/plexus-peer" certs --out "$certs"
# The plexus binaries find ca.pem, server.pem and server.key here, so they run with the
# standard interop flags alone (interop/src/features.rs); the peers are given the files.
export PLEXUS_INTEROP_CERTS="$certs"

step "interop: grpcio peer (Python venv in .venv)"
venv="$root/.venv"
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv" || {
        apt_install "Python virtual environments" python3-venv
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
    # In a subshell: without apt-get the grpc-js directions are skipped, not the whole run.
    (apt_install "the grpc-js interop peer" nodejs npm) || true
fi
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    node_skip="node/npm are not installed and could not be installed (see above)"
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

step "interop: servers, plaintext and TLS"
peer_tls=(--use_tls=true --tls_cert_file="$certs/server.pem" --tls_key_file="$certs/server.key")
declare -A ports
start_server plexus "$work/server-plexus.log" "$server_bin" --port=0
ports[plexus]=$port
start_server plexus+tls "$work/server-plexus-tls.log" "$server_bin" --port=0 --use_tls=true
ports[plexus+tls]=$port
start_server grpcio "$work/server-grpcio.log" "$python" tests/interop/py/interop_server.py --port=0
ports[grpcio]=$port
start_server grpcio+tls "$work/server-grpcio-tls.log" \
    "$python" tests/interop/py/interop_server.py --port=0 "${peer_tls[@]}"
ports[grpcio+tls]=$port
if [ -z "$node_skip" ]; then
    start_server grpc-js "$work/server-grpc-js.log" node tests/interop/node/interop_server.js --port=0
    ports[grpc-js]=$port
    start_server grpc-js+tls "$work/server-grpc-js-tls.log" \
        node tests/interop/node/interop_server.js --port=0 "${peer_tls[@]}"
    ports[grpc-js+tls]=$port
fi
# ---- plexus-py servers: interop_server.py on plexus.server, loading this tree's libplexus ----
cargo build --release --quiet -p plexus-ffi
plexus_py=(env PLEXUS_LIBRARY="$root/target/release/libplexus.so" PYTHONPATH="$root/bindings/python"
    "$python" tests/interop/py/interop_server.py --server_impl=plexus --port=0)
start_server plexus-py "$work/server-plexus-py.log" "${plexus_py[@]}"
ports[plexus-py]=$port
start_server plexus-py+tls "$work/server-plexus-py-tls.log" "${plexus_py[@]}" "${peer_tls[@]}"
ports[plexus-py+tls]=$port
# ---- end of plexus-py servers ----

# ---- plexus-cpp: the C++ interop server on bindings/cpp/plexus.hpp (tests/interop/cpp) ------
# Served to plexus's, grpcio's and grpc-js's clients, plaintext and over TLS. Set
# PLEXUS_INTEROP_DIRECTIONS to shell patterns (space-separated, e.g. "*plexus-cpp*") to run
# only the directions matching one of them.
step "interop: the C++ interop server (plexus-cpp)"
# A fresh machine may have a C compiler (the Rust build needs one) but no C++ one.
command -v c++ >/dev/null 2>&1 || apt_install "the C++ interop server" g++
cpp_server_bin=$(tests/interop/cpp/build.sh)
start_server plexus-cpp "$work/server-plexus-cpp.log" "$cpp_server_bin" --port=0
ports[plexus-cpp]=$port
start_server plexus-cpp+tls "$work/server-plexus-cpp-tls.log" "$cpp_server_bin" --port=0 --use_tls=true
ports[plexus-cpp+tls]=$port
cpp_directions=("plexus->plexus-cpp" "grpcio->plexus-cpp" "grpc-js->plexus-cpp")
PLAIN_DIRECTIONS+=("${cpp_directions[@]}")
for direction in "${cpp_directions[@]}"; do TLS_DIRECTIONS+=("$direction+tls"); done
DIRECTIONS=("${PLAIN_DIRECTIONS[@]}" "${TLS_DIRECTIONS[@]}")
if [ -n "${PLEXUS_INTEROP_DIRECTIONS:-}" ]; then
    read -r -a direction_patterns <<<"$PLEXUS_INTEROP_DIRECTIONS"
    selected() {
        local direction pattern
        for direction in "$@"; do
            for pattern in "${direction_patterns[@]}"; do
                # shellcheck disable=SC2053 # patterns on purpose
                if [[ $direction == $pattern ]]; then
                    echo "$direction"
                    break
                fi
            done
        done
    }
    mapfile -t PLAIN_DIRECTIONS < <(selected "${PLAIN_DIRECTIONS[@]}")
    mapfile -t TLS_DIRECTIONS < <(selected "${TLS_DIRECTIONS[@]}")
    DIRECTIONS=("${PLAIN_DIRECTIONS[@]}" "${TLS_DIRECTIONS[@]}")
    echo "only the directions matching $PLEXUS_INTEROP_DIRECTIONS: ${DIRECTIONS[*]}"
fi
# ---- end of plexus-cpp ------------------------------------------------------------------------

# The client command of a direction ("CLIENT->SERVER", "+tls" for TLS), without --test_case.
# Over TLS every client trusts only the test CA and verifies $TLS_NAME, the standard interop
# flags; the plexus client reads the CA from $PLEXUS_INTEROP_CERTS, the peers from --ca_file.
client_cmd() {
    local direction=${1%+tls} tls=()
    local client=${direction%%->*} server=${direction#*->}
    local args=(--server_host=127.0.0.1)
    if [[ $1 == *+tls ]]; then
        server="$server+tls"
        tls=(--use_tls=true --use_test_ca=true --server_host_override="$TLS_NAME")
        [ "$client" = plexus ] || tls+=(--ca_file="$certs/ca.pem")
    fi
    args+=(--server_port="${ports[$server]}" "${tls[@]}")
    case $client in
        plexus) echo "$client_bin" "${args[@]}" ;;
        grpcio) echo "$python" tests/interop/py/interop_client.py "${args[@]}" ;;
        grpc-js) echo node tests/interop/node/interop_client.js "${args[@]}" ;;
    esac
}

# The TLS servers must really be TLS (so the +tls clients really are too): a plaintext call
# to each must fail.
for server in "${!ports[@]}"; do
    [[ $server == *+tls ]] || continue
    if timeout "$CASE_TIMEOUT" "$client_bin" --server_host=127.0.0.1 --server_port="${ports[$server]}" \
        --test_case=empty_unary >"$work/plaintext-to-$server.log" 2>&1; then
        echo "a plaintext call to the $server server passed: it does not serve TLS" >&2
        exit 1
    fi
done

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

# How a client that failed ended: its exit code, a timeout, or the signal that killed it.
exit_status() {
    if [ "$1" = 124 ]; then
        echo "timed out after ${CASE_TIMEOUT}s"
    elif [ "$1" -gt 128 ]; then
        echo "killed by signal $(kill -l "$(($1 - 128))" 2>/dev/null || echo "$(($1 - 128))")"
    else
        echo "exit code $1"
    fi
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
        status=0
        timeout "$CASE_TIMEOUT" "${cmd[@]}" --test_case="$case" >"$log" 2>&1 || status=$?
        passed=$((status == 0))
        key="$direction:$case"
        expected=""
        if matches "$key" "${PEER_LIMITS[@]}"; then
            expected="peer"
        fi
        if [ "$passed" = 1 ] && [ -z "$expected" ]; then
            result[$key]="pass"
            total_pass=$((total_pass + 1))
        elif [ "$passed" = 0 ] && [ -n "$expected" ]; then
            result[$key]="$expected"
        elif [ "$passed" = 1 ]; then
            result[$key]="XPASS"
            total_fail=$((total_fail + 1))
            failures+=("$key passed but is listed as expected to fail ($expected): remove its entry in scripts/test-interop.sh")
        else
            result[$key]="FAIL"
            total_fail=$((total_fail + 1))
            failures+=("$key failed ($(exit_status "$status")): $(tail -c 600 "$log" | tr '\n' ' ')")
        fi
    done
    echo "$direction: $((SECONDS - direction_started)) s"
done
elapsed=$((SECONDS - started))

step "interop: results (${elapsed} s)"
# One table of results for the directions given.
table() {
    local direction case n
    printf '%-30s' "case"
    for direction in "$@"; do printf ' %-19s' "$direction"; done
    printf '\n'
    for case in "${CASES[@]}"; do
        printf '%-30s' "$case"
        for direction in "$@"; do printf ' %-19s' "${result[$direction:$case]}"; done
        printf '\n'
    done
    printf '%-30s' "passed"
    for direction in "$@"; do
        n=0
        for case in "${CASES[@]}"; do [ "${result[$direction:$case]}" = pass ] && n=$((n + 1)); done
        printf ' %-19s' "$n/${#CASES[@]}"
    done
    printf '\n\n'
}
table "${PLAIN_DIRECTIONS[@]}"
table "${TLS_DIRECTIONS[@]}"
echo "pass: passed; peer: the peer's library cannot do it (PEER_LIMITS); skip: the peer could"
echo "not be installed; FAIL / XPASS: wrong. +tls: over TLS, verifying $TLS_NAME."
echo "benchmark_unary and benchmark_streaming are plexus's own cases (BenchmarkService)."
if [ "${#failures[@]}" -gt 0 ]; then
    printf '\n'
    for failure in "${failures[@]}"; do echo "- $failure"; done
fi
printf '\ninterop: %d passed, %d failed\n' "$total_pass" "$total_fail"
[ "$total_fail" -eq 0 ]
