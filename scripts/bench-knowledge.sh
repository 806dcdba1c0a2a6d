#!/usr/bin/env bash
# The knowledge store at scale against SQLite FTS5 (Python's sqlite3).
# Usage: scripts/bench-knowledge.sh [--incidents N] [--queries N]
set -euo pipefail
cd "$(dirname "$0")/.."
command -v python3 >/dev/null || { echo "python3 is needed for the SQLite FTS5 peer: apt-get install python3" >&2; exit 1; }
cargo build --release -p quench-tests --bin bench-knowledge
exec target/release/bench-knowledge "$@"
