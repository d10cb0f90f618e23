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
    /// Smallest and largest value seen (numerical), to bound the overflow bins.
    pub min: f64,
    pub max: f64,
}

impl FeatureSketch {
    pub fn new(profile: &FeatureProfile) -> FeatureSketch {
        let bins = match &profile.kind {
            ProfileKind::Numerical { bins, .. } => bins.len(),
            ProfileKind::Categorical { categories, .. } => categories.len() + 1,
        };
        FeatureSketch { counts: vec![0; bins], missing: 0, min: f64::INFINITY, max: f64::NEG_INFINITY }
    }

    /// Values present.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Adds `other`'s counts (a sketch of the same profile).
    pub fn merge(&mut self, other: &FeatureSketch) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.missing += other.missing;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
    }
}

/// Sketches of every profiled feature for one window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WindowSketch {
    pub features: Vec<FeatureSketch>,
}

/// A profile ready to count: the category lookups built once.
pub struct Counter {
    profile: ReferenceProfile,
    categories: Vec<HashMap<String, usize>>,
}

/// One value of one feature, as served.
#[derive(Debug, Clone, Copy)]
pub enum Observed<'a> {
    Number(f64),
    Category(&'a str),
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
        Counter { profile, categories }
    }

    pub fn profile(&self) -> &ReferenceProfile {
        &self.profile
    }

    /// An empty window.
    pub fn window(&self) -> WindowSketch {
        WindowSketch { features: self.profile.features.iter().map(FeatureSketch::new).collect() }
    }

    /// Counts one value of feature `i` (its index in the profile). A number
    /// for a categorical feature counts as its decimal text; text for a
    /// numerical feature counts as missing (the records API refuses both
    /// before they get here).
    pub fn observe(&self, window: &mut WindowSketch, i: usize, value: Observed<'_>) {
        let (Some(f), Some(s)) = (self.profile.features.get(i), window.features.get_mut(i)) else { return };
        match (&f.kind, value) {
            (ProfileKind::Numerical { bins, .. }, Observed::Number(x)) if !x.is_nan() => {
                s.counts[bins.index(x)] += 1;
                s.min = s.min.min(x);
                s.max = s.max.max(x);
            }
            (ProfileKind::Categorical { categories, .. }, Observed::Category(c)) => {
                let slot = self.categories[i].get(c).copied().unwrap_or(categories.len());
                s.counts[slot] += 1;
            }
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
    /// Adds `other` (a window of the same profile).
    pub fn merge(&mut self, other: &WindowSketch) {
        for (a, b) in self.features.iter_mut().zip(&other.features) {
            a.merge(b);
        }
    }
}
