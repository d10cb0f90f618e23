#!/usr/bin/env python3
"""Builds the demo and test models and the outputs Vigil's tests compare against.

Run from anywhere:  python models/make_models.py   (needs models/requirements.txt)

Writes
  models/demo/breast_cancer/1/model.onnx  logistic regression, scikit-learn's bundled
                                          Wisconsin breast-cancer data, scaling folded
                                          into the weights so that tract can run it
  models/demo/breast_cancer/config.toml   its feature spec: the 30 named features and the labels
  models/demo/credit/1/model.onnx         logistic regression over a seeded synthetic credit
                                          data set with numerical, categorical and boolean
                                          features; two inputs (numeric, categorical)
  models/demo/credit/config.toml          its feature spec, with the parameters of the
                                          scikit-learn preprocessing it was trained with
  models/features_expected.json           records, what scikit-learn's fitted preprocessing
                                          makes of them, and the model's predictions
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
import os
import pathlib
import sys
import tempfile

# Trained weights must come out the same on every x86 machine. OpenBLAS picks
# its kernels by CPU model and splits sums across threads, which moved the
# digits CNN's probabilities by 1e-3 between two machines of the same kind.
# One thread and one kernel set (set before numpy and scipy load OpenBLAS).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_CORETYPE", "Haswell")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402
from skl2onnx import to_onnx  # noqa: E402
from skl2onnx.common.data_types import FloatTensorType  # noqa: E402
from sklearn.datasets import load_breast_cancer, load_digits, load_iris  # noqa: E402
from sklearn.ensemble import GradientBoostingClassifier  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402
from sklearn.compose import ColumnTransformer  # noqa: E402
from sklearn.preprocessing import MinMaxScaler, OneHotEncoder, OrdinalEncoder, StandardScaler  # noqa: E402

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


BREAST_CANCER_CONFIG = """\
# Written by models/make_models.py (docs/model-repository.md lists every key).
backend = "auto"

# The records API (/v1/models/breast_cancer:predict) takes these named
# features; the scaling is folded into the model's weights, so they pass through.
{features}
[prediction]
type = "classification"
output = "probabilities"
labels = ["malignant", "benign"]

# Warm up with a real row (the first test row) instead of zeros.
[warmup.inputs.features]
shape = [1, 30]
data = [{warmup}]
"""


def snake(name: str) -> str:
    return name.replace(" ", "_")


def breast_cancer() -> tuple:
    data_set = load_breast_cancer()
    x, y = data_set.data, data_set.target
    x = x.astype(np.float32)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.2, random_state=SEED, stratify=y)
    scaler = StandardScaler().fit(x_train)
    clf = LogisticRegression(max_iter=100_000, tol=1e-12).fit(scaler.transform(x_train), y_train)
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
    names = [snake(n) for n in data_set.feature_names]
    features = "".join(f'[[features]]\nname = "{n}"\ntype = "numerical"\nmin = 0.0\n\n' for n in names)
    warmup = ", ".join(f"{v:.7g}" for v in x_test[0])
    (ROOT / "demo/breast_cancer/config.toml").write_text(BREAST_CANCER_CONFIG.format(features=features, warmup=warmup))
    labels = [str(t) for t in data_set.target_names]
    records = {
        "model": "breast_cancer",
        "records": [{n: float(v) for n, v in zip(names, row)} for row in batch],
        "predictions": [
            {"label": labels[int(np.argmax(p))], "probabilities": dict(zip(labels, p.tolist()))}
            for p in outputs["probabilities"]
        ],
    }
    case = {"model": "breast_cancer", "repository": "demo", "inputs": {name: tensor_json(batch)},
            "outputs": {k: tensor_json(v) for k, v in outputs.items()}}
    return case, records


EMPLOYMENT = ["salaried", "self_employed", "unemployed", "retired"]
REGION = ["north", "south", "east", "west"]
CREDIT_THRESHOLD = 0.6

CREDIT_CONFIG = """\
# Written by models/make_models.py from the scikit-learn preprocessing the
# model was trained with (docs/model-repository.md explains every key).
backend = "auto"

[[features]]
name = "age"
type = "numerical"
datatype = "INT32"
min = 18
max = 120
transform = {{ standard = {{ mean = {age_mean!r}, scale = {age_scale!r} }} }}
input = "numeric"

[[features]]
name = "income"
type = "numerical"
min = 0.0
transform = {{ min_max = {{ data_min = {income_min!r}, data_max = {income_max!r} }} }}
input = "numeric"

[[features]]
name = "debt_ratio"
type = "numerical"
min = 0.0
max = 10.0
input = "numeric"

[[features]]
name = "employment"
type = "categorical"
vocabulary = {employment}
unknown = "unknown_slot"
transform = "one_hot"
input = "categorical"

[[features]]
name = "region"
type = "categorical"
vocabulary = {region}
unknown = "unknown_slot"
transform = "ordinal"
input = "categorical"

[[features]]
name = "has_mortgage"
type = "boolean"
default = false
input = "categorical"

[prediction]
type = "classification"
output = "probabilities"
labels = ["decline", "approve"]
threshold = {threshold}
"""


def credit() -> tuple:
    """A seeded synthetic credit data set: the preprocessing is scikit-learn's,
    fitted here; the model sees its output through two inputs."""
    rng = np.random.default_rng(SEED)
    n = 2000
    age = rng.integers(18, 80, size=n)
    income = rng.gamma(4.0, 15.0, size=n) + 8.0  # thousands a year
    debt = rng.uniform(0.0, 1.5, size=n)
    employment = rng.choice(EMPLOYMENT, size=n, p=[0.6, 0.2, 0.1, 0.1])
    region = rng.choice(REGION, size=n)
    mortgage = rng.random(n) < 0.35
    score = (0.03 * (age - 40) + 0.04 * (income - 60) - 2.5 * (debt - 0.7) + 0.6 * mortgage
             + np.select([employment == "unemployed", employment == "self_employed"], [-1.5, -0.3], 0.0)
             + rng.normal(0, 0.8, size=n))
    y = (score > 0).astype(np.int64)
    raw = np.empty((n, 6), dtype=object)
    raw[:, 0], raw[:, 1], raw[:, 2], raw[:, 3], raw[:, 4], raw[:, 5] = age, income, debt, employment, region, mortgage
    pre = ColumnTransformer([
        ("age", StandardScaler(), [0]),
        ("income", MinMaxScaler(), [1]),
        ("debt", "passthrough", [2]),
        ("employment", OneHotEncoder(categories=[EMPLOYMENT], handle_unknown="ignore", sparse_output=False), [3]),
        ("region", OrdinalEncoder(categories=[REGION], handle_unknown="use_encoded_value",
                                  unknown_value=len(REGION)), [4]),
        ("mortgage", "passthrough", [5]),
    ])
    pre.fit(raw)

    def transform(rows: np.ndarray) -> tuple:
        """scikit-learn's output split into the model's two inputs; the one-hot
        block gets the unknown slot (1 where scikit-learn's columns are all 0)."""
        t = pre.transform(rows).astype(np.float64)
        numeric, onehot, rest = t[:, 0:3], t[:, 3:7], t[:, 7:9]
        slot = (onehot.sum(axis=1, keepdims=True) == 0).astype(np.float64)
        return numeric, np.hstack([onehot, slot, rest])

    numeric, categorical = transform(raw)
    clf = LogisticRegression(max_iter=100_000, tol=1e-12).fit(np.hstack([numeric, categorical]), y)
    print(f"credit: training accuracy {clf.score(np.hstack([numeric, categorical]), y):.3f}")
    w = clf.coef_.astype(np.float32).reshape(-1, 1)
    b = clf.intercept_.astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Concat", ["numeric", "categorical"], ["x"], axis=1),
            helper.make_node("MatMul", ["x", "w"], ["xw"]),
            helper.make_node("Add", ["xw", "b"], ["logit"]),
            helper.make_node("Sigmoid", ["logit"], ["p"]),
            helper.make_node("Sub", ["one", "p"], ["q"]),
            helper.make_node("Concat", ["q", "p"], ["probabilities"], axis=1),
        ],
        "credit",
        [helper.make_tensor_value_info("numeric", TensorProto.FLOAT, ["batch", 3]),
         helper.make_tensor_value_info("categorical", TensorProto.FLOAT, ["batch", 7])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 2])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b"),
         numpy_helper.from_array(np.array([1.0], dtype=np.float32), "one")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="vigil")
    data = save(model, ROOT / "demo/credit/1/model.onnx")
    (ROOT / "demo/credit/config.toml").write_text(CREDIT_CONFIG.format(
        age_mean=float(pre.named_transformers_["age"].mean_[0]),
        age_scale=float(pre.named_transformers_["age"].scale_[0]),
        income_min=float(pre.named_transformers_["income"].data_min_[0]),
        income_max=float(pre.named_transformers_["income"].data_max_[0]),
        employment=json.dumps(EMPLOYMENT), region=json.dumps(REGION), threshold=CREDIT_THRESHOLD))

    # Records to check the pipeline against: real rows, edges of each range,
    # and categories scikit-learn has never seen (the unknown slot).
    names = ["age", "income", "debt_ratio", "employment", "region", "has_mortgage"]
    rows = [list(r) for r in raw[:4]] + [
        [18, 8.0, 0.0, "retired", "west", False],
        [120, 500.0, 10.0, "unemployed", "north", True],
        [35, 42.5, 0.33, "freelance", "mars", True],
    ]
    typed = [[int(r[0]), float(r[1]), float(r[2]), str(r[3]), str(r[4]), bool(r[5])] for r in rows]
    numeric, categorical = transform(np.array(typed, dtype=object))
    feeds = {"numeric": numeric.astype(np.float32), "categorical": categorical.astype(np.float32)}
    p = run_ort(data, feeds)["probabilities"]
    labels = ["decline", "approve"]
    records = {
        "model": "credit",
        "records": [dict(zip(names, r)) for r in typed],
        "tensors": {"numeric": numeric.tolist(), "categorical": categorical.tolist()},
        "predictions": [
            {"label": labels[int(q[1] >= CREDIT_THRESHOLD)], "probabilities": dict(zip(labels, q.tolist()))}
            for q in p
        ],
    }
    case = {"model": "credit", "repository": "demo", "inputs": {k: tensor_json(v) for k, v in feeds.items()},
            "outputs": {"probabilities": tensor_json(p)}}
    return case, records


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

    # Train the dense layer on the conv features, computed here in float64
    # with element-wise operations only: onnxruntime's own convolution picks
    # its kernels by CPU (AVX2 or AVX-512), and the tightly converged fit
    # below turned those last-bit differences into 1e-3 in the probabilities.
    def conv_features(x: np.ndarray) -> np.ndarray:
        n = len(x)
        scaled = x[:, 0].astype(np.float64) * np.float64(np.float32(1 / 16))
        padded = np.pad(scaled, ((0, 0), (1, 1), (1, 1)))
        maps = np.empty((n, filters, 8, 8))
        for f in range(filters):
            acc = np.full((n, 8, 8), np.float64(conv_b[f]))
            for i in range(3):
                for j in range(3):
                    acc = acc + np.float64(conv_w[f, 0, i, j]) * padded[:, i:i + 8, j:j + 8]
            maps[:, f] = acc
        pooled = np.maximum(maps, 0).reshape(n, filters, 4, 2, 4, 2).max(axis=(3, 5))
        return pooled.reshape(n, filters * 16).astype(np.float32)

    feats = conv_features(images)
    f_train, f_test, y_train, y_test, i_train, i_test = train_test_split(
        feats, y, images, test_size=0.2, random_state=SEED, stratify=y)
    clf = LogisticRegression(max_iter=100_000, tol=1e-12).fit(f_train, y_train)
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
    (cancer, cancer_records), (credit_case, credit_records) = breast_cancer(), credit()
    cases = [cancer, credit_case, digits_cnn(), identity(), iris_boosting()]
    (out / "expected.json").write_text(json.dumps(cases) + "\n")
    (out / "features_expected.json").write_text(json.dumps([cancer_records, credit_records], indent=1) + "\n")
    print(f"wrote {out / 'expected.json'} and {out / 'features_expected.json'}")


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
        for name in ["expected.json", "features_expected.json"]:
            fresh = json.loads((out / name).read_text())
            committed = json.loads((HERE / name).read_text())
            if not close(fresh, committed):
                print(f"FAIL: rebuilt models give outputs that differ from models/{name}")
                return 1
        for config in ["demo/breast_cancer/config.toml", "demo/credit/config.toml"]:
            if (out / config).read_text() != (HERE / config).read_text():
                print(f"FAIL: models/{config} differs from what the script writes")
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
