#!/usr/bin/env bash
# The knowledge store at scale against SQLite FTS5 (Python's sqlite3).
# Then triage quality: hit@1 and hit@3 of the root-cause hypotheses on a
# labelled history of 1,000, 10,000 and 100,000 incidents; then a history
# of --import N incidents (default 1,000,000) imported end to end as JSON
# Lines into a release `quench serve` (scripts/bench-import.sh), with the
# query mix and the graph walks over HTTP and the peak RSS.
# Usage: scripts/bench-knowledge.sh [--incidents N] [--queries N] [--import N]
set -euo pipefail
cd "$(dirname "$0")/.."
command -v python3 >/dev/null || { echo "python3 is needed for the SQLite FTS5 peer: apt-get install python3" >&2; exit 1; }
import=1000000
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --import) import="$2"; shift 2 ;;
    *) args+=("$1"); shift ;;
  esac
done
cargo build --release -p quench-tests --bin bench-knowledge --bin bench-triage
target/release/bench-knowledge "${args[@]}"
echo
target/release/bench-triage
echo
scripts/bench-import.sh --incidents "$import"
