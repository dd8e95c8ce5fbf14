#!/usr/bin/env bash
# The C ABI benchmark: a C client through libplexus (benches/c/bench_unary.c) against the
# Rust client (ffi/examples/bench_client.rs), both against one plexus echo server
# (tests/peer), in one run: unary calls/s with 64 calls in flight, and p50 latency with one
# call in flight. Release builds throughout. Each case runs ROUNDS times (default 3),
# alternating C and Rust; the best round of each counts, and the per-round ratios are printed.
# Usage: ./benches/c/run.sh     (BENCH_SECONDS per case, default 3; ROUNDS, default 3)
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)
secs=${BENCH_SECONDS:-3}
rounds=${ROUNDS:-3}
out="$root/target/c-bench"
mkdir -p "$out"

cargo build --release --quiet -p plexus-ffi -p plexus-peer
cargo build --release --quiet -p plexus-ffi --example bench_client
cc -std=c11 -O2 -Wall -Wextra -Wpedantic -Werror -Iinclude benches/c/bench_unary.c \
    -o "$out/bench_unary" -L"$root/target/release" -lplexus -Wl,-rpath,"$root/target/release"

rm -f "$out/peer.log"
"$root/target/release/plexus-peer" server --listen 127.0.0.1:0 >"$out/peer.log" 2>&1 &
peer=$!
trap 'kill "$peer" 2>/dev/null || true' EXIT
for _ in $(seq 1 300); do
    grep -qs LISTENING "$out/peer.log" && break
    sleep 0.1
done
target="127.0.0.1:$(awk '/LISTENING/ {print $2}' "$out/peer.log")"
rust="$root/target/release/examples/bench_client"
c="$out/bench_unary"

field() { sed -E "s/.*$1=([0-9.]+).*/\1/"; }
best_max() { sort -g | tail -1; }
best_min() { sort -g | head -1; }

c_tp=() rust_tp=() c_p50=() rust_p50=()
for round in $(seq 1 "$rounds"); do
    line=$("$c" "$target" throughput 64 "$secs"); echo "round $round: $line"
    c_tp+=("$(field calls_per_sec <<<"$line")")
    line=$("$rust" "$target" throughput 64 "$secs"); echo "round $round: $line"
    rust_tp+=("$(field calls_per_sec <<<"$line")")
    line=$("$c" "$target" latency "$secs"); echo "round $round: $line"
    c_p50+=("$(field p50_us <<<"$line")")
    line=$("$rust" "$target" latency "$secs"); echo "round $round: $line"
    rust_p50+=("$(field p50_us <<<"$line")")
done
ctp=$(printf '%s\n' "${c_tp[@]}" | best_max)
rtp=$(printf '%s\n' "${rust_tp[@]}" | best_max)
cp50=$(printf '%s\n' "${c_p50[@]}" | best_min)
rp50=$(printf '%s\n' "${rust_p50[@]}" | best_min)
echo
echo "unary, 64 in flight:  C through the ABI ${ctp} calls/s, Rust ${rtp} calls/s," \
    "C/Rust = $(awk -v a="$ctp" -v b="$rtp" 'BEGIN { printf "%.2f", a / b }')"
echo "unary, 1 in flight:   C p50 ${cp50} us, Rust p50 ${rp50} us," \
    "C speed relative to Rust (Rust p50 / C p50) = $(awk -v a="$cp50" -v b="$rp50" 'BEGIN { printf "%.2f", b / a }')"
# Per-round ratios too: on a shared machine the spread between rounds says how far to trust
# the best-of figures above.
tp_ratios=$(for i in "${!c_tp[@]}"; do awk -v a="${c_tp[$i]}" -v b="${rust_tp[$i]}" 'BEGIN { printf "%.2f ", a / b }'; done)
lat_ratios=$(for i in "${!c_p50[@]}"; do awk -v a="${c_p50[$i]}" -v b="${rust_p50[$i]}" 'BEGIN { printf "%.2f ", b / a }'; done)
echo "per round, 64 in flight C/Rust: $tp_ratios"
echo "per round, 1 in flight Rust p50 / C p50: $lat_ratios"
echo "(target: at least 0.90 on both)"
