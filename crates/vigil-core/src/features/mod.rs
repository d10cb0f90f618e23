//! Tabular models' feature pipeline: named records in, the model's input
//! tensors out, and the model's outputs back as labelled predictions. The
//! pipeline is declared in a version's `vigil.toml` ([`spec`]), compiled
//! against the model's signature when the version loads ([`FeaturePipeline`]),
//! and kept apart from the model so that it is validated, timed and monitored
//! by feature name, and changes only with a new version.

mod decode;
mod outputs;
mod pipeline;
mod records;
pub mod spec;
#[cfg(test)]
mod tests;

pub use decode::FeatureValue;
pub use pipeline::{Encoded, FeaturePipeline};
pub use records::Records;
pub use spec::{Feature, FeatureKind, FeatureSpec, PredictionSpec, RecordsPolicy, Transform, UnknownCategory};

use serde::Serialize;

/// One problem with one field of one record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RecordError {
    /// The record's index in the request; none for a problem with the whole
    /// request (a column of unknown name, columns of different lengths).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub record: Option<usize>,
    /// The feature (or unknown field) concerned; empty for the record itself.
    pub field: String,
    pub rule: Rule,
    pub message: String,
}

/// Which rule a value broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Rule {
    /// Missing (or null) and the feature has no default.
    Required,
    /// Not the kind of value the feature takes (a string for a number…).
    Type,
    /// Outside the feature's `min`/`max`, or not representable in its datatype.
    Range,
    /// A category outside the vocabulary.
    Vocabulary,
    /// Text longer than `max_length`.
    Length,
    /// A field the spec does not name.
    UnknownField,
    /// The record is not an object, or an array of the wrong length.
    Shape,
}

impl Rule {
    /// The rule's name in answers and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Rule::Required => "required",
            Rule::Type => "type",
            Rule::Range => "range",
            Rule::Vocabulary => "vocabulary",
            Rule::Length => "length",
            Rule::UnknownField => "unknown_field",
            Rule::Shape => "shape",
        }
    }
}

/// Most problems listed in one answer: the message counts the rest.
pub const MAX_LISTED_ERRORS: usize = 100;
