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

/// Profiled columns named `prediction.<field>` are the model's outputs
/// (`prediction.label`, `prediction.<label>` for a label's probability, or
/// `prediction.<name>` for a regression output): their drift is prediction
/// drift, reported beside the inputs' but not counted in dataset drift.
pub const PREDICTION_PREFIX: &str = "prediction.";
