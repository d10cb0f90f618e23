"""What teams hand-write: FastAPI + uvicorn + onnxruntime, taking the same V2 JSON
body as Vigil for the model in BENCH_MODEL. Used by bench/run.sh only."""
import os

import numpy as np
import onnxruntime as ort
from fastapi import FastAPI, Request

MODEL = os.environ.get("BENCH_MODEL", "models/demo/breast_cancer/1/model.onnx")
session = ort.InferenceSession(MODEL, providers=["CPUExecutionProvider"])
input_name = session.get_inputs()[0].name
output_names = [o.name for o in session.get_outputs()]
app = FastAPI()


@app.post("/v2/models/{model}/infer")
async def infer(model: str, request: Request):
    body = await request.json()
    tensor = body["inputs"][0]
    x = np.asarray(tensor["data"], dtype=np.float32).reshape(tensor["shape"])
    results = session.run(output_names, {input_name: x})
    return {
        "model_name": model,
        "outputs": [
            {"name": n, "datatype": "FP32" if r.dtype == np.float32 else "INT64", "shape": list(r.shape), "data": r.ravel().tolist()}
            for n, r in zip(output_names, results)
        ],
    }
