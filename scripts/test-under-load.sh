#!/usr/bin/env bash
# Runs the test command (./scripts/test.sh, arguments passed through) with three `yes > /dev/null`
# processes busy beside it, as on a CI machine shared with other jobs: no test may depend on
# timing, and a test that fails here is wrong. The busy processes are killed on exit, however
# the run ends. Exits with the test command's status.
# Usage: ./scripts/test-under-load.sh [args for test.sh]
set -uo pipefail
cd "$(dirname "$0")/.."

hogs=()
stop_hogs() {
    if ((${#hogs[@]})); then
        kill "${hogs[@]}" 2>/dev/null
        wait "${hogs[@]}" 2>/dev/null
    fi
    hogs=()
}
trap stop_hogs EXIT
trap 'exit 130' INT
trap 'exit 143' TERM HUP

for _ in 1 2 3; do
    yes >/dev/null &
    hogs+=("$!")
done
echo "==> three busy processes beside the tests: ${hogs[*]}"

./scripts/test.sh "$@"
