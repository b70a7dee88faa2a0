#!/usr/bin/env bash
# How long fluxgate takes to start on a full spool: fill a 1 GiB spool
# (uncompressed, so it fills quickly) for a backend that is down, stop
# fluxgate, start it again and time its start-up (spool recovery included),
# then bring the backend up and time the replay.
#
#   scripts/spool-recovery.sh [CAPACITY]     (default 1GiB)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

capacity=${1:-1GiB}
cargo build --release --locked -p fluxgate -p loadgen 2>&1 | tail -1
start_work_dir fluxgate-spool-recovery

up=$(free_port); down=$(free_port); proxy=$(free_port)
cat >"$work/fluxgate.toml" <<CONF
[server]
listen = "127.0.0.1:$proxy"
[[backends]]
name = "up"
url = "http://127.0.0.1:$up"
[[backends]]
name = "down"
url = "http://127.0.0.1:$down"
[routes]
"_default_" = ["up", "down"]
[spool]
dir = "$work/spool"
capacity = "$capacity"
compress = false
[write]
ack = "accepted"
queue_timeout = "1s"
CONF
./target/release/loadgen sink --listen "127.0.0.1:$up" >"$work/sink-up.log" 2>&1 &
pids+=($!)
wait_ping "$up" "sink"
./target/release/fluxgate --config "$work/fluxgate.toml" >"$work/fluxgate.log" 2>&1 &
fluxgate_pid=$!
pids+=("$fluxgate_pid")
wait_ping "$proxy" fluxgate

echo "filling the spool of backend 'down' ($capacity)"
fill_started=$(date +%s.%N)
./target/release/loadgen write --url "http://127.0.0.1:$proxy" --db spool --duration 600s \
  --connections 4 --batch-size 5000 --json >"$work/fill.json" 2>/dev/null &
filler=$!
python3 - "$proxy" <<'PY'
import json, sys, time, urllib.request
url = f"http://127.0.0.1:{sys.argv[1]}/status"
while True:
    status = json.load(urllib.request.urlopen(url))
    down = status["backends"][1]
    if down["spool"]["full_total"] > 0:
        print(f"spool full: {down['spool']['bytes'] / 2**20:.0f} MiB in {down['spool']['records']} records, {down['points_spooled']} points")
        break
    time.sleep(0.5)
PY
kill "$filler" 2>/dev/null || true
wait "$filler" 2>/dev/null || true
fill_done=$(date +%s.%N)
python3 -c "print(f'filled in {$fill_done - $fill_started:.1f} s')"
kill "$fluxgate_pid"; wait "$fluxgate_pid" 2>/dev/null || true

start=$(date +%s.%N)
./target/release/fluxgate --config "$work/fluxgate.toml" >"$work/fluxgate2.log" 2>&1 &
fluxgate_pid=$!
pids+=("$fluxgate_pid")
wait_ping "$proxy" fluxgate
ready=$(date +%s.%N)
python3 -c "print(f'start-up with a full spool (recovery included): {$ready - $start:.2f} s')"
grep "spool opened\|spool recovered" "$work/fluxgate2.log" | sed 's/^/  /'

./target/release/loadgen sink --listen "127.0.0.1:$down" >"$work/sink-down.log" 2>&1 &
pids+=($!)
replay_start=$(date +%s.%N)
python3 - "$proxy" <<'PY'
import json, sys, time, urllib.request
url = f"http://127.0.0.1:{sys.argv[1]}/status"
while True:
    down = json.load(urllib.request.urlopen(url))["backends"][1]
    if down["spool"]["records"] == 0 and down["points_replayed"] > 0:
        print(f"replayed {down['points_replayed']} points")
        break
    time.sleep(0.2)
PY
replay_done=$(date +%s.%N)
python3 -c "print(f'replay of the full spool: {$replay_done - $replay_start:.1f} s')"
