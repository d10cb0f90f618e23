//! The feature spec as written in a version's `vigil.toml`: the named features
//! a caller sends, how each becomes columns of the model's input tensors, and
//! how the model's outputs become labelled predictions.

use crate::DataType;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

/// One named feature (`[[features]]`), in the order the model's columns take them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Feature {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: FeatureKind,
    /// What a value must be. Numerical: a float type (any finite number that
    /// fits) or an integer type (whole numbers that fit); default FP64.
    /// Categorical: BYTES (strings, the default) or INT64 (integer codes).
    /// Boolean: BOOL. Text: BYTES.
    #[serde(default)]
    pub datatype: Option<DataType>,
    /// Used when the field is missing or null; a feature without one is required.
    #[serde(default)]
    pub default: Option<Value>,
    /// Smallest and largest allowed value (numerical).
    #[serde(default)]
    pub min: Option<f64>,
    #[serde(default)]
    pub max: Option<f64>,
    /// The categories, in the order of their one-hot columns or ordinal codes.
    #[serde(default, deserialize_with = "categories")]
    pub vocabulary: Option<Vec<String>>,
    /// What a category outside the vocabulary does.
    #[serde(default)]
    pub unknown: UnknownCategory,
    /// Longest accepted text, in bytes (text and categorical).
    #[serde(default)]
    pub max_length: Option<usize>,
    #[serde(default)]
    pub transform: Transform,
    /// The model input this feature's columns go to; may be left out when the
    /// model has one input.
    #[serde(default)]
    pub input: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FeatureKind {
    Numerical,
    Categorical,
    Boolean,
    Text,
}

impl FeatureKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FeatureKind::Numerical => "numerical",
            FeatureKind::Categorical => "categorical",
            FeatureKind::Boolean => "boolean",
            FeatureKind::Text => "text",
        }
    }
}

/// How a feature becomes columns. Parameters are stored in the spec (fitted
/// at training time), never learned at serving time.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Transform {
    /// The value as it is, in one column (booleans as 0/1 in a numeric input).
    #[default]
    Passthrough,
    /// `(x - mean) / scale` (scikit-learn's `StandardScaler`: `mean_`, `scale_`).
    Standard { mean: f64, scale: f64 },
    /// `(x - data_min) / (data_max - data_min)` stretched onto `range`
    /// (scikit-learn's `MinMaxScaler`: `data_min_`, `data_max_`, `feature_range`).
    MinMax {
        data_min: f64,
        data_max: f64,
        #[serde(default = "unit_range")]
        range: [f64; 2],
    },
    /// One column per category (one more with `unknown = "unknown_slot"`).
    OneHot,
    /// The category's index in the vocabulary, in one column.
    Ordinal,
}

fn unit_range() -> [f64; 2] {
    [0.0, 1.0]
}

/// A category outside the vocabulary.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnknownCategory {
    /// The record is invalid.
    #[default]
    Error,
    /// The feature's `default` is used instead.
    Default,
    /// A slot of its own: one more one-hot column, or the ordinal code
    /// `len(vocabulary)`.
    UnknownSlot,
}

/// `[prediction]`: what the records API answers for each record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum PredictionSpec {
    /// `output` holds one probability per label, per record.
    Classification {
        output: String,
        labels: Vec<String>,
        /// Answer only the `top_k` most probable labels' probabilities.
        #[serde(default)]
        top_k: Option<usize>,
        /// Binary classifiers: the second label is chosen when its
        /// probability is at least this (else the most probable label).
        #[serde(default)]
        threshold: Option<f64>,
    },
    /// `output` holds one value per name, per record.
    Regression { output: String, names: Vec<String> },
}

/// `[records]`: how the records API treats what the spec does not cover.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RecordsPolicy {
    pub unknown_fields: UnknownFields,
    pub invalid_records: InvalidRecords,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnknownFields {
    /// A field the spec does not name makes the record invalid.
    #[default]
    Error,
    /// Such fields are ignored.
    Ignore,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InvalidRecords {
    /// One invalid record fails the request (400, every problem listed).
    #[default]
    Reject,
    /// Invalid records get their problems in place of a prediction; the
    /// others are predicted.
    Report,
}

/// Everything the spec says, gathered from the config's three sections.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FeatureSpec {
    pub features: Vec<Feature>,
    pub prediction: Option<PredictionSpec>,
    pub records: RecordsPolicy,
}

/// Categories are strings; integers are accepted and kept as their decimal text.
fn categories<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Category {
        Text(String),
        Int(i64),
    }
    let list = Option::<Vec<Category>>::deserialize(d)?;
    Ok(list.map(|l| {
        l.into_iter()
            .map(|c| match c {
                Category::Text(s) => s,
                Category::Int(i) => i.to_string(),
            })
            .collect()
    }))
}
