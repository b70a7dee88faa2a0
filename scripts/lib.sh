# Shared by scripts/test.sh and scripts/demo.sh.

# Installs Debian/Ubuntu packages (apt-get update first, as on a fresh machine).
install_packages() {
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$@"
}

# influxd (server) and influx (CLI) from the distribution's InfluxDB 1.x packages.
ensure_influxdb() {
  local missing=()
  command -v influxd >/dev/null 2>&1 || missing+=(influxdb)
  command -v influx >/dev/null 2>&1 || missing+=(influxdb-client)
  if [ "${#missing[@]}" -gt 0 ]; then
    echo "installing ${missing[*]}"
    install_packages "${missing[@]}"
  fi
}

# redis-server for the config-from-Redis tests, from the distribution's package.
ensure_redis() {
  if ! command -v redis-server >/dev/null 2>&1; then
    echo "installing redis-server"
    install_packages redis-server
  fi
}

# Starts influxd in the background with its data under $work/NAME; appends its pid to pids.
start_influxd() { # name http-port rpc-port
  local dir="$work/$1"
  mkdir -p "$dir"
  cat >"$dir/influxd.conf" <<CONF
reporting-disabled = true
bind-address = "127.0.0.1:$3"
[meta]
  dir = "$dir/meta"
[data]
  dir = "$dir/data"
  wal-dir = "$dir/wal"
  query-log-enabled = false
[monitor]
  store-enabled = false
[http]
  bind-address = "127.0.0.1:$2"
  log-enabled = false
CONF
  influxd -config "$dir/influxd.conf" >"$dir/influxd.log" 2>&1 &
  pids+=($!)
}

# Waits until /ping on 127.0.0.1:PORT answers 204.
wait_ping() { # port what
  for _ in $(seq 1 300); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$1/ping")" = 204 ] && return 0
    sleep 0.1
  done
  echo "$2 did not answer /ping on port $1" >&2
  exit 1
}


# The `influxdb` Python client, for the client tests: pip where it works
# (pyenv, venv), else the distribution's package for the system python.
ensure_python_influxdb() {
  python3 -c 'import influxdb' 2>/dev/null && return 0
  echo "installing the influxdb Python client"
  python3 -m pip install -q influxdb 2>/dev/null ||
    python3 -m pip install -q --break-system-packages influxdb 2>/dev/null ||
    install_packages python3-influxdb
  python3 -c 'import influxdb'
}

# A temporary directory in $work, and a cleanup on exit that stops every
# process whose pid was appended to $pids and removes the directory.
start_work_dir() { # name
  work=$(mktemp -d "/tmp/$1.XXXXXX")
  pids=()
  trap cleanup_work_dir EXIT
}

cleanup_work_dir() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}

# A loopback port that was free a moment ago.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# utime + stime of a process, in seconds.
cpu_seconds() { awk -v hz="$(getconf CLK_TCK)" '{ printf "%.2f", ($14 + $15) / hz }' "/proc/$1/stat"; }
