#!/usr/bin/env bash
# plexus behind a real L7 proxy: installs nginx (the Debian package) when it is missing, then
# runs tests/nginx, which starts nginx with a config it writes into a temporary directory
# (grpc_pass to an upstream of two plexus servers, plaintext HTTP/2 on a free loopback port)
# and makes every kind of call through it. Fails when nginx cannot be installed: never skips.
# Usage: ./scripts/test-nginx.sh        (scripts/test.sh runs it as one step)
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=install.sh
source scripts/install.sh

find_nginx() { command -v nginx 2>/dev/null || { [ -x /usr/sbin/nginx ] && echo /usr/sbin/nginx; } || true; }

nginx_bin=$(find_nginx)
if [ -z "$nginx_bin" ]; then
    apt_install "the L7 proxy test" nginx
    nginx_bin=$(find_nginx)
fi
if [ -z "$nginx_bin" ]; then
    echo "FAILED: nginx could not be installed, so the L7-proxy test cannot run" >&2
    exit 1
fi
"$nginx_bin" -v

log=$(mktemp)
trap 'rm -f "$log"' EXIT
PLEXUS_NGINX="$nginx_bin" cargo test -p plexus-nginx --test nginx -- --ignored --nocapture \
    2>&1 | tee "$log"
# The test is #[ignore]d in plain `cargo test`; here it must have run and passed.
grep -q "test result: ok. 1 passed" "$log" || {
    echo "FAILED: the nginx test did not run and pass" >&2
    exit 1
}
