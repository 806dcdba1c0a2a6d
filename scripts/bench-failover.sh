#!/usr/bin/env bash
# Failovers under a steady alert stream (two release replicas, one Lease on
# the test control plane, which this script starts and stops): time to a
# new leader, alerts acknowledged and lost, sync-mode intake against one
# replica. Usage: scripts/bench-failover.sh [--runs N] [--lease S] [--seconds S]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p quench-engine --bin quench -p quench-tests --bin bench-failover
scripts/k8s-up.sh
trap scripts/k8s-down.sh EXIT
set -a
. "${QUENCH_K8S_STATE:-/tmp/quench-k8s}/env"
set +a
QUENCH_BIN="$(realpath "${CARGO_TARGET_DIR:-target}")/release/quench"
export QUENCH_BIN
ip netns exec "$QUENCH_TEST_NETNS" target/release/bench-failover "$@"
