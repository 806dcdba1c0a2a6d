#!/usr/bin/env bash
# Matching at scale: 10,000 runbooks loaded from files, then a stream of
# alerts matched through the index and, as the peer, by trying every
# runbook. Target: p99 under 50 us per alert.
#   scripts/bench-match.sh [--runbooks N] [--alerts N]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p quench-tests --bin bench-match
exec target/release/bench-match "$@"
