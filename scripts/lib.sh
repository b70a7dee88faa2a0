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
