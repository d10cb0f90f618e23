//! The model's outputs as one prediction per record: a label with its
//! probabilities, named regression values, or (without `[prediction]`) every
//! output's row by output name.

use super::pipeline::FeaturePipeline;
use super::spec::PredictionSpec;
use crate::{Error, ErrorCode, Signature, Tensor, TensorData};
use serde_json::{Map, Value, json};

#[derive(Debug)]
pub(super) struct Prediction {
    spec: PredictionSpec,
    /// The output's index in the signature.
    output: usize,
}

impl Prediction {
    pub(super) fn compile(spec: &PredictionSpec, signature: &Signature) -> Result<Prediction, String> {
        let (name, width, what) = match spec {
            PredictionSpec::Classification { output, labels, top_k, threshold } => {
                if labels.is_empty() {
                    return Err("[prediction] labels: give one per probability column".into());
                }
                if let Some((i, l)) = labels.iter().enumerate().find(|(i, l)| labels[..*i].contains(l)) {
                    return Err(format!("[prediction] labels[{i}]: '{l}' is listed twice"));
                }
                if top_k.is_some_and(|k| k == 0 || k > labels.len()) {
                    return Err(format!("[prediction] top_k: 1 to {} (the labels)", labels.len()));
                }
                if threshold.is_some_and(|t| labels.len() != 2 || !(0.0..=1.0).contains(&t)) {
                    return Err("[prediction] threshold: in [0, 1], for two labels only".into());
                }
                (output, labels.len(), "labels")
            }
            PredictionSpec::Regression { output, names } => {
                if names.is_empty() {
                    return Err("[prediction] names: give one per output column".into());
                }
                (output, names.len(), "names")
            }
        };
        let Some(index) = signature.outputs.iter().position(|o| &o.name == name) else {
            let known: Vec<&str> = signature.outputs.iter().map(|o| o.name.as_str()).collect();
            return Err(format!("[prediction] output '{name}' is not one of the model's outputs {known:?}"));
        };
        let o = &signature.outputs[index];
        if o.datatype.element_size().is_none() || o.datatype == crate::DataType::Bool {
            return Err(format!("[prediction] output '{name}' is {}; it must hold numbers", o.datatype));
        }
        let columns = match o.shape.as_slice() {
            [_] => Some(1),
            [_, w] => usize::try_from(*w).ok(),
            shape => {
                return Err(format!("[prediction] output '{name}' has shape {shape:?}; [rows] or [rows, columns]"));
            }
        };
        if columns.is_some_and(|c| c != width) {
            return Err(format!("[prediction] output '{name}' has {columns:?} columns but {width} {what}"));
        }
        Ok(Prediction { spec: spec.clone(), output: index })
    }
}

impl FeaturePipeline {
    /// One prediction per row from the model's `outputs` (in signature order).
    pub fn predictions(&self, outputs: &[Tensor], rows: usize) -> Result<Vec<Value>, Error> {
        self.predictions_trimmed(outputs, rows, true)
    }

    /// As [`FeaturePipeline::predictions`], with every label's probability
    /// even when the spec sets `top_k`: what the prediction log keeps, so
    /// that ground truth is scored on full distributions.
    pub fn full_predictions(&self, outputs: &[Tensor], rows: usize) -> Result<Vec<Value>, Error> {
        self.predictions_trimmed(outputs, rows, false)
    }

    fn predictions_trimmed(&self, outputs: &[Tensor], rows: usize, trim: bool) -> Result<Vec<Value>, Error> {
        let Some(p) = &self.prediction else {
            return (0..rows)
                .map(|r| {
                    let mut fields = Map::with_capacity(outputs.len());
                    for t in outputs {
                        fields.insert(t.name.clone(), row_value(t, r, rows)?);
                    }
                    Ok(Value::Object(fields))
                })
                .collect();
        };
        let t = outputs.get(p.output).ok_or_else(|| internal("the model returned fewer outputs than its signature"))?;
        let (width, values) = numbers(t, rows)?;
        let mut answers = Vec::with_capacity(rows);
        for row in values.chunks_exact(width.max(1)).take(rows) {
            answers.push(match &p.spec {
                PredictionSpec::Classification { labels, top_k, threshold, .. } => {
                    classify(labels, row, top_k.filter(|_| trim), *threshold)?
                }
                PredictionSpec::Regression { names, .. } => {
                    if row.len() != names.len() {
                        return Err(internal("the output's width changed since loading"));
                    }
                    Value::Object(names.iter().zip(row).map(|(n, v)| (n.clone(), json!(v))).collect())
                }
            });
        }
        Ok(answers)
    }
}

fn classify(labels: &[String], p: &[f64], top_k: Option<usize>, threshold: Option<f64>) -> Result<Value, Error> {
    if p.len() != labels.len() {
        return Err(internal("the output's width changed since loading"));
    }
    let best = match threshold {
        Some(t) => usize::from(p[1] >= t),
        None => most_probable(p.len(), |i| p[i]),
    };
    let mut order: Vec<usize> = (0..p.len()).collect();
    if let Some(k) = top_k {
        order.sort_by(|&a, &b| p[b].total_cmp(&p[a]).then(a.cmp(&b)));
        order.truncate(k);
    }
    let probabilities: Map<String, Value> = order.into_iter().map(|i| (labels[i].clone(), json!(p[i]))).collect();
    Ok(json!({ "label": labels[best], "probabilities": probabilities }))
}

/// A numeric output's values as f64, with its columns per row.
fn numbers(t: &Tensor, rows: usize) -> Result<(usize, Vec<f64>), Error> {
    let width = match t.shape.as_slice() {
        [n] if *n == rows => 1,
        [n, w] if *n == rows => *w,
        shape => return Err(internal(&format!("output '{}' has shape {shape:?} for {rows} records", t.name))),
    };
    let values = match &t.data {
        TensorData::Fp32(v) => v.iter().map(|&x| f64::from(x)).collect(),
        TensorData::Fp64(v) => v.clone(),
        TensorData::Fp16(v) => v.iter().map(|x| x.to_f64()).collect(),
        other => (0..other.len()).filter_map(|i| super::decode::number_at(other, i)).collect(),
    };
    Ok((width, values))
}

/// Row `r` of an output: a value, or an array when the row has several.
fn row_value(t: &Tensor, r: usize, rows: usize) -> Result<Value, Error> {
    let per_row = match t.shape.first() {
        Some(&n) if n == rows && rows > 0 => t.data.len() / rows,
        _ => return Err(internal(&format!("output '{}' has shape {:?} for {rows} records", t.name, t.shape))),
    };
    let value = |i: usize| match &t.data {
        TensorData::Bytes(v) => json!(String::from_utf8_lossy(&v[i])),
        TensorData::Bool(v) => json!(v[i]),
        TensorData::Int64(v) => json!(v[i]),
        TensorData::Uint64(v) => json!(v[i]),
        other => json!(super::decode::number_at(other, i)),
    };
    let start = r * per_row;
    Ok(if t.shape.len() == 1 { value(start) } else { Value::Array((start..start + per_row).map(value).collect()) })
}

/// The index of the largest of `n` probabilities, the first on ties. NaN
/// counts as the smallest, so a NaN output never wins.
fn most_probable(n: usize, p: impl Fn(usize) -> f64) -> usize {
    let key = |i: usize| if p(i).is_nan() { f64::NEG_INFINITY } else { p(i) };
    (0..n).max_by(|&a, &b| key(a).total_cmp(&key(b)).then(b.cmp(&a))).unwrap_or(0)
}

fn internal(message: &str) -> Error {
    Error::new(ErrorCode::Internal, message)
}

impl FeaturePipeline {
    /// The fields of a prediction, as monitoring names them: a classifier's
    /// `label` and one probability per label (by label), or a regressor's
    /// names. Empty without a `[prediction]` spec.
    pub fn prediction_fields(&self) -> Vec<String> {
        match self.prediction.as_ref().map(|p| &p.spec) {
            Some(PredictionSpec::Classification { labels, .. }) => {
                std::iter::once("label".to_owned()).chain(labels.iter().cloned()).collect()
            }
            Some(PredictionSpec::Regression { names, .. }) => names.clone(),
            None => Vec::new(),
        }
    }

    /// Calls `f(field index, value)` (fields as [`prediction_fields`] lists
    /// them) for every row of `outputs` (the model's outputs, in signature
    /// order), without allocating: monitoring counts predictions with it.
    ///
    /// [`prediction_fields`]: FeaturePipeline::prediction_fields
    pub fn visit_predictions(&self, outputs: &[Tensor], mut f: impl FnMut(usize, super::FeatureValue<'_>)) {
        use super::FeatureValue;
        let Some(p) = &self.prediction else { return };
        let Some(t) = outputs.get(p.output) else { return };
        let (rows, width) = match t.shape.as_slice() {
            [n] => (*n, 1),
            [n, w] => (*n, *w),
            _ => return,
        };
        let at = |r: usize, c: usize| super::decode::number_at(&t.data, r * width + c);
        for r in 0..rows {
            match &p.spec {
                PredictionSpec::Classification { labels, threshold, .. } if labels.len() == width => {
                    let best = match threshold {
                        Some(th) => usize::from(at(r, 1).is_some_and(|q| q >= *th)),
                        None => most_probable(width, |c| at(r, c).unwrap_or(f64::NAN)),
                    };
                    f(0, FeatureValue::Category(&labels[best]));
                    for c in 0..width {
                        if let Some(q) = at(r, c) {
                            f(1 + c, FeatureValue::Number(q));
                        }
                    }
                }
                PredictionSpec::Regression { names, .. } if names.len() == width => {
                    for c in 0..width {
                        if let Some(v) = at(r, c) {
                            f(c, FeatureValue::Number(v));
                        }
                    }
                }
                _ => return,
            }
        }
    }
}
