#!/usr/bin/env bash
# Two fluxgate builds side by side at a fixed request rate: alternating runs
# of the same open-loop load (plain 5000-line cpu bodies, 4 connections,
# ack = "accepted" or $ACK, workers = 2, two `loadgen sink` backends), each round
# also timing the sink directly. Prints loadgen's p50 and p99 per run and
# each build's medians.
#
#   scripts/compare-latency.sh OLD_FLUXGATE NEW_FLUXGATE [SECONDS] [ROUNDS] [RATE]
#   ACK=durable scripts/compare-latency.sh ...
#
# RATE is requests per second (default 160: about half of what this 2-core
# machine sustains; see tuning.md).
set -euo pipefail
[ $# -ge 2 ] || { sed -n '2,12p' "$0"; exit 2; }
here=$(dirname "$0")
. "$here/lib.sh"
. "$here/capacity-lib.sh"
resolve_builds "$1" "$2"
cd "$here/.."

seconds=${3:-12}
rounds=${4:-5}
rate=${5:-160}
build_loadgen

start_work_dir fluxgate-latency
start_sinks

percentiles() { # json
  python3 -c 'import json, sys; r = json.loads(sys.argv[1])["latency_ms"]; print(r["p50"], r["p99"])' "$1"
}

results=("" "" "")
for round in $(seq "$rounds"); do
  read -r p50 p99 < <(percentiles "$(load "http://127.0.0.1:$sink_a" "${seconds}s" --connections 4 --rate "$rate")")
  echo "round $round  sink directly  p50 $p50 ms  p99 $p99 ms"
  results[2]+="$p50,$p99 "
  for which in 0 1; do
    fluxgate=${builds[$which]}
    start_fluxgate "workers = 2" "ack = \"${ACK:-accepted}\"" ""
    read -r p50 p99 < <(percentiles "$(load "http://127.0.0.1:$proxy" "${seconds}s" --connections 4 --rate "$rate")")
    stop_fluxgate
    echo "round $round  $fluxgate  p50 $p50 ms  p99 $p99 ms"
    results[$which]+="$p50,$p99 "
  done
done
for which in 0 1 2; do
  label=${builds[$which]:-sink directly}
  # shellcheck disable=SC2086 # the runs are words on purpose
  python3 - "$label" ${results[$which]} <<'PY'
import statistics, sys
runs = [tuple(map(float, run.split(","))) for run in sys.argv[2:]]
p50 = statistics.median(r[0] for r in runs)
p99 = statistics.median(r[1] for r in runs)
print(f"{sys.argv[1]}: median p50 {p50:.2f} ms, median p99 {p99:.2f} ms over {len(runs)} runs")
PY
done
