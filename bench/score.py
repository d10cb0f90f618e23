"""Azure ML inference server entry script (azureml-inference-server-http): the same
model on onnxruntime, taking the same V2 JSON body on /score. Used by bench/run.sh only."""
import json
import os

import numpy as np
import onnxruntime as ort

session = None


def init():
    global session
    session = ort.InferenceSession(os.environ["BENCH_MODEL"], providers=["CPUExecutionProvider"])


def run(raw_data):
    body = json.loads(raw_data)
    tensor = body["inputs"][0]
    x = np.asarray(tensor["data"], dtype=np.float32).reshape(tensor["shape"])
    names = [o.name for o in session.get_outputs()]
    results = session.run(names, {session.get_inputs()[0].name: x})
    return {"outputs": [{"name": n, "shape": list(r.shape), "data": r.ravel().tolist()} for n, r in zip(names, results)]}
