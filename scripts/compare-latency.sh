#!/usr/bin/env bash
# Two fluxgate builds side by side at a fixed request rate: alternating runs
# of the same open-loop load (plain 5000-line cpu bodies, 4 connections,
# ack = "accepted" or $ACK, workers = 2, two `loadgen sink` backends), each round
# also timing the sink directly. Prints loadgen's p50 and p99 per run and
# each build's medians, and fluxgate's own (`/debug/latency`: complete head
# to answer ready, without loadgen's share of the machine).
#
#   scripts/compare-latency.sh OLD_FLUXGATE NEW_FLUXGATE [SECONDS] [ROUNDS] [RATE]
#   ACK=durable scripts/compare-latency.sh ...
#   LINK=5gbit scripts/compare-latency.sh ...
#
# RATE is requests per second (default 160: about half of what this 2-core
# machine sustains; see tuning.md). LINK (root only) makes the requests to
# fluxgate and to the sink timed directly cross a link of that rate: a `tc`
# htb class on lo, removed on exit; fluxgate's own traffic to its sinks
# stays unshaped. On loopback a body arrives in a fraction of a millisecond;
# over a real link it takes longer, and what a proxy does meanwhile shows.
set -euo pipefail
[ $# -ge 2 ] || { sed -n '2,19p' "$0"; exit 2; }
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
# The sink timed directly is a third one: with LINK, traffic to it is shaped,
# and fluxgate's traffic to its own sinks must not be.
direct=$(free_port)
"$loadgen" sink --listen "127.0.0.1:$direct" >"$work/direct-sink.log" 2>&1 &
pids+=($!)
wait_ping "$direct" "loadgen sink"

# shape PORT: traffic to 127.0.0.1:PORT crosses the LINK class (no-op without LINK).
shape() { :; }
if [ -n "${LINK:-}" ]; then
  if ! tc qdisc show dev lo | grep -q '^qdisc noqueue'; then
    echo "lo already has a queueing discipline; not touching it" >&2
    exit 1
  fi
  trap 'tc qdisc del dev lo root 2>/dev/null || true; cleanup_work_dir' EXIT
  # Everything else goes through a class far faster than loopback needs.
  tc qdisc add dev lo root handle 1: htb default 10 r2q 100000
  tc class add dev lo parent 1: classid 1:10 htb rate 100gbit
  tc class add dev lo parent 1: classid 1:20 htb rate "$LINK" burst 64k
  shape() {
    tc filter add dev lo protocol ip parent 1: prio 1 u32 match ip dport "$1" 0xffff flowid 1:20
  }
  shape "$direct"
  echo "requests cross a $LINK link"
fi

percentiles() { # json
  python3 -c 'import json, sys; r = json.loads(sys.argv[1])["latency_ms"]; print(r["p50"], r["p99"])' "$1"
}

# fluxgate's own p50 and p99 of its writes, in ms.
own_percentiles() {
  curl -sf "http://127.0.0.1:$proxy/debug/latency" | python3 -c '
import json, sys
w = json.load(sys.stdin)["endpoints"]["write"]
print(w["p50"] / 1000, w["p99"] / 1000)'
}

results=("" "" "")
own=("" "")
for round in $(seq "$rounds"); do
  read -r p50 p99 < <(percentiles "$(load "http://127.0.0.1:$direct" "${seconds}s" --connections 4 --rate "$rate")")
  echo "round $round  sink directly  p50 $p50 ms  p99 $p99 ms"
  results[2]+="$p50,$p99 "
  for which in 0 1; do
    fluxgate=${builds[$which]}
    start_fluxgate "workers = 2" "ack = \"${ACK:-accepted}\"" ""
    shape "$proxy"
    read -r p50 p99 < <(percentiles "$(load "http://127.0.0.1:$proxy" "${seconds}s" --connections 4 --rate "$rate")")
    read -r own_p50 own_p99 < <(own_percentiles)
    stop_fluxgate
    echo "round $round  $fluxgate  p50 $p50 ms  p99 $p99 ms  (its own: p50 $own_p50 ms  p99 $own_p99 ms)"
    results[$which]+="$p50,$p99 "
    own[$which]+="$own_p50,$own_p99 "
  done
done
medians() { # label runs...
  # shellcheck disable=SC2086 # the runs are words on purpose
  python3 - "$@" <<'PY'
import statistics, sys
runs = [tuple(map(float, run.split(","))) for run in sys.argv[2:]]
p50 = statistics.median(r[0] for r in runs)
p99 = statistics.median(r[1] for r in runs)
print(f"{sys.argv[1]}: median p50 {p50:.2f} ms, median p99 {p99:.2f} ms over {len(runs)} runs")
PY
}
for which in 0 1 2; do
  # shellcheck disable=SC2086 # the runs are words on purpose
  medians "${builds[$which]:-sink directly}" ${results[$which]}
done
for which in 0 1; do
  # shellcheck disable=SC2086 # the runs are words on purpose
  medians "${builds[$which]}, its own" ${own[$which]}
done
