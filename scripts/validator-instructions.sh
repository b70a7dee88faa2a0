#!/usr/bin/env bash
# Instructions per line spent scanning and validating the classic 386-byte
# `cpu` lines (tags in the data set's order, sorted by key, or with escapes),
# and ingesting them whole (routed and copied into batches), at
# the end of a body or mostly while it arrives; counted by callgrind: unlike
# timings, the count does not depend on what else the machine is doing, so
# two builds compare exactly.
#
#   scripts/validator-instructions.sh
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

command -v valgrind >/dev/null 2>&1 || install_packages valgrind
cargo bench --locked --bench validate_instructions --no-run 2>&1 | tail -1
bin=$(ls -t target/release/deps/validate_instructions-* | grep -v '\.d$' | head -1)

instructions() { # kind rounds
  valgrind --tool=callgrind --callgrind-out-file=/dev/null "$bin" "$1" "$2" 2>&1 |
    awk '/Collected/ { print $4 }'
}

for kind in plain sorted escaped ingest early-ingest; do
  # Two runs that differ by one round of 5000 lines: the difference is the
  # cost of those lines alone, without start-up and body generation.
  one=$(instructions "$kind" 1)
  three=$(instructions "$kind" 3)
  echo "$kind: $(( (three - one) / 10000 )) instructions per line"
done
