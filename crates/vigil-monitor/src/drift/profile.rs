//! The reference profile: what the training data looked like, per feature,
//! with the bins every window is counted on.

use super::bins::{Bins, quantile};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// Most categories a categorical feature's reference may have.
pub const MAX_CATEGORIES: usize = 10_000;

/// One column of the reference data.
#[derive(Debug, Clone, PartialEq)]
pub enum Column {
    /// `None` (or NaN) is missing.
    Numbers(Vec<Option<f64>>),
    Categories(Vec<Option<String>>),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReferenceProfile {
    pub rows: u64,
    pub features: Vec<FeatureProfile>,
    /// By feature name: a test or threshold other than the default.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub settings: std::collections::BTreeMap<String, super::report::DriftSettings>,
    /// The dataset drifts when at least this share of its input features do
    /// (default 0.5, Evidently's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataset_drift_share: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureProfile {
    pub name: String,
    /// Values present.
    pub count: u64,
    pub missing: u64,
    #[serde(flatten)]
    pub kind: ProfileKind,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ProfileKind {
    Numerical {
        min: f64,
        max: f64,
        mean: f64,
        /// Population standard deviation (numpy's default, `ddof = 0`).
        std: f64,
        /// Percentiles 1, 5, 25, 50, 75, 95, 99.
        quantiles: Vec<(f64, f64)>,
        /// Distinct values, counted up to 6 (the statistic chosen depends on
        /// whether there are more than 5).
        distinct: u64,
        /// Percentile bins (see `bins`): what windows count on.
        bins: Bins,
        /// Decile bins, for PSI, Jensen–Shannon and the histograms shown.
        deciles: Bins,
        /// The reference's counts on `bins`.
        histogram: Vec<u64>,
    },
    Categorical {
        /// Most frequent first (ties by name).
        categories: Vec<String>,
        counts: Vec<u64>,
    },
}

impl ReferenceProfile {
    /// Profiles `columns` (name, values), all of the same length.
    pub fn build(columns: Vec<(String, Column)>) -> Result<ReferenceProfile, String> {
        let mut rows = None;
        let mut features = Vec::with_capacity(columns.len());
        for (name, column) in columns {
            let len = match &column {
                Column::Numbers(v) => v.len(),
                Column::Categories(v) => v.len(),
            };
            if *rows.get_or_insert(len) != len {
                return Err(format!("column '{name}' has {len} values, the others {}", rows.unwrap_or(0)));
            }
            features.push(profile(name, column)?);
        }
        Ok(ReferenceProfile {
            rows: rows.unwrap_or(0) as u64,
            features,
            settings: Default::default(),
            dataset_drift_share: None,
        })
    }

    /// Checks a profile that came from outside (the API): bins ascending and
    /// finite, counts matching them, names unique. Errors name the feature.
    pub fn validate(&self) -> Result<(), String> {
        if self.features.is_empty() || self.features.len() > 10_000 {
            return Err("features: 1 to 10000 profiled features".into());
        }
        if self.dataset_drift_share.is_some_and(|s| !(s > 0.0 && s <= 1.0)) {
            return Err("dataset_drift_share: in (0, 1]".into());
        }
        for (name, s) in &self.settings {
            let Some(feature) = self.feature(name) else {
                return Err(format!("settings.{name}: no such feature in the profile"));
            };
            let numerical_only = matches!(
                s.method,
                Some(super::report::Method::KolmogorovSmirnov | super::report::Method::WassersteinNormed)
            );
            if numerical_only && matches!(feature.kind, ProfileKind::Categorical { .. }) {
                return Err(format!("settings.{name}.method: a test for numerical features; {name} is categorical"));
            }
            if s.threshold.is_some_and(|t| !(t.is_finite() && t >= 0.0)) {
                return Err(format!("settings.{name}.threshold: a finite number >= 0"));
            }
        }
        for (i, f) in self.features.iter().enumerate() {
            let at = |e: &str| format!("features[{i}] ({}): {e}", f.name);
            if f.name.is_empty() || f.name.len() > 256 {
                return Err(format!("features[{i}].name: 1 to 256 characters"));
            }
            if self.features[..i].iter().any(|g| g.name == f.name) {
                return Err(at("profiled twice"));
            }
            match &f.kind {
                ProfileKind::Numerical { bins, deciles, histogram, std, min, max, .. } => {
                    for (what, b) in [("bins", bins), ("deciles", deciles)] {
                        let rising = b.edges.windows(2).all(|w| w[0] < w[1]);
                        if b.edges.is_empty()
                            || b.edges.len() > 1001
                            || !rising
                            || b.edges.iter().any(|e| !e.is_finite())
                        {
                            return Err(at(&format!("{what}: 1 to 1001 finite, rising edges")));
                        }
                    }
                    if histogram.len() != bins.len() {
                        return Err(at(&format!("histogram: {} counts for {} bins", histogram.len(), bins.len())));
                    }
                    if deciles.edges.iter().any(|e| !bins.edges.contains(e)) {
                        return Err(at("every decile edge must be a bin edge"));
                    }
                    if !(std.is_finite() && *std >= 0.0 && min.is_finite() && max.is_finite() && min <= max) {
                        return Err(at("min, max and std must be finite, min <= max, std >= 0"));
                    }
                }
                ProfileKind::Categorical { categories, counts } => {
                    if categories.len() != counts.len() || categories.len() > MAX_CATEGORIES {
                        return Err(at(&format!("categories and counts: as many, at most {MAX_CATEGORIES}")));
                    }
                    let mut seen = std::collections::HashSet::new();
                    if !categories.iter().all(|c| seen.insert(c)) {
                        return Err(at("a category is listed twice"));
                    }
                }
            }
        }
        Ok(())
    }

    /// A digest of the profile's bins and categories (what windows count
    /// on), hex: two profiles with the same bins count alike.
    pub fn fingerprint(&self) -> String {
        use sha2::Digest;
        let shape: Vec<(&str, &ProfileKind)> = self.features.iter().map(|f| (f.name.as_str(), &f.kind)).collect();
        let bytes = serde_json::to_vec(&shape).unwrap_or_default();
        hex::encode(&sha2::Sha256::digest(bytes)[..16])
    }

    pub fn feature(&self, name: &str) -> Option<&FeatureProfile> {
        self.features.iter().find(|f| f.name == name)
    }
}

fn profile(name: String, column: Column) -> Result<FeatureProfile, String> {
    match column {
        Column::Numbers(values) => {
            let mut sorted: Vec<f64> = values.iter().flatten().copied().filter(|x| !x.is_nan()).collect();
            let missing = (values.len() - sorted.len()) as u64;
            if sorted.is_empty() {
                return Err(format!("column '{name}' has no values"));
            }
            if sorted.iter().any(|x| x.is_infinite()) {
                return Err(format!("column '{name}' holds an infinity"));
            }
            sorted.sort_by(f64::total_cmp);
            #[allow(clippy::cast_precision_loss)]
            let n = sorted.len() as f64;
            let mean = sorted.iter().sum::<f64>() / n;
            let std = (sorted.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n).sqrt();
            let mut distinct = 1;
            for w in sorted.windows(2) {
                if w[1] != w[0] {
                    distinct += 1;
                    if distinct > 5 {
                        break;
                    }
                }
            }
            let bins = Bins::at_percentiles(&sorted, (0..=100).map(f64::from));
            let deciles = Bins::at_percentiles(&sorted, (0..=10).map(|d| f64::from(d) * 10.0));
            let mut histogram = vec![0; bins.len()];
            for &x in &sorted {
                histogram[bins.index(x)] += 1;
            }
            let quantiles = [1.0, 5.0, 25.0, 50.0, 75.0, 95.0, 99.0]
                .into_iter()
                .map(|p| (p, quantile(&sorted, p / 100.0)))
                .collect();
            Ok(FeatureProfile {
                name,
                count: sorted.len() as u64,
                missing,
                kind: ProfileKind::Numerical {
                    min: sorted[0],
                    max: sorted[sorted.len() - 1],
                    mean,
                    std,
                    quantiles,
                    distinct,
                    bins,
                    deciles,
                    histogram,
                },
            })
        }
        Column::Categories(values) => {
            let mut counts: HashMap<&str, u64> = HashMap::new();
            let mut missing = 0;
            for v in &values {
                match v {
                    Some(c) => *counts.entry(c.as_str()).or_default() += 1,
                    None => missing += 1,
                }
            }
            if counts.len() > MAX_CATEGORIES {
                return Err(format!(
                    "column '{name}' has {} categories, over {MAX_CATEGORIES}: profile it as numerical or leave it out",
                    counts.len()
                ));
            }
            let mut by_count: Vec<(&str, u64)> = counts.into_iter().collect();
            by_count.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
            Ok(FeatureProfile {
                name,
                count: values.len() as u64 - missing,
                missing,
                kind: ProfileKind::Categorical {
                    categories: by_count.iter().map(|(c, _)| (*c).to_owned()).collect(),
                    counts: by_count.iter().map(|(_, n)| *n).collect(),
                },
            })
        }
    }
}
