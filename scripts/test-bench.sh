#!/usr/bin/env bash
# Smoke run of the benchmark harness (benches/), so it cannot rot: every available server x
# client pair on every case for one 0.15 s round (debug build; the numbers mean nothing), then
# checks the outputs, then the memory probe with 20 channels and streams.
# Usage: scripts/test-bench.sh       (scripts/test.sh runs it as one step)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
started=$(date +%s)

work=$(mktemp -d -t plexus-bench-smoke.XXXXXX)
trap 'rm -rf "$work"' EXIT

# Debug build: the test step has compiled every dependency in that profile already.
benches/run.sh --debug --smoke --out "$work"

"$root/.venv/bin/python" - "$work" <<'PY'
import json, sys
from pathlib import Path

out = Path(sys.argv[1])
results = json.loads((out / "latest.json").read_text())
cells = results["cells"]
want = len(results["cases"]) * len(results["servers"]) * len(results["clients"])
assert len(cells) == want, f"{len(cells)} cells, want {want}"
assert not results["failures"], results["failures"]
for cell in cells:
    m = cell["median"]
    assert m.get("calls_per_s", 0) > 0, cell
    assert m.get("p50_us", 0) > 0, cell
assert {"plexus", "tonic"} <= set(results["servers"]), results["servers"]
assert {"plexus", "tonic"} <= set(results["clients"]), results["clients"]
assert len(results["targets"]) == 4
md = (out / "latest.md").read_text()
assert "## Targets" in md and "plexus" in md
svg = (out / "latest.svg").read_text()
assert svg.startswith("<svg") and svg.rstrip().endswith("</svg>")
print(f"bench smoke: {len(cells)} cells, servers {results['servers']}, "
      f"clients {results['clients']}, skipped {[s['name'] for s in results['skipped']]}")
PY

for impl in plexus tonic; do
    "$root/target/debug/plexus-bench" memory --impl "$impl" --channels 20 --streams 20
done
echo "bench smoke took $(( $(date +%s) - started )) s"
