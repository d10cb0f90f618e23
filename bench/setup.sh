# Sourced by the bench scripts: the Python environment of the services Vigil
# is measured against, ONNX Runtime's library from it, and release builds of
# the server and the load generator. Sets VENV, VIGIL and LOAD.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/vigil-target}"
VENV="${VIGIL_BENCH_VENV:-$HOME/.cache/vigil-bench-venv}"
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/pip" install --quiet --disable-pip-version-check -r bench/requirements.txt
ORT_DYLIB_PATH="$(ls "$VENV"/lib/python3*/site-packages/onnxruntime/capi/libonnxruntime.so.* | head -n 1)"
export ORT_DYLIB_PATH
cargo build --release --locked --bin vigil
cargo build --release --locked -p vigil-server --example load
VIGIL="$CARGO_TARGET_DIR/release/vigil"
LOAD="$CARGO_TARGET_DIR/release/examples/load"
