#!/usr/bin/env bash
# Runs fluxgate in front of two local InfluxDB servers and shows points going
# through it. Installs InfluxDB 1.x from the distribution's packages if needed.
#
#   scripts/demo.sh          run the demo, then stop everything
#   scripts/demo.sh --keep   leave it running until Ctrl-C (try your own clients
#                            on 127.0.0.1:7076)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

keep=false
[ "${1:-}" = "--keep" ] && keep=true

ensure_influxdb
command -v curl >/dev/null 2>&1 || install_packages curl ca-certificates
echo "== building fluxgate (release)"
cargo build --release --locked --bin fluxgate

work=$(mktemp -d /tmp/fluxgate-demo.XXXXXX)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work" /tmp/fluxgate-demo-spool
}
trap cleanup EXIT

# The ports of examples/fluxgate.toml.
for port in 7076 18086 18087 18088 18089; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "port $port is in use; stop what listens there and run again" >&2
    exit 1
  fi
done

echo "== starting InfluxDB a (:18086) and b (:18087)"
start_influxd a 18086 18088
start_influxd b 18087 18089
wait_ping 18086 "influxd a"
wait_ping 18087 "influxd b"
for port in 18086 18087; do
  influx -host 127.0.0.1 -port "$port" -execute 'CREATE DATABASE demo'
done

echo "== starting fluxgate (:7076) with examples/fluxgate.toml"
# A copy, so the hot reload below can change it.
cp examples/fluxgate.toml "$work/fluxgate.toml"
./target/release/fluxgate --config "$work/fluxgate.toml" >"$work/fluxgate.log" 2>&1 &
pids+=($!)
wait_ping 7076 fluxgate
cat "$work/fluxgate.log"

show() { echo "\$ $*"; "$@"; echo; }

echo "== writing through fluxgate"
show curl -s -w '%{http_code}\n' -XPOST 'http://127.0.0.1:7076/write?db=demo&precision=s' \
  --data-binary $'cpu,host=web1 usage=12.5 1700000000\ncpu,host=web2 usage=7.25 1700000000\nmem,host=web1 used=2048i 1700000000'
printf 'disk,host=web1 free=0.42 1700000000\n' | gzip >"$work/body.gz"
show curl -s -w '%{http_code}\n' -XPOST 'http://127.0.0.1:7076/write?db=demo&precision=s' \
  -H 'Content-Encoding: gzip' --data-binary "@$work/body.gz"
echo "A malformed line is refused with InfluxDB's error; the good line beside it is written:"
show curl -s -w '%{http_code}\n' -XPOST 'http://127.0.0.1:7076/write?db=demo&precision=s' \
  --data-binary $'mem,host=web2 used=1024i 1700000000\nmem,host=web3 used= 1700000000'

# Batches leave after flush_interval (100 ms); wait until b has its three points.
for _ in $(seq 1 100); do
  n=$(influx -host 127.0.0.1 -port 18087 -database demo -format csv \
        -execute 'SELECT count(*) FROM mem, disk' 2>/dev/null | grep -c '^[md]' || true)
  [ "$n" -ge 2 ] && break
  sleep 0.1
done

echo "== reading back from each backend directly (cpu routes to a; everything else to a and b)"
for port in 18086 18087; do
  name=a; [ "$port" = 18087 ] && name=b
  echo "-- backend $name (:$port)"
  influx -host 127.0.0.1 -port "$port" -database demo -precision rfc3339 \
    -execute 'SELECT * FROM cpu; SELECT * FROM mem; SELECT * FROM disk'
done
echo "== reading through fluxgate with the influx CLI (SHOW MEASUREMENTS is merged from both backends)"
influx -host 127.0.0.1 -port 7076 -database demo -precision rfc3339 \
  -execute 'SELECT * FROM cpu; SHOW MEASUREMENTS'
echo
echo "== hot reload: route cpu to b instead of a, without a restart"
sed -i 's/^"cpu" = \["a"\]/"cpu" = ["b"]/' "$work/fluxgate.toml"
show curl -s -XPOST http://127.0.0.1:7076/reload
show curl -s -w '%{http_code}\n' -XPOST 'http://127.0.0.1:7076/write?db=demo&precision=s' \
  --data-binary 'cpu,host=web3 usage=3.5 1700000060'
echo "-- backend b (:18087) now has cpu too"
influx -host 127.0.0.1 -port 18087 -database demo -precision rfc3339 -execute 'SELECT * FROM cpu'
echo
echo "== fluxgate status"
./target/release/fluxgate status --url http://127.0.0.1:7076

if $keep; then
  echo "fluxgate is on 127.0.0.1:7076 (logs: $work/fluxgate.log). Ctrl-C stops everything."
  wait
fi
