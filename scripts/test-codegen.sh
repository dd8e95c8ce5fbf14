#!/usr/bin/env bash
# A user crate outside the workspace (tests/codegen-user: plexus and plexus-build only) builds
# from a clean target dir with no protoc anywhere on PATH and PROTOC unset, and its generated
# server and client talk. Prints the build time: plexus-build and plexus from scratch, debug.
# Usage: scripts/test-codegen.sh       (scripts/test.sh runs it as one step)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
crate="$root/tests/codegen-user"
manifest="$crate/Cargo.toml"

# A fresh target dir under target/ (same disk as the other builds), removed afterwards.
mkdir -p "$root/target"
work=$(mktemp -d "$root/target/codegen-user.XXXXXX")
trap 'rm -rf "$work"' EXIT

# PATH without protoc: every directory holding one is left out. Such a directory may also hold
# tools the build needs (apt's protoc sits in /usr/bin beside cc and ld), so it is replaced by a
# directory of links to everything in it but protoc.
clean_path=""
shadows=0
IFS=: read -ra dirs <<<"$PATH"
for dir in "${dirs[@]}"; do
    # Empty and relative entries name the working directory: not needed, not trusted.
    [[ "$dir" == /* && -d "$dir" ]] || continue
    if [ -e "$dir/protoc" ]; then
        shadows=$((shadows + 1))
        shadow="$work/path-$shadows"
        mkdir "$shadow"
        find "$dir" -mindepth 1 -maxdepth 1 ! -name protoc -exec ln -s -t "$shadow" {} +
        echo "PATH: $dir holds a protoc; using $shadow (everything else in $dir, linked)"
        dir="$shadow"
    fi
    clean_path="${clean_path:+$clean_path:}$dir"
done
if found=$(env -u PROTOC PATH="$clean_path" bash -c 'command -v protoc'); then
    echo "protoc is still on the cleaned PATH at $found: the test would prove nothing" >&2
    exit 1
fi

# The environment of every cargo run below: no protoc, no PROTOC, the fresh target dir.
run() {
    env -u PROTOC -u PROTOC_INCLUDE PATH="$clean_path" CARGO_TARGET_DIR="$work/target" \
        CARGO_INCREMENTAL=0 "$@"
}

cargo fmt --manifest-path "$manifest" -- --check

# The crate's Cargo.lock pins the workspace lock's versions, so the workspace build has
# downloaded them already; fetch fetches only what is missing (nothing, after scripts/test.sh's
# Rust steps), and the timed build then runs offline: it measures compiling, not downloading.
host=$(rustc -vV | sed -n 's/^host: //p')
run cargo fetch --locked --quiet --manifest-path "$manifest" --target "$host"

echo "load before the build: $(uptime | sed 's/.*load average/load average/') on $(nproc) cores"
started=$EPOCHREALTIME
# -D warnings: the generated code must compile warning-free in a user's crate as well.
run env RUSTFLAGS="-D warnings" cargo build --locked --offline --quiet --manifest-path "$manifest"
took=$(awk -v s="$started" -v f="$EPOCHREALTIME" 'BEGIN { printf "%.1f", f - s }')
echo "clean debug build of the user crate (plexus-build, plexus and all their dependencies): $took s"
echo "load after the build: $(uptime | sed 's/.*load average/load average/')"

timeout 120 "$work/target/debug/plexus-codegen-user"
