"""Writes the one-row V2 JSON request body that the HTTP benches send for each
model named, as DIR/MODEL.json, from the fixed inputs in models/expected.json.

    python3 bench/bodies.py DIR MODEL [MODEL ...]
"""
import json
import sys

out, models = sys.argv[1], sys.argv[2:]
cases = {c["model"]: c for c in json.load(open("models/expected.json"))}
for model in models:
    (name, tensor), = cases[model]["inputs"].items()
    width = tensor["shape"][1]
    body = {"inputs": [{"name": name, "datatype": "FP32", "shape": [1, width], "data": tensor["data"][:width]}]}
    with open(f"{out}/{model}.json", "w") as f:
        f.write(json.dumps(body))
