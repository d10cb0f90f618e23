#!/usr/bin/env bash
# Checks the files under deploy/: the Prometheus config and alert rules
# (promtool check, and the rules' unit tests) and the Grafana dashboard (valid
# JSON, panels with titles and unique ids, PromQL that parses and names only
# metrics Vigil exports). Exits non-zero on any failure. Run by .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."

promtool check config deploy/prometheus/prometheus.yml
promtool check rules deploy/prometheus/alerts.yml
promtool test rules deploy/prometheus/alerts_test.yml

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

# The dashboard's structure and metric names; writes its queries, with the
# Grafana variables replaced, as recording rules for promtool to parse.
python3 - deploy/grafana/vigil.json "$tmp/dashboard_rules.yml" <<'PY'
import json
import re
import sys

# Every metric Vigil exports (histograms by their series names).
METRICS = {
    "vigil_requests_total",
    "vigil_request_duration_seconds_bucket",
    "vigil_request_duration_seconds_sum",
    "vigil_request_duration_seconds_count",
    "vigil_batch_size_bucket",
    "vigil_batch_size_sum",
    "vigil_batch_size_count",
    "vigil_requests_in_flight",
    "vigil_queue_depth",
    "vigil_model_ready",
    "vigil_model_load_seconds",
    "vigil_shadow_requests_total",
    "vigil_prediction_log_records_total",
    "vigil_alerts_firing",
    "vigil_build_info",
    "process_cpu_seconds_total",
    "process_resident_memory_bytes",
    "process_open_fds",
}
# PromQL functions and aggregation operators (an identifier before "(").
FUNCTIONS = {
    "abs", "absent", "absent_over_time", "avg", "avg_over_time", "bottomk", "ceil", "changes",
    "clamp", "clamp_max", "clamp_min", "count", "count_over_time", "count_values", "day_of_month",
    "day_of_week", "day_of_year", "days_in_month", "delta", "deriv", "exp", "floor", "group",
    "histogram_quantile", "holt_winters", "hour", "idelta", "increase", "irate", "label_join",
    "label_replace", "last_over_time", "ln", "log10", "log2", "max", "max_over_time", "min",
    "min_over_time", "minute", "month", "predict_linear", "present_over_time", "quantile",
    "quantile_over_time", "rate", "resets", "round", "scalar", "sgn", "sort", "sort_desc", "sqrt",
    "stddev", "stddev_over_time", "stdvar", "stdvar_over_time", "sum", "sum_over_time", "time",
    "timestamp", "topk", "vector", "year",
}
# Keywords and literals that are neither metrics nor functions.
KEYWORDS = {"and", "or", "unless", "bool", "offset", "atan2", "inf", "nan"}
# Keywords followed by a list of label names.
LABEL_LISTS = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
TOKEN = re.compile(r"[0-9][0-9.]*(?:[eE][+-]?[0-9]+)?[a-zA-Z]*|\.[0-9]+|[a-zA-Z_:][a-zA-Z0-9_:]*")

path, rules_out = sys.argv[1], sys.argv[2]
errors = []


def grafana_to_promql(expr):
    """The query as Prometheus gets it, for the variables this dashboard uses."""
    expr = re.sub(r"\$(__rate_interval|__interval|__range)\b|\$\{(__rate_interval|__interval|__range)\}", "5m", expr)
    return re.sub(r"\$\{?\w+\}?", ".*", expr)


def metric_names(expr, where):
    """The metric names an expression reads; reports unknown functions."""
    s = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', '""', expr)  # string literals
    s = re.sub(r"\{[^}]*\}", " ", s)  # label matchers
    s = re.sub(r"\[[^\]]*\]", " ", s)  # ranges and subqueries
    s = LABEL_LISTS.sub(" ", s)
    s = re.sub(r"\$\{?\w+\}?", " ", s)  # Grafana variables left outside strings
    names = set()
    for m in TOKEN.finditer(s):
        word = m.group(0)
        if word[0].isdigit() or word[0] == ".":
            continue
        if word.lower() in KEYWORDS:
            continue
        if re.match(r"\s*\(", s[m.end():]):
            if word not in FUNCTIONS:
                errors.append(f"{where}: unknown function {word!r} in: {expr}")
            continue
        names.add(word)
    return names


try:
    with open(path) as f:
        dashboard = json.load(f)
except (OSError, ValueError) as e:
    sys.exit(f"{path}: not valid JSON: {e}")

if dashboard.get("schemaVersion") != 39:
    errors.append(f"schemaVersion is {dashboard.get('schemaVersion')!r}, not 39")
if not dashboard.get("title") or not dashboard.get("uid"):
    errors.append("the dashboard needs a title and a uid")

variables = {v.get("name"): v for v in dashboard.get("templating", {}).get("list", [])}
ds = variables.get("datasource", {})
if ds.get("type") != "datasource" or ds.get("query") != "prometheus":
    errors.append("no `datasource` template variable of type prometheus")
endpoint = variables.get("endpoint", {})
query = endpoint.get("query")
query = query.get("query") if isinstance(query, dict) else query
if endpoint.get("type") != "query" or query != "label_values(vigil_requests_total, endpoint)":
    errors.append("no `endpoint` template variable from label_values(vigil_requests_total, endpoint)")

panels = []


def walk(items):
    for p in items:
        panels.append(p)
        walk(p.get("panels", []))  # rows (collapsed or not)


walk(dashboard.get("panels", []))
if not panels:
    errors.append("no panels")
ids = {}
exprs = []
for p in panels:
    where = f"panel {p.get('id')!r} ({p.get('title')!r})"
    if not isinstance(p.get("id"), int):
        errors.append(f"{where}: no integer id")
    elif p["id"] in ids:
        errors.append(f"{where}: id also used by panel {ids[p['id']]!r}")
    else:
        ids[p["id"]] = p.get("title")
    if not str(p.get("title") or "").strip():
        errors.append(f"{where}: no title")
    if p.get("type") == "row":
        continue
    targets = p.get("targets") or []
    if not targets:
        errors.append(f"{where}: no queries")
    for t in targets:
        expr = t.get("expr", "")
        if not expr.strip():
            errors.append(f"{where}: target {t.get('refId')!r} has no expr")
            continue
        for name in sorted(metric_names(expr, where) - METRICS):
            errors.append(f"{where}: {name!r} is not a metric Vigil exports, in: {expr}")
        exprs.append((where, grafana_to_promql(expr)))
label_values = re.fullmatch(r"\s*label_values\((.*),\s*[a-zA-Z_]\w*\s*\)\s*", query or "")
if label_values:
    for name in sorted(metric_names(label_values.group(1), "variable endpoint") - METRICS):
        errors.append(f"variable endpoint: {name!r} is not a metric Vigil exports")

with open(rules_out, "w") as f:
    f.write("groups:\n  - name: dashboard\n    rules:\n")
    for i, (where, expr) in enumerate(exprs):
        f.write(f"      - record: dashboard:query_{i}\n        expr: {json.dumps(expr)}\n")

if errors:
    print("\n".join(f"{path}: {e}" for e in errors), file=sys.stderr)
    sys.exit(1)
print(f"{path}: {len(panels)} panels, {len(exprs)} queries, metric names and structure ok")
PY

# Every dashboard query parses as PromQL.
promtool check rules "$tmp/dashboard_rules.yml" > "$tmp/check.log" 2>&1 || { cat "$tmp/check.log"; exit 1; }
echo "deploy/grafana/vigil.json: every query parses as PromQL"
