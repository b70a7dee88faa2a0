#!/usr/bin/env bash
# Capacity of fluxgate alone: loadgen -> fluxgate -> two `loadgen sink` null
# backends (every point replicated to both), on this machine, side by side in
# one run. Prints the markdown tables of tuning.md.
#
#   scripts/capacity.sh [SECONDS]      (default 20 s per case; the RSS case runs 60 s)
#
# Everything shares this machine's cores: loadgen, fluxgate and the sinks. The
# figure to compare across machines is points per CPU-second of the fluxgate
# process (utime + stime from /proc/PID/stat over the run), not points/s.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
. scripts/capacity-lib.sh

seconds=${1:-20}
cargo build --release --locked -p fluxgate -p loadgen 2>&1 | tail -1
loadgen=./target/release/loadgen
fluxgate=./target/release/fluxgate

start_work_dir fluxgate-capacity

start_sinks

# One table row: label, then loadgen's report and fluxgate's CPU and peak RSS.
row() { # label json cpu-before cpu-after rss
  python3 - "$@" <<'PY'
import json, sys
label, report, before, after, rss = sys.argv[1], json.loads(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
cpu = after - before
lat = report["latency_ms"]
errors = sum(report["errors"].values())
per_cpu = f"{report['points'] / cpu / 1e6:.2f}" if cpu > 0 else "-"
cpu = f"{cpu:.1f}" if cpu > 0 else "-"
print(f"| {label} | {report['points_per_s'] / 1e6:.2f} | {per_cpu} | {cpu} | "
      f"{lat['p50']:.2f} | {lat['p99']:.2f} | {rss} | {errors} |")
PY
}

# Points per CPU-second of a run, in millions.
per_cpu() { # json cpu-before cpu-after
  python3 -c 'import json, sys; print(json.loads(sys.argv[1])["points"] / (float(sys.argv[3]) - float(sys.argv[2])) / 1e6)' "$@"
}

measure() { # label server-settings write-settings backend-settings loadgen-args...
  local label=$1 server=$2 write=$3 backend=$4
  shift 4
  start_fluxgate "$server" "$write" "$backend"
  local before after json
  before=$(cpu_seconds "$proxy_pid")
  json=$(load "http://127.0.0.1:$proxy" "${seconds}s" "$@")
  after=$(cpu_seconds "$proxy_pid")
  row "$label" "$json" "$before" "$after" "$(peak_rss_mib "$proxy_pid")"
  stop_fluxgate
  last_json=$json
  last_per_cpu=$(per_cpu "$json" "$before" "$after")
}

header() {
  echo
  echo "| case | Mpoints/s | Mpoints per fluxgate CPU-s | fluxgate CPU s | p50 ms | p99 ms | peak RSS MiB | errors |"
  echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
}

echo "machine: $(nproc) cores, $(awk '/model name/ { $1=$2=$3=""; print; exit }' /proc/cpuinfo | xargs), kernel $(uname -r)"
echo "load: loadgen write, 5000-line cpu bodies (~386 B/line), every point replicated to 2 sinks, ${seconds} s per case"
echo "ack mode: durable (the default) unless a row says otherwise"

echo
echo "### Throughput"
header
measure "plain, 4 connections, workers = 2" "workers = 2" "" "" --connections 4
plain_per_cpu=$last_per_cpu
measure "plain, 4 connections, workers = 2, ack = accepted" "workers = 2" 'ack = "accepted"' "" --connections 4
plain_rps=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["requests_per_s"])' "$last_json")
accepted_per_cpu=$last_per_cpu
measure "gzip, 4 connections, workers = 2" "workers = 2" "" "" --connections 4 --gzip
measure "plain, 4 connections, workers = 1" "workers = 1" "" "" --connections 4
measure "gzip, 4 connections, workers = 1" "workers = 1" "" "" --connections 4 --gzip
measure "plain, epoll driver, workers = 2" $'workers = 2\ndriver = "epoll"' "" "" --connections 4
measure "plain, gzip to backends, workers = 2" "workers = 2" "" "gzip = true" --connections 4
echo
echo "### The floor: a server that only reads (plain, loadgen floor, one monoio worker)"
echo
echo "| case | Mpoints/s | Mpoints per reader CPU-s | reader CPU s | p50 ms | p99 ms | peak RSS MiB | errors |"
echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
start_floor
before=$(cpu_seconds "$floor_pid")
json=$(load "http://127.0.0.1:$floor" "${seconds}s" --connections 4)
after=$(cpu_seconds "$floor_pid")
row "bodies read and dropped, 4 connections" "$json" "$before" "$after" "$(peak_rss_mib "$floor_pid")"
stop_pid "$floor_pid"
python3 - "$(per_cpu "$json" "$before" "$after")" "$plain_per_cpu" "$accepted_per_cpu" <<'PY'
import sys
floor, durable, accepted = map(float, sys.argv[1:])
print(f"\nfluxgate's points per CPU-second as a share of the floor's: {durable / floor:.1%} "
      f"(durable), {accepted / floor:.1%} (accepted)")
PY

echo
echo "### Batch size (plain, workers = 2)"
header
for bytes in 256KiB 1MiB 4MiB; do
  measure "max_batch_bytes = $bytes" "workers = 2" "max_batch_bytes = \"$bytes\"" "" --connections 4
done

echo
echo "### Latency at half the sustained rate (plain, workers = 2, open loop, ack = accepted and durable)"
half=$(python3 -c "print(max(1, round($plain_rps / 2)))")
direct=$(load "http://127.0.0.1:$sink_a" "${seconds}s" --connections 4 --rate "$half")
header
row "sink directly at $half req/s" "$direct" 0 0 "-"
measure "through fluxgate at $half req/s, accepted" "workers = 2" 'ack = "accepted"' "" --connections 4 --rate "$half"
measure "through fluxgate at $half req/s, durable" "workers = 2" "" "" --connections 4 --rate "$half"

echo
echo "### One worker (plain, workers = 1): the worker thread's own CPU"
echo
echo "| case | Mpoints/s | worker CPU s | Mpoints per worker CPU-s | fluxgate CPU s |"
echo "| --- | ---: | ---: | ---: | ---: |"
for ack in durable accepted; do
  start_fluxgate "workers = 1" "ack = \"$ack\"" ""
  before=$(cpu_seconds "$proxy_pid"); worker_before=$(thread_cpu_seconds "$proxy_pid" fluxgate-worke)
  json=$(load "http://127.0.0.1:$proxy" "${seconds}s" --connections 4)
  after=$(cpu_seconds "$proxy_pid"); worker_after=$(thread_cpu_seconds "$proxy_pid" fluxgate-worke)
  stop_fluxgate
  python3 - "$ack" "$json" "$before" "$after" "$worker_before" "$worker_after" <<'PY'
import json, sys
ack, report = sys.argv[1], json.loads(sys.argv[2])
cpu, worker = (float(sys.argv[4]) - float(sys.argv[3])), (float(sys.argv[6]) - float(sys.argv[5]))
per_worker = f"{report['points'] / worker / 1e6:.2f}" if worker > 0 else "-"
print(f"| ack = {ack} | {report['points_per_s'] / 1e6:.2f} | {worker:.1f} | "
      f"{per_worker} | {cpu:.1f} |")
PY
done

echo
echo "### Resident memory through a 60 s full-speed run (plain, workers = 2)"
header
saved=$seconds; seconds=60
measure "60 s full speed" "workers = 2" "" "" --connections 4
seconds=$saved
