#!/usr/bin/env bash
# A compute-bound model served with dynamic batching, against the raw backend
# in process at the same thread count: ResNet-18 (11.7 M parameters, 1.8
# GFLOPs per image) with random weights, built by bench/make_cnn.py (onnx +
# numpy, no torch), one 224x224 image per request.
#
#   bash bench/cnn.sh            # DURATION=20 by default
#
# For each backend (ONNX Runtime, then tract): the raw backend running
# batches of 8 back to back (crates/vigil-runtime/examples/raw_throughput.rs),
# then Vigil serving the same model and config (batches of up to 8, 16
# clients over gRPC with raw contents, examples/load.rs), and Vigil at one
# client (latency, nothing to batch) beside the raw backend at batch 1.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION="${DURATION:-20}"
source bench/setup.sh
cargo build --release --locked -p vigil-runtime --example raw_throughput
RAW="$CARGO_TARGET_DIR/release/examples/raw_throughput"

work="$(mktemp -d)"
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
mkdir -p "$work/repo/resnet18/1"
"$VENV/bin/python" bench/make_cnn.py "$work/repo/resnet18/1"

stop() { kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }
: > "$work/results.tsv"
for backend in onnxruntime tract; do
  # ONNX Runtime: one session using both cores inside each run; tract: one
  # single-threaded instance per core (the server's defaults for each).
  cat > "$work/repo/resnet18/config.toml" <<TOML
backend = "$backend"
[batching]
max_batch_size = 8
preferred_batch_sizes = [8]
max_queue_delay_us = 5000
[scheduling]
max_queue_size = 64
TOML
  for batch in 8 1; do
    IFS=$'\t' read -r _ instances items ms < <("$RAW" "$work/repo/resnet18" --batch "$batch" --seconds "$DURATION")
    printf '%s\traw, batch %s (%s instances)\t-\t%s\t%s ms per run\n' "$backend" "$batch" "$instances" "$items" "$ms" >> "$work/results.tsv"
  done
  "$VIGIL" serve --model-repository "$work/repo" --addr 127.0.0.1:18110 --grpc-addr 127.0.0.1:18111 \
    --data-dir "$work/data-$backend" --bootstrap-key-file "$work/key-$backend" 2>"$work/vigil-$backend.log" &
  pid=$!
  for _ in $(seq 1 600); do
    [ -s "$work/key-$backend" ] && curl -fs -o /dev/null -H "Authorization: Bearer $(cat "$work/key-$backend")" \
      http://127.0.0.1:18110/v2/models/resnet18/ready && break
    sleep 0.1
  done
  key="$(cat "$work/key-$backend")"
  for c in 16 1; do
    IFS=$'\t' read -r rps p50 p99 failed < <("$LOAD" grpc://127.0.0.1:18111 --model resnet18 --input input \
      --shape 1,3,224,224 --connections "$c" --seconds "$DURATION" --key "$key")
    printf '%s\tVigil, gRPC\t%s\t%s\tp50 %s ms, p99 %s ms, %s failed\n' "$backend" "$c" "$rps" \
      "$(awk "BEGIN {printf \"%.1f\", $p50 / 1000}")" "$(awk "BEGIN {printf \"%.1f\", $p99 / 1000}")" "$failed" >> "$work/results.tsv"
    # The batch sizes of the 16-client run (the server's histogram so far).
    [ "$c" = 16 ] && curl -fs -H "Authorization: Bearer $key" http://127.0.0.1:18110/metrics \
      | awk '/^vigil_batch_size_(sum|count)\{.*resnet18/ {print}' > "$work/batches-$backend.txt" || true
  done
  stop "$pid"
done

echo
echo "| backend | what | clients | images/s | detail |"
echo "|---|---|---|---|---|"
awk -F'\t' '{ printf "| %s | %s | %s | %.1f | %s |\n", $1, $2, $3, $4, $5 }' "$work/results.tsv"
echo
for backend in onnxruntime tract; do
  awk -v b="$backend" -F'\t' '$1 == b && $2 ~ /batch 8/ { raw = $4 } $1 == b && $2 == "Vigil, gRPC" && $3 == 16 { vigil = $4 }
    END { if (raw > 0) printf "%s: Vigil with batching at %.1f %% of the raw backend\n", b, 100 * vigil / raw }' "$work/results.tsv"
  sum="$(awk '/_sum/ {print $2}' "$work/batches-$backend.txt")"; count="$(awk '/_count/ {print $2}' "$work/batches-$backend.txt")"
  [ -n "$count" ] && awk -v s="$sum" -v n="$count" -v b="$backend" 'BEGIN { if (n > 0) printf "%s: mean batch %.2f over %d runs with 16 clients\n", b, s / n, n }'
done
