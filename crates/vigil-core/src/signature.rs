//! What a model takes and returns, and the check of a request against it.

use crate::datatype::DataType;
use crate::error::Error;
use crate::names::quoted;
use crate::tensor::Tensor;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// One input or output: name, datatype and shape, with -1 for a dynamic dimension.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TensorSpec {
    pub name: String,
    /// A V2 datatype name (`FP32`, `INT64`, `BYTES`, …).
    #[schema(value_type = String)]
    pub datatype: DataType,
    pub shape: Vec<i64>,
    /// Names the model gives its dynamic dimensions (ONNX `dim_param`), by axis.
    /// Dimensions with the same name must have the same size in one request.
    #[serde(skip)]
    pub dim_names: Vec<Option<String>>,
}

impl TensorSpec {
    pub fn new(name: impl Into<String>, datatype: DataType, shape: Vec<i64>) -> Self {
        TensorSpec { name: name.into(), datatype, shape, dim_names: Vec::new() }
    }

    /// The symbol of a dynamic dimension: the model's name for it, else `N` for
    /// a leading (batch) dimension, else one of its own. `None` for fixed dimensions.
    pub fn symbol(&self, axis: usize) -> Option<String> {
        if self.shape.get(axis).is_none_or(|&d| d >= 0) {
            return None;
        }
        let named = self.dim_names.get(axis).cloned().flatten();
        Some(named.unwrap_or_else(|| if axis == 0 { "N".into() } else { format!("{}_{axis}", self.name) }))
    }

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

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Signature {
    pub inputs: Vec<TensorSpec>,
    pub outputs: Vec<TensorSpec>,
}

impl Signature {
    pub fn input(&self, name: &str) -> Option<&TensorSpec> {
        self.inputs.iter().find(|s| s.name == name)
    }

    /// Checks request inputs against the signature and puts them in signature order.
    /// Every error names the input and what is wrong with it.
    pub fn arrange_inputs(&self, mut given: Vec<Tensor>) -> Result<Vec<Tensor>, Error> {
        for (i, t) in given.iter().enumerate() {
            if given[..i].iter().any(|u| u.name == t.name) {
                return Err(Error::invalid_input(format!("input {} is given more than once", quoted(&t.name))));
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
        let mut sizes: HashMap<String, (&str, usize)> = HashMap::new();
        for spec in &self.inputs {
            let pos = given
                .iter()
                .position(|t| t.name == spec.name)
                .ok_or_else(|| Error::invalid_input(format!("missing input '{}'", spec.name)))?;
            let t = given.swap_remove(pos);
            for (axis, &size) in t.shape.iter().enumerate() {
                let Some(symbol) = spec.symbol(axis) else { continue };
                match sizes.get(&symbol) {
                    Some(&(other, seen)) if seen != size => {
                        return Err(Error::invalid_input(format!(
                            "inputs '{other}' and '{}' must agree on dimension '{symbol}' ({seen} vs {size})",
                            spec.name
                        )));
                    }
                    _ => {
                        sizes.insert(symbol, (&spec.name, size));
                    }
                }
            }
            ordered.push(t);
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
                TensorSpec::new("a", DataType::Fp32, vec![-1, 2]),
                TensorSpec { dim_names: vec![Some("rows".into())], ..TensorSpec::new("b", DataType::Int64, vec![-1]) },
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
    fn shared_dimensions_must_agree() {
        let mut s = sig();
        s.inputs[1].dim_names = vec![Some("N".into())];
        // 'a' has the unnamed leading dim (N = 4); 'b' names its dim N too (3).
        let err = message(s.arrange_inputs(vec![a(vec![4, 2]), b()]));
        assert!(err.contains("inputs 'a' and 'b' must agree on dimension 'N' (4 vs 3)"), "{err}");
        assert!(s.arrange_inputs(vec![a(vec![3, 2]), b()]).is_ok());
        // Different names are independent.
        assert!(sig().arrange_inputs(vec![a(vec![4, 2]), b()]).is_ok());
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
