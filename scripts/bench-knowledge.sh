#!/usr/bin/env bash
# The knowledge store at scale against SQLite FTS5 (Python's sqlite3).
# Then triage quality: hit@1 and hit@3 of the root-cause hypotheses on a
# labelled history of 1,000, 10,000 and 100,000 incidents.
# Usage: scripts/bench-knowledge.sh [--incidents N] [--queries N]
set -euo pipefail
cd "$(dirname "$0")/.."
command -v python3 >/dev/null || { echo "python3 is needed for the SQLite FTS5 peer: apt-get install python3" >&2; exit 1; }
cargo build --release -p quench-tests --bin bench-knowledge --bin bench-triage
target/release/bench-knowledge "$@"
target/release/bench-triage
