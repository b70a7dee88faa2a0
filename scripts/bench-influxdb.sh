#!/usr/bin/env bash
# fluxgate against real InfluxDB servers, side by side in one run:
# - write throughput: loadgen into one InfluxDB server directly, and into
#   fluxgate replicating to two InfluxDB servers; plain and gzip bodies of
#   5000 `cpu` lines (~386 bytes each), ack mode durable and accepted;
# - query latency: loadgen query (dashboard-style InfluxQL over the written
#   data) against one InfluxDB server directly and through fluxgate.
#
#   scripts/bench-influxdb.sh [SECONDS]     (default 15 s per case)
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

start_work_dir fluxgate-bench

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
[spool]
dir = "$work/spool"
capacity = "1GiB"
CONF
# The same config with ack = "accepted", on its own port.
proxy_accepted=$(free_port)
sed -e "s/127.0.0.1:$proxy/127.0.0.1:$proxy_accepted/" -e "s|$work/spool|$work/spool-accepted|" \
  "$work/fluxgate.toml" >"$work/fluxgate-accepted.toml"
printf '[write]\nack = "accepted"\n' >>"$work/fluxgate-accepted.toml"
./target/release/fluxgate --config "$work/fluxgate.toml" >"$work/fluxgate.log" 2>&1 &
pids+=($!)
fluxgate_pid=$!
./target/release/fluxgate --config "$work/fluxgate-accepted.toml" >"$work/fluxgate-accepted.log" 2>&1 &
pids+=($!)
accepted_pid=$!
wait_ping "$proxy" fluxgate
wait_ping "$proxy_accepted" "fluxgate (accepted)"
for port in "$a" "$b"; do
  curl -s -o /dev/null -XPOST "http://127.0.0.1:$port/query" --data-urlencode 'q=CREATE DATABASE bench'
done


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

echo "### Writes"
echo
echo "| target | points/s | p50 ms | p99 ms | errors | fluxgate CPU s | points per fluxgate CPU s |"
echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"
run "InfluxDB directly, plain" "http://127.0.0.1:$a" ""
run "fluxgate -> 2 InfluxDB replicas, plain, durable" "http://127.0.0.1:$proxy" "" "$fluxgate_pid"
run "fluxgate -> 2 InfluxDB replicas, plain, accepted" "http://127.0.0.1:$proxy_accepted" "" "$accepted_pid"
run "InfluxDB directly, gzip" "http://127.0.0.1:$a" "--gzip"
run "fluxgate -> 2 InfluxDB replicas, gzip, durable" "http://127.0.0.1:$proxy" "--gzip" "$fluxgate_pid"

query() { # label url
  local json
  json=$(./target/release/loadgen query --url "$2" --db bench --duration "${seconds}s" --connections 2 --json \
           --query "SELECT last(usage_idle) FROM cpu WHERE hostname = 'host_1'" \
           --query "SELECT usage_user, usage_system FROM cpu WHERE hostname = 'host_2' LIMIT 20" \
           --query "SHOW TAG VALUES FROM cpu WITH KEY = region" 2>/dev/null)
  python3 - "$1" "$json" <<'PY'
import json, sys
label, report = sys.argv[1], json.loads(sys.argv[2])
lat = report["latency_ms"]
print(f"| {label} | {report['requests_per_s']:,.0f} | {lat['p50']:.2f} | {lat['p90']:.2f} | {lat['p99']:.2f} | {sum(report['errors'].values())} |")
PY
}
echo
echo "### Queries (light dashboard queries on one series, 2 connections)"
echo
echo "| target | queries/s | p50 ms | p90 ms | p99 ms | errors |"
echo "| --- | ---: | ---: | ---: | ---: | ---: |"
query "InfluxDB directly" "http://127.0.0.1:$a"
query "through fluxgate" "http://127.0.0.1:$proxy"
query "InfluxDB directly (again)" "http://127.0.0.1:$a"
query "through fluxgate (again)" "http://127.0.0.1:$proxy"
