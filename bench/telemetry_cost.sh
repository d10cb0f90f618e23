#!/usr/bin/env bash
# What telemetry costs per request, in instructions (callgrind), on the
# in-process V2 REST path of the demo tabular model: each `telemetry_*` bench
# of crates/vigil-server/benches/infer.rs against `telemetry_off`.
#
#   bash bench/telemetry_cost.sh            # RUNS=3 processes per bench
#
# Per request = (instructions at 3300 requests - at 300) / 3000, which removes
# start-up. Each bench runs in RUNS processes and the median is kept: hash
# seeds differ between processes and move the count by 1-2 %. Instructions
# are repeatable whatever else the machine does, unlike time on a shared
# 2-core box (divan's medians moved by 2x between runs here); note that
# valgrind counts each byte of a `rep movsb` copy as an instruction, so large
# memory copies weigh more here than in time.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS="${RUNS:-3}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/vigil-target}"
command -v valgrind >/dev/null || { echo "needs valgrind (apt install valgrind)"; exit 1; }
cargo bench -p vigil-server --bench infer --no-run --locked 2>/dev/null
BIN="$(ls -t "$CARGO_TARGET_DIR"/release/deps/infer-* | grep -v '\.d$' | head -n 1)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

count() { # bench samples -> instructions
  (cd crates/vigil-server && valgrind --tool=callgrind --callgrind-out-file="$work/out" \
    "$BIN" --bench --sample-count "$2" --sample-size 1 --exact "infer::$1" >/dev/null 2>"$work/err")
  grep -o 'Collected : [0-9]*' "$work/err" | grep -o '[0-9]*$'
}

per_request() { # bench -> median instructions per request over RUNS processes
  local all=()
  for _ in $(seq "$RUNS"); do
    local a b
    a="$(count "$1" 300)"
    b="$(count "$1" 3300)"
    all+=($(((b - a) / 3000)))
  done
  printf '%s\n' "${all[@]}" | sort -n | sed -n "$(((RUNS + 1) / 2))p"
}

base="$(per_request telemetry_off)"
echo "| bench | instructions / request | ratio |"
echo "|---|---|---|"
echo "| telemetry_off | $base | 1.00 |"
for bench in telemetry_metrics telemetry_metrics_and_logs telemetry_metrics_and_full_prediction_log \
  telemetry_all_with_full_prediction_log; do
  n="$(per_request "$bench")"
  awk -v b="$bench" -v n="$n" -v base="$base" 'BEGIN { printf "| %s | %d | %.3f |\n", b, n, n / base }'
done
