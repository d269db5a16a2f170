#!/usr/bin/env bash
# Regenerates docs/results.md and its plots: runs every scenario of the simulator report with
# its seed, keeps each JSON report and SVG plots under docs/results/, and writes the page with
# the papers' figures beside ours. Takes about 35 minutes on a 2-core machine, 27 of them for
# the 1,000,000-node ring.
#
#   scripts/results.sh            # everything
#   scripts/results.sh fig5 churn # only the named scenarios (the page is rebuilt from all
#                                 # reports present)
set -euo pipefail
cd "$(dirname "$0")/.."

out=docs/results
mkdir -p "$out"
cargo build --release -p pastry-sim
sim=target/release/pastry-sim

# name | arguments
scenarios=(
  "main|"
  "fig5|--nodes 100000 --lookups 200000"
  "fig10|--nodes 5000 --fail-fraction 0.1 --fail-at 300 --duration 1500 --lookups 200000"
  "rdp-sphere|--nodes 10000 --settle 3600 --lookups 20000 --ideal"
  "rdp-transit-stub|--nodes 10000 --topology transit-stub --settle 3600 --lookups 20000 --ideal"
  "rdp-sphere-spares|--nodes 10000 --settle 3600 --lookups 20000 --ideal --cell-spares 4"
  "rdp-transit-stub-spares|--nodes 10000 --topology transit-stub --settle 3600 --lookups 20000 --ideal --cell-spares 4"
  "churn60|--nodes 10000 --session-median 3600 --duration 7200 --lookup-rate 0.01 --settle 300"
  "churn10|--nodes 10000 --session-median 600 --duration 7200 --lookup-rate 0.01 --settle 300"
  "loss5|--nodes 2000 --loss 0.05 --lookups 20000"
  "scale1m|--nodes 1000000 --lookups 200000 --settle 10"
)

want=("$@")
selected() {
  [ ${#want[@]} -eq 0 ] && return 0
  for w in "${want[@]}"; do [ "$w" = "$1" ] && return 0; done
  return 1
}

for entry in "${scenarios[@]}"; do
  name=${entry%%|*}
  args=${entry#*|}
  selected "$name" || continue
  echo "==> $name: pastry-sim $args" >&2
  mkdir -p "$out/$name"
  # shellcheck disable=SC2086
  "$sim" $args --json "$out/$name/report.json" --plot "$out/$name" \
    | tee "$out/$name/summary.txt"
  echo "pastry-sim $args" > "$out/$name/command.txt"
  git rev-parse --short HEAD > "$out/$name/commit.txt" 2>/dev/null || true
done

python3 scripts/results_md.py "$out" > docs/results.md
echo "wrote docs/results.md" >&2
