//! The registry's nouns: immutable model versions, aliases, endpoints with their
//! traffic policy, and the revisions an endpoint goes through. Plain data and the
//! rules that hold whichever store keeps them and whichever protocol changes them.

use crate::error::Error;
use crate::names::{is_valid_name, quoted};
use crate::signature::Signature;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub use crate::security::Role;

/// Where a version came from.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct Lineage {
    pub git_commit: Option<String>,
    /// Digest of the training data (e.g. `sha256:…`).
    pub training_data_digest: Option<String>,
    /// Training parameters, as text.
    pub params: BTreeMap<String, String>,
}

/// A version to register: the artifact is already in the artifact store under `digest`.
#[derive(Debug, Clone, PartialEq)]
pub struct NewVersion {
    pub model: String,
    /// `sha256:<hex>` of `model.onnx`.
    pub digest: String,
    pub size_bytes: u64,
    /// The version's `vigil.toml`, as pushed (empty when none was).
    pub manifest: String,
    pub signature: Signature,
    pub labels: BTreeMap<String, String>,
    pub metrics: BTreeMap<String, f64>,
    pub lineage: Lineage,
    pub created_by: String,
}

/// A registered, immutable model version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct VersionRecord {
    pub model: String,
    pub version: u64,
    pub digest: String,
    pub size_bytes: u64,
    pub manifest: String,
    pub signature: Signature,
    pub labels: BTreeMap<String, String>,
    pub metrics: BTreeMap<String, f64>,
    pub lineage: Lineage,
    pub created_by: String,
    /// RFC 3339, UTC.
    pub created_at: String,
    /// The Vigil that registered it.
    pub vigil_version: String,
}

/// A model name with a summary of its versions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ModelSummary {
    pub name: String,
    pub versions: u64,
    pub latest_version: Option<u64>,
    pub created_at: String,
}

/// A movable name for a version of a model (`production`, `staging`, …).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Alias {
    pub model: String,
    pub alias: String,
    pub version: u64,
    pub updated_by: String,
    pub updated_at: String,
}

/// One move of an alias; `version` is `None` when it was deleted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AliasEvent {
    pub alias: String,
    pub version: Option<u64>,
    pub changed_by: String,
    pub changed_at: String,
}

/// A share of an endpoint's traffic. Weight 0 keeps the version loaded and
/// warmed (reachable with `x-vigil-version`) without traffic: blue-green's idle side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Route {
    pub version: u64,
    pub weight: u32,
}

/// A version that receives a copy of a share of requests; its answers are
/// compared with the primary's and recorded, never returned.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Shadow {
    pub version: u64,
    /// Share of requests copied, 0 < percent <= 100.
    pub percent: f64,
}

/// An endpoint's traffic policy over the versions of one model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EndpointSpec {
    pub model: String,
    pub traffic: Vec<Route>,
    #[serde(default)]
    pub shadows: Vec<Shadow>,
    /// Prediction logging; none when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logging: Option<crate::predictions::PredictionLogging>,
}

/// Weights are percentages.
pub const TOTAL_WEIGHT: u32 = 100;
/// Most versions one policy routes to, and most shadows: far more than any
/// rollout needs, and a bound on what one request may ask the server to load.
pub const MAX_ROUTES: usize = 16;
pub const MAX_SHADOWS: usize = 8;

impl EndpointSpec {
    /// The rules every policy obeys, whatever the store: a valid model name,
    /// routes to distinct versions whose weights add up to 100, and shadows on
    /// versions that take no traffic, copying a share in (0, 100].
    pub fn validate(&self) -> Result<(), Error> {
        if !is_valid_name(&self.model) {
            return Err(Error::invalid_input(format!("model: {} is not a valid name", quoted(&self.model))));
        }
        if self.traffic.is_empty() {
            return Err(Error::invalid_input("traffic: give at least one version with a weight"));
        }
        if self.traffic.len() > MAX_ROUTES {
            return Err(Error::invalid_input(format!("traffic: at most {MAX_ROUTES} versions")));
        }
        if self.shadows.len() > MAX_SHADOWS {
            return Err(Error::invalid_input(format!("shadows: at most {MAX_SHADOWS} versions")));
        }
        let mut seen = Vec::new();
        for r in &self.traffic {
            if seen.contains(&r.version) {
                return Err(Error::invalid_input(format!("traffic: version {} is listed twice", r.version)));
            }
            seen.push(r.version);
        }
        let total: u64 = self.traffic.iter().map(|r| u64::from(r.weight)).sum();
        if total != u64::from(TOTAL_WEIGHT) {
            return Err(Error::invalid_input(format!("traffic: weights add up to {total}, not {TOTAL_WEIGHT}")));
        }
        for s in &self.shadows {
            if !(s.percent > 0.0 && s.percent <= 100.0) {
                return Err(Error::invalid_input(format!(
                    "shadows: version {} has percent {}; it must be in (0, 100]",
                    s.version, s.percent
                )));
            }
            if let Some(r) = self.traffic.iter().find(|r| r.version == s.version && r.weight > 0) {
                return Err(Error::invalid_input(format!(
                    "shadows: version {} already takes {}% of the traffic",
                    r.version, r.weight
                )));
            }
            if self.shadows.iter().filter(|o| o.version == s.version).count() > 1 {
                return Err(Error::invalid_input(format!("shadows: version {} is listed twice", s.version)));
            }
        }
        self.logging.as_ref().map_or(Ok(()), crate::predictions::PredictionLogging::validate)
    }

    /// Every version the policy needs loaded: routes (weight 0 included), then shadows.
    pub fn versions(&self) -> Vec<u64> {
        let mut v: Vec<u64> = self.traffic.iter().map(|r| r.version).collect();
        for s in &self.shadows {
            if !v.contains(&s.version) {
                v.push(s.version);
            }
        }
        v
    }

    /// Whether `version` is loaded for this endpoint (takes traffic, waits at
    /// weight 0, or shadows).
    pub fn uses(&self, version: u64) -> bool {
        self.versions().contains(&version)
    }

    /// The route a draw in `0..100` lands on: routes own consecutive ranges of
    /// width `weight`, so a uniform draw splits traffic by weight.
    pub fn pick(&self, draw: u32) -> u64 {
        let mut upper = 0;
        for r in &self.traffic {
            upper += r.weight;
            if draw < upper {
                return r.version;
            }
        }
        // Unreachable for a validated spec; the last route is a safe answer.
        self.traffic.last().map_or(0, |r| r.version)
    }
}

/// An immutable snapshot of an endpoint: its policy and the digests of the
/// versions it names, so that what served can always be told and restored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Revision {
    pub endpoint: String,
    pub revision: u64,
    pub spec: EndpointSpec,
    /// Artifact digest of every version the spec names.
    pub digests: BTreeMap<u64, String>,
    /// Why it was made (e.g. `rollback to 3`).
    pub comment: String,
    pub created_by: String,
    pub created_at: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(traffic: &[(u64, u32)], shadows: &[(u64, f64)]) -> EndpointSpec {
        EndpointSpec {
            model: "fraud".into(),
            traffic: traffic.iter().map(|&(version, weight)| Route { version, weight }).collect(),
            shadows: shadows.iter().map(|&(version, percent)| Shadow { version, percent }).collect(),
            logging: None,
        }
    }

    #[test]
    fn valid_policies() {
        spec(&[(1, 100)], &[]).validate().unwrap();
        spec(&[(1, 90), (2, 10)], &[(3, 5.0)]).validate().unwrap();
        spec(&[(1, 100), (2, 0)], &[(2, 100.0)]).validate().unwrap();
    }

    #[test]
    fn invalid_policies_name_the_field() {
        let cases = [
            (spec(&[], &[]), "traffic"),
            (spec(&[(1, 50)], &[]), "add up to 50"),
            (spec(&[(1, 50), (1, 50)], &[]), "twice"),
            (spec(&[(1, u32::MAX), (2, 101)], &[]), "add up to"),
            (spec(&[(1, 100)], &[(2, 0.0)]), "shadows"),
            (spec(&[(1, 100)], &[(2, f64::NAN)]), "shadows"),
            (spec(&[(1, 100)], &[(2, 101.0)]), "shadows"),
            (spec(&[(1, 100)], &[(1, 10.0)]), "already takes"),
            (spec(&[(1, 100)], &[(2, 10.0), (2, 20.0)]), "twice"),
            (spec(&(0..17).map(|v| (v, if v == 0 { 100 } else { 0 })).collect::<Vec<_>>(), &[]), "at most 16"),
            (spec(&[(1, 100)], &(2..11).map(|v| (v, 1.0)).collect::<Vec<_>>()), "at most 8"),
        ];
        for (s, needle) in cases {
            let e = s.validate().unwrap_err();
            assert!(e.message().contains(needle), "{s:?}: {e}");
        }
        let mut bad_name = spec(&[(1, 100)], &[]);
        bad_name.model = "../etc".into();
        assert!(bad_name.validate().unwrap_err().message().contains("model"));
    }

    #[test]
    fn draws_split_by_weight() {
        let s = spec(&[(1, 90), (2, 0), (3, 10)], &[]);
        let picks: Vec<u64> = (0..100).map(|d| s.pick(d)).collect();
        assert_eq!(picks.iter().filter(|&&v| v == 1).count(), 90);
        assert_eq!(picks.iter().filter(|&&v| v == 3).count(), 10);
        assert!(!picks.contains(&2), "weight 0 never draws");
        assert_eq!(s.versions(), vec![1, 2, 3]);
    }
}
