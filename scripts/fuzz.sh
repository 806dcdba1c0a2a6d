#!/usr/bin/env bash
# Coverage-guided fuzzing (libFuzzer, through libfuzzer-sys) of every parser
# that takes outside input. Builds fuzz/ with the coverage flags cargo-fuzz
# uses (no sanitizer: the workspace forbids `unsafe`, and the stable
# toolchain has none), then runs each target on its committed corpus.
#
#   scripts/fuzz.sh [--seconds N] [--jobs J] [--merge] [TARGET...]
#
# --seconds N  how long each target runs (default 30, as CI does)
# --jobs J     how many targets run at once (default: the number of cores)
# --merge      add the new inputs that reach new coverage to fuzz/corpus/
# --keep-going run the whole time even after a crash (libFuzzer's fork
#              mode), collecting every crashing input; still fails at the end
#
# A crash, time-out or out-of-memory fails the script; the input is kept in
# fuzz/artifacts/TARGET/ and the log in fuzz/artifacts/TARGET.log. Turn it
# into a regression test in the crate the parser lives in.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=30
jobs=$(nproc)
merge=0
keep_going=()
targets=()
while [ $# -gt 0 ]; do
  case "$1" in
    --seconds) seconds="$2"; shift 2 ;;
    --jobs) jobs="$2"; shift 2 ;;
    --merge) merge=1; shift ;;
    --keep-going)
      keep_going=(-fork=1 -ignore_crashes=1 -ignore_timeouts=1 -ignore_ooms=1)
      shift ;;
    -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
    -*) echo "fuzz.sh: unknown option $1" >&2; exit 2 ;;
    *) targets+=("$1"); shift ;;
  esac
done
all=$(sed -n 's/^name = "\(.*\)"$/\1/p' fuzz/Cargo.toml | grep -v '^quench-fuzz$')
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets <<<"$all"
fi
for t in "${targets[@]}"; do
  grep -qx "$t" <<<"$all" || { echo "fuzz.sh: no target $t (have: $(echo $all))" >&2; exit 2; }
done

triple=$(rustc -vV | sed -n 's/^host: //p')
# The fuzz build's own target directory, outside the clone so that a new
# clone reuses the dependencies (they change far less often than quench).
export CARGO_TARGET_DIR="${QUENCH_FUZZ_TARGET_DIR:-/var/cache/quench/fuzz-target}"
mkdir -p "$CARGO_TARGET_DIR" 2>/dev/null || export CARGO_TARGET_DIR="$PWD/fuzz/target"
# What cargo-fuzz passes, minus -Zsanitizer. With --target, the flags reach
# the fuzzed code but not build scripts or proc macros.
export RUSTFLAGS="--cfg fuzzing -Cpasses=sancov-module \
-Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
-Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares \
-Cdebug-assertions -Coverflow-checks"
cargo build --release --manifest-path fuzz/Cargo.toml --target "$triple" \
  $(printf -- '--bin %s ' "${targets[@]}")
bin="$CARGO_TARGET_DIR/$triple/release"

mkdir -p fuzz/artifacts
run_one() {
  local t="$1" work
  work=$(mktemp -d)
  rm -rf "fuzz/artifacts/$t"
  mkdir -p "fuzz/corpus/$t" "fuzz/artifacts/$t"
  # New inputs go to a scratch directory; the committed corpus is read only.
  if "$bin/$t" "$work" "fuzz/corpus/$t" -max_total_time="$seconds" \
      -rss_limit_mb=2048 -timeout=10 -max_len=65536 -print_final_stats=1 \
      -artifact_prefix="fuzz/artifacts/$t/" "${keep_going[@]}" \
      >"fuzz/artifacts/$t.log" 2>&1; then
    status=ok
  else
    status=FAILED
  fi
  local found
  found=$(find "fuzz/artifacts/$t" -type f \( -name 'crash-*' -o -name 'timeout-*' -o -name 'oom-*' \) | wc -l)
  [ "$found" = 0 ] || status=FAILED
  if [ "$merge" = 1 ]; then
    "$bin/$t" -merge=1 "fuzz/corpus/$t" "$work" >>"fuzz/artifacts/$t.log" 2>&1 || true
  fi
  rm -rf "$work"
  local runs cov
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "fuzz/artifacts/$t.log" | tail -1)
  # Fork mode prints no final stats; its last status line has the count.
  [ -n "$runs" ] || runs=$(sed -n 's/^#\([0-9]*\):.*/\1/p' "fuzz/artifacts/$t.log" | tail -1)
  cov=$(grep -o 'cov: [0-9]*' "fuzz/artifacts/$t.log" | tail -1)
  printf '%-14s %-6s %10s runs in %ss, %s, corpus %s files, %s findings\n' "$t" "$status" \
    "${runs:-?}" "$seconds" "${cov:-cov: ?}" "$(find "fuzz/corpus/$t" -type f | wc -l)" "$found"
  [ "$status" = ok ] || { tail -30 "fuzz/artifacts/$t.log" >&2; return 1; }
}

failed=0
running=0
for t in "${targets[@]}"; do
  run_one "$t" &
  running=$((running + 1))
  if [ "$running" -ge "$jobs" ]; then
    wait -n || failed=1
    running=$((running - 1))
  fi
done
while [ "$running" -gt 0 ]; do
  wait -n || failed=1
  running=$((running - 1))
done
[ "$failed" = 0 ] || { echo "fuzz.sh: a target failed; inputs in fuzz/artifacts/" >&2; exit 1; }
