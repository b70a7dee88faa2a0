#!/usr/bin/env bash
# Write throughput, side by side in one run: loadgen into one InfluxDB server
# directly, and into fluxgate replicating to two InfluxDB servers; plain and
# gzip bodies of 5000 `cpu` lines (~386 bytes each).
#
#   scripts/bench-write.sh [SECONDS]     (default 15 s per case)
#
# Everything runs on this machine and on 127.0.0.1: loadgen, fluxgate and the
# InfluxDB servers share the cores, so compare the rows with each other, not
# with figures taken elsewhere.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

seconds=${1:-15}
ensure_influxdb
cargo build --release --locked --bin fluxgate -p loadgen -p fluxgate 2>&1 | tail -1

work=$(mktemp -d /tmp/fluxgate-bench.XXXXXX)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
a=$(free_port); b=$(free_port); proxy=$(free_port)
start_influxd a "$a" "$(free_port)"
start_influxd b "$b" "$(free_port)"
wait_ping "$a" "influxd a"
wait_ping "$b" "influxd b"
cat >"$work/fluxgate.toml" <<CONF
[server]
listen = "127.0.0.1:$proxy"
[[backends]]
name = "a"
url = "http://127.0.0.1:$a"
[[backends]]
name = "b"
url = "http://127.0.0.1:$b"
[routes]
"_default_" = ["a", "b"]
CONF
./target/release/fluxgate --config "$work/fluxgate.toml" >"$work/fluxgate.log" 2>&1 &
pids+=($!)
wait_ping "$proxy" fluxgate
for port in "$a" "$b"; do
  curl -s -o /dev/null -XPOST "http://127.0.0.1:$port/query" --data-urlencode 'q=CREATE DATABASE bench'
done

# utime + stime of a process, in seconds.
cpu_seconds() { awk -v hz="$(getconf CLK_TCK)" '{ printf "%.2f", ($14 + $15) / hz }' "/proc/$1/stat"; }

run() { # label url gzip-flag [pid whose CPU time to report]
  local json cpu_before="" cpu_after=""
  [ -n "${4:-}" ] && cpu_before=$(cpu_seconds "$4")
  json=$(./target/release/loadgen write --url "$2" --db bench --duration "${seconds}s" \
           --batch-size 5000 --connections 4 $3 --json 2>/dev/null)
  [ -n "${4:-}" ] && cpu_after=$(cpu_seconds "$4")
  python3 - "$1" "$json" "$cpu_before" "$cpu_after" <<'PY'
import json, sys
label, report, before, after = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3], sys.argv[4]
cpu = f"{float(after) - float(before):.2f}" if before else "-"
per_cpu = f"{report['points'] / (float(after) - float(before)):,.0f}" if before and float(after) > float(before) else "-"
print(f"| {label} | {report['points_per_s']:,.0f} | {report['latency_ms']['p50']:.1f} | {report['latency_ms']['p99']:.1f} "
      f"| {sum(report['errors'].values())} | {cpu} | {per_cpu} |")
PY
}

fluxgate_pid=${pids[-1]}
echo "| target | points/s | p50 ms | p99 ms | errors | fluxgate CPU s | points per fluxgate CPU s |"
echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"
run "InfluxDB directly, plain" "http://127.0.0.1:$a" ""
run "fluxgate -> 2 InfluxDB replicas, plain" "http://127.0.0.1:$proxy" "" "$fluxgate_pid"
run "InfluxDB directly, gzip" "http://127.0.0.1:$a" "--gzip"
run "fluxgate -> 2 InfluxDB replicas, gzip" "http://127.0.0.1:$proxy" "--gzip" "$fluxgate_pid"
