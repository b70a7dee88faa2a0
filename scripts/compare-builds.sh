#!/usr/bin/env bash
# Two fluxgate builds side by side: alternating runs of the same load (plain
# 5000-line cpu bodies, ack = "accepted", workers = 2, every point replicated
# to two `loadgen sink` backends), so that the machine's drift hits both
# alike, each build going first in every other round. Prints each run's
# points per fluxgate CPU-second, each build's median, and in how many rounds
# the new one was ahead.
#
#   scripts/compare-builds.sh OLD_FLUXGATE NEW_FLUXGATE [SECONDS] [ROUNDS]
#   GZIP=1 scripts/compare-builds.sh ...    (gzip bodies)
#   HOSTS=100000 scripts/compare-builds.sh ... (series per measurement;
#                                               loadgen's default is 100)
#   SORTED_TAGS=1 scripts/compare-builds.sh ... (tags sorted by key, as
#                                               clients write them)
#
# Build the old one from another checkout, e.g.
#   git worktree add /tmp/old <commit> &&
#   (cd /tmp/old && CARGO_TARGET_DIR=/tmp/old-target cargo build --release --bin fluxgate)
set -euo pipefail
[ $# -ge 2 ] || { sed -n '2,15p' "$0"; exit 2; }
here=$(dirname "$0")
. "$here/lib.sh"
. "$here/capacity-lib.sh"
resolve_builds "$1" "$2"
cd "$here/.."

seconds=${3:-10}
rounds=${4:-3}
build_loadgen

start_work_dir fluxgate-compare
start_sinks

# Millions of points per CPU-second, from a loadgen report and CPU readings.
points_per_cpu_second() { # json cpu-before cpu-after
  python3 - "$@" <<'PY'
import json, sys
report, before, after = json.loads(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
print(f"{report['points'] / (after - before) / 1e6:.3f}")
PY
}

results=("" "")
for round in $(seq "$rounds"); do
  # Each build goes first in every other round: the first run of a round
  # may fare differently from the second.
  if (( round % 2 )); then order="0 1"; else order="1 0"; fi
  for which in $order; do
    fluxgate=${builds[$which]}
    start_fluxgate "workers = 2" 'ack = "accepted"' ""
    before=$(cpu_seconds "$proxy_pid")
    json=$(load "http://127.0.0.1:$proxy" "${seconds}s" --connections 4 ${GZIP:+--gzip} ${HOSTS:+--hosts "$HOSTS"} ${SORTED_TAGS:+--sorted-tags})
    after=$(cpu_seconds "$proxy_pid")
    stop_fluxgate
    per_cpu=$(points_per_cpu_second "$json" "$before" "$after")
    echo "round $round  $fluxgate  $per_cpu M points per CPU-s"
    results[$which]+="$per_cpu "
  done
done
for which in 0 1; do
  # shellcheck disable=SC2086 # the runs are words on purpose
  python3 - "${builds[$which]}" ${results[$which]} <<'PY'
import statistics, sys
runs = [float(x) for x in sys.argv[2:]]
listed = ", ".join(f"{x:.3f}" for x in runs)
print(f"{sys.argv[1]}: median {statistics.median(runs):.3f} M points per CPU-s ({listed})")
PY
done
# shellcheck disable=SC2086 # the runs are words on purpose
python3 - ${results[0]} -- ${results[1]} <<'PY'
import sys
split = sys.argv.index("--")
old, new = sys.argv[1:split], sys.argv[split + 1:]
ahead = sum(float(n) > float(o) for o, n in zip(old, new))
print(f"new ahead in {ahead} of {len(old)} rounds")
PY
