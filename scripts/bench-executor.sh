#!/usr/bin/env bash
# Engine overhead from webhook receipt to the first step's start, at a
# steady rate. Usage: scripts/bench-executor.sh [--seconds N] [--rate N]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p quench-engine --bin quench -p quench-tests --bin bench-executor
exec target/release/bench-executor "$@"
