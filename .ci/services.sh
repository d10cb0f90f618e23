#!/usr/bin/env bash
# Starts, on loopback, the object-storage servers the integration tests talk
# to: moto (S3) and Azurite (Azure Blob). Prints only `export` lines on stdout,
# so a caller can `eval "$(bash .ci/services.sh)"` and later
# `kill $VIGIL_TEST_SERVICE_PIDS`. Everything else goes to stderr.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV="${VIGIL_CI_VENV:-$HOME/.cache/vigil-venv}"
AZ_DIR="$HOME/.cache/vigil-azurite"
# Azurite 3.36+ declares Node >= 21/22; 3.35.0 is the newest that runs on Node 20.
AZ_VERSION=3.35.0
BUCKET=vigil-test
AZ_ACCOUNT=devstoreaccount1
# Azurite's fixed, public development key (not a secret).
AZ_KEY='Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=='
REQS=tests/services-requirements.txt

log() { echo "services.sh: $*" >&2; }
PIDS=() LOGS=()
cleanup_on_error() {
  local rc=$?
  [ "$rc" -eq 0 ] && return
  for f in "${LOGS[@]}"; do log "--- $f"; cat "$f" >&2 || true; done
  [ "${#PIDS[@]}" -gt 0 ] && kill "${PIDS[@]}" 2>/dev/null || true
  exit "$rc"
}
trap cleanup_on_error EXIT

# --- installs, skipped when what is there already matches the pins
[ -x "$VENV/bin/python" ] || { log "creating venv $VENV"; python3 -m venv "$VENV"; }
# A copy of the requirements inside the venv marks them installed: pip's own
# no-op check costs seconds on every run.
if ! cmp -s "$REQS" "$VENV/.vigil-services-requirements.txt"; then
  log "pip install -r $REQS"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check -r "$REQS" >&2
  cp "$REQS" "$VENV/.vigil-services-requirements.txt"
fi
if ! grep -qs "\"version\": \"$AZ_VERSION\"" "$AZ_DIR/node_modules/azurite/package.json"; then
  log "npm install azurite@$AZ_VERSION into $AZ_DIR"
  npm install --prefix "$AZ_DIR" --no-audit --no-fund --loglevel=error "azurite@$AZ_VERSION" >&2
fi

free_port() { "$VENV/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Any HTTP answer (even 400) means it is listening; give up if the process died.
wait_http() { # pid url
  for _ in $(seq 1 150); do
    curl -s -o /dev/null "$2" && return 0
    kill -0 "$1" 2>/dev/null || { log "server exited before answering $2"; return 1; }
    sleep 0.2
  done
  log "timed out waiting for $2"; return 1
}

# Servers must not hold our stdout, or `$(...)` in the caller never returns.
S3_PORT="$(free_port)"
S3_LOG="$(mktemp -t vigil-moto.XXXXXX.log)"; LOGS+=("$S3_LOG")
"$VENV/bin/moto_server" -H 127.0.0.1 -p "$S3_PORT" </dev/null >"$S3_LOG" 2>&1 &
PIDS+=($!)
S3="http://127.0.0.1:$S3_PORT"
wait_http "${PIDS[0]}" "$S3/"
# moto does not check signatures, so a bare PUT creates the bucket.
curl -sf -X PUT -o /dev/null "$S3/$BUCKET"
log "moto (S3) on $S3, bucket $BUCKET, log $S3_LOG"

AZ_PORT="$(free_port)"
AZ_LOG="$(mktemp -t vigil-azurite.XXXXXX.log)"; LOGS+=("$AZ_LOG")
AZ_DATA="$(mktemp -d -t vigil-azurite.XXXXXX)"
# --disableTelemetry: otherwise Azurite posts to Application Insights (and logs
# the failure where there is no internet).
"$AZ_DIR/node_modules/.bin/azurite-blob" --disableTelemetry --blobHost 127.0.0.1 --blobPort "$AZ_PORT" \
  --location "$AZ_DATA" --skipApiVersionCheck --loose </dev/null >"$AZ_LOG" 2>&1 &
PIDS+=($!)
AZ="http://127.0.0.1:$AZ_PORT/$AZ_ACCOUNT"
wait_http "${PIDS[1]}" "$AZ"
# Creating a container needs a SharedKey-signed request; the SDK signs it.
"$VENV/bin/python" - "DefaultEndpointsProtocol=http;AccountName=$AZ_ACCOUNT;AccountKey=$AZ_KEY;BlobEndpoint=$AZ;" "$BUCKET" <<'PY' >&2
import sys
from azure.core.exceptions import ResourceExistsError
from azure.storage.blob import BlobServiceClient
try:
    BlobServiceClient.from_connection_string(sys.argv[1]).create_container(sys.argv[2])
except ResourceExistsError:
    pass
PY
log "Azurite $AZ_VERSION (blob) on $AZ, container $BUCKET, data $AZ_DATA, log $AZ_LOG"

cat <<OUT
export VIGIL_TEST_S3_ENDPOINT=$S3
export VIGIL_TEST_S3_BUCKET=$BUCKET
export AWS_ACCESS_KEY_ID=test
export AWS_SECRET_ACCESS_KEY=test
export AWS_REGION=us-east-1
export VIGIL_TEST_AZURE_ENDPOINT=$AZ
export VIGIL_TEST_AZURE_CONTAINER=$BUCKET
export AZURE_STORAGE_ACCOUNT_NAME=$AZ_ACCOUNT
export AZURE_STORAGE_ACCOUNT_KEY=$AZ_KEY
# What object_store reads: endpoints of the loopback servers, plain HTTP allowed.
export AWS_ENDPOINT_URL=$S3
export AWS_ALLOW_HTTP=true
export AZURE_STORAGE_ENDPOINT=$AZ
export AZURE_ALLOW_HTTP=true
export VIGIL_TEST_SERVICE_PIDS="${PIDS[*]}"
OUT
