#!/usr/bin/env bash
# A/B of Vigil builds on one model over HTTP (the demo's classifier unless
# MODEL and REPOSITORY say otherwise): each binary in turn, ROUNDS times
# (interleaved, so that the machine's drift hits both alike), wrk at 1 and 16
# connections for SECONDS_EACH each. Prints requests/s, p50, p99, the
# server's CPU per request (user + system, from /proc), the load generator's
# (wrk shares the machine's cores), the server's context switches per request
# (all threads, voluntary or not), and with THREADS=1 the server's CPU split
# by thread name.
#
#   bash bench/ab.sh BINARY_A BINARY_B [...]   # BACKEND=onnxruntime ROUNDS=2 SECONDS_EACH=8
#
# Build each variant with `cargo build --release --bin vigil` and copy
# target/release/vigil aside before changing the code for the next one.
set -euo pipefail
cd "$(dirname "$0")/.."
BACKEND="${BACKEND:-onnxruntime}" ROUNDS="${ROUNDS:-2}" SECONDS_EACH="${SECONDS_EACH:-8}"
MODEL="${MODEL:-breast_cancer}" REPOSITORY="${REPOSITORY:-models/demo}" # MODEL=iris_boosting REPOSITORY=models/onnxruntime
command -v wrk >/dev/null || { echo "needs wrk (apt install wrk)"; exit 1; }
[ -x /usr/bin/time ] || { echo "needs GNU time for wrk's CPU (apt install time)"; exit 1; }
VENV="${VIGIL_BENCH_VENV:-$HOME/.cache/vigil-bench-venv}"
ORT_DYLIB_PATH="$(ls "$VENV"/lib/python3*/site-packages/onnxruntime/capi/libonnxruntime.so.* | head -n 1)"
export ORT_DYLIB_PATH
work="$(mktemp -d)"
trap 'kill -9 $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
python3 bench/bodies.py "$work" "$MODEL"
export BENCH_BODY="$work/$MODEL.json"
url=http://127.0.0.1:18100/v2/models/$MODEL/infer
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; } # user + system, in 1/100 s
switches() { cat /proc/"$1"/task/*/status | awk '/ctxt_switches/ {s += $2} END {print s}'; } # all threads
threads() { # CPU ticks by thread name, threads of one name summed
  for t in /proc/"$1"/task/*; do printf '%s %s\n' "$(tr ' ' _ < "$t/comm")" "$(awk '{print $14 + $15}' "$t/stat")"; done |
    awk '{s[$1] += $2} END {for (k in s) print k, s[k]}' | sort
}

echo "| round | binary | connections | requests/s | p50 | p99 | server CPU per request | wrk CPU per request | server context switches per request |"
echo "|---|---|---|---|---|---|---|---|---|"
for round in $(seq 1 "$ROUNDS"); do
  for bin in "$@"; do
    rm -rf "$work/data" "$work/key"
    "$bin" serve --model-repository "$REPOSITORY" --default-backend "$BACKEND" --addr 127.0.0.1:18100 \
      --grpc-addr 127.0.0.1:18101 --data-dir "$work/data" --bootstrap-key-file "$work/key" 2>/dev/null &
    pid=$!
    for _ in $(seq 1 100); do [ -s "$work/key" ] && break; sleep 0.1; done
    BENCH_KEY="$(cat "$work/key")"
    export BENCH_KEY
    until curl -fs -o /dev/null -X POST -H "Authorization: Bearer $BENCH_KEY" --data-binary @"$BENCH_BODY" "$url"; do sleep 0.1; done
    wrk -t1 -c1 -d1s -s bench/post.lua "$url" > /dev/null # warm-up
    for c in 1 16; do
      before=$(ticks "$pid"); switched=$(switches "$pid"); threads "$pid" > "$work/before"
      out="$(/usr/bin/time -f 'wrk-cpu %U %S' wrk -t "$([ "$c" = 1 ] && echo 1 || echo 2)" -c "$c" -d "${SECONDS_EACH}s" \
        --latency -s bench/post.lua "$url" 2>&1)"
      after=$(ticks "$pid"); switched=$(( $(switches "$pid") - switched )); threads "$pid" > "$work/after"
      n=$(awk '/requests in/ {print $1}' <<<"$out")
      grep -q Non-2xx <<<"$out" && echo "errors: $(grep Non-2xx <<<"$out")"
      printf '| %s | %s | %s | %s | %s | %s | %.1f µs | %.1f µs | %.2f |\n' "$round" "$bin" "$c" \
        "$(awk '/Requests\/sec/ {printf "%.0f", $2}' <<<"$out")" "$(awk '$1 == "50%" {print $2}' <<<"$out")" \
        "$(awk '$1 == "99%" {print $2}' <<<"$out")" "$(echo "($after - $before) * 10000 / $n" | bc -l)" \
        "$(awk -v n="$n" '$1 == "wrk-cpu" {print ($2 + $3) * 1e6 / n}' <<<"$out")" "$(echo "$switched / $n" | bc -l)"
      if [ "${THREADS:-0}" = 1 ]; then
        join -a 2 -e 0 -o 0,1.2,2.2 "$work/before" "$work/after" | awk -v n="$n" \
          '$3 > $2 {printf "    %s: %.1f µs\n", $1, ($3 - $2) * 10000 / n}'
      fi
    done
    kill -9 "$pid"; wait "$pid" 2>/dev/null || true
  done
done
