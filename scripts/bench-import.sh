#!/usr/bin/env bash
# A real history at scale: N incidents (default 1,000,000) as JSON Lines
# imported into a fresh release `quench serve`, timed until searchable;
# then the query mix and the graph walks over HTTP, and the peak RSS.
# Usage: scripts/bench-import.sh [--incidents N] [--queries N]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p quench-engine --bin quench
cargo build --release -p quench-tests --bin bench-import
QUENCH_BIN="$PWD/target/release/quench" exec target/release/bench-import "$@"
