#!/usr/bin/env bash
# Start to ready and idle memory of `vigil serve --demo` on each backend: the
# time from launch until /v2/health/ready first answers 200 (polled every
# 5 ms), then VmRSS 2 s later, split into its anonymous part (the process's
# own heap and stacks) and its file-backed part (the executable's and the
# libraries' code, clean pages shared with the page cache; Linux 6.x maps
# them in large folios, so that touching one function counts a whole folio).
# The issue's targets: under 1 s, under 50 MB.
#
#   bash bench/startup.sh        # RUNS=5 by default; the median of the runs
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS="${RUNS:-5}"
source bench/setup.sh

work="$(mktemp -d)"
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
echo "| backend | start to ready (median of $RUNS) | idle RSS (median) | of which anonymous | of which file-backed |"
echo "|---|---|---|---|---|"
for backend in tract onnxruntime; do
  : > "$work/ready"; : > "$work/rss"; : > "$work/anon"; : > "$work/file"
  for run in $(seq 1 "$RUNS"); do
    start=$(date +%s%N)
    "$VIGIL" serve --demo --default-backend "$backend" --addr 127.0.0.1:18100 --grpc-addr 127.0.0.1:18101 \
      --data-dir "$work/data-$backend-$run" 2>/dev/null &
    pid=$!
    until curl -fs -o /dev/null http://127.0.0.1:18100/v2/health/ready; do sleep 0.005; done
    echo $(( ($(date +%s%N) - start) / 1000000 )) >> "$work/ready"
    sleep 2
    for field in VmRSS:rss RssAnon:anon RssFile:file; do
      awk -v f="${field%%:*}:" '$1 == f {print $2}' "/proc/$pid/status" >> "$work/${field##*:}"
    done
    kill "$pid"; wait "$pid" 2>/dev/null || true
  done
  median() { sort -n "$1" | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'; }
  mib() { echo "$(median "$work/$1") / 1024" | bc -l; }
  printf '| %s | %s ms | %.1f MiB | %.1f MiB | %.1f MiB |\n' "$backend" "$(median "$work/ready")" "$(mib rss)" "$(mib anon)" \
    "$(mib file)"
done
