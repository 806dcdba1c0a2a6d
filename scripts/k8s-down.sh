#!/usr/bin/env bash
# Stops what scripts/k8s-up.sh started and deletes its network namespace.
set -uo pipefail
NS=${QUENCH_NETNS:-quench-test}
STATE=${QUENCH_K8S_STATE:-/tmp/quench-k8s}
if [ -f "$STATE/pids" ]; then
  # Newest first: the node and controllers before the API server and etcd.
  tac "$STATE/pids" | while read -r pid _; do kill "$pid" 2>/dev/null; done
  sleep 1
  tac "$STATE/pids" | while read -r pid _; do kill -9 "$pid" 2>/dev/null; done
  rm -f "$STATE/pids"
fi
# Anything else still inside the namespace (a test's stray child) goes too.
for pid in $(ip netns pids "$NS" 2>/dev/null); do kill -9 "$pid" 2>/dev/null; done
ip netns del "$NS" 2>/dev/null
exit 0
