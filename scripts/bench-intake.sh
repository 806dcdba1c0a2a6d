#!/usr/bin/env bash
# Durable ingest benchmark: quench vs Alertmanager, same machine, same run.
# Usage: scripts/bench-intake.sh [--seconds N] [--quick] [--cell 1x8] [--repeat N]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-test-deps.sh
cargo build --release -p quench-engine --bin quench -p quench-tests --bin bench-intake
exec target/release/bench-intake "$@"
