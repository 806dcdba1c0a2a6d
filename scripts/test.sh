#!/usr/bin/env bash
# The one test command (README.md, .ci/run): installs what the tests need,
# starts the Kubernetes control plane (built once per machine and cached),
# then runs every test of the workspace, end-to-end tests included, inside
# the control plane's private network namespace.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-test-deps.sh
# Build everything first, outside the namespace: it has no network.
cargo build -p quench-engine --bin quench
cargo nextest run --workspace --no-run
scripts/k8s-up.sh
trap scripts/k8s-down.sh EXIT
set -a
# shellcheck disable=SC1091
. "${QUENCH_K8S_STATE:-/tmp/quench-k8s}/env"
set +a
# The binary is built: tests use it as it is, instead of each test
# process asking cargo again.
QUENCH_BIN="$(realpath "${CARGO_TARGET_DIR:-target}")/debug/quench"
export QUENCH_BIN
CARGO_NET_OFFLINE=true ip netns exec "$QUENCH_TEST_NETNS" \
  cargo nextest run --workspace --no-fail-fast "$@"
# Every parser that takes outside input, fuzzed for 30 s each on its
# committed corpus (a whole run of the suite only: arguments select tests).
if [ $# -eq 0 ]; then
  scripts/fuzz.sh --seconds "${QUENCH_FUZZ_SECONDS:-30}"
fi
