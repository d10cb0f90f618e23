//! The way back: a model's input tensors as named feature records, so that a
//! request is logged and monitored by feature name whether it came as records
//! or as V2 tensors.

use super::pipeline::{Check, Encode, FeaturePipeline};
use crate::{Tensor, TensorData};
use serde_json::{Map, Value, json};

impl FeaturePipeline {
    /// Each row of `inputs` (the model's inputs, in signature order) as a
    /// record of named features, transforms undone: scaled numbers back in
    /// their own units, one-hot and ordinal columns back to their category
    /// (`null` for the unknown slot). `None` if the tensors do not have the
    /// layout the spec gives.
    pub fn decode(&self, inputs: &[Tensor]) -> Option<Vec<Map<String, Value>>> {
        if inputs.len() != self.inputs.len() {
            return None;
        }
        let rows = inputs.first()?.shape.first().copied()?;
        for (t, l) in inputs.iter().zip(&self.inputs) {
            if t.name != l.name || t.shape.first() != Some(&rows) || t.data.len() != rows.checked_mul(l.width)? {
                return None;
            }
        }
        let mut records = Vec::with_capacity(rows);
        for r in 0..rows {
            let mut record = Map::new();
            for (column, feature) in self.columns.iter().zip(&self.spec.features) {
                let data = &inputs[column.input].data;
                let at = r * self.inputs[column.input].width + column.offset;
                record.insert(feature.name.clone(), self.value(column, data, at)?);
            }
            records.push(record);
        }
        Some(records)
    }

    fn value(&self, column: &super::pipeline::Column, data: &TensorData, at: usize) -> Option<Value> {
        let category = |i: usize| match &column.check {
            Check::Category { names, integers, .. } => {
                let name = names.get(i).map(String::as_str);
                match (name, integers) {
                    (Some(n), true) => n.parse::<i64>().ok().map_or(Value::Null, |n| json!(n)),
                    (Some(n), false) => json!(n),
                    (None, _) => Value::Null,
                }
            }
            _ => Value::Null,
        };
        Some(match column.encode {
            Encode::Number { shift, scale, stretch, lower } => {
                let x = (number_at(data, at)? - lower) / stretch * scale + shift;
                match &column.check {
                    // Whole numbers were checked to fit the datatype on the way in.
                    #[allow(clippy::cast_possible_truncation)]
                    Check::Number { datatype, .. } if datatype.is_integer() => json!(x.round() as i64),
                    _ => json!(x),
                }
            }
            Encode::Bool => json!(number_at(data, at)? != 0.0),
            Encode::OneHot => {
                let hot = (0..column.width).find(|&k| number_at(data, at + k).is_some_and(|x| x > 0.5));
                hot.map_or(Value::Null, category)
            }
            Encode::Ordinal => {
                let code = number_at(data, at)?;
                if code >= 0.0 && code.fract() == 0.0 { category(code as usize) } else { Value::Null }
            }
            Encode::Bytes => match data {
                TensorData::Bytes(v) => {
                    let text = String::from_utf8_lossy(v.get(at)?).into_owned();
                    match &column.check {
                        Check::Category { integers: true, .. } => text.parse::<i64>().map_or(Value::Null, |n| json!(n)),
                        _ => json!(text),
                    }
                }
                _ => return None,
            },
        })
    }
}

/// One feature value of one row, as [`FeaturePipeline::visit`] hands it out.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum FeatureValue<'a> {
    Number(f64),
    Bool(bool),
    /// A vocabulary category, or a string passed through.
    Category(&'a str),
    /// A category that went to the unknown slot (its text is not in the tensors).
    Unknown,
    Text(&'a [u8]),
}

impl FeaturePipeline {
    /// Calls `f(feature index, value)` for every feature of every row of
    /// `inputs` (the model's inputs, in signature order), transforms undone,
    /// without allocating: monitoring counts every request with it. Does
    /// nothing if the tensors do not have the spec's layout.
    pub fn visit(&self, inputs: &[Tensor], mut f: impl FnMut(usize, FeatureValue<'_>)) {
        if inputs.len() != self.inputs.len() {
            return;
        }
        let Some(rows) = inputs.first().and_then(|t| t.shape.first().copied()) else { return };
        for (t, l) in inputs.iter().zip(&self.inputs) {
            if t.shape.first() != Some(&rows) || Some(t.data.len()) != rows.checked_mul(l.width) {
                return;
            }
        }
        for r in 0..rows {
            for (i, column) in self.columns.iter().enumerate() {
                let data = &inputs[column.input].data;
                let at = r * self.inputs[column.input].width + column.offset;
                let category = |k: usize| match &column.check {
                    Check::Category { names, .. } => {
                        names.get(k).map_or(FeatureValue::Unknown, |n| FeatureValue::Category(n))
                    }
                    _ => FeatureValue::Unknown,
                };
                let value = match column.encode {
                    Encode::Number { shift, scale, stretch, lower } => match number_at(data, at) {
                        Some(x) => FeatureValue::Number((x - lower) / stretch * scale + shift),
                        None => continue,
                    },
                    Encode::Bool => FeatureValue::Bool(number_at(data, at).is_some_and(|x| x != 0.0)),
                    Encode::OneHot => (0..column.width)
                        .find(|&k| number_at(data, at + k).is_some_and(|x| x > 0.5))
                        .map_or(FeatureValue::Unknown, category),
                    Encode::Ordinal => match number_at(data, at) {
                        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                        Some(code) if code >= 0.0 && code.fract() == 0.0 => category(code as usize),
                        _ => FeatureValue::Unknown,
                    },
                    Encode::Bytes => match data {
                        TensorData::Bytes(v) => match (v.get(at), &column.check) {
                            (Some(b), Check::Category { .. }) => {
                                std::str::from_utf8(b).map_or(FeatureValue::Unknown, FeatureValue::Category)
                            }
                            (Some(b), _) => FeatureValue::Text(b),
                            (None, _) => continue,
                        },
                        _ => continue,
                    },
                };
                f(i, value);
            }
        }
    }
}

/// Element `i` of a numeric tensor as f64 (booleans as 0 and 1).
pub(super) fn number_at(data: &TensorData, i: usize) -> Option<f64> {
    // Wide integers lose precision past 2^53, which monitoring does not mind.
    #[allow(clippy::cast_precision_loss)]
    Some(match data {
        TensorData::Fp32(v) => f64::from(*v.get(i)?),
        TensorData::Fp64(v) => *v.get(i)?,
        TensorData::Fp16(v) => v.get(i)?.to_f64(),
        TensorData::Int64(v) => *v.get(i)? as f64,
        TensorData::Int32(v) => f64::from(*v.get(i)?),
        TensorData::Int16(v) => f64::from(*v.get(i)?),
        TensorData::Int8(v) => f64::from(*v.get(i)?),
        TensorData::Uint64(v) => *v.get(i)? as f64,
        TensorData::Uint32(v) => f64::from(*v.get(i)?),
        TensorData::Uint16(v) => f64::from(*v.get(i)?),
        TensorData::Uint8(v) => f64::from(*v.get(i)?),
        TensorData::Bool(v) => f64::from(u8::from(*v.get(i)?)),
        TensorData::Bytes(_) => return None,
    })
}
