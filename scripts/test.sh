#!/usr/bin/env bash
# Runs every fluxgate test: formatting, lints, unit and property tests, and the
# integration tests against real InfluxDB servers. Installs InfluxDB 1.x from
# the distribution's packages when it is missing (Debian/Ubuntu).
set -euo pipefail
cd "$(dirname "$0")/.."

. scripts/lib.sh
ensure_influxdb
ensure_redis
ensure_python_influxdb

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# One build of the proxy, then every unit, property and integration test
# against that binary.
cargo test --workspace --locked
