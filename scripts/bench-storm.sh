#!/usr/bin/env bash
# The alert storm: the highest rate quench sustains with one incident per
# alert, then 2 minutes at it while searches, annotations and listings run.
# Usage: scripts/bench-storm.sh [--seconds N] [--rate N] [--probe-seconds N]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p quench-engine --bin quench -p quench-tests --bin bench-storm
QUENCH_BIN="$(realpath "${CARGO_TARGET_DIR:-target}")/release/quench"
export QUENCH_BIN
exec target/release/bench-storm "$@"
