#!/usr/bin/env bash
# Start to ready and idle memory of `vigil serve --demo` on each backend: the
# time from launch until /v2/health/ready first answers 200 (polled every
# 5 ms), then VmRSS 2 s later. The issue's targets: under 1 s, under 50 MB.
#
#   bash bench/startup.sh        # RUNS=5 by default; the median of the runs
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS="${RUNS:-5}"
source bench/setup.sh

work="$(mktemp -d)"
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
echo "| backend | start to ready (median of $RUNS) | idle RSS (median) |"
echo "|---|---|---|"
for backend in tract onnxruntime; do
  : > "$work/ready"; : > "$work/rss"
  for run in $(seq 1 "$RUNS"); do
    start=$(date +%s%N)
    "$VIGIL" serve --demo --default-backend "$backend" --addr 127.0.0.1:18100 --grpc-addr 127.0.0.1:18101 \
      --data-dir "$work/data-$backend-$run" 2>/dev/null &
    pid=$!
    until curl -fs -o /dev/null http://127.0.0.1:18100/v2/health/ready; do sleep 0.005; done
    echo $(( ($(date +%s%N) - start) / 1000000 )) >> "$work/ready"
    sleep 2
    awk '/^VmRSS:/ {print $2}' "/proc/$pid/status" >> "$work/rss"
    kill "$pid"; wait "$pid" 2>/dev/null || true
  done
  median() { sort -n "$1" | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'; }
  printf '| %s | %s ms | %.1f MiB |\n' "$backend" "$(median "$work/ready")" "$(echo "$(median "$work/rss") / 1024" | bc -l)"
done
