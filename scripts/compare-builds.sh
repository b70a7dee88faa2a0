#!/usr/bin/env bash
# Two fluxgate builds side by side: alternating runs of the same load (plain
# 5000-line cpu bodies, ack = "accepted", workers = 2, every point replicated
# to two `loadgen sink` backends), so that the machine's drift hits both
# alike, each build going first in every other round. Prints each run's
# points per fluxgate CPU-second and the writer threads' CPU-seconds per
# million points, each build's medians, and in how many rounds the new one
# was ahead.
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

# Millions of points per CPU-second and the writers' CPU-seconds per million
# points, from a loadgen report and CPU readings.
per_cpu_second() { # json cpu-before cpu-after writers-before writers-after
  python3 - "$@" <<'PY'
import json, sys
report = json.loads(sys.argv[1])
before, after, writers_before, writers_after = map(float, sys.argv[2:])
millions = report["points"] / 1e6
print(f"{millions / (after - before):.3f} {(writers_after - writers_before) / millions:.4f}")
PY
}

results=("" "")
writer_results=("" "")
for round in $(seq "$rounds"); do
  # Each build goes first in every other round: the first run of a round
  # may fare differently from the second.
  if (( round % 2 )); then order="0 1"; else order="1 0"; fi
  for which in $order; do
    fluxgate=${builds[$which]}
    start_fluxgate "workers = 2" 'ack = "accepted"' ""
    before=$(cpu_seconds "$proxy_pid"); writers_before=$(thread_cpu_seconds "$proxy_pid" fluxgate-write)
    json=$(load "http://127.0.0.1:$proxy" "${seconds}s" --connections 4 ${GZIP:+--gzip} ${HOSTS:+--hosts "$HOSTS"} ${SORTED_TAGS:+--sorted-tags})
    after=$(cpu_seconds "$proxy_pid"); writers_after=$(thread_cpu_seconds "$proxy_pid" fluxgate-write)
    stop_fluxgate
    read -r per_cpu writers < <(per_cpu_second "$json" "$before" "$after" "$writers_before" "$writers_after")
    echo "round $round  $fluxgate  $per_cpu M points per CPU-s  writers $writers CPU-s per M points"
    results[$which]+="$per_cpu "
    writer_results[$which]+="$writers "
  done
done
for which in 0 1; do
  # shellcheck disable=SC2086 # the runs are words on purpose
  python3 - "${builds[$which]}" ${results[$which]} -- ${writer_results[$which]} <<'PY'
import statistics, sys
split = sys.argv.index("--")
runs, writers = [float(x) for x in sys.argv[2:split]], [float(x) for x in sys.argv[split + 1:]]
listed = ", ".join(f"{x:.3f}" for x in runs)
print(f"{sys.argv[1]}: median {statistics.median(runs):.3f} M points per CPU-s ({listed}); "
      f"writers {statistics.median(writers):.4f} CPU-s per M points")
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
