//! `vigil monitor report`: the monitor route's answer as one self-contained
//! HTML file (inline CSS and SVG, no scripts, nothing fetched): a summary,
//! model quality, and per feature its verdict, data quality, the reference
//! and served distributions, and its score window by window.

use serde_json::Value;
use std::fmt::Write;

const REFERENCE: &str = "#7a8ba3";
const CURRENT: &str = "#e0703a";

/// The report for `monitor` (the JSON of `GET /api/v1/endpoints/{e}/monitor`).
pub fn render(monitor: &Value) -> String {
    let endpoint = esc(monitor["endpoint"].as_str().unwrap_or_default());
    let mut html = String::with_capacity(64 * 1024);
    let _ = write!(
        html,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Vigil monitoring: {endpoint}</title>\
         <style>{STYLE}</style></head><body><h1>Monitoring report: {endpoint}</h1>\
         <p class=\"range\">Windows starting from {} to {} (UTC). <span class=\"key\"><i style=\"background:{REFERENCE}\"></i>reference \
         <i style=\"background:{CURRENT}\"></i>served</span></p>",
        time(&monitor["since_s"]),
        time(&monitor["until_s"])
    );
    html.push_str("<h2>Summary</h2><table><tr><th>version</th><th>windows</th><th>features drifted</th><th>dataset drift</th></tr>");
    let versions = monitor["versions"].as_array().cloned().unwrap_or_default();
    for v in &versions {
        let drift = &v["drift"];
        let _ = write!(
            html,
            "<tr><td>{}</td><td>{}</td><td>{} of {}</td><td class=\"{}\">{}</td></tr>",
            esc(v["version"].as_str().unwrap_or_default()),
            count(&v["windows"]),
            count(&drift["drifted_features"]),
            drift["features"].as_array().map_or(0, Vec::len),
            if drift["dataset_drift"] == true { "drift" } else { "ok" },
            if drift["dataset_drift"] == true { "yes" } else { "no" },
        );
    }
    if versions.is_empty() {
        html.push_str("<tr><td colspan=\"4\">No windows in this range: is a reference profile attached, and has the endpoint served?</td></tr>");
    }
    html.push_str("</table>");
    quality(&mut html, monitor["quality"].as_array().map_or(&[][..], Vec::as_slice));
    for v in &versions {
        let version = esc(v["version"].as_str().unwrap_or_default());
        let _ = write!(html, "<h2>Version {version}: features</h2>");
        let features = v["drift"]["features"].as_array().cloned().unwrap_or_default();
        for f in &features {
            let name = f["feature"].as_str().unwrap_or_default();
            let verdict = if f["drifted"] == true { ("drift", "DRIFT") } else { ("ok", "no drift") };
            let _ = write!(
                html,
                "<section class=\"feature\"><h3>{} <span class=\"{}\">{}</span></h3>\
                 <p>{} = {} (threshold {}) over {} values; missing {}, out of range {}, unseen {}.</p>",
                esc(name),
                verdict.0,
                verdict.1,
                esc(f["method"].as_str().unwrap_or_default()),
                number(&f["score"]),
                number(&f["threshold"]),
                count(&f["count"]),
                percent(&f["missing_share"]),
                percent(&f["out_of_range_share"]),
                percent(&f["unseen_share"]),
            );
            if let Some(h) = v["histograms"].as_array().and_then(|hs| hs.iter().find(|h| h["feature"] == name)) {
                html.push_str(&bars(h));
            }
            html.push_str(&series(v["series"].as_array().map_or(&[][..], Vec::as_slice), name, &f["threshold"]));
            html.push_str("</section>");
        }
    }
    html.push_str("<footer>Written by <code>vigil monitor report</code>. docs/monitoring.md explains every test and threshold.</footer></body></html>\n");
    html
}

fn quality(html: &mut String, versions: &[Value]) {
    if versions.is_empty() {
        return;
    }
    html.push_str("<h2>Model quality (ground truth)</h2><table><tr><th>version</th><th>predictions with truth</th><th>scores</th></tr>");
    for q in versions {
        let (count, scores) = if let Some(c) = q.get("classification") {
            let keys = ["accuracy", "precision", "recall", "f1", "roc_auc", "log_loss"];
            (count(&c["count"]), keys.iter().map(|k| format!("{k} {}", number(&c[*k]))).collect::<Vec<_>>().join(", "))
        } else if let Some(r) = q.get("regression") {
            let keys = ["mae", "rmse", "r2"];
            (count(&r["count"]), keys.iter().map(|k| format!("{k} {}", number(&r[*k]))).collect::<Vec<_>>().join(", "))
        } else {
            continue;
        };
        let _ = write!(
            html,
            "<tr><td>{}</td><td>{count}</td><td>{}</td></tr>",
            esc(q["version"].as_str().unwrap_or_default()),
            esc(&scores)
        );
    }
    html.push_str("</table>");
}

/// Reference and served shares per bin, side by side.
fn bars(h: &Value) -> String {
    let labels: Vec<&str> =
        h["bins"].as_array().map(|b| b.iter().filter_map(Value::as_str).collect()).unwrap_or_default();
    let share = |key: &str, i: usize| h[key][i].as_f64().unwrap_or(0.0);
    let n = labels.len().max(1);
    let (width, height, bottom) = (720.0, 220.0, 60.0);
    let top = (0..labels.len()).flat_map(|i| [share("reference", i), share("current", i)]).fold(0.01_f64, f64::max);
    #[allow(clippy::cast_precision_loss)]
    let group = width / n as f64;
    let mut svg = format!(
        "<svg class=\"bars\" role=\"img\" aria-label=\"reference and served distributions\" viewBox=\"0 0 {width} {height}\" width=\"{width}\" height=\"{height}\">"
    );
    for (i, label) in labels.iter().enumerate() {
        #[allow(clippy::cast_precision_loss)]
        let x = i as f64 * group;
        for (k, (key, colour)) in [("reference", REFERENCE), ("current", CURRENT)].into_iter().enumerate() {
            let v = share(key, i);
            let h = (height - bottom - 10.0) * v / top;
            #[allow(clippy::cast_precision_loss)]
            let bx = x + group * 0.1 + k as f64 * group * 0.4;
            let _ = write!(
                svg,
                "<rect x=\"{bx:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{h:.1}\" fill=\"{colour}\"><title>{}: {key} {:.1}%</title></rect>",
                height - bottom - h,
                group * 0.4,
                esc(label),
                v * 100.0
            );
        }
        let _ = write!(
            svg,
            "<text x=\"{:.1}\" y=\"{:.1}\" transform=\"rotate(35 {:.1} {:.1})\" font-size=\"10\">{}</text>",
            x + group * 0.3,
            height - bottom + 14.0,
            x + group * 0.3,
            height - bottom + 14.0,
            esc(&label.chars().take(24).collect::<String>())
        );
    }
    svg.push_str("</svg>");
    svg
}

/// The feature's score window by window, with its threshold.
fn series(windows: &[Value], feature: &str, threshold: &Value) -> String {
    let points: Vec<(i64, f64)> = windows
        .iter()
        .filter_map(|w| {
            let f = w["features"].as_array()?.iter().find(|f| f[0] == feature)?;
            Some((w["start_s"].as_i64()?, f[1].as_f64()?))
        })
        .collect();
    if points.is_empty() {
        return String::new();
    }
    let (width, height, pad) = (720.0, 120.0, 20.0);
    let limit = threshold.as_f64().unwrap_or(0.0);
    let top = points.iter().map(|p| p.1).fold(limit * 1.2, f64::max).max(1e-9);
    let (first, last) = (points[0].0, points[points.len() - 1].0);
    #[allow(clippy::cast_precision_loss)]
    let x = |t: i64| {
        if last == first { width / 2.0 } else { pad + (width - 2.0 * pad) * (t - first) as f64 / (last - first) as f64 }
    };
    let y = |v: f64| height - pad - (height - 2.0 * pad) * v / top;
    let path: Vec<String> = points.iter().map(|(t, v)| format!("{:.1},{:.1}", x(*t), y(*v))).collect();
    let mut svg = format!(
        "<svg class=\"series\" role=\"img\" aria-label=\"score per window\" viewBox=\"0 0 {width} {height}\" width=\"{width}\" height=\"{height}\">\
         <line x1=\"{pad}\" x2=\"{}\" y1=\"{:.1}\" y2=\"{:.1}\" stroke=\"#b00\" stroke-dasharray=\"4 3\"><title>threshold {limit}</title></line>\
         <polyline fill=\"none\" stroke=\"{CURRENT}\" stroke-width=\"2\" points=\"{}\"/>",
        width - pad,
        y(limit),
        y(limit),
        path.join(" ")
    );
    for (t, v) in &points {
        let _ = write!(
            svg,
            "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"{CURRENT}\"><title>{}: {v:.4}</title></circle>",
            x(*t),
            y(*v),
            time(&Value::from(*t))
        );
    }
    let _ =
        write!(svg, "<text x=\"{pad}\" y=\"12\" font-size=\"10\">score per window (dashed: threshold)</text></svg>");
    svg
}

fn time(v: &Value) -> String {
    v.as_i64()
        .and_then(|s| u64::try_from(s).ok())
        .map(|s| {
            humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_secs(s)).to_string()
        })
        .unwrap_or_else(|| "-".into())
}

/// A count, or "-": never the raw JSON, which could be text from a bad server.
fn count(v: &Value) -> String {
    v.as_u64().map_or_else(|| "-".to_owned(), |n| n.to_string())
}

/// A score to four decimals, or "-".
pub(crate) fn number(v: &Value) -> String {
    v.as_f64().map_or_else(|| "-".to_owned(), |x| format!("{x:.4}"))
}

/// A share as a percentage, or "-".
pub(crate) fn percent(v: &Value) -> String {
    v.as_f64().map_or_else(|| "-".to_owned(), |x| format!("{:.1}%", x * 100.0))
}

/// Text made safe for HTML: feature names and categories come from users.
fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:2rem auto;max-width:780px;color:#222}\
h1{font-size:1.5rem}h2{font-size:1.2rem;margin-top:2rem;border-bottom:1px solid #ddd}h3{font-size:1rem}\
table{border-collapse:collapse}td,th{border:1px solid #ddd;padding:.25rem .6rem;text-align:left}\
.drift{color:#b00;font-weight:600}.ok{color:#276b2f}.range{color:#555}\
.key i{display:inline-block;width:.8em;height:.8em;margin:0 .3em 0 .8em}\
section.feature{margin-bottom:1.5rem}svg{display:block;margin:.4rem 0}footer{margin-top:3rem;color:#777;font-size:.8rem}";

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn names_from_users_cannot_inject_markup() {
        let monitor = json!({"endpoint": "e", "since_s": 0, "until_s": 60, "versions": [{
            "version": "1", "windows": 1,
            "drift": {"drifted_features": 1, "dataset_drift": true, "features": [{"feature": "<script>x</script>", "method": "psi",
                "score": 0.5, "threshold": 0.1, "drifted": true, "count": 3, "missing_share": 0.0, "out_of_range_share": 0.0, "unseen_share": 0.0}]},
            "histograms": [{"feature": "<script>x</script>", "kind": "categorical", "bins": ["<b>", "(unseen)"], "reference": [1.0, 0.0], "current": [0.5, 0.5]}],
            "series": [{"start_s": 0, "drift_share": 1.0, "features": [["<script>x</script>", 0.5, true]]}]}], "quality": []});
        let html = render(&monitor);
        assert!(!html.contains("<script>") && !html.contains("<b>"), "{html}");
        assert!(html.contains("&lt;script&gt;") && html.matches("<svg").count() == 2, "{html}");
    }
}
