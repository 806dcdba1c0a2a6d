#!/usr/bin/env bash
# quench pprof top against go tool pprof -top on the same profiles.
# Usage: scripts/bench-pprof.sh [--runs N]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-test-deps.sh
cargo build --release -p quench-engine --bin quench -p quench-tests --bin bench-pprof
exec target/release/bench-pprof "$@"
