//! The way back: a model's input tensors as named feature records, so that a
//! request is logged and monitored by feature name whether it came as records
//! or as V2 tensors.

use super::pipeline::{Check, Encode, FeaturePipeline};
use crate::{Tensor, TensorData};
use serde_json::{Map, Value, json};

impl FeaturePipeline {
    /// Each row of `inputs` (the model's inputs, in signature order) as a
    /// record of named features, transforms undone (see [`visit`]). `None` if
    /// the tensors do not have the layout the spec gives.
    ///
    /// [`visit`]: FeaturePipeline::visit
    pub fn decode(&self, inputs: &[Tensor]) -> Option<Vec<Map<String, Value>>> {
        let rows = self.rows(inputs)?;
        let mut records: Vec<Map<String, Value>> = Vec::with_capacity(rows);
        let mut last = None;
        self.visit(inputs, |i, value| {
            // Features come in order within a row: one not after the last starts the next row.
            if last.is_none_or(|l| i <= l) {
                records.push(Map::new());
            }
            last = Some(i);
            if let Some(record) = records.last_mut() {
                record.insert(self.spec.features[i].name.clone(), value.to_json());
            }
        });
        Some(records)
    }

    /// The rows of `inputs` if they have the spec's layout.
    fn rows(&self, inputs: &[Tensor]) -> Option<usize> {
        if inputs.len() != self.inputs.len() {
            return None;
        }
        let rows = inputs.first()?.shape.first().copied()?;
        let fits = inputs.iter().zip(&self.inputs).all(|(t, l)| {
            t.name == l.name && t.shape.first() == Some(&rows) && Some(t.data.len()) == rows.checked_mul(l.width)
        });
        fits.then_some(rows)
    }
}

/// One feature value of one row, as [`FeaturePipeline::visit`] hands it out.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum FeatureValue<'a> {
    Number(f64),
    /// A feature of an integer datatype, or an integer-coded category.
    Integer(i64),
    Bool(bool),
    /// A vocabulary category, or a string passed through.
    Category(&'a str),
    /// A category that went to the unknown slot (its text is not in the tensors).
    Unknown,
    Text(&'a [u8]),
}

impl FeatureValue<'_> {
    /// As JSON: the unknown slot is `null`, text is read as UTF-8 (lossy).
    pub fn to_json(self) -> Value {
        match self {
            FeatureValue::Number(x) => json!(x),
            FeatureValue::Integer(i) => json!(i),
            FeatureValue::Bool(b) => json!(b),
            FeatureValue::Category(c) => json!(c),
            FeatureValue::Unknown => Value::Null,
            FeatureValue::Text(t) => json!(String::from_utf8_lossy(t)),
        }
    }
}

impl FeaturePipeline {
    /// Calls `f(feature index, value)` for every feature of every row of
    /// `inputs` (the model's inputs, in signature order), row by row, with
    /// transforms undone: scaled numbers back in their own units (whole ones
    /// for integer datatypes), one-hot and ordinal columns back to their
    /// category (`Unknown` for the unknown slot). Allocates nothing:
    /// monitoring counts every request with it. Does nothing if the tensors
    /// do not have the spec's layout.
    pub fn visit(&self, inputs: &[Tensor], mut f: impl FnMut(usize, FeatureValue<'_>)) {
        let Some(rows) = self.rows(inputs) else { return };
        for r in 0..rows {
            for (i, column) in self.columns.iter().enumerate() {
                let data = &inputs[column.input].data;
                let at = r * self.inputs[column.input].width + column.offset;
                let (integers, names) = match &column.check {
                    Check::Category { integers, names, .. } => (*integers, names.as_slice()),
                    _ => (false, &[][..]),
                };
                fn category(integers: bool, name: &str) -> FeatureValue<'_> {
                    match (integers, name.parse::<i64>()) {
                        (true, Ok(n)) => FeatureValue::Integer(n),
                        (true, Err(_)) => FeatureValue::Unknown,
                        (false, _) => FeatureValue::Category(name),
                    }
                }
                let by_index = |k: usize| names.get(k).map_or(FeatureValue::Unknown, |n| category(integers, n));
                let value = match column.encode {
                    Encode::Number { shift, scale, stretch, lower } => match number_at(data, at) {
                        Some(x) => {
                            let x = (x - lower) / stretch * scale + shift;
                            match &column.check {
                                // Whole numbers were checked to fit the datatype on the way in.
                                #[allow(clippy::cast_possible_truncation)]
                                Check::Number { datatype, .. } if datatype.is_integer() => {
                                    FeatureValue::Integer(x.round() as i64)
                                }
                                _ => FeatureValue::Number(x),
                            }
                        }
                        None => continue,
                    },
                    Encode::Bool => FeatureValue::Bool(number_at(data, at).is_some_and(|x| x != 0.0)),
                    Encode::OneHot => (0..column.width)
                        .find(|&k| number_at(data, at + k).is_some_and(|x| x > 0.5))
                        .map_or(FeatureValue::Unknown, by_index),
                    Encode::Ordinal => match number_at(data, at) {
                        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                        Some(code) if code >= 0.0 && code.fract() == 0.0 => by_index(code as usize),
                        _ => FeatureValue::Unknown,
                    },
                    Encode::Bytes => match (data, &column.check) {
                        (TensorData::Bytes(v), Check::Category { .. }) => match v.get(at) {
                            Some(b) => std::str::from_utf8(b).map_or(FeatureValue::Unknown, |t| category(integers, t)),
                            None => continue,
                        },
                        (TensorData::Bytes(v), _) => match v.get(at) {
                            Some(b) => FeatureValue::Text(b),
                            None => continue,
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
