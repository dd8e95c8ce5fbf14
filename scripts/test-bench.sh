#!/usr/bin/env bash
# Smoke run of the benchmark harness (benches/), so it cannot rot: every available server x
# client pair (plexus on both executors among them) on every case for one 0.15 s round, a
# short run with one CPU hog beside each pair (--load 1) that must leave no hog behind, then
# the memory probe with 20 channels and streams. Debug build and tiny cells: the figures are
# not meaningful and nothing checks them; only that every pair runs and reports.
# Usage: scripts/test-bench.sh       (scripts/test.sh runs it as one step)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
started=$(date +%s)

work=$(mktemp -d -t plexus-bench-smoke.XXXXXX)
trap 'rm -rf "$work"' EXIT

echo "bench smoke: the figures below are not meaningful and are not checked"
# Debug build: the test step has compiled every dependency in that profile already.
benches/run.sh --debug --smoke --out "$work"

# --load 1 on the plexus pairs of one case: the hog starts and dies around every cell.
bench="$root/target/debug/plexus-bench"
"$bench" matrix --root "$root" --python "$root/.venv/bin/python" --smoke --load 1 \
    --cases unary-1 --servers plexus,plexus-smol --clients plexus,plexus-smol --out "$work"
if pgrep -f "^$bench spin" >/dev/null; then
    echo "CPU hogs of the --load run are still running:" >&2
    pgrep -af "^$bench spin" >&2
    exit 1
fi

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
    # Every pair completed calls; in a 0.15 s window of a debug build they may all have
    # ended outside it (a 64-call batch of 4 KiB), so the whole run's count is what counts.
    assert all(r.get("calls_total", 0) > 0 for r in cell["rounds"]), cell
assert {"plexus", "plexus-smol", "tonic"} <= set(results["servers"]), results["servers"]
assert {"plexus", "plexus-smol", "tonic"} <= set(results["clients"]), results["clients"]
assert results["settings"]["load"] == 0
assert len(results["targets"]) == 4
# A smoke run gives no verdicts: its figures are not meaningful.
assert all(t["met"] is None for t in results["targets"]), results["targets"]
assert results["executor_ratios"], "no default-executor / SmolExecutor comparison"
md = (out / "latest.md").read_text()
assert "## Targets" in md and "plexus-smol" in md
assert "not meaningful" in md and "| met |" not in md
svg = (out / "latest.svg").read_text()
assert svg.startswith("<svg") and svg.rstrip().endswith("</svg>")

loaded = json.loads((out / "latest-load1.json").read_text())
assert loaded["settings"]["load"] == 1, loaded["settings"]
assert len(loaded["cells"]) == 4 and not loaded["failures"], loaded["failures"]
assert all(c["median"].get("calls_per_s", 0) > 0 for c in loaded["cells"])
assert "1 CPU hog beside each pair" in (out / "latest-load1.md").read_text()
assert "1 CPU hog beside each pair" in (out / "latest-load1.svg").read_text()
print(f"bench smoke: {len(cells)} cells, servers {results['servers']}, "
      f"clients {results['clients']}, skipped {[s['name'] for s in results['skipped']]}; "
      f"{len(loaded['cells'])} cells with --load 1 (figures not meaningful, not checked)")
PY

for impl in plexus tonic; do
    "$root/target/debug/plexus-bench" memory --impl "$impl" --channels 20 --streams 20
done
# The hedging benchmark runs (a stall of 0.2 s keeps it short; figures not checked).
"$root/target/debug/plexus-bench" hedge --rounds 1 --duration 0.3 --warmup 0.1 --stall-ms 200 --json
echo "bench smoke took $(( $(date +%s) - started )) s"
