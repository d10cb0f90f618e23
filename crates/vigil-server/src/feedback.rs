//! Ground truth: labels or values that arrive after the prediction, joined
//! with the prediction log by request id, stored, and scored per version.

use crate::predictions;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, SystemTime};
use vigil_core::Error;
use vigil_core::features::PredictionSpec;
use vigil_core::names::quoted;
use vigil_monitor::quality::{self, ClassificationQuality, Classified, RegressionQuality};
use vigil_runtime::InferenceService;
use vigil_runtime::models::ModelSet;
use vigil_security::vault::Vault;
use vigil_store::{MetadataStore, PredictionStore, StoredFeedback};

/// Most feedback items in one call.
pub const MAX_ITEMS: usize = 1000;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FeedbackRequest {
    pub feedback: Vec<FeedbackItem>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FeedbackItem {
    /// The `x-request-id` the prediction was answered with.
    pub request_id: String,
    /// The record's index in that request (default 0).
    #[serde(default)]
    pub index: usize,
    /// The true label, for a classifier.
    #[serde(default)]
    pub label: Option<String>,
    /// The true value, for a regressor.
    #[serde(default)]
    pub value: Option<f64>,
}

/// What became of a feedback call.
#[derive(Debug, Serialize)]
pub struct Joined {
    pub joined: usize,
    /// Request ids not in the prediction log within the horizon (never
    /// logged, sampled out, too old, or not yet written: retry later).
    pub not_found: Vec<String>,
}

/// Checks `items`, finds their predictions in the prediction log `log`
/// (logged at most `horizon` ago), and stores each joined row in `store`.
pub async fn record(
    store: &dyn MetadataStore,
    log: &dyn PredictionStore,
    vault: &Vault,
    service: &InferenceService,
    endpoint: &str,
    items: &[FeedbackItem],
    horizon: Duration,
) -> Result<Joined, Error> {
    vigil_core::names::check_name("endpoint", endpoint)?;
    if items.is_empty() || items.len() > MAX_ITEMS {
        return Err(Error::invalid_input(format!("feedback: 1 to {MAX_ITEMS} items")));
    }
    for (i, item) in items.iter().enumerate() {
        if item.request_id.is_empty() || item.request_id.len() > 128 {
            return Err(Error::invalid_input(format!("feedback[{i}].request_id: 1 to 128 characters")));
        }
        match (&item.label, item.value) {
            (Some(l), None) if !l.is_empty() && l.len() <= 256 => {}
            (None, Some(v)) if v.is_finite() => {}
            _ => {
                return Err(Error::invalid_input(format!(
                    "feedback[{i}]: give either label (1 to 256 characters) or value (a finite number)"
                )));
            }
        }
    }
    let now = predictions::micros(SystemTime::now());
    let since = now.saturating_sub(i64::try_from(horizon.as_micros()).unwrap_or(i64::MAX));
    let ids: HashSet<&str> = items.iter().map(|i| i.request_id.as_str()).collect();
    let found = predictions::find(log, vault, endpoint, since, &ids).await?;
    let mut rows = Vec::with_capacity(items.len());
    let mut not_found = Vec::new();
    let models = service.models();
    for (i, item) in items.iter().enumerate() {
        let Some(record) = found.get(&item.request_id) else {
            not_found.push(item.request_id.clone());
            continue;
        };
        // The version's spec says what truth it takes.
        let version = record["version"].as_str().unwrap_or_default();
        let spec = prediction_spec(&models, endpoint, version);
        match (&spec, &item.label) {
            (None, _) => {
                return Err(Error::invalid_input(format!(
                    "feedback[{i}]: version {} of {} is not served with a [prediction] spec, so its predictions cannot be scored",
                    quoted(version),
                    quoted(endpoint)
                )));
            }
            (Some(PredictionSpec::Classification { labels, .. }), Some(label)) if !labels.contains(label) => {
                return Err(Error::invalid_input(format!(
                    "feedback[{i}].label: {} is not one of the model's labels {labels:?}",
                    quoted(label)
                )));
            }
            _ => {}
        }
        // Records set aside as invalid have no row: map the request's index to the logged row.
        let row = match record["rows"].as_array() {
            Some(rows) => rows.iter().position(|r| r.as_u64() == Some(item.index as u64)),
            None => Some(item.index),
        };
        let Some(prediction) = row.and_then(|r| record["predictions"].get(r)) else {
            return Err(Error::invalid_input(format!(
                "feedback[{i}]: request {} has no record {} with a prediction (logged versions need a [prediction] spec)",
                quoted(&item.request_id),
                item.index
            )));
        };
        let classifies = prediction.get("label").is_some();
        if classifies != item.label.is_some() {
            let wanted = if classifies { "label" } else { "value" };
            return Err(Error::invalid_input(format!("feedback[{i}]: this model's predictions need a {wanted}")));
        }
        rows.push(StoredFeedback {
            endpoint: endpoint.to_owned(),
            request_id: item.request_id.clone(),
            row: item.index as u64,
            version: record["version"].as_str().unwrap_or_default().to_owned(),
            predicted_us: record["time_us"].as_i64().unwrap_or_default(),
            received_us: now,
            prediction: prediction.to_string(),
            truth: match (&item.label, item.value) {
                (Some(l), _) => json!({ "label": l }).to_string(),
                (_, v) => json!({ "value": v }).to_string(),
            },
        });
    }
    store.put_feedback(&rows).await?;
    Ok(Joined { joined: rows.len(), not_found })
}

/// The `[prediction]` spec of `endpoint`'s served `version`, if it has one.
fn prediction_spec(models: &ModelSet, endpoint: &str, version: &str) -> Option<PredictionSpec> {
    let v = models.endpoint(endpoint)?.versions.iter().find(|v| v.version == version)?.state();
    v.features()?.spec().prediction.clone()
}

/// One version's scores over a time range, and window by window.
#[derive(Debug, Serialize)]
pub struct VersionQuality {
    pub version: String,
    #[serde(flatten)]
    pub scores: Scores,
    /// The same per window of `window_seconds` (by prediction time), oldest first.
    pub series: Vec<WindowQuality>,
}

#[derive(Debug, Default, Serialize)]
pub struct Scores {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub classification: Option<ClassificationQuality>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub regression: Option<RegressionQuality>,
}

#[derive(Debug, Serialize)]
pub struct WindowQuality {
    pub start_s: i64,
    #[serde(flatten)]
    pub scores: Scores,
}

/// Scores each version of `endpoint` on the ground truth of predictions made
/// in `since_us..until_us`, overall and per window of `window_s` seconds. A
/// classifier's labels are in its spec's order when the version is served
/// (the second is the positive class of a binary one), else in the order
/// first seen.
pub async fn quality(
    store: &dyn MetadataStore,
    service: &InferenceService,
    endpoint: &str,
    since_us: i64,
    until_us: i64,
    window_s: i64,
) -> Result<Vec<VersionQuality>, Error> {
    let rows = store.feedback(endpoint, since_us, until_us).await?;
    let window_us = window_s.max(1).saturating_mul(1_000_000);
    let mut by_version: BTreeMap<String, Vec<(i64, Value, Value)>> = BTreeMap::new();
    for r in rows {
        let (Ok(p), Ok(t)) = (serde_json::from_str(&r.prediction), serde_json::from_str(&r.truth)) else { continue };
        by_version.entry(r.version).or_default().push((r.predicted_us.div_euclid(window_us) * window_s, p, t));
    }
    let models = service.models();
    let mut scored = Vec::new();
    for (version, rows) in by_version {
        let (mut labels, output) = match prediction_spec(&models, endpoint, &version) {
            Some(PredictionSpec::Classification { labels, .. }) => (labels, None),
            Some(PredictionSpec::Regression { names, .. }) => (Vec::new(), names.first().cloned()),
            None => (Vec::new(), None),
        };
        let all: Vec<(&Value, &Value)> = rows.iter().map(|(_, p, t)| (p, t)).collect();
        let scores = score(&all, &mut labels, output.as_deref());
        let mut series = Vec::new();
        let mut i = 0;
        while i < rows.len() {
            let start = rows[i].0;
            let end = rows[i..].iter().position(|r| r.0 != start).map_or(rows.len(), |n| i + n);
            let part: Vec<(&Value, &Value)> = rows[i..end].iter().map(|(_, p, t)| (p, t)).collect();
            series.push(WindowQuality { start_s: start, scores: score(&part, &mut labels, output.as_deref()) });
            i = end;
        }
        scored.push(VersionQuality { version, scores, series });
    }
    Ok(scored)
}

/// Scores (prediction, truth) pairs: a classifier's when every truth is a
/// label, else a regressor's (of the `output` named, else the only one).
/// `labels` grows with labels not seen before.
fn score(pairs: &[(&Value, &Value)], labels: &mut Vec<String>, output: Option<&str>) -> Scores {
    if pairs.iter().all(|(_, t)| t.get("label").is_some()) {
        let mut index = |label: &str| match labels.iter().position(|l| l == label) {
            Some(i) => i,
            None => {
                labels.push(label.to_owned());
                labels.len() - 1
            }
        };
        let mut rows = Vec::with_capacity(pairs.len());
        let mut probabilities = Vec::with_capacity(pairs.len());
        for (p, t) in pairs {
            let truth = index(t["label"].as_str().unwrap_or_default());
            let predicted = index(p["label"].as_str().unwrap_or_default());
            let by_label: HashMap<String, f64> = p["probabilities"]
                .as_object()
                .map(|m| m.iter().filter_map(|(k, v)| Some((k.clone(), v.as_f64()?))).collect())
                .unwrap_or_default();
            for k in by_label.keys() {
                index(k);
            }
            rows.push(Classified { truth, predicted, probabilities: Vec::new() });
            probabilities.push(by_label);
        }
        for (row, by_label) in rows.iter_mut().zip(probabilities) {
            row.probabilities = labels.iter().map(|l| by_label.get(l).copied().unwrap_or(0.0)).collect();
        }
        Scores { classification: quality::classification(&rows, labels.len().max(2)), regression: None }
    } else {
        let pairs: Vec<(f64, f64)> = pairs
            .iter()
            .filter_map(|(p, t)| {
                let predicted = match output {
                    Some(name) => p.get(name)?.as_f64()?,
                    None => p.as_object().filter(|o| o.len() == 1)?.values().next()?.as_f64()?,
                };
                Some((t["value"].as_f64()?, predicted))
            })
            .collect();
        Scores { classification: None, regression: quality::regression(&pairs) }
    }
}
