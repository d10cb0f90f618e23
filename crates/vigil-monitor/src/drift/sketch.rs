//! What a window of served requests looked like, per feature: counts on the
//! reference's bins (or categories), missing values, and the extremes. Fixed
//! memory per feature, updated without allocating, merged by adding, so that
//! windows from any replica and any span of time combine exactly.

use super::profile::{FeatureProfile, ProfileKind, ReferenceProfile};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureSketch {
    /// Numerical: counts on the profile's percentile bins (overflow bins
    /// first and last). Categorical: counts per reference category, then one
    /// for categories the reference never had.
    pub counts: Vec<u64>,
    pub missing: u64,
    /// Smallest and largest value seen (numerical), to bound the overflow
    /// bins; none before the first.
    pub min: Option<f64>,
    pub max: Option<f64>,
}

impl FeatureSketch {
    pub fn new(profile: &FeatureProfile) -> FeatureSketch {
        let bins = match &profile.kind {
            ProfileKind::Numerical { bins, .. } => bins.len(),
            ProfileKind::Categorical { categories, .. } => categories.len() + 1,
        };
        FeatureSketch { counts: vec![0; bins], missing: 0, min: None, max: None }
    }

    /// Values present.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Adds `other`'s counts (a sketch of the same profile).
    pub fn merge(&mut self, other: &FeatureSketch) {
        if other.counts.len() != self.counts.len() {
            return;
        }
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.missing += other.missing;
        self.min = extreme(self.min, other.min, f64::min);
        self.max = extreme(self.max, other.max, f64::max);
    }
}

fn extreme(a: Option<f64>, b: Option<f64>, pick: fn(f64, f64) -> f64) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(pick(a, b)),
        (a, b) => a.or(b),
    }
}

/// Sketches of every profiled feature for one window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WindowSketch {
    /// The fingerprint of the profile it was counted on: windows of an
    /// earlier profile of the same version are not merged with it.
    #[serde(default)]
    pub profile: String,
    pub features: Vec<FeatureSketch>,
    /// Problems in the records the feature spec refused, by rule.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub rejected: std::collections::BTreeMap<String, u64>,
}

/// A profile ready to count: the category lookups built once.
pub struct Counter {
    profile: ReferenceProfile,
    fingerprint: String,
    categories: Vec<HashMap<String, usize>>,
}

/// One value of one feature, as served.
#[derive(Debug, Clone, Copy)]
pub enum Observed<'a> {
    Number(f64),
    Category(&'a str),
    /// A category whose text is not known, only that it is not one the
    /// feature spec knows (an unknown slot): unseen.
    Unseen,
    Missing,
}

impl Counter {
    pub fn new(profile: ReferenceProfile) -> Counter {
        let categories = profile
            .features
            .iter()
            .map(|f| match &f.kind {
                ProfileKind::Categorical { categories, .. } => {
                    categories.iter().enumerate().map(|(i, c)| (c.clone(), i)).collect()
                }
                ProfileKind::Numerical { .. } => HashMap::new(),
            })
            .collect();
        Counter { fingerprint: profile.fingerprint(), profile, categories }
    }

    /// The profile's fingerprint, which its windows carry.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    pub fn profile(&self) -> &ReferenceProfile {
        &self.profile
    }

    /// An empty window.
    pub fn window(&self) -> WindowSketch {
        WindowSketch {
            profile: self.fingerprint.clone(),
            features: self.profile.features.iter().map(FeatureSketch::new).collect(),
            rejected: Default::default(),
        }
    }

    /// Counts one value of feature `i` (its index in the profile). A number
    /// for a categorical feature counts as its decimal text; text for a
    /// numerical feature counts as missing (the records API refuses both
    /// before they get here).
    pub fn observe(&self, window: &mut WindowSketch, i: usize, value: Observed<'_>) {
        let (Some(f), Some(s)) = (self.profile.features.get(i), window.features.get_mut(i)) else { return };
        match (&f.kind, value) {
            // Infinities (possible in binary V2 tensors) count as missing, like NaN.
            (ProfileKind::Numerical { bins, .. }, Observed::Number(x)) if x.is_finite() => {
                s.counts[bins.index(x)] += 1;
                s.min = extreme(s.min, Some(x), f64::min);
                s.max = extreme(s.max, Some(x), f64::max);
            }
            (ProfileKind::Categorical { categories, .. }, Observed::Category(c)) => {
                let slot = self.categories[i].get(c).copied().unwrap_or(categories.len());
                s.counts[slot] += 1;
            }
            (ProfileKind::Categorical { categories, .. }, Observed::Unseen) => s.counts[categories.len()] += 1,
            (ProfileKind::Categorical { categories, .. }, Observed::Number(x)) => {
                // Integer-coded categories; formatting allocates, but only for them.
                let slot = self.categories[i].get(&format!("{x}")).copied().unwrap_or(categories.len());
                s.counts[slot] += 1;
            }
            _ => s.missing += 1,
        }
    }
}

impl WindowSketch {
    /// Whether the window saw anything worth storing.
    pub fn is_empty(&self) -> bool {
        self.rejected.is_empty() && self.features.iter().all(|f| f.missing == 0 && f.counts.iter().all(|&c| c == 0))
    }

    /// Adds `other` (a window of the same profile; one of another profile is
    /// ignored, since its counts are on other bins).
    pub fn merge(&mut self, other: &WindowSketch) {
        if other.profile != self.profile || other.features.len() != self.features.len() {
            return;
        }
        for (rule, n) in &other.rejected {
            *self.rejected.entry(rule.clone()).or_default() += n;
        }
        for (a, b) in self.features.iter_mut().zip(&other.features) {
            a.merge(b);
        }
    }
}
