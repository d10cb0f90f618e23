//! A window (or several merged) against the reference: drift per feature, the
//! dataset's drift, and data quality.
//!
//! The test for each feature follows Evidently's defaults:
//! - a reference of at most 1000 rows: Kolmogorov–Smirnov (drift when
//!   p < 0.05) for a numerical feature with more than 5 distinct values,
//!   chi-square (p < 0.05) otherwise;
//! - a larger reference: the Wasserstein distance divided by the reference's
//!   standard deviation (at least 0.001) for numerical features, the
//!   Jensen–Shannon distance for categorical ones (drift when ≥ 0.1). These
//!   are effect sizes, so large windows do not flag every feature the way
//!   p-values do;
//! - the dataset drifts when at least half of its input features do (the
//!   profile's `dataset_drift_share` changes the half);
//! - a constant reference leaves chi-square a single bin: the Jensen–Shannon
//!   distance (≥ 0.1) decides instead.
//!
//! Where Vigil differs: statistics are computed on bins fixed by the
//! reference (that is what lets windows merge), so KS and Wasserstein are
//! bounded approximations (see `stats`), and binary features use chi-square
//! rather than Evidently's Z-test.

use super::profile::{ProfileKind, ReferenceProfile};
use super::sketch::WindowSketch;
use super::stats;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    KolmogorovSmirnov,
    ChiSquare,
    WassersteinNormed,
    JensenShannon,
    Psi,
}

impl Method {
    /// The name in JSON and in metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::KolmogorovSmirnov => "kolmogorov_smirnov",
            Method::ChiSquare => "chi_square",
            Method::WassersteinNormed => "wasserstein_normed",
            Method::JensenShannon => "jensen_shannon",
            Method::Psi => "psi",
        }
    }

    /// Whether `score` below (p-values) or at-or-above (distances) the threshold is drift.
    fn drifted(self, score: f64, threshold: f64) -> bool {
        match self {
            Method::KolmogorovSmirnov | Method::ChiSquare => score < threshold,
            _ => score >= threshold,
        }
    }

    fn default_threshold(self) -> f64 {
        match self {
            Method::KolmogorovSmirnov | Method::ChiSquare => 0.05,
            _ => 0.1,
        }
    }
}

/// Per-feature overrides of the default test.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DriftSettings {
    #[serde(default)]
    pub method: Option<Method>,
    #[serde(default)]
    pub threshold: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureDrift {
    pub feature: String,
    pub method: Method,
    /// The chosen test's value (a p-value or a distance); none without data.
    pub score: Option<f64>,
    pub threshold: f64,
    pub drifted: bool,
    /// Values present and missing in the window.
    pub count: u64,
    pub missing: u64,
    /// Every statistic the feature's kind allows, for the report.
    pub psi: Option<f64>,
    pub jensen_shannon: Option<f64>,
    pub chi_square_p: Option<f64>,
    pub ks_statistic: Option<f64>,
    pub ks_p: Option<f64>,
    pub wasserstein_normed: Option<f64>,
    /// Data quality: shares of the window's values.
    pub missing_share: f64,
    /// Numerical: below the reference minimum or above its maximum.
    pub out_of_range_share: f64,
    /// Categorical: categories the reference never had.
    pub unseen_share: f64,
}

impl FeatureDrift {
    fn statistic(&self, method: Method) -> Option<f64> {
        match method {
            Method::KolmogorovSmirnov => self.ks_p,
            Method::ChiSquare => self.chi_square_p,
            Method::WassersteinNormed => self.wasserstein_normed,
            Method::JensenShannon => self.jensen_shannon,
            Method::Psi => self.psi,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DriftReport {
    /// Inputs, then (named `prediction.…`) outputs.
    pub features: Vec<FeatureDrift>,
    /// Input features with data whose test says drift, and their share of
    /// the input features with data (outputs are prediction drift, apart).
    pub drifted_features: usize,
    pub drift_share: f64,
    pub dataset_drift: bool,
    /// Data quality of what never reached the model: problems in refused
    /// records, by rule (`range`, `type`, `required`, …).
    #[serde(default)]
    pub rejected: std::collections::BTreeMap<String, u64>,
}

/// Compares `window` (counted on `profile`) with the reference, each feature
/// by the test its profile `settings` choose, else the default.
pub fn compare(profile: &ReferenceProfile, window: &WindowSketch) -> DriftReport {
    let small = profile.rows <= 1000;
    let mut features = Vec::with_capacity(profile.features.len());
    for (f, s) in profile.features.iter().zip(&window.features) {
        let count = s.count();
        let total = count + s.missing;
        #[allow(clippy::cast_precision_loss)]
        let share = |n: u64| if total == 0 { 0.0 } else { n as f64 / total as f64 };
        let chosen = profile.settings.get(&f.name).cloned().unwrap_or_default();
        let mut d = FeatureDrift {
            feature: f.name.clone(),
            method: Method::Psi,
            score: None,
            threshold: 0.0,
            drifted: false,
            count,
            missing: s.missing,
            psi: None,
            jensen_shannon: None,
            chi_square_p: None,
            ks_statistic: None,
            ks_p: None,
            wasserstein_normed: None,
            missing_share: share(s.missing),
            out_of_range_share: 0.0,
            unseen_share: 0.0,
        };
        match &f.kind {
            ProfileKind::Numerical { bins, deciles, histogram, std, distinct, min, max, .. } => {
                d.method = match (small, *distinct > 5) {
                    (true, true) => Method::KolmogorovSmirnov,
                    (true, false) => Method::ChiSquare,
                    (false, _) => Method::WassersteinNormed,
                };
                let last = s.counts.len().saturating_sub(1);
                d.out_of_range_share =
                    share(s.counts.first().copied().unwrap_or(0) + s.counts.get(last).copied().unwrap_or(0));
                // A window of other bins (never merged in, but stored ones come from outside) is no data.
                if count > 0 && s.counts.len() == histogram.len() {
                    let map = bins.coarsen_map(deciles);
                    let coarse = |counts: &[u64]| {
                        let mut c = vec![0; deciles.len()];
                        for (i, n) in counts.iter().enumerate() {
                            c[map[i]] += n;
                        }
                        c
                    };
                    let (ref_coarse, cur_coarse) = (coarse(histogram), coarse(&s.counts));
                    d.psi = Some(stats::psi(&ref_coarse, &cur_coarse));
                    d.jensen_shannon = Some(stats::jensen_shannon(&ref_coarse, &cur_coarse));
                    d.chi_square_p = stats::chi_square(&ref_coarse, &cur_coarse).map(|(_, p)| p);
                    if let Some((ks, p)) = stats::kolmogorov_smirnov(histogram, &s.counts) {
                        d.ks_statistic = Some(ks);
                        d.ks_p = Some(p);
                    }
                    let mut bounds = Vec::with_capacity(bins.edges.len() + 2);
                    bounds.push(s.min.map_or(*min, |m| m.min(*min)));
                    bounds.extend_from_slice(&bins.edges);
                    bounds.push(s.max.map_or(*max, |m| m.max(*max)));
                    d.wasserstein_normed =
                        stats::wasserstein(histogram, &s.counts, &bounds).map(|(w, _)| w / std.max(0.001));
                }
            }
            ProfileKind::Categorical { counts, .. } => {
                d.method = if small { Method::ChiSquare } else { Method::JensenShannon };
                d.unseen_share = share(s.counts.last().copied().unwrap_or(0));
                if count > 0 && s.counts.len() == counts.len() + 1 {
                    let mut reference = counts.clone();
                    reference.push(0);
                    d.psi = Some(stats::psi(&reference, &s.counts));
                    d.jensen_shannon = Some(stats::jensen_shannon(&reference, &s.counts));
                    d.chi_square_p = stats::chi_square(&reference, &s.counts).map(|(_, p)| p);
                }
            }
        }
        if let Some(method) = chosen.method {
            d.method = method;
        }
        d.score = d.statistic(d.method);
        if d.score.is_none() && count > 0 && chosen.method.is_none() {
            // A constant reference leaves chi-square one bin: nothing to test.
            // The Jensen–Shannon distance still sees a change.
            d.method = Method::JensenShannon;
            d.score = d.jensen_shannon;
        }
        d.threshold = chosen.threshold.unwrap_or_else(|| d.method.default_threshold());
        d.drifted = d.score.is_some_and(|score| d.method.drifted(score, d.threshold));
        features.push(d);
    }
    let inputs = || features.iter().filter(|f| !f.feature.starts_with(super::PREDICTION_PREFIX));
    let with_data = inputs().filter(|f| f.score.is_some()).count();
    let drifted_features = inputs().filter(|f| f.drifted).count();
    #[allow(clippy::cast_precision_loss)]
    let drift_share = if with_data == 0 { 0.0 } else { drifted_features as f64 / with_data as f64 };
    let dataset_threshold = profile.dataset_drift_share.unwrap_or(0.5);
    DriftReport {
        features,
        drifted_features,
        drift_share,
        dataset_drift: with_data > 0 && drift_share >= dataset_threshold,
        rejected: window.rejected.clone(),
    }
}

/// A feature's distribution in the reference and in the window, on the bins
/// the report shows (deciles with their overflow bins, or the categories and
/// "unseen"), as shares.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureHistogram {
    pub feature: String,
    /// `numerical` or `categorical`.
    pub kind: String,
    pub bins: Vec<String>,
    pub reference: Vec<f64>,
    pub current: Vec<f64>,
}

/// The histograms of every feature of `window` beside the reference's.
pub fn histograms(profile: &ReferenceProfile, window: &WindowSketch) -> Vec<FeatureHistogram> {
    profile
        .features
        .iter()
        .zip(&window.features)
        .map(|(f, s)| match &f.kind {
            ProfileKind::Numerical { bins, deciles, histogram, .. } => {
                let map = bins.coarsen_map(deciles);
                let coarse = |counts: &[u64]| {
                    let mut c = vec![0; deciles.len()];
                    for (i, n) in counts.iter().enumerate() {
                        if let Some(&m) = map.get(i) {
                            c[m] += n;
                        }
                    }
                    stats::proportions(&c)
                };
                let e = &deciles.edges;
                let mut labels = vec![format!("< {}", short(e[0]))];
                labels.extend(e.windows(2).map(|w| format!("{} – {}", short(w[0]), short(w[1]))));
                labels.push(format!("> {}", short(e[e.len() - 1])));
                FeatureHistogram {
                    feature: f.name.clone(),
                    kind: "numerical".into(),
                    bins: labels,
                    reference: coarse(histogram),
                    current: coarse(&s.counts),
                }
            }
            ProfileKind::Categorical { categories, counts } => {
                let mut reference = counts.clone();
                reference.push(0);
                let mut labels = categories.clone();
                labels.push("(unseen)".into());
                FeatureHistogram {
                    feature: f.name.clone(),
                    kind: "categorical".into(),
                    bins: labels,
                    reference: stats::proportions(&reference),
                    current: stats::proportions(&s.counts),
                }
            }
        })
        .collect()
}

/// A bin edge for people: four significant digits.
fn short(x: f64) -> String {
    let text = format!("{x:.4}");
    let text = if text.contains('.') { text.trim_end_matches('0').trim_end_matches('.').to_owned() } else { text };
    if x.abs() >= 1e5 || (x != 0.0 && x.abs() < 1e-3) { format!("{x:.3e}") } else { text }
}
