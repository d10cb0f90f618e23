//! Data drift: a reference profile of the training data, fixed-memory
//! mergeable sketches of what is served, and the statistics that compare
//! them (docs/monitoring.md).

pub mod bins;
pub mod profile;
pub mod report;
pub mod sketch;
pub mod stats;

pub use profile::{Column, FeatureProfile, ProfileKind, ReferenceProfile};
pub use report::{DriftReport, DriftSettings, FeatureDrift, FeatureHistogram, Method, compare, histograms};
pub use sketch::{Counter, FeatureSketch, Observed, WindowSketch};
