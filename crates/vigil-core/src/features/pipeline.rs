//! A feature spec compiled against a model's signature: where each feature's
//! columns go, and the checks and transform each value goes through.

use super::outputs::Prediction;
use super::records::Records;
use super::spec::{Feature, FeatureKind, FeatureSpec, InvalidRecords, Transform, UnknownCategory, UnknownFields};
use super::{MAX_LISTED_ERRORS, RecordError, Rule};
use crate::names::quoted;
use crate::{DataType, Error, Signature, Tensor, TensorData};
use half::f16;
use serde_json::Value;
use std::borrow::Cow;
use std::collections::HashMap;

/// Longest text value accepted when a feature sets no `max_length`.
const DEFAULT_MAX_TEXT: usize = 64 * 1024;
/// Most categories in one vocabulary.
const MAX_VOCABULARY: usize = 65_536;

/// A version's feature spec, checked against its signature and ready to run.
#[derive(Debug)]
pub struct FeaturePipeline {
    pub(super) spec: FeatureSpec,
    /// One per model input, in signature order.
    pub(super) inputs: Vec<InputLayout>,
    /// One per feature, in spec order.
    pub(super) columns: Vec<Column>,
    index: HashMap<String, usize>,
    pub(super) prediction: Option<Prediction>,
    /// The spec and the signature it was compiled against, as JSON ([`FeaturePipeline::schema`]).
    schema: String,
}

/// What [`FeaturePipeline::schema`] holds.
#[derive(serde::Serialize, serde::Deserialize)]
struct Schema<'a> {
    spec: Cow<'a, FeatureSpec>,
    signature: Cow<'a, Signature>,
}

#[derive(Debug)]
pub(super) struct InputLayout {
    pub name: String,
    pub datatype: DataType,
    /// Columns per record.
    pub width: usize,
    /// `[-1, width]` (else `[-1]`, one column).
    pub matrix: bool,
}

#[derive(Debug)]
pub(super) struct Column {
    pub input: usize,
    pub offset: usize,
    pub width: usize,
    pub check: Check,
    pub encode: Encode,
    /// The default, already checked.
    default: Option<Scalar<'static>>,
    /// The largest magnitude the input's type holds (FP32, FP16): a scaled
    /// value beyond it would become infinity.
    limit: f64,
}

/// What a value must be.
#[derive(Debug)]
pub(super) enum Check {
    Number {
        datatype: DataType,
        min: f64,
        max: f64,
    },
    Bool,
    Category {
        integers: bool,
        vocabulary: HashMap<String, usize>,
        /// The categories by index.
        names: Vec<String>,
        unknown: UnknownCategory,
        max_length: usize,
    },
    Text {
        max_length: usize,
    },
}

/// How a checked value becomes columns.
#[derive(Debug, Clone, Copy)]
pub(super) enum Encode {
    /// `(x - shift) / scale * stretch + lower`: pass-through, standard and
    /// min-max scaling alike, computed in the order scikit-learn does.
    Number {
        shift: f64,
        scale: f64,
        stretch: f64,
        lower: f64,
    },
    Bool,
    OneHot,
    Ordinal,
    Bytes,
}

/// A checked value.
#[derive(Debug, Clone)]
enum Scalar<'a> {
    Number(f64),
    Bool(bool),
    /// A vocabulary index (`None` for the unknown slot) and the category as given.
    Category(Option<usize>, Cow<'a, str>),
    Text(Cow<'a, str>),
}

/// What [`FeaturePipeline::encode`] made of a request's records.
#[derive(Debug)]
pub struct Encoded {
    /// The model's inputs, in signature order, one row per valid record.
    pub tensors: Vec<Tensor>,
    /// The request index of each row.
    pub rows: Vec<usize>,
    /// With `invalid_records = "report"`: the invalid records' problems, by
    /// request index (`reject` answers them as an error instead).
    pub rejected: Vec<(usize, Vec<RecordError>)>,
}

impl FeaturePipeline {
    /// Checks `spec` against the model's `signature`: every feature's input
    /// exists and takes its kind of value, every input is fed, and the
    /// prediction's output exists with the right width. Errors name the
    /// feature (or output) and what is wrong.
    pub fn compile(spec: FeatureSpec, signature: &Signature) -> Result<FeaturePipeline, String> {
        if spec.features.is_empty() {
            return Err("[[features]]: declare at least one feature".into());
        }
        let mut inputs: Vec<InputLayout> = Vec::with_capacity(signature.inputs.len());
        for s in &signature.inputs {
            let matrix = match s.shape.as_slice() {
                [-1] => false,
                [-1, _] => true,
                shape => {
                    return Err(format!(
                        "input '{}' has shape {shape:?}; records need [-1] or [-1, columns] (a dynamic batch axis)",
                        s.name
                    ));
                }
            };
            inputs.push(InputLayout { name: s.name.clone(), datatype: s.datatype, width: 0, matrix });
        }
        let mut index = HashMap::with_capacity(spec.features.len());
        let mut columns = Vec::with_capacity(spec.features.len());
        for (i, f) in spec.features.iter().enumerate() {
            let at = |e: String| format!("features[{i}] ({}): {e}", quoted(&f.name));
            if f.name.is_empty() || f.name.len() > 256 || f.name.chars().any(char::is_control) {
                return Err(format!("features[{i}].name: 1 to 256 printable characters"));
            }
            if index.insert(f.name.clone(), i).is_some() {
                return Err(at("declared twice".into()));
            }
            let input = match &f.input {
                Some(name) => inputs.iter().position(|l| &l.name == name).ok_or_else(|| {
                    at(format!("input '{name}' is not one of the model's inputs {:?}", names(&inputs)))
                })?,
                None if inputs.len() == 1 => 0,
                None => return Err(at(format!("say which input it goes to (one of {:?})", names(&inputs)))),
            };
            let (check, encode, width) = compile_feature(f, inputs[input].datatype).map_err(at)?;
            let limit = match inputs[input].datatype {
                DataType::Fp32 => f64::from(f32::MAX),
                DataType::Fp16 => f16::MAX.to_f64(),
                _ => f64::INFINITY,
            };
            let mut column = Column { input, offset: inputs[input].width, width, check, encode, default: None, limit };
            if let Some(d) = &f.default {
                let value = column.check.read(d).map_err(|(_, e)| at(format!("default: {e}")))?;
                column.default = Some(value.into_owned());
            } else if f.unknown == UnknownCategory::Default {
                return Err(at("unknown = \"default\" needs a default".into()));
            }
            inputs[input].width += width;
            columns.push(column);
        }
        for (layout, s) in inputs.iter().zip(&signature.inputs) {
            match s.shape.as_slice() {
                _ if layout.width == 0 => return Err(format!("no feature goes to input '{}'", s.name)),
                [-1] if layout.width != 1 => {
                    return Err(format!("input '{}' takes one column but the features make {}", s.name, layout.width));
                }
                [-1, w] if *w >= 0 && usize::try_from(*w).ok() != Some(layout.width) => {
                    return Err(format!("input '{}' takes {w} columns but the features make {}", s.name, layout.width));
                }
                _ => {}
            }
        }
        let prediction = match &spec.prediction {
            Some(p) => Some(Prediction::compile(p, signature)?),
            None => None,
        };
        let schema = Schema { spec: Cow::Borrowed(&spec), signature: Cow::Borrowed(signature) };
        // Plain data (strings, numbers, enums): serialising it cannot fail.
        let schema = serde_json::to_string(&schema).unwrap_or_default();
        Ok(FeaturePipeline { spec, inputs, columns, index, prediction, schema })
    }

    /// The spec and the signature it was compiled against, as JSON: enough to
    /// compile it again elsewhere ([`FeaturePipeline::from_schema`]). The
    /// prediction log keeps it beside its records, so that they can be read by
    /// feature name whatever becomes of the version.
    pub fn schema(&self) -> &str {
        &self.schema
    }

    /// Compiles a pipeline again from its [`schema`](FeaturePipeline::schema).
    pub fn from_schema(schema: &[u8]) -> Result<FeaturePipeline, String> {
        let s: Schema = serde_json::from_slice(schema).map_err(|e| format!("feature schema: {e}"))?;
        FeaturePipeline::compile(s.spec.into_owned(), &s.signature)
    }

    pub fn spec(&self) -> &FeatureSpec {
        &self.spec
    }

    /// Each feature's name with the name of the model input it goes to.
    pub fn feature_inputs(&self) -> impl Iterator<Item = (&str, &str)> {
        self.spec.features.iter().zip(&self.columns).map(|(f, c)| (f.name.as_str(), self.inputs[c.input].name.as_str()))
    }

    /// Checks every record against the spec and writes the valid ones into
    /// the model's input tensors. With `invalid_records = "reject"`, any
    /// problem fails the whole request, listing every problem found (up to
    /// [`MAX_LISTED_ERRORS`]); with `"report"`, invalid records are set aside
    /// with their problems. `max_elements` bounds each tensor.
    pub fn encode(&self, records: &Records, max_elements: usize) -> Result<Encoded, Error> {
        let n = records.len();
        let mut data = Vec::with_capacity(self.inputs.len());
        for l in &self.inputs {
            let len = n.checked_mul(l.width).filter(|&len| len <= max_elements).ok_or_else(|| {
                Error::invalid_input(format!(
                    "{n} records make input '{}' larger than limits.max_tensor_elements ({max_elements})",
                    l.name
                ))
            })?;
            data.push(TensorData::zeros(l.datatype, len));
        }
        let mut problems = Problems::default();
        let columns: Vec<Option<&Vec<Value>>> = match records {
            Records::Rows(_) => Vec::new(),
            Records::Columns { columns, .. } => {
                for name in columns.keys().filter(|k| !self.index.contains_key(k.as_str())) {
                    if self.spec.records.unknown_fields == UnknownFields::Error {
                        problems.push(None, name, Rule::UnknownField, "not a feature of this model".into());
                    }
                }
                self.spec.features.iter().map(|f| columns.get(&f.name).and_then(Value::as_array)).collect()
            }
        };
        if problems.count > 0 {
            return Err(problems.into_error(n));
        }
        let mut rows = Vec::with_capacity(n);
        let mut rejected = Vec::new();
        for r in 0..n {
            let before = problems.count;
            let row = rows.len();
            match records {
                Records::Rows(list) => self.encode_row(&list[r], r, row, &mut data, &mut problems),
                Records::Columns { .. } => {
                    for (c, column) in self.columns.iter().enumerate() {
                        let value = columns[c].and_then(|v| v.get(r));
                        self.put(c, column, value, r, row, &mut data, &mut problems);
                    }
                }
            }
            if problems.count == before {
                rows.push(r);
            } else if self.spec.records.invalid_records == InvalidRecords::Report {
                rejected.push((r, problems.take_record(r)));
            }
        }
        if problems.count > 0 && self.spec.records.invalid_records == InvalidRecords::Reject {
            return Err(problems.into_error(n));
        }
        let tensors = self
            .inputs
            .iter()
            .zip(data)
            .map(|(l, mut d)| {
                truncate(&mut d, rows.len() * l.width);
                let shape = if l.matrix { vec![rows.len(), l.width] } else { vec![rows.len()] };
                Tensor::new(&l.name, shape, d).map_err(|e| Error::new(crate::ErrorCode::Internal, e))
            })
            .collect::<Result<_, _>>()?;
        Ok(Encoded { tensors, rows, rejected })
    }

    fn encode_row(&self, record: &Value, r: usize, row: usize, data: &mut [TensorData], problems: &mut Problems) {
        match record {
            Value::Object(fields) => {
                let mut found = 0;
                for (c, column) in self.columns.iter().enumerate() {
                    let value = fields.get(&self.spec.features[c].name);
                    found += usize::from(value.is_some());
                    self.put(c, column, value, r, row, data, problems);
                }
                if found < fields.len() && self.spec.records.unknown_fields == UnknownFields::Error {
                    for name in fields.keys().filter(|k| !self.index.contains_key(k.as_str())) {
                        problems.push(Some(r), name, Rule::UnknownField, "not a feature of this model".into());
                    }
                }
            }
            Value::Array(values) if values.len() == self.columns.len() => {
                for (c, column) in self.columns.iter().enumerate() {
                    self.put(c, column, values.get(c), r, row, data, problems);
                }
            }
            Value::Array(values) => problems.push(
                Some(r),
                "",
                Rule::Shape,
                format!(
                    "has {} values; an array record gives the {} features in order",
                    values.len(),
                    self.columns.len()
                ),
            ),
            other => problems.push(
                Some(r),
                "",
                Rule::Shape,
                format!("is {}; a record is an object of features or an array in feature order", kind_of(other)),
            ),
        }
    }

    /// Checks one value of record `r` and writes it to row `row`.
    #[allow(clippy::too_many_arguments)]
    fn put(
        &self,
        c: usize,
        column: &Column,
        value: Option<&Value>,
        r: usize,
        row: usize,
        data: &mut [TensorData],
        problems: &mut Problems,
    ) {
        let checked = match value {
            None | Some(Value::Null) => column.default.clone().ok_or((Rule::Required, "missing".to_owned())),
            Some(v) => column.check.read(v).or_else(|(rule, e)| match (rule, &column.default) {
                (Rule::Vocabulary, Some(d))
                    if matches!(column.check, Check::Category { unknown: UnknownCategory::Default, .. }) =>
                {
                    Ok(d.clone())
                }
                _ => Err((rule, e)),
            }),
        };
        let checked = checked.and_then(|scalar| match (column.encode, &scalar) {
            (Encode::Number { shift, scale, stretch, lower }, Scalar::Number(x))
                if ((x - shift) / scale * stretch + lower).abs() > column.limit =>
            {
                let t = self.inputs[column.input].datatype;
                Err((Rule::Range, format!("{x} does not fit the model's {t} input once transformed")))
            }
            _ => Ok(scalar),
        });
        match checked {
            Ok(scalar) => {
                let width = self.inputs[column.input].width;
                write(&mut data[column.input], row * width + column.offset, column, &scalar);
            }
            Err((rule, message)) => problems.push(Some(r), &self.spec.features[c].name, rule, message),
        }
    }
}

fn names(inputs: &[InputLayout]) -> Vec<&str> {
    inputs.iter().map(|l| l.name.as_str()).collect()
}

/// The check, encoding and column count of one feature going to an input of `target` type.
fn compile_feature(f: &Feature, target: DataType) -> Result<(Check, Encode, usize), String> {
    let float_target = matches!(target, DataType::Fp16 | DataType::Fp32 | DataType::Fp64);
    let numeric_target = target != DataType::Bytes && target != DataType::Bool;
    let refuse = |what: &str| Err(format!("{what} cannot go to an input of type {target}"));
    if f.vocabulary.is_some() && f.kind != FeatureKind::Categorical {
        return Err("vocabulary is for categorical features".into());
    }
    if (f.min.is_some() || f.max.is_some()) && f.kind != FeatureKind::Numerical {
        return Err("min and max are for numerical features".into());
    }
    if f.unknown != UnknownCategory::Error && f.kind != FeatureKind::Categorical {
        return Err("unknown is for categorical features".into());
    }
    match f.kind {
        FeatureKind::Numerical => {
            let datatype = f.datatype.unwrap_or(DataType::Fp64);
            if matches!(datatype, DataType::Bool | DataType::Bytes) {
                return Err(format!("a numerical feature's datatype is a number type, not {datatype}"));
            }
            let (min, max) = (f.min.unwrap_or(f64::NEG_INFINITY), f.max.unwrap_or(f64::INFINITY));
            if min.is_nan() || max.is_nan() || min > max {
                return Err(format!("min {min} is above max {max}"));
            }
            let encode = match f.transform {
                Transform::Passthrough => Encode::Number { shift: 0.0, scale: 1.0, stretch: 1.0, lower: 0.0 },
                Transform::Standard { mean, scale } => {
                    if !(mean.is_finite() && scale.is_finite() && scale > 0.0) {
                        return Err(format!(
                            "standard scaling needs a finite mean and a scale > 0 (got {mean}, {scale})"
                        ));
                    }
                    Encode::Number { shift: mean, scale, stretch: 1.0, lower: 0.0 }
                }
                Transform::MinMax { data_min, data_max, range: [lo, hi] } => {
                    if !(data_min.is_finite() && data_max.is_finite() && data_max > data_min) {
                        return Err(format!("min_max needs data_max > data_min (got {data_min}, {data_max})"));
                    }
                    if !(lo.is_finite() && hi.is_finite() && hi > lo) {
                        return Err(format!("min_max range [{lo}, {hi}] must rise"));
                    }
                    Encode::Number { shift: data_min, scale: data_max - data_min, stretch: hi - lo, lower: lo }
                }
                Transform::OneHot | Transform::Ordinal => {
                    return Err("one_hot and ordinal are for categorical features".into());
                }
            };
            let scaled = !matches!(f.transform, Transform::Passthrough);
            let fits = if scaled || !datatype.is_integer() { float_target } else { target == datatype || float_target };
            if !fits {
                return refuse(&format!("a numerical {datatype} feature{}", if scaled { ", scaled," } else { "" }));
            }
            Ok((Check::Number { datatype, min, max }, encode, 1))
        }
        FeatureKind::Boolean => {
            if f.datatype.is_some_and(|d| d != DataType::Bool) {
                return Err("a boolean feature's datatype is BOOL".into());
            }
            if f.transform != Transform::Passthrough {
                return Err("a boolean feature is passed through".into());
            }
            if !numeric_target && target != DataType::Bool {
                return refuse("a boolean");
            }
            Ok((Check::Bool, Encode::Bool, 1))
        }
        FeatureKind::Text => {
            if f.datatype.is_some_and(|d| d != DataType::Bytes) {
                return Err("a text feature's datatype is BYTES".into());
            }
            if f.transform != Transform::Passthrough {
                return Err("a text feature is passed through (the model tokenizes it)".into());
            }
            if target != DataType::Bytes {
                return refuse("text");
            }
            Ok((Check::Text { max_length: f.max_length.unwrap_or(DEFAULT_MAX_TEXT) }, Encode::Bytes, 1))
        }
        FeatureKind::Categorical => {
            let integers = match f.datatype.unwrap_or(DataType::Bytes) {
                DataType::Bytes => false,
                DataType::Int64 => true,
                other => return Err(format!("a categorical feature's datatype is BYTES or INT64, not {other}")),
            };
            let list = f.vocabulary.as_ref().ok_or("a categorical feature needs a vocabulary")?;
            if list.is_empty() || list.len() > MAX_VOCABULARY {
                return Err(format!("vocabulary: 1 to {MAX_VOCABULARY} categories"));
            }
            let mut vocabulary = HashMap::with_capacity(list.len());
            for (i, c) in list.iter().enumerate() {
                if vocabulary.insert(c.clone(), i).is_some() {
                    return Err(format!("vocabulary lists {} twice", quoted(c)));
                }
                if integers && c.parse::<i64>().is_err() {
                    return Err(format!("vocabulary: {} is not an integer (datatype INT64)", quoted(c)));
                }
            }
            let slot = usize::from(f.unknown == UnknownCategory::UnknownSlot);
            // Ordinal codes must stay distinct in the input's type.
            let exact = match target {
                DataType::Int8 => 127,
                DataType::Uint8 => 255,
                DataType::Int16 => 32_767,
                DataType::Uint16 => 65_535,
                DataType::Fp16 => 2_048,
                _ => usize::MAX,
            };
            if f.transform == Transform::Ordinal && list.len() + slot - 1 > exact {
                return Err(format!("{} ordinal codes do not all fit an input of type {target}", list.len() + slot));
            }
            let (encode, width) = match f.transform {
                Transform::OneHot if numeric_target => (Encode::OneHot, list.len() + slot),
                Transform::Ordinal if numeric_target => (Encode::Ordinal, 1),
                Transform::Passthrough if target == DataType::Bytes && slot == 0 => (Encode::Bytes, 1),
                Transform::Passthrough if target == DataType::Bytes => {
                    return Err("unknown_slot needs one_hot or ordinal".into());
                }
                Transform::OneHot | Transform::Ordinal | Transform::Passthrough => {
                    return refuse("this categorical encoding");
                }
                Transform::Standard { .. } | Transform::MinMax { .. } => {
                    return Err("a categorical feature is one_hot, ordinal or passthrough".into());
                }
            };
            let max_length = f.max_length.unwrap_or(DEFAULT_MAX_TEXT);
            let names = list.clone();
            Ok((Check::Category { integers, vocabulary, names, unknown: f.unknown, max_length }, encode, width))
        }
    }
}

impl Check {
    /// Checks one value; an error is the rule broken and what is wrong.
    fn read<'v>(&self, v: &'v Value) -> Result<Scalar<'v>, (Rule, String)> {
        match self {
            Check::Number { datatype, min, max } => {
                let Some(x) = v.as_f64() else { return Err(wrong_type("a number", v)) };
                if datatype.is_integer() && (x.fract() != 0.0 || !integer_fits(*datatype, x)) {
                    return Err((Rule::Range, format!("{x} is not a whole number that fits {datatype}")));
                }
                if *datatype == DataType::Fp32 && x.abs() > f64::from(f32::MAX) {
                    return Err((Rule::Range, format!("{x} does not fit FP32")));
                }
                if *datatype == DataType::Fp16 && x.abs() > f16::MAX.to_f64() {
                    return Err((Rule::Range, format!("{x} does not fit FP16")));
                }
                if x < *min || x > *max {
                    return Err((Rule::Range, format!("{x} is outside [{min}, {max}]")));
                }
                Ok(Scalar::Number(x))
            }
            Check::Bool => v.as_bool().map(Scalar::Bool).ok_or_else(|| wrong_type("true or false", v)),
            Check::Text { max_length } => {
                let s = v.as_str().ok_or_else(|| wrong_type("a string", v))?;
                if s.len() > *max_length {
                    return Err((Rule::Length, format!("is {} bytes, over max_length {max_length}", s.len())));
                }
                Ok(Scalar::Text(Cow::Borrowed(s)))
            }
            Check::Category { integers, vocabulary, unknown, max_length, .. } => {
                let text: Cow<'v, str> = match (v, integers) {
                    (Value::String(s), false) => Cow::Borrowed(s),
                    (Value::Number(n), true) if n.is_i64() => Cow::Owned(n.to_string()),
                    _ => {
                        return Err(wrong_type(if *integers { "an integer category" } else { "a string category" }, v));
                    }
                };
                if text.len() > *max_length {
                    return Err((Rule::Length, format!("is {} bytes, over max_length {max_length}", text.len())));
                }
                match vocabulary.get(text.as_ref()) {
                    Some(&i) => Ok(Scalar::Category(Some(i), text)),
                    None if *unknown == UnknownCategory::UnknownSlot => Ok(Scalar::Category(None, text)),
                    None => Err((Rule::Vocabulary, format!("{} is not in the vocabulary", quoted(&text)))),
                }
            }
        }
    }
}

impl<'a> Scalar<'a> {
    fn into_owned(self) -> Scalar<'static> {
        match self {
            Scalar::Number(x) => Scalar::Number(x),
            Scalar::Bool(b) => Scalar::Bool(b),
            Scalar::Category(i, t) => Scalar::Category(i, Cow::Owned(t.into_owned())),
            Scalar::Text(t) => Scalar::Text(Cow::Owned(t.into_owned())),
        }
    }
}

/// Whether a whole number fits an integer type (bounds: low inclusive, high exclusive, exact in f64).
fn integer_fits(d: DataType, x: f64) -> bool {
    let (lo, hi) = match d {
        DataType::Int8 => (-128.0, 128.0),
        DataType::Int16 => (-32_768.0, 32_768.0),
        DataType::Int32 => (-2_147_483_648.0, 2_147_483_648.0),
        DataType::Int64 => (-9_223_372_036_854_775_808.0, 9_223_372_036_854_775_808.0),
        DataType::Uint8 => (0.0, 256.0),
        DataType::Uint16 => (0.0, 65_536.0),
        DataType::Uint32 => (0.0, 4_294_967_296.0),
        _ => (0.0, 18_446_744_073_709_551_616.0),
    };
    x >= lo && x < hi
}

fn wrong_type(expected: &str, v: &Value) -> (Rule, String) {
    (Rule::Type, format!("expected {expected}, got {}", kind_of(v)))
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Writes a checked value's columns at `at` (the feature's first column in its row).
fn write(data: &mut TensorData, at: usize, column: &Column, value: &Scalar<'_>) {
    match (column.encode, value) {
        (Encode::Number { shift, scale, stretch, lower }, Scalar::Number(x)) => {
            // As scikit-learn computes it: (x - mean) / scale, or
            // (x - data_min) / data_range * (hi - lo) + lo.
            set_number(data, at, (x - shift) / scale * stretch + lower);
        }
        (Encode::Bool, Scalar::Bool(b)) => match data {
            TensorData::Bool(v) => v[at] = *b,
            _ => set_number(data, at, f64::from(u8::from(*b))),
        },
        (Encode::OneHot, Scalar::Category(index, _)) => {
            // The unknown slot is the last column.
            let hot = index.unwrap_or(column.width - 1);
            for k in 0..column.width {
                set_number(data, at + k, f64::from(u8::from(k == hot)));
            }
        }
        (Encode::Ordinal, Scalar::Category(index, _)) => {
            let code = index.unwrap_or_else(|| column.vocabulary_len());
            set_number(data, at, code as f64);
        }
        (Encode::Bytes, Scalar::Text(t) | Scalar::Category(_, t)) => {
            if let TensorData::Bytes(v) = data {
                v[at] = t.as_bytes().to_vec();
            }
        }
        // Compilation pairs each check with its encoding; nothing else reaches here.
        _ => {}
    }
}

impl Column {
    fn vocabulary_len(&self) -> usize {
        match &self.check {
            Check::Category { vocabulary, .. } => vocabulary.len(),
            _ => 0,
        }
    }
}

fn set_number(data: &mut TensorData, i: usize, x: f64) {
    // Values were checked to fit the feature's datatype, and compilation only
    // sends whole numbers to integer inputs.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    match data {
        TensorData::Fp32(v) => v[i] = x as f32,
        TensorData::Fp64(v) => v[i] = x,
        TensorData::Fp16(v) => v[i] = f16::from_f64(x),
        TensorData::Int64(v) => v[i] = x as i64,
        TensorData::Int32(v) => v[i] = x as i32,
        TensorData::Int16(v) => v[i] = x as i16,
        TensorData::Int8(v) => v[i] = x as i8,
        TensorData::Uint64(v) => v[i] = x as u64,
        TensorData::Uint32(v) => v[i] = x as u32,
        TensorData::Uint16(v) => v[i] = x as u16,
        TensorData::Uint8(v) => v[i] = x as u8,
        TensorData::Bool(v) => v[i] = x != 0.0,
        TensorData::Bytes(_) => {}
    }
}

fn truncate(data: &mut TensorData, len: usize) {
    crate::with_tensor_data!(data, v => v.truncate(len));
}

/// Problems found so far: the first [`MAX_LISTED_ERRORS`] kept, all counted.
#[derive(Default)]
struct Problems {
    listed: Vec<RecordError>,
    count: usize,
    records: usize,
    last_record: Option<usize>,
}

impl Problems {
    fn push(&mut self, record: Option<usize>, field: &str, rule: Rule, message: String) {
        self.count += 1;
        if record.is_none() || record != self.last_record {
            self.records += 1;
            self.last_record = record;
        }
        if self.listed.len() < MAX_LISTED_ERRORS {
            self.listed.push(RecordError { record, field: quoted_field(field), rule, message });
        }
    }

    /// Takes the listed problems of record `r` (to answer beside the others' predictions).
    fn take_record(&mut self, r: usize) -> Vec<RecordError> {
        let (mine, rest) = std::mem::take(&mut self.listed).into_iter().partition(|e| e.record == Some(r));
        self.listed = rest;
        mine
    }

    fn into_error(self, records: usize) -> Error {
        let more = self.count.saturating_sub(self.listed.len());
        let mut message = format!(
            "{} problem{} in {} of {records} record{}",
            self.count,
            if self.count == 1 { "" } else { "s" },
            self.records,
            if records == 1 { "" } else { "s" },
        );
        if let Some(first) = self.listed.first() {
            let at = first.record.map_or(String::new(), |r| format!("record {r}, "));
            message.push_str(&format!("; first: {at}{}: {}", first.field, first.message));
        }
        if more > 0 {
            message.push_str(&format!(" ({more} more not listed)"));
        }
        Error::with_details(message, self.listed)
    }
}

/// A field name as it may be echoed back: unknown fields come from the caller.
fn quoted_field(name: &str) -> String {
    if name.len() <= 64 && !name.chars().any(char::is_control) { name.to_owned() } else { quoted(name) }
}
