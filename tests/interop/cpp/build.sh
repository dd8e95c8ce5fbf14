#!/usr/bin/env bash
# Builds the C++ interop server (tests/interop/cpp/interop_server.cpp, on bindings/cpp/plexus.hpp)
# against target/release/libplexus.so into target/interop-cpp/, after checking its protobuf
# codec (proto_test.cpp). Builds libplexus first. Prints the server's path.
# Usage: tests/interop/cpp/build.sh
set -euo pipefail
cd "$(dirname "$0")/../../.."
root=$(pwd)
out="$root/target/interop-cpp"
mkdir -p "$out"
cargo build --release --quiet -p plexus-ffi
flags=(-std=c++17 -O2 -Wall -Wextra -Wpedantic -Werror -Iinclude -Ibindings/cpp -Itests/interop/cpp)
c++ "${flags[@]}" tests/interop/cpp/proto_test.cpp -o "$out/proto_test"
"$out/proto_test" >&2
c++ "${flags[@]}" tests/interop/cpp/interop_server.cpp -o "$out/interop_server" \
    -L"$root/target/release" -lplexus -Wl,-rpath,"$root/target/release" -pthread
echo "$out/interop_server"
