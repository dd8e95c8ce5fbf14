#!/usr/bin/env bash
# The C ABI suite. Builds libplexus (debug) and runs the C and C++ programs of tests/c against
# the Rust echo server (plexus-peer, tests/peer), plain and over mutual TLS, and, for the TLS
# tests, grpcio echo servers over TLS and mutual TLS (tests/c/grpcio_tls_server.py, run with
# the venv's Python: $PLEXUS_TEST_PYTHON, else .venv/bin/python, made here as
# scripts/test.sh makes it when missing): linked dynamically, linked statically,
# built with -fsanitize=address,undefined (the C and C++ side is instrumented; the Rust
# library is the normal build, since instrumenting Rust needs a nightly toolchain), and under
# valgrind with leak checking. Also compiles each header alone and twice (plexus.h as C11 and
# C++17, plexus.hpp as C++17), checks that the C tests call every function in plexus.h, and
# runs the Rust checks of the ABI (header up to date, every export behind the boundary).
# Installs cc, c++ and valgrind with apt-get when they are missing.
# Usage: ./scripts/test-c.sh
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
# shellcheck source=install.sh
source "$root/scripts/install.sh"
out="$root/target/c-tests"
mkdir -p "$out"

step() { printf '\n==> %s\n' "$*"; }
started=$SECONDS

step "tools"
need=()
command -v cc >/dev/null 2>&1 || need+=(gcc)
command -v c++ >/dev/null 2>&1 || need+=(g++)
command -v valgrind >/dev/null 2>&1 || need+=(valgrind)
if ((${#need[@]})); then
    apt_install "building and checking the C and C++ tests" "${need[@]}"
fi
cc --version | head -1
valgrind --version
python="${PLEXUS_TEST_PYTHON:-$root/.venv/bin/python}"
if [ ! -x "$python" ]; then
    python3 -m venv "$root/.venv" || {
        apt_install "Python virtual environments" python3-venv
        python3 -m venv "$root/.venv"
    }
    python="$root/.venv/bin/python"
    "$python" -m pip install --quiet --disable-pip-version-check -r tests/peer/py/requirements.txt
fi
"$python" -c 'import grpc, grpc_tools; print("grpcio", grpc.__version__)'

step "Rust side: header up to date, every export behind the panic boundary"
cargo test -p plexus-ffi --quiet 2>&1 | tail -3
cargo build -p plexus-ffi --quiet
cargo build --release -p plexus-peer --quiet
lib="$root/target/debug"

step "headers alone and included twice: plexus.h as C11 and C++17, plexus.hpp as C++17"
warn=(-Wall -Wextra -Wpedantic -Werror)
cc -std=c11 "${warn[@]}" -Iinclude -c tests/c/header_twice.c -o "$out/header_c.o"
c++ -std=c++17 "${warn[@]}" -Iinclude -x c++ -c tests/c/header_twice.c -o "$out/header_cpp.o"
c++ -std=c++17 "${warn[@]}" -Iinclude -Ibindings/cpp -c tests/c/hpp_twice.cpp -o "$out/hpp.o"
echo "ok"

step "every function in plexus.h is called by the C tests"
functions=$(grep -oE '^[a-z_ ]+\**(plexus_[a-z_]+)\(' include/plexus.h | grep -oE 'plexus_[a-z_]+\($' | tr -d '(' | sort -u)
missing=0
for f in $functions; do
    if ! grep -qw "$f" tests/c/*.c; then
        echo "not called by any test in tests/c: $f" >&2
        missing=1
    fi
done
[ "$missing" = 0 ] || exit 1
echo "$(wc -w <<<"$functions") functions, all called"

step "every symbol libplexus.so exports has the plexus_ prefix"
exported=$(nm -D --defined-only "$lib/libplexus.so" | awk '{print $3}')
if grep -v '^plexus_' <<<"$exported"; then
    echo "libplexus.so exports symbols without the plexus_ prefix (above)" >&2
    exit 1
fi
echo "$(wc -l <<<"$exported") symbols, all plexus_*"

step "build the tests: dynamic, static, ASan+UBSan"
cflags=(-std=c11 "${warn[@]}" -g -Iinclude -Itests/c)
cxxflags=(-std=c++17 "${warn[@]}" -g -Iinclude -Ibindings/cpp -Itests/c)
dyn=(-L"$lib" -lplexus -Wl,-rpath,"$lib" -pthread -ldl)
static=("$lib/libplexus.a" -lgcc_s -lutil -lrt -lpthread -lm -ldl)
san=(-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer)
c_tests=(test_api test_threads test_shutdown test_fork test_tls)
for t in "${c_tests[@]}"; do
    cc "${cflags[@]}" "tests/c/$t.c" -o "$out/$t" "${dyn[@]}" &
    cc "${cflags[@]}" "${san[@]}" "tests/c/$t.c" -o "$out/$t-asan" "${dyn[@]}" &
    wait
done
c++ "${cxxflags[@]}" tests/c/test_cpp.cpp -o "$out/test_cpp" "${dyn[@]}" &
c++ "${cxxflags[@]}" "${san[@]}" tests/c/test_cpp.cpp -o "$out/test_cpp-asan" "${dyn[@]}" &
wait
c++ "${cxxflags[@]}" tests/c/test_cpp_server.cpp -o "$out/test_cpp_server" "${dyn[@]}" &
c++ "${cxxflags[@]}" "${san[@]}" tests/c/test_cpp_server.cpp -o "$out/test_cpp_server-asan" "${dyn[@]}" &
wait
c++ "${cxxflags[@]}" bindings/cpp/example.cpp -o "$out/example_cpp" "${dyn[@]}" &
cc "${cflags[@]}" tests/c/test_api.c -o "$out/test_api-static" "${static[@]}" &
wait

step "start the echo server (plexus-peer)"
# No stale log from an earlier run may answer the wait for LISTENING below.
rm -f "$out/peer.log" "$out/peer-tls.log"
"$root/target/release/plexus-peer" server --listen 127.0.0.1:0 >"$out/peer.log" 2>&1 &
peer=$!
trap 'kill "$peer" 2>/dev/null || true' EXIT
for _ in $(seq 1 300); do
    grep -qs LISTENING "$out/peer.log" && break
    sleep 0.1
done
port=$(awk '/LISTENING/ {print $2}' "$out/peer.log")
[ -n "$port" ] || { cat "$out/peer.log" >&2; exit 1; }
export PLEXUS_TEST_TARGET="127.0.0.1:$port"
export PLEXUS_TEST_LIB="$lib/libplexus.so"
echo "serving on $PLEXUS_TEST_TARGET"
# A second server over mutual TLS, with certificates the peer makes.
export PLEXUS_TEST_CERTS="$out/certs"
"$root/target/release/plexus-peer" certs --out "$PLEXUS_TEST_CERTS"
"$root/target/release/plexus-peer" server --listen 127.0.0.1:0 \
    --tls-cert "$PLEXUS_TEST_CERTS/server.pem" --tls-key "$PLEXUS_TEST_CERTS/server.key" \
    --client-ca "$PLEXUS_TEST_CERTS/ca.pem" >"$out/peer-tls.log" 2>&1 &
peer_tls=$!
trap 'kill "$peer" "$peer_tls" 2>/dev/null || true' EXIT
for _ in $(seq 1 300); do
    grep -qs LISTENING "$out/peer-tls.log" && break
    sleep 0.1
done
tls_port=$(awk '/LISTENING/ {print $2}' "$out/peer-tls.log")
[ -n "$tls_port" ] || { cat "$out/peer-tls.log" >&2; exit 1; }
export PLEXUS_TEST_TLS_TARGET="127.0.0.1:$tls_port"
echo "serving mutual TLS on $PLEXUS_TEST_TLS_TARGET"
# grpcio over TLS and mutual TLS with the same certificates, and a TLS server without h2.
rm -f "$out/grpcio-tls.log"
"$python" tests/c/grpcio_tls_server.py "$PLEXUS_TEST_CERTS" >"$out/grpcio-tls.log" 2>&1 &
grpcio_tls=$!
trap 'kill "$peer" "$peer_tls" "$grpcio_tls" 2>/dev/null || true' EXIT
for _ in $(seq 1 600); do
    grep -qs LISTENING "$out/grpcio-tls.log" && break
    sleep 0.1
done
read -r grpcio_port grpcio_mtls_port no_h2_port < <(awk '/LISTENING/ {print $2, $3, $4}' "$out/grpcio-tls.log") || true
[ -n "${no_h2_port:-}" ] || { cat "$out/grpcio-tls.log" >&2; exit 1; }
export PLEXUS_TEST_GRPCIO_TLS_TARGET="127.0.0.1:$grpcio_port"
export PLEXUS_TEST_GRPCIO_MTLS_TARGET="127.0.0.1:$grpcio_mtls_port"
export PLEXUS_TEST_NO_H2_TARGET="127.0.0.1:$no_h2_port"
echo "grpcio serving TLS on $PLEXUS_TEST_GRPCIO_TLS_TARGET, mutual TLS on" \
    "$PLEXUS_TEST_GRPCIO_MTLS_TARGET; TLS without h2 on $PLEXUS_TEST_NO_H2_TARGET"

run() {
    local name=$1 t0=$SECONDS
    shift
    printf -- '-- %s\n' "$name"
    timeout 300 "$@"
    printf -- '   (%d s)\n' "$((SECONDS - t0))"
}

step "C and C++ tests"
for t in "${c_tests[@]}" test_cpp test_cpp_server; do run "$t" "$out/$t"; done
run "example_cpp" "$out/example_cpp" "$PLEXUS_TEST_TARGET"
run "test_api linked with libplexus.a" "$out/test_api-static"

step "C and C++ tests with AddressSanitizer and UndefinedBehaviorSanitizer"
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
for t in "${c_tests[@]}" test_cpp test_cpp_server; do run "$t (asan+ubsan)" "$out/$t-asan"; done
unset ASAN_OPTIONS UBSAN_OPTIONS

step "valgrind: no invalid accesses, nothing definitely or indirectly lost"
vg=(valgrind -q --error-exitcode=99 --suppressions=tests/c/valgrind.supp
    --leak-check=full --errors-for-leak-kinds=definite,indirect
    --show-leak-kinds=definite,indirect)
run "test_api (valgrind)" "${vg[@]}" "$out/test_api"
PLEXUS_TEST_CALLS=25 run "test_threads, 8 x 25 calls (valgrind)" "${vg[@]}" "$out/test_threads"
run "test_shutdown (valgrind)" "${vg[@]}" "$out/test_shutdown"
run "test_tls (valgrind)" "${vg[@]}" "$out/test_tls"
run "test_cpp (valgrind)" "${vg[@]}" "$out/test_cpp"
run "test_cpp_server (valgrind)" "${vg[@]}" "$out/test_cpp_server"
# test_fork is not run under valgrind: in a child forked from a threaded process, the
# parent's threads are gone and valgrind reports what only they referenced as lost.

echo
echo "C ABI suite passed in $((SECONDS - started)) s"
