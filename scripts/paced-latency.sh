#!/usr/bin/env bash
# Latency of a write whose body arrives over time, as over a real link: one
# client sends 5000-line cpu bodies in 64 KiB pieces, one piece every
# PACE_US microseconds (200 by default: about 2.6 Gbit/s), and measures the
# time from its last byte to the answer (fluxgate with ack = "accepted"). A
# proxy that ingests lines while a body arrives (fluxgate does: api/early.rs)
# answers sooner here; on loopback at full speed (what capacity.sh measures)
# a body is mostly in the socket before fluxgate reads it, and there is
# little to overlap. tuning.md has the figures.
#
#   scripts/paced-latency.sh [FLUXGATE ...]     (default target/release/fluxgate)
#   ROUNDS=200 PACE_US=200 scripts/paced-latency.sh OLD NEW
#
# With several builds, each is measured twice, alternating.
set -euo pipefail
here=$(dirname "$0")
. "$here/lib.sh"
. "$here/capacity-lib.sh"
[ $# -gt 0 ] || set -- "$here/../target/release/fluxgate"
resolve_builds "$@"
cd "$here/.."

rounds=${ROUNDS:-200}
pace_us=${PACE_US:-200}
build_loadgen

start_work_dir fluxgate-paced
start_sinks

for round in 1 2; do
  for fluxgate in "${builds[@]}"; do
    start_fluxgate "workers = 2" 'ack = "accepted"' ""
    echo -n "round $round  $fluxgate  "
    python3 - "$proxy" "$rounds" "$pace_us" <<'PY'
import socket, statistics, sys, time
port, rounds, pace = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]) / 1e6
lines = []
for i in range(5000):
    tags = ",".join(f"tag{k}=value_{(i * 7 + k) % 97}" for k in range(10))
    fields = ",".join(f"field{k}={(i * 13 + k) % 1000}.{k}{i % 10}" for k in range(10))
    lines.append(f"cpu,{tags} {fields} {1700000000000000000 + i}")
body = ("\n".join(lines) + "\n").encode()
head = f"POST /write?db=paced HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n".encode()
conn = socket.create_connection(("127.0.0.1", port))
conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
waits = []
for _ in range(rounds):
    conn.sendall(head)
    for at in range(0, len(body), 65536):
        conn.sendall(body[at:at + 65536])
        last = time.perf_counter()
        # A busy wait: sleep() is too coarse for a fraction of a millisecond.
        until = last + pace
        while time.perf_counter() < until:
            pass
    answer = conn.recv(4096)
    waits.append((time.perf_counter() - last) * 1000 - pace * 1000)
    assert answer.startswith(b"HTTP/1.1 204"), answer[:200]
waits.sort()
print(f"{len(body) / 1e6:.1f} MB bodies: answer after the last byte "
      f"p50 {statistics.median(waits):.2f} ms, p90 {waits[len(waits) * 9 // 10]:.2f} ms")
PY
    stop_fluxgate
  done
done
