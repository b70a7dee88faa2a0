# Shared by the capacity scripts: two `loadgen sink` null backends, a fluxgate
# in front of them, and loadgen runs against it. Source after scripts/lib.sh;
# call start_work_dir before start_sinks. Needs $loadgen and $fluxgate (paths
# of the binaries).

# Starts the two sinks; sets $sink_a and $sink_b.
start_sinks() {
  sink_a=$(free_port); sink_b=$(free_port)
  "$loadgen" sink --listen "127.0.0.1:$sink_a" --listen "127.0.0.1:$sink_b" >"$work/sink.log" 2>&1 &
  pids+=($!)
  wait_ping "$sink_a" "loadgen sink"
  wait_ping "$sink_b" "loadgen sink"
}

# Starts $fluxgate replicating to both sinks, with extra [server]/[write] and
# per-backend settings; sets $proxy and $proxy_pid.
start_fluxgate() { # server-settings write-settings backend-settings
  proxy=$(free_port)
  cat >"$work/fluxgate.toml" <<CONF
[server]
listen = "127.0.0.1:$proxy"
$1
[[backends]]
name = "a"
url = "http://127.0.0.1:$sink_a"
$3
[[backends]]
name = "b"
url = "http://127.0.0.1:$sink_b"
$3
[routes]
"_default_" = ["a", "b"]
[write]
$2
CONF
  "$fluxgate" --config "$work/fluxgate.toml" >"$work/fluxgate.log" 2>&1 &
  proxy_pid=$!
  pids+=("$proxy_pid")
  # wait_ping exits on failure, and the work dir (with the log) goes with it.
  if ! (wait_ping "$proxy" fluxgate); then
    cat "$work/fluxgate.log" >&2
    exit 1
  fi
}

stop_fluxgate() { stop_pid "$proxy_pid"; }

# Starts `loadgen floor` (reads writes and drops them); sets $floor and $floor_pid.
start_floor() {
  floor=$(free_port)
  "$loadgen" floor --listen "127.0.0.1:$floor" >"$work/floor.log" 2>&1 &
  floor_pid=$!
  pids+=("$floor_pid")
  wait_ping "$floor" "loadgen floor"
}

# Stops a process started here and forgets it.
stop_pid() { # pid
  kill "$1"
  wait "$1" 2>/dev/null || true
  # Stopped: cleanup must not signal whatever reuses the pid.
  local kept=() pid
  for pid in "${pids[@]}"; do [ "$pid" = "$1" ] || kept+=("$pid"); done
  pids=("${kept[@]}")
}

# Runs loadgen against $1 with extra args; prints one JSON report.
load() { # url duration args...
  local url=$1 duration=$2
  shift 2
  "$loadgen" write --url "$url" --db capacity --duration "$duration" --batch-size 5000 --json "$@" 2>/dev/null
}

peak_rss_mib() { awk '/VmHWM/ { printf "%.0f", $2 / 1024 }' "/proc/$1/status"; }

# utime + stime of the threads of process $1 whose name starts with $2, in
# seconds (thread names are cut to 15 bytes by the kernel).
thread_cpu_seconds() { # pid name-prefix
  # Threads come and go between the glob and the read: not an error.
  { cat /proc/"$1"/task/*/stat 2>/dev/null || true; } |
    awk -v hz="$(getconf CLK_TCK)" -v name="($2" \
      'index($2, name) == 1 { t += $14 + $15 } END { printf "%.2f", t / hz }'
}

# Builds loadgen (release) and sets $loadgen; run from the repository's root.
build_loadgen() {
  cargo build --release --locked -p loadgen 2>&1 | tail -1
  loadgen=./target/release/loadgen
}

# Sets $builds to the absolute paths of the fluxgate executables named in "$@"
# (relative to where the script was started); call before changing directory.
resolve_builds() {
  builds=()
  for build in "$@"; do
    [ -x "$build" ] || { echo "not an executable: $build" >&2; exit 2; }
    builds+=("$(realpath -e "$build")")
  done
}
