#!/usr/bin/env python3
"""Fixed predictions with their ground truth, and what scikit-learn's metrics
say about them, for Vigil's model-quality scores (tests/it/quality.rs).

    python crates/vigil-monitor/tests/it/quality/make_expected.py   (numpy, scikit-learn)

Writes expected.json beside this file; seeded.
"""
import json
import pathlib

import numpy as np
from sklearn import metrics

HERE = pathlib.Path(__file__).resolve().parent
rng = np.random.default_rng(20261126)


def classification(name, classes, n):
    truth = rng.integers(0, classes, n)
    logits = rng.normal(0, 1, (n, classes))
    logits[np.arange(n), truth] += 1.2  # better than chance
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    predicted = p.argmax(axis=1)
    average = "binary" if classes == 2 else "macro"
    auc = (metrics.roc_auc_score(truth, p[:, 1]) if classes == 2
           else metrics.roc_auc_score(truth, p, multi_class="ovr", average="macro"))
    return {
        "name": name, "classes": classes, "truth": truth.tolist(), "predicted": predicted.tolist(),
        "probabilities": p.tolist(),
        "accuracy": metrics.accuracy_score(truth, predicted),
        "precision": metrics.precision_score(truth, predicted, average=average, zero_division=0),
        "recall": metrics.recall_score(truth, predicted, average=average, zero_division=0),
        "f1": metrics.f1_score(truth, predicted, average=average, zero_division=0),
        "roc_auc": auc, "log_loss": metrics.log_loss(truth, p, labels=list(range(classes))),
    }


def regression(name, n):
    truth = rng.normal(100, 20, n)
    predicted = truth + rng.normal(3, 10, n)
    return {
        "name": name, "truth": truth.tolist(), "predicted": predicted.tolist(),
        "mae": metrics.mean_absolute_error(truth, predicted),
        "rmse": float(np.sqrt(metrics.mean_squared_error(truth, predicted))),
        "r2": metrics.r2_score(truth, predicted),
    }


def ties():
    """Scores with ties, for the AUC's tie rule."""
    truth = np.array([0, 1, 0, 1, 1, 0, 1, 0])
    score = np.array([0.2, 0.8, 0.5, 0.5, 0.5, 0.1, 0.9, 0.8])
    p = np.stack([1 - score, score], axis=1)
    predicted = (score >= 0.5).astype(int)
    return {
        "name": "ties", "classes": 2, "truth": truth.tolist(), "predicted": predicted.tolist(),
        "probabilities": p.tolist(),
        "accuracy": metrics.accuracy_score(truth, predicted),
        "precision": metrics.precision_score(truth, predicted), "recall": metrics.recall_score(truth, predicted),
        "f1": metrics.f1_score(truth, predicted), "roc_auc": metrics.roc_auc_score(truth, score),
        "log_loss": metrics.log_loss(truth, p),
    }


cases = {
    "classification": [classification("binary", 2, 300), classification("three_classes", 3, 400), ties()],
    "regression": [regression("regression", 250)],
}
(HERE / "expected.json").write_text(json.dumps(cases) + "\n")
print(f"wrote {HERE / 'expected.json'}")
