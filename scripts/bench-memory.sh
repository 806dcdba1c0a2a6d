#!/usr/bin/env bash
# Memory of a server with a large history: imports N synthetic incidents
# (default 100,000) into a fresh `quench serve` with its default settings,
# waits until the search index holds them all, runs a query mix, and
# prints the server's RSS and its peak (VmHWM). Target: under 200 MB.
#   scripts/bench-memory.sh [INCIDENTS]
set -euo pipefail
cd "$(dirname "$0")/.."
n="${1:-100000}"
cargo build --release -q -p quench-engine --bin quench
bin="$(realpath "${CARGO_TARGET_DIR:-target}")/release/quench"
work="$(mktemp -d)"
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$work"' EXIT
mkdir -p "$work/runbooks"
port=$((20000 + RANDOM % 20000))
"$bin" serve ${QUENCH_BENCH_CONFIG:+--config "$QUENCH_BENCH_CONFIG"} --listen "127.0.0.1:$port" --data "$work/data" --runbooks "$work/runbooks" \
  >"$work/stdout" 2>"$work/log" &
pid=$!
for _ in $(seq 100); do grep -q listening "$work/stdout" 2>/dev/null && break; sleep 0.1; done
export QUENCH_SERVER="http://127.0.0.1:$port"
python3 - "$n" "$work" <<'EOF'
import json, random, sys
n, work = int(sys.argv[1]), sys.argv[2]
rng = random.Random(42)
services = [f"svc-{i}" for i in range(200)]
words = "redis failover latency timeout dns memory leak goroutine pool exhausted cpu throttled disk full certificate expired deploy rollback kafka lag consumer".split()
per = 2000
for f in range(0, n, per):
    incidents = []
    for i in range(f, min(n, f + per)):
        svc = rng.choice(services)
        w = rng.sample(words, 4)
        day = 1 + i % 28
        incidents.append({
            "id": f"H-{i}", "title": f"{w[0]} {w[1]} on {svc}", "service": svc,
            "severity": rng.choice(["critical", "warning"]), "status": "resolved",
            "first_alert_at": f"2026-0{1 + i % 9}-{day:02d}T10:00:00Z",
            "opened_at": f"2026-0{1 + i % 9}-{day:02d}T10:01:00Z",
            "resolved_at": f"2026-0{1 + i % 9}-{day:02d}T10:40:00Z",
            "root_cause": f"{w[2]} after {w[3]}", "resolution": f"fixed {w[2]}",
            "tags": [w[0], w[1]],
        })
    with open(f"{work}/part{f // per:04d}.json", "w") as out:
        json.dump({"version": 1, "incidents": incidents}, out)
EOF
start=$(date +%s.%N)
for f in "$work"/part*.json; do "$bin" import "$f" >/dev/null; done
imported=$(date +%s.%N)
rss_imported=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")
# Wait until the index holds every incident.
for _ in $(seq 600); do
  docs=$(curl -s "$QUENCH_SERVER/readyz" | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["index_docs"] if d["index_lag_changes"] == 0 else -1)')
  [ "$docs" -ge "$n" ] && break
  sleep 0.5
done
indexed=$(date +%s.%N)
rss_indexed=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")
python3 - "$QUENCH_SERVER" <<'EOF'
import sys, time, urllib.parse, urllib.request
base = sys.argv[1]
qs = ["redis failover", "service:svc-7 latency", "dns*", '"pool exhausted"', "tag:kafka status:resolved", "memory leak goroutine"]
t = time.time(); n = 0
while n < 300:
    for q in qs:
        urllib.request.urlopen(f"{base}/api/v1/search?q={urllib.parse.quote(q)}&limit=20").read(); n += 1
for i in range(1, 200):
    urllib.request.urlopen(f"{base}/api/v1/incidents/inc-{i * 400}").read()
urllib.request.urlopen(f"{base}/api/v1/incidents?limit=1000").read()
print(f"queries: {n} searches, 199 incident reads, one listing of 1000 in {time.time() - t:.1f} s")
EOF
rss=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")
hwm=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status")
anon=$(awk '/RssAnon/ {print $2}' "/proc/$pid/status")
file=$(awk '/RssFile/ {print $2}' "/proc/$pid/status")
awk -v n="$n" -v a="$start" -v b="$imported" -v c="$indexed" \
  'BEGIN { printf "incidents: %d imported in %.1f s, all searchable after %.1f s\n", n, b - a, c - a }'
printf 'server RSS after the import: %d MB; once indexed: %d MB\n' $((rss_imported / 1024)) $((rss_indexed / 1024))
printf 'server RSS after the queries: %d MB (%d MB anonymous, %d MB mapped files: the index), peak (VmHWM) %d MB; target: under 200 MB\n' \
  $((rss / 1024)) $((anon / 1024)) $((file / 1024)) $((hwm / 1024))
