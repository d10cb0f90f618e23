#!/usr/bin/env python3
"""Builds the demo and test models and the outputs Vigil's tests compare against.

Run from anywhere:  python models/make_models.py   (needs models/requirements.txt)

Writes
  models/demo/breast_cancer/1/model.onnx  logistic regression, scikit-learn's bundled
                                          Wisconsin breast-cancer data, scaling folded
                                          into the weights so that tract can run it
  models/demo/digits_cnn/1/model.onnx     a small CNN over scikit-learn's bundled 8x8
                                          digits: fixed random conv features + a
                                          trained softmax layer
  models/test/identity/1/model.onnx       one Identity per V2 datatype, for codec tests
  models/onnxruntime/iris_boosting/1/model.onnx
                                          scikit-learn Pipeline(StandardScaler,
                                          GradientBoostingClassifier): Scaler and
                                          TreeEnsembleClassifier, which only ONNX
                                          Runtime runs (tract cannot)
  models/expected.json                    inputs and onnxruntime outputs for all of them,
                                          each case naming its repository folder

Everything is seeded: running it twice gives the same files.

    python models/make_models.py --check

rebuilds everything in a temporary folder instead and compares it with the
committed files: the expected outputs must agree within 1e-5 and the models must
give the same outputs (CI runs this; files identical byte for byte are reported
but not required, since float rounding may differ between CPUs).
"""
import json
import pathlib
import sys
import tempfile

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
from skl2onnx import to_onnx
from skl2onnx.common.data_types import FloatTensorType
from sklearn.datasets import load_breast_cancer, load_digits, load_iris
from sklearn.ensemble import GradientBoostingClassifier
from sklearn.pipeline import make_pipeline
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE
SEED = 20261126


def save(model: onnx.ModelProto, path: pathlib.Path) -> bytes:
    # skl2onnx lists opsets in set order, which varies between runs: sort them
    # (dropping duplicates) so that the file is the same every time.
    opsets = sorted({(o.domain, o.version) for o in model.opset_import})
    del model.opset_import[:]
    model.opset_import.extend(helper.make_opsetid(d, v) for d, v in opsets)
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = model.SerializeToString()
    path.write_bytes(data)
    return data


def run_ort(data: bytes, feeds: dict) -> dict:
    sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(names, feeds)))


V2_TYPES = {
    np.dtype(np.bool_): "BOOL",
    np.dtype(np.int8): "INT8",
    np.dtype(np.int16): "INT16",
    np.dtype(np.int32): "INT32",
    np.dtype(np.int64): "INT64",
    np.dtype(np.uint8): "UINT8",
    np.dtype(np.uint16): "UINT16",
    np.dtype(np.uint32): "UINT32",
    np.dtype(np.uint64): "UINT64",
    np.dtype(np.float16): "FP16",
    np.dtype(np.float32): "FP32",
    np.dtype(np.float64): "FP64",
}


def tensor_json(a: np.ndarray) -> dict:
    if a.dtype == object:
        return {"datatype": "BYTES", "shape": list(a.shape), "data": [str(x) for x in a.ravel()]}
    return {"datatype": V2_TYPES[a.dtype], "shape": list(a.shape), "data": a.ravel().tolist()}


def breast_cancer() -> dict:
    x, y = load_breast_cancer(return_X_y=True)
    x = x.astype(np.float32)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.2, random_state=SEED, stratify=y)
    scaler = StandardScaler().fit(x_train)
    clf = LogisticRegression(max_iter=5000).fit(scaler.transform(x_train), y_train)
    # Fold the scaler into the weights: tract cannot run ai.onnx.ml Scaler.
    folded = LogisticRegression()
    folded.classes_ = clf.classes_
    folded.coef_ = clf.coef_ / scaler.scale_
    folded.intercept_ = clf.intercept_ - (clf.coef_ * scaler.mean_ / scaler.scale_).sum(axis=1)
    folded.n_features_in_ = x.shape[1]
    model = to_onnx(
        folded,
        initial_types=[("features", FloatTensorType([None, x.shape[1]]))],
        options={id(folded): {"zipmap": False}},
        target_opset={"": 17, "ai.onnx.ml": 3},
    )
    data = save(model, ROOT / "demo/breast_cancer/1/model.onnx")
    accuracy = float((folded.predict(x_test) == y_test).mean())
    print(f"breast_cancer: test accuracy {accuracy:.3f}")
    batch = x_test[:5]
    name = model.graph.input[0].name
    outputs = run_ort(data, {name: batch})
    return {"model": "breast_cancer", "repository": "demo", "inputs": {name: tensor_json(batch)},
            "outputs": {k: tensor_json(v) for k, v in outputs.items()}}


def digits_cnn() -> dict:
    images, y = load_digits(return_X_y=True)
    images = images.reshape(-1, 1, 8, 8).astype(np.float32)  # pixel values 0..16
    rng = np.random.default_rng(SEED)
    filters = 8
    conv_w = rng.normal(0, 0.5, size=(filters, 1, 3, 3)).astype(np.float32)
    conv_b = rng.normal(0, 0.1, size=(filters,)).astype(np.float32)

    def features_graph(extra_nodes, extra_inits, outputs):
        nodes = [
            helper.make_node("Mul", ["image", "inv16"], ["scaled"]),
            helper.make_node("Conv", ["scaled", "conv_w", "conv_b"], ["conv"], pads=[1, 1, 1, 1], kernel_shape=[3, 3]),
            helper.make_node("Relu", ["conv"], ["relu"]),
            helper.make_node("MaxPool", ["relu"], ["pool"], kernel_shape=[2, 2], strides=[2, 2]),
            helper.make_node("Flatten", ["pool"], ["features"], axis=1),
        ] + extra_nodes
        inits = [
            numpy_helper.from_array(np.array(1 / 16, dtype=np.float32), "inv16"),
            numpy_helper.from_array(conv_w, "conv_w"),
            numpy_helper.from_array(conv_b, "conv_b"),
        ] + extra_inits
        graph = helper.make_graph(
            nodes, "digits_cnn",
            [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 1, 8, 8])],
            outputs, inits)
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="vigil")

    # Train the dense layer on the conv features, computed by onnxruntime itself.
    feats_model = features_graph([], [], [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", filters * 16])])
    feats = run_ort(feats_model.SerializeToString(), {"image": images})["features"]
    f_train, f_test, y_train, y_test, i_train, i_test = train_test_split(
        feats, y, images, test_size=0.2, random_state=SEED, stratify=y)
    clf = LogisticRegression(max_iter=5000).fit(f_train, y_train)
    print(f"digits_cnn: test accuracy {clf.score(f_test, y_test):.3f}")

    model = features_graph(
        [
            helper.make_node("Gemm", ["features", "dense_w", "dense_b"], ["logits"], transB=1),
            helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
            helper.make_node("ArgMax", ["logits"], ["label"], axis=1, keepdims=0),
        ],
        [
            numpy_helper.from_array(clf.coef_.astype(np.float32), "dense_w"),
            numpy_helper.from_array(clf.intercept_.astype(np.float32), "dense_b"),
        ],
        [
            helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 10]),
            helper.make_tensor_value_info("label", TensorProto.INT64, ["batch"]),
        ],
    )
    data = save(model, ROOT / "demo/digits_cnn/1/model.onnx")
    batch = i_test[:4]
    outputs = run_ort(data, {"image": batch})
    return {"model": "digits_cnn", "repository": "demo", "inputs": {"image": tensor_json(batch)},
            "outputs": {k: tensor_json(v) for k, v in outputs.items()}}


IDENTITY_TYPES = [
    ("bool", TensorProto.BOOL, np.array([[True, False, True], [False, False, True]])),
    ("int8", TensorProto.INT8, np.array([[-128, 0, 127], [1, 2, 3]], dtype=np.int8)),
    ("int16", TensorProto.INT16, np.array([[-32768, 0, 32767], [1, 2, 3]], dtype=np.int16)),
    ("int32", TensorProto.INT32, np.array([[-2**31, 0, 2**31 - 1], [1, 2, 3]], dtype=np.int32)),
    ("int64", TensorProto.INT64, np.array([[-2**53, 0, 2**53], [1, 2, 3]], dtype=np.int64)),
    ("uint8", TensorProto.UINT8, np.array([[0, 128, 255], [1, 2, 3]], dtype=np.uint8)),
    ("uint16", TensorProto.UINT16, np.array([[0, 1, 65535], [1, 2, 3]], dtype=np.uint16)),
    ("uint32", TensorProto.UINT32, np.array([[0, 1, 2**32 - 1], [1, 2, 3]], dtype=np.uint32)),
    ("uint64", TensorProto.UINT64, np.array([[0, 1, 2**53], [1, 2, 3]], dtype=np.uint64)),
    ("fp16", TensorProto.FLOAT16, np.array([[-1.5, 0, 65504], [0.25, 2, 3]], dtype=np.float16)),
    ("fp32", TensorProto.FLOAT, np.array([[-1.5, 0, 3.25e38], [0.1, 2, 3]], dtype=np.float32)),
    ("fp64", TensorProto.DOUBLE, np.array([[-1.5, 0, 1e300], [0.1, 2, 3]], dtype=np.float64)),
    ("bytes", TensorProto.STRING, np.array([["a", "", "héllo"], ["x y", "1", "\u2603"]], dtype=object)),
]


def identity() -> dict:
    nodes, inputs, outputs, feeds = [], [], [], {}
    for name, elem, sample in IDENTITY_TYPES:
        nodes.append(helper.make_node("Identity", [f"in_{name}"], [f"out_{name}"]))
        inputs.append(helper.make_tensor_value_info(f"in_{name}", elem, ["rows", 3]))
        outputs.append(helper.make_tensor_value_info(f"out_{name}", elem, ["rows", 3]))
        feeds[f"in_{name}"] = sample
    graph = helper.make_graph(nodes, "identity", inputs, outputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="vigil")
    data = save(model, ROOT / "test/identity/1/model.onnx")
    results = run_ort(data, feeds)
    return {"model": "identity", "repository": "test", "inputs": {k: tensor_json(v) for k, v in feeds.items()},
            "outputs": {k: tensor_json(v) for k, v in results.items()}}


def iris_boosting() -> dict:
    x, y = load_iris(return_X_y=True)
    x = x.astype(np.float32)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.3, random_state=SEED, stratify=y)
    pipe = make_pipeline(StandardScaler(), GradientBoostingClassifier(n_estimators=20, max_depth=2, random_state=SEED))
    pipe.fit(x_train, y_train)
    print(f"iris_boosting: test accuracy {pipe.score(x_test, y_test):.3f}")
    model = to_onnx(
        pipe,
        initial_types=[("measurements", FloatTensorType([None, 4]))],
        options={id(pipe.steps[-1][1]): {"zipmap": False}},
        target_opset={"": 17, "ai.onnx.ml": 3},
    )
    data = save(model, ROOT / "onnxruntime/iris_boosting/1/model.onnx")
    batch = x_test[:6]
    outputs = run_ort(data, {"measurements": batch})
    return {"model": "iris_boosting", "repository": "onnxruntime", "inputs": {"measurements": tensor_json(batch)},
            "outputs": {k: tensor_json(v) for k, v in outputs.items()}}


def build(out: pathlib.Path) -> None:
    global ROOT
    ROOT = out
    cases = [breast_cancer(), digits_cnn(), identity(), iris_boosting()]
    (out / "expected.json").write_text(json.dumps(cases) + "\n")
    print(f"wrote {out / 'expected.json'}")


def close(a, b) -> bool:
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(close(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(close(a[k], b[k]) for k in a)
    if isinstance(a, float) or isinstance(b, float):
        return abs(a - b) <= 1e-5 or np.float32(a) == np.float32(b)
    return a == b


def check() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        out = pathlib.Path(tmp)
        build(out)
        fresh = json.loads((out / "expected.json").read_text())
        committed = json.loads((HERE / "expected.json").read_text())
        if not close(fresh, committed):
            print("FAIL: rebuilt models give outputs that differ from models/expected.json")
            return 1
        rebuilt = sorted(p.relative_to(out) for p in out.glob("*/*/*/model.onnx"))
        kept = sorted(p.relative_to(HERE) for p in HERE.glob("*/*/*/model.onnx"))
        if rebuilt != kept:
            print(f"FAIL: the script builds {rebuilt} but the repository holds {kept}")
            return 1
        for rel in rebuilt:
            same = (HERE / rel).read_bytes() == (out / rel).read_bytes()
            print(f"{rel}: {'identical' if same else 'different bytes, same outputs within 1e-5'}")
    # That the committed models give the committed outputs is checked by the
    # Rust tests, on both backends.
    print("rebuild check passed")
    return 0


if __name__ == "__main__":
    if "--check" in sys.argv[1:]:
        sys.exit(check())
    build(HERE)
