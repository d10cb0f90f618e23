#!/usr/bin/env python3
"""Fixed data sets and what numpy and scipy say about them, for Vigil's drift
statistics (crates/vigil-monitor/tests/it/drift.rs).

    python crates/vigil-monitor/tests/it/drift/make_expected.py   (numpy, scipy)

Writes expected.json beside this file. Seeded: running it twice gives the same file.
Binning follows docs/monitoring.md: edges at numpy's percentiles (0..100 for the
fine bins, deciles for PSI/JS/chi-square), repeats dropped, overflow bins below
the minimum and above the maximum, the last interior bin closed.
"""
import json
import pathlib

import numpy as np
from scipy import stats
from scipy.spatial.distance import jensenshannon

HERE = pathlib.Path(__file__).resolve().parent
rng = np.random.default_rng(20261126)


def edges_at(values, percentiles):
    edges = list(dict.fromkeys(np.percentile(values, percentiles).tolist()))
    if len(edges) == 1:
        edges.append(float(np.nextafter(edges[0], np.inf)))
    return np.array(edges)


def counts(edges, xs):
    n = len(edges)
    c = np.zeros(n + 1, dtype=np.int64)
    for x in xs:
        if x < edges[0]:
            i = 0
        elif x > edges[-1]:
            i = n
        elif x == edges[-1]:
            i = n - 1
        else:
            i = int(np.searchsorted(edges, x, side="right"))
        c[i] += 1
    return c


def psi(r, c):
    p, q = r / r.sum(), c / c.sum()
    p, q = np.where(p == 0, 0.0001, p), np.where(q == 0, 0.0001, q)
    return float(np.sum((p - q) * np.log(p / q)))


def chi_square_p(r, c):
    keep = r > 0
    r, c = r[keep].astype(float), c[keep].astype(float)
    if len(r) < 2 or c.sum() == 0:
        return None
    return float(stats.chisquare(c, r / r.sum() * c.sum()).pvalue)


def numerical(name, ref, cur):
    fine, deciles = edges_at(ref, np.arange(101)), edges_at(ref, np.arange(0, 101, 10))
    rf, cf = counts(fine, ref), counts(fine, cur)
    rd, cd = counts(deciles, ref), counts(deciles, cur)
    binned_d = float(np.max(np.abs(np.cumsum(rf / rf.sum()) - np.cumsum(cf / cf.sum()))))
    en = len(ref) * len(cur) / (len(ref) + len(cur))
    return {
        "name": name, "type": "numerical", "reference": ref.tolist(), "current": cur.tolist(),
        "deciles": deciles.tolist(), "std": float(np.std(ref)),
        "psi": psi(rd, cd), "jensen_shannon": float(jensenshannon(rd / rd.sum(), cd / cd.sum())),
        "chi_square_p": chi_square_p(rd, cd),
        "ks_binned": binned_d, "ks_binned_p": float(stats.kstwobign.sf(np.sqrt(en) * binned_d)),
        "ks_exact": float(stats.ks_2samp(ref, cur).statistic),
        "wasserstein_exact": float(stats.wasserstein_distance(ref, cur)),
    }


def categorical(name, ref, cur):
    values, n = np.unique(ref, return_counts=True)
    order = sorted(zip(values.tolist(), n.tolist()), key=lambda t: (-t[1], t[0]))
    categories = [c for c, _ in order]
    r = np.array([k for _, k in order] + [0])
    c = np.array([int(np.sum(cur == k)) for k in categories] + [int(np.sum(~np.isin(cur, categories)))])
    return {
        "name": name, "type": "categorical", "reference": ref.tolist(), "current": cur.tolist(),
        "categories": categories, "psi": psi(r, c),
        "jensen_shannon": float(jensenshannon(r / r.sum(), c / c.sum())),
        "chi_square_p": chi_square_p(r, c), "unseen_share": float(c[-1] / c.sum()),
    }


cases = [
    numerical("shift", rng.normal(0, 1, 2000), rng.normal(0.3, 1.2, 500)),
    numerical("same", rng.normal(5, 2, 1500), rng.normal(5, 2, 800)),
    numerical("small_reference", rng.uniform(0, 10, 300), rng.uniform(1, 12, 200)),
    numerical("constant", np.full(400, 3.0), np.concatenate([np.full(60, 3.0), np.full(40, 4.0)])),
    numerical("few_values", rng.integers(0, 4, 500).astype(float), rng.integers(0, 5, 300).astype(float)),
    categorical("plan", rng.choice(["basic", "pro", "team"], 3000, p=[0.6, 0.3, 0.1]),
                rng.choice(["basic", "pro", "team", "gold"], 700, p=[0.4, 0.3, 0.2, 0.1])),
    categorical("country", rng.choice(["fr", "de", "it"], 600, p=[0.5, 0.3, 0.2]),
                rng.choice(["fr", "de", "it"], 400, p=[0.5, 0.3, 0.2])),
]
(HERE / "expected.json").write_text(json.dumps(cases) + "\n")
print(f"wrote {HERE / 'expected.json'}")
