#!/usr/bin/env bash
# Builds plexus-echo-server-c (benches/c/echo_server.c) against libplexus and prints its path;
# the benchmark matrix runs it as the "plexus-c" server. Builds libplexus too (cargo, the
# profile in PLEXUS_BENCH_PROFILE: release by default, debug for the smoke run). Output goes
# to stderr except the path.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)
profile=${PLEXUS_BENCH_PROFILE:-release}
if [ "$profile" = release ]; then
    cargo build --release --quiet -p plexus-ffi >&2
else
    cargo build --quiet -p plexus-ffi >&2
fi
lib="$root/target/$profile"
out="$root/target/bench-c/$profile"
mkdir -p "$out"
cc -std=c11 -O2 -Wall -Wextra -Wpedantic -Werror -I"$root/include" benches/c/echo_server.c \
    -o "$out/plexus-echo-server-c" -L"$lib" -lplexus -Wl,-rpath,"$lib" -pthread >&2
echo "$out/plexus-echo-server-c"
