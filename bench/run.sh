#!/usr/bin/env bash
# Throughput and latency of Vigil against the services users would otherwise run,
# on this machine, with one load generator (wrk), one row per request, V2 JSON:
# the demo breast-cancer classifier (logistic regression, 30 features) and a
# scikit-learn gradient-boosting classifier (iris, 4 features; ONNX Runtime
# only, tract cannot run tree ensembles).
#
#   bash bench/run.sh            # DURATION=10 by default; needs wrk (apt install wrk)
#
# Servers: Vigil on tract and on ONNX Runtime (release build; also over gRPC
# and HTTP with one client for both, examples/load.rs), FastAPI + uvicorn
# + onnxruntime (one worker: with --workers 2, uvicorn 0.54 with h11 stalls
# about 44 ms on every request here, ~360 req/s), and the Azure ML inference server
# (azmlinfsrv) with an onnxruntime score.py. For each: requests/s and p50/p99 at
# 1 and 16 connections, and the ratio to FastAPI on the same model. The
# in-process limit (the raw backends without HTTP) is `cargo bench -p
# vigil-server`; the compute-bound CNN with batching is bench/cnn.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION="${DURATION:-10}"
command -v wrk >/dev/null || { echo "bench needs wrk (apt install wrk)"; exit 1; }
source bench/setup.sh

work="$(mktemp -d)"
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
# model, repository (for Vigil), input, features per row
MODELS=(
  "breast_cancer models/demo features 30"
  "iris_boosting models/onnxruntime measurements 4"
)
"$VENV/bin/python" bench/bodies.py "$work" breast_cancer iris_boosting

wait_for() { # url body
  for _ in $(seq 1 300); do
    curl -fs -o /dev/null -X POST -H 'Content-Type: application/json' ${BENCH_KEY:+-H "Authorization: Bearer $BENCH_KEY"} \
      --data-binary @"$2" "$1" && return 0
    sleep 0.1
  done
  echo "no answer from $1"; return 1
}

measure() { # model name url
  local model=$1 name=$2 url=$3
  export BENCH_BODY="$work/$model.json"
  for c in 1 16; do
    local out
    out="$(wrk -t "$([ "$c" = 1 ] && echo 1 || echo 2)" -c "$c" -d "${DURATION}s" --latency -s bench/post.lua "$url")"
    local rps p50 p99
    rps="$(awk '/Requests\/sec/ {print $2}' <<<"$out")"
    p50="$(awk '$1 == "50%" {print $2}' <<<"$out")"
    p99="$(awk '$1 == "99%" {print $2}' <<<"$out")"
    if grep -q "Non-2xx" <<<"$out"; then echo "$name: errors during the run"; grep "Non-2xx" <<<"$out"; fi
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$model" "$name" "$c" "$rps" "$p50" "$p99" >> "$work/results.tsv"
  done
}

stop() { kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }

for entry in "${MODELS[@]}"; do
  read -r model repo input width <<<"$entry"
  body="$work/$model.json"
  backends="tract onnxruntime"
  [ "$model" = iris_boosting ] && backends="onnxruntime"
  # Vigil is measured as deployed: every request carries an API key, checked by the guard.
  for backend in $backends; do
    tag="$model-$backend"
    "$VIGIL" serve --model-repository "$repo" --default-backend "$backend" --addr 127.0.0.1:18100 \
      --grpc-addr 127.0.0.1:18101 --data-dir "$work/data-$tag" --bootstrap-key-file "$work/key-$tag" \
      2>"$work/vigil-$tag.log" &
    pid=$!
    for _ in $(seq 1 100); do [ -s "$work/key-$tag" ] && break; sleep 0.1; done
    BENCH_KEY="$(cat "$work/key-$tag")"
    export BENCH_KEY
    wait_for "http://127.0.0.1:18100/v2/models/$model/infer" "$body"
    measure "$model" "vigil-$backend" "http://127.0.0.1:18100/v2/models/$model/infer"
    # gRPC against HTTP with one client for both (wrk has no gRPC).
    for target in http://127.0.0.1:18100 grpc://127.0.0.1:18101; do
      [ "$model" != breast_cancer ] && [ "${target%%:*}" = http ] && continue # the load example's HTTP body is the demo's
      for c in 1 16; do
        printf '%s\t%s\t%s\t%s\t%s\n' "$model" "$backend" "${target%%:*}" "$c" \
          "$("$LOAD" "$target" --model "$model" --input "$input" --shape "1,$width" --connections "$c" \
            --seconds "$DURATION" --key "$BENCH_KEY")" >> "$work/protocols.tsv"
      done
    done
    stop "$pid"
    unset BENCH_KEY
  done

  export BENCH_MODEL="$PWD/$repo/$model/1/model.onnx"
  (cd bench && "$VENV/bin/uvicorn" fastapi_server:app --port 18102 --log-level warning) &
  pid=$!
  wait_for "http://127.0.0.1:18102/v2/models/$model/infer" "$body"
  measure "$model" fastapi-onnxruntime "http://127.0.0.1:18102/v2/models/$model/infer"
  stop "$pid"

  if [ -x "$VENV/bin/azmlinfsrv" ]; then
    (cd bench && "$VENV/bin/azmlinfsrv" --entry_script score.py --port 18103 >"$work/azml.log" 2>&1) &
    pid=$!
    if wait_for http://127.0.0.1:18103/score "$body"; then
      measure "$model" azureml-inference-server http://127.0.0.1:18103/score
    else
      tail -20 "$work/azml.log"
    fi
    stop "$pid"
    pkill -f azmlinfsrv 2>/dev/null || true
    pkill -f "gunicorn.*18103" 2>/dev/null || true
  else
    echo "azmlinfsrv did not install: see pip's output above"
  fi
done

echo
echo "| model | server | connections | requests/s | p50 | p99 | throughput vs FastAPI |"
echo "|---|---|---|---|---|---|---|"
awk -F'\t' '
  { m[NR]=$1; name[NR]=$2; c[NR]=$3; rps[NR]=$4; p50[NR]=$5; p99[NR]=$6; if ($2 == "fastapi-onnxruntime") base[$1 "/" $3]=$4 }
  END { for (i = 1; i <= NR; i++) { b = base[m[i] "/" c[i]]; printf "| %s | %s | %s | %.0f | %s | %s | %.1f× |\n", m[i], name[i], c[i], rps[i], p50[i], p99[i], (b ? rps[i] / b : 0) } }
' "$work/results.tsv"

echo
echo "Vigil over HTTP and gRPC, one client for both (crates/vigil-server/examples/load.rs):"
echo "| model | backend | protocol | connections | requests/s | p50 | p99 | failed |"
echo "|---|---|---|---|---|---|---|---|"
awk -F'\t' '{ printf "| %s | %s | %s | %s | %s | %s µs | %s µs | %s |\n", $1, $2, $3, $4, $5, $6, $7, $8 }' "$work/protocols.tsv"
