#!/usr/bin/env bash
# kill -9 during alert storms, N times (default 100), on one data directory:
# after each restart every acknowledged alert must be stored, and at the end
# every incident must be in the search index. CI runs 10 cycles as part of
# the test suite; this runs as many as you ask for.
#   scripts/crash-cycles.sh [CYCLES]
set -euo pipefail
cd "$(dirname "$0")/.."
cycles="${1:-100}"
cargo build -q -p quench-engine --bin quench
QUENCH_BIN="$(realpath "${CARGO_TARGET_DIR:-target}")/debug/quench"
export QUENCH_BIN QUENCH_CRASH_CYCLES="$cycles"
# Plain cargo test: nextest's per-test time limit (3 min) is for CI's
# 10 cycles, not for 100.
cargo test -q -p quench-tests --test e2e -- --nocapture \
  storm::kill_9_during_storms_loses_nothing_acknowledged 2>&1 |
  grep -E 'kill -9 cycles|test result|panicked|missing'
