//! What a model takes and returns, and the check of a request against it.

use crate::datatype::DataType;
use crate::error::Error;
use crate::tensor::Tensor;
use serde::{Deserialize, Serialize};

/// One input or output: name, datatype and shape, with -1 for a dynamic dimension.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TensorSpec {
    pub name: String,
    pub datatype: DataType,
    pub shape: Vec<i64>,
}

impl TensorSpec {
    /// Whether a concrete shape fits this spec (same rank, fixed dims equal).
    pub fn accepts_shape(&self, shape: &[usize]) -> bool {
        self.shape.len() == shape.len()
            && self
                .shape
                .iter()
                .zip(shape)
                .all(|(&want, &got)| want < 0 || usize::try_from(want).is_ok_and(|w| w == got))
    }

    /// The shape with every dynamic dimension set to 1: what warm-up feeds.
    pub fn example_shape(&self) -> Vec<usize> {
        self.shape.iter().map(|&d| usize::try_from(d).unwrap_or(1)).collect()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Signature {
    pub inputs: Vec<TensorSpec>,
    pub outputs: Vec<TensorSpec>,
}

impl Signature {
    pub fn input(&self, name: &str) -> Option<&TensorSpec> {
        self.inputs.iter().find(|s| s.name == name)
    }

    pub fn output(&self, name: &str) -> Option<&TensorSpec> {
        self.outputs.iter().find(|s| s.name == name)
    }

    /// Checks request inputs against the signature and puts them in signature order.
    /// Every error names the input and what is wrong with it.
    pub fn arrange_inputs(&self, mut given: Vec<Tensor>) -> Result<Vec<Tensor>, Error> {
        for (i, t) in given.iter().enumerate() {
            if given[..i].iter().any(|u| u.name == t.name) {
                return Err(Error::invalid_input(format!("input '{}' is given more than once", t.name)));
            }
            let Some(spec) = self.input(&t.name) else {
                let expected: Vec<&str> = self.inputs.iter().map(|s| s.name.as_str()).collect();
                return Err(Error::invalid_input(format!("unknown input '{}' (the model takes {expected:?})", t.name)));
            };
            if t.datatype() != spec.datatype {
                return Err(Error::invalid_input(format!(
                    "input '{}' has datatype {} but the model expects {}",
                    t.name,
                    t.datatype(),
                    spec.datatype
                )));
            }
            if !spec.accepts_shape(&t.shape) {
                return Err(Error::invalid_input(format!(
                    "input '{}' has shape {:?} but the model expects {:?} (-1 = any size)",
                    t.name, t.shape, spec.shape
                )));
            }
        }
        let mut ordered = Vec::with_capacity(self.inputs.len());
        for spec in &self.inputs {
            let pos = given
                .iter()
                .position(|t| t.name == spec.name)
                .ok_or_else(|| Error::invalid_input(format!("missing input '{}'", spec.name)))?;
            ordered.push(given.swap_remove(pos));
        }
        Ok(ordered)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;
    use crate::tensor::TensorData;

    fn sig() -> Signature {
        Signature {
            inputs: vec![
                TensorSpec { name: "a".into(), datatype: DataType::Fp32, shape: vec![-1, 2] },
                TensorSpec { name: "b".into(), datatype: DataType::Int64, shape: vec![-1] },
            ],
            outputs: vec![],
        }
    }

    fn a(shape: Vec<usize>) -> Tensor {
        let n = shape.iter().product();
        Tensor::new("a", shape, TensorData::Fp32(vec![0.0; n])).unwrap()
    }

    fn b() -> Tensor {
        Tensor::new("b", vec![3], TensorData::Int64(vec![1, 2, 3])).unwrap()
    }

    fn message(r: Result<Vec<Tensor>, Error>) -> String {
        let e = r.unwrap_err();
        assert_eq!(e.code(), ErrorCode::InvalidInput);
        e.to_string()
    }

    #[test]
    fn orders_inputs_by_signature() {
        let out = sig().arrange_inputs(vec![b(), a(vec![4, 2])]).unwrap();
        assert_eq!(out[0].name, "a");
        assert_eq!(out[1].name, "b");
    }

    #[test]
    fn names_what_is_wrong() {
        assert!(message(sig().arrange_inputs(vec![a(vec![1, 2])])).contains("missing input 'b'"));
        assert!(message(sig().arrange_inputs(vec![a(vec![1, 3]), b()])).contains("input 'a' has shape [1, 3]"));
        assert!(message(sig().arrange_inputs(vec![a(vec![2]), b()])).contains("input 'a' has shape"));
        assert!(message(sig().arrange_inputs(vec![a(vec![1, 2]), a(vec![1, 2]), b()])).contains("more than once"));
        let c = Tensor::new("c", vec![1], TensorData::Fp32(vec![0.0])).unwrap();
        assert!(message(sig().arrange_inputs(vec![a(vec![1, 2]), b(), c])).contains("unknown input 'c'"));
        let wrong = Tensor::new("b", vec![1], TensorData::Fp32(vec![0.0])).unwrap();
        assert!(
            message(sig().arrange_inputs(vec![a(vec![1, 2]), wrong]))
                .contains("datatype FP32 but the model expects INT64")
        );
    }
}
