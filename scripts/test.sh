#!/usr/bin/env bash
# The one test command (README.md, .ci/run): installs what the tests need,
# then runs every test of the workspace, end-to-end tests included.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-test-deps.sh
cargo build -p quench-engine --bin quench
cargo nextest run --workspace --no-fail-fast "$@"
