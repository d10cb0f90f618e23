#!/usr/bin/env python3
"""Checks that NVIDIA's Python `tritonclient` (HTTP and gRPC) works against Vigil unchanged.

    python tests/tritonclient_check.py --vigil PATH/TO/vigil [--backend tract|onnxruntime]

Starts `vigil serve --demo --model-repository DIR` on a free port (DIR holds
models/test, plus models/onnxruntime for the onnxruntime backend), then
through tritonclient over HTTP: health, server metadata, repository index, model
metadata, configuration and readiness, and inference on every model with JSON and
with binary tensors in both directions; then the same over gRPC (raw contents);
all compared with the onnxruntime outputs in models/expected.json.
Every call carries the Owner key the server writes at its first start, through
tritonclient's own plugin hook (as users add headers); a call without it is
refused. Exits non-zero on the first mismatch.
"""
import argparse
import json
import pathlib
import socket
import subprocess
import shutil
import sys
import tempfile
import time

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient._plugin import InferenceServerClientPlugin
from tritonclient.utils import InferenceServerException

ROOT = pathlib.Path(__file__).resolve().parent.parent
NP_TYPES = {
    "BOOL": np.bool_, "INT8": np.int8, "INT16": np.int16, "INT32": np.int32, "INT64": np.int64,
    "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32, "UINT64": np.uint64,
    "FP16": np.float16, "FP32": np.float32, "FP64": np.float64, "BYTES": np.object_,
}


def array(t: dict) -> np.ndarray:
    if t["datatype"] == "BYTES":
        return np.array([s.encode() for s in t["data"]], dtype=np.object_).reshape(t["shape"])
    return np.array(t["data"], dtype=NP_TYPES[t["datatype"]]).reshape(t["shape"])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def check(cond: bool, what: str) -> None:
    if not cond:
        raise SystemExit(f"FAIL: {what}")
    print(f"ok   {what}")


class Bearer(InferenceServerClientPlugin):
    """Adds `authorization: Bearer KEY` to every request."""

    def __init__(self, key: str):
        self._key = key

    def __call__(self, request) -> None:
        request.headers["authorization"] = f"Bearer {self._key}"


def refused_without_key(call, what: str) -> None:
    try:
        call()
    except InferenceServerException as e:
        check("401" in str(e.status()) or "UNAUTHENTICATED" in str(e.status()) or "nauthenticated" in str(e), what)
        return
    raise SystemExit(f"FAIL: {what}: answered without a key")


def run_checks(url: str, backend: str, cases: list, key: str) -> None:
    anonymous = httpclient.InferenceServerClient(url=url)
    check(anonymous.is_server_live(), "server live (no key needed)")
    refused_without_key(anonymous.get_server_metadata, "HTTP without a key: 401")
    client = httpclient.InferenceServerClient(url=url)
    client.register_plugin(Bearer(key))
    check(client.is_server_live(), "server live")
    check(client.is_server_ready(), "server ready")
    meta = client.get_server_metadata()
    check(meta["name"] == "vigil" and "binary_tensor_data" in meta["extensions"], "server metadata")
    index = client.get_model_repository_index()
    check({m["name"] for m in index} >= {"breast_cancer", "digits_cnn", "identity"}, "repository index")

    for case in cases:
        model = case["model"]
        check(client.is_model_ready(model) and client.is_model_ready(model, "1"), f"{model}: ready")
        md = client.get_model_metadata(model)
        check({i["name"] for i in md["inputs"]} == set(case["inputs"]), f"{model}: metadata inputs")
        check(md["backend"] == backend, f"{model}: runs on {backend}")
        config = client.get_model_config(model)
        check([i["name"] for i in config["input"]] == [i["name"] for i in md["inputs"]], f"{model}: model config")
        for binary_in in (False, True):
            for binary_out in (False, True):
                inputs = []
                for name, t in case["inputs"].items():
                    inp = httpclient.InferInput(name, t["shape"], t["datatype"])
                    inp.set_data_from_numpy(array(t), binary_data=binary_in)
                    inputs.append(inp)
                outputs = [httpclient.InferRequestedOutput(n, binary_data=binary_out) for n in case["outputs"]]
                result = client.infer(model, inputs, outputs=outputs, request_id="tc-1")
                response = result.get_response()
                check(response["model_name"] == model and response["id"] == "tc-1", f"{model}: response names the model and echoes the id")
                check_outputs(result, case, f"HTTP binary in={binary_in}, out={binary_out}")
        # Default: no outputs named, so tritonclient asks for all of them in binary.
        inputs = []
        for name, t in case["inputs"].items():
            inp = httpclient.InferInput(name, t["shape"], t["datatype"])
            inp.set_data_from_numpy(array(t))
            inputs.append(inp)
        result = client.infer(model, inputs, model_version="1")
        check(all(result.as_numpy(n) is not None for n in case["outputs"]), f"{model}: all outputs by default")

    try:
        client.infer("no_such_model", [])
        check(False, "unknown model is an error")
    except InferenceServerException as e:
        check("unknown model" in str(e), f"unknown model is an error ({e})")


def check_outputs(result, case: dict, label: str) -> None:
    for name, t in case["outputs"].items():
        got, want = result.as_numpy(name), array(t)
        if t["datatype"] == "BYTES":
            # JSON BYTES come back as str, binary ones as bytes.
            got = np.array([x.encode() if isinstance(x, str) else x for x in got.ravel()], dtype=np.object_).reshape(got.shape)
        what = f"{case['model']}.{name} ({label})"
        if want.dtype.kind == "f":
            check(got.shape == want.shape and np.allclose(got, want, rtol=1e-5, atol=1e-5), what)
        else:
            check(got.shape == want.shape and (got == want).all(), what)


def run_grpc_checks(url: str, backend: str, cases: list, key: str) -> None:
    anonymous = grpcclient.InferenceServerClient(url=url)
    refused_without_key(lambda: anonymous.is_model_ready(cases[0]["model"]), "gRPC without a key: UNAUTHENTICATED")
    client = grpcclient.InferenceServerClient(url=url)
    client.register_plugin(Bearer(key))
    check(client.is_server_live() and client.is_server_ready(), "gRPC: server live and ready")
    meta = client.get_server_metadata(as_json=True)
    check(meta["name"] == "vigil", "gRPC: server metadata")
    for case in cases:
        model = case["model"]
        check(client.is_model_ready(model), f"gRPC {model}: ready")
        md = client.get_model_metadata(model, as_json=True)
        check({i["name"] for i in md["inputs"]} == set(case["inputs"]), f"gRPC {model}: metadata inputs")
        config = client.get_model_config(model, as_json=True)["config"]
        check(config["backend"] == backend, f"gRPC {model}: runs on {backend}")
        inputs = []
        for name, t in case["inputs"].items():
            inp = grpcclient.InferInput(name, t["shape"], t["datatype"])
            inp.set_data_from_numpy(array(t))
            inputs.append(inp)
        outputs = [grpcclient.InferRequestedOutput(n) for n in case["outputs"]]
        result = client.infer(model, inputs, outputs=outputs, request_id="tc-grpc", model_version="1")
        response = result.get_response(as_json=True)
        check(response["model_name"] == model and response["id"] == "tc-grpc", f"gRPC {model}: response names the model")
        check_outputs(result, case, "gRPC raw contents")
    try:
        client.infer("no_such_model", [])
        check(False, "gRPC: unknown model is an error")
    except InferenceServerException as e:
        check(e.status() == "StatusCode.NOT_FOUND", f"gRPC: unknown model is NOT_FOUND ({e.status()})")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--vigil", required=True, help="path to the vigil binary")
    parser.add_argument("--backend", choices=["tract", "onnxruntime"], default="tract")
    args = parser.parse_args()
    folders = ["test"] + (["onnxruntime"] if args.backend == "onnxruntime" else [])
    # One repository with the models of every folder this backend runs.
    repo = pathlib.Path(tempfile.mkdtemp(prefix="vigil-tritonclient-"))
    for folder in folders:
        for model in (ROOT / "models" / folder).iterdir():
            (repo / model.name).symlink_to(model)
    cases = [c for c in json.loads((ROOT / "models/expected.json").read_text()) if c["repository"] in ["demo"] + folders]
    port, grpc_port = free_port(), free_port()
    data = pathlib.Path(tempfile.mkdtemp(prefix="vigil-tritonclient-data-"))
    key_file = data / "owner.key"
    server = subprocess.Popen(
        [args.vigil, "serve", "--demo", "--model-repository", str(repo), "--addr", f"127.0.0.1:{port}",
         "--grpc-addr", f"127.0.0.1:{grpc_port}", "--default-backend", args.backend,
         "--data-dir", str(data), "--bootstrap-key-file", str(key_file)],
    )
    try:
        url = f"127.0.0.1:{port}"
        client = httpclient.InferenceServerClient(url=url)
        for _ in range(200):
            try:
                if client.is_server_ready():
                    break
            except Exception:
                pass
            if server.poll() is not None:
                raise SystemExit("vigil exited early")
            time.sleep(0.05)
        key = key_file.read_text().strip()
        run_checks(url, args.backend, cases, key)
        run_grpc_checks(f"127.0.0.1:{grpc_port}", args.backend, cases, key)
        print(f"tritonclient on {args.backend}: all checks passed")
    finally:
        server.terminate()
        code = server.wait(timeout=20)
        shutil.rmtree(repo)
        shutil.rmtree(data)
        if code != 0:
            raise SystemExit(f"vigil exited with {code} after SIGTERM")


if __name__ == "__main__":
    sys.exit(main())
