//! Tensors as they travel between the protocol adapters and the backends.

use crate::datatype::DataType;
use half::f16;

/// Row-major tensor elements, one variant per V2 datatype.
#[derive(Debug, Clone, PartialEq)]
pub enum TensorData {
    Bool(Vec<bool>),
    Uint8(Vec<u8>),
    Uint16(Vec<u16>),
    Uint32(Vec<u32>),
    Uint64(Vec<u64>),
    Int8(Vec<i8>),
    Int16(Vec<i16>),
    Int32(Vec<i32>),
    Int64(Vec<i64>),
    Fp16(Vec<f16>),
    Fp32(Vec<f32>),
    Fp64(Vec<f64>),
    Bytes(Vec<Vec<u8>>),
}

/// Applies `$body` to the vector inside any variant of [`TensorData`].
#[macro_export]
macro_rules! with_tensor_data {
    ($data:expr, $v:ident => $body:expr) => {
        match $data {
            $crate::TensorData::Bool($v) => $body,
            $crate::TensorData::Uint8($v) => $body,
            $crate::TensorData::Uint16($v) => $body,
            $crate::TensorData::Uint32($v) => $body,
            $crate::TensorData::Uint64($v) => $body,
            $crate::TensorData::Int8($v) => $body,
            $crate::TensorData::Int16($v) => $body,
            $crate::TensorData::Int32($v) => $body,
            $crate::TensorData::Int64($v) => $body,
            $crate::TensorData::Fp16($v) => $body,
            $crate::TensorData::Fp32($v) => $body,
            $crate::TensorData::Fp64($v) => $body,
            $crate::TensorData::Bytes($v) => $body,
        }
    };
}

impl TensorData {
    pub fn datatype(&self) -> DataType {
        match self {
            TensorData::Bool(_) => DataType::Bool,
            TensorData::Uint8(_) => DataType::Uint8,
            TensorData::Uint16(_) => DataType::Uint16,
            TensorData::Uint32(_) => DataType::Uint32,
            TensorData::Uint64(_) => DataType::Uint64,
            TensorData::Int8(_) => DataType::Int8,
            TensorData::Int16(_) => DataType::Int16,
            TensorData::Int32(_) => DataType::Int32,
            TensorData::Int64(_) => DataType::Int64,
            TensorData::Fp16(_) => DataType::Fp16,
            TensorData::Fp32(_) => DataType::Fp32,
            TensorData::Fp64(_) => DataType::Fp64,
            TensorData::Bytes(_) => DataType::Bytes,
        }
    }

    pub fn len(&self) -> usize {
        with_tensor_data!(self, v => v.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `len` zero-valued elements (false, 0, 0.0, empty bytes).
    pub fn zeros(datatype: DataType, len: usize) -> TensorData {
        match datatype {
            DataType::Bool => TensorData::Bool(vec![false; len]),
            DataType::Uint8 => TensorData::Uint8(vec![0; len]),
            DataType::Uint16 => TensorData::Uint16(vec![0; len]),
            DataType::Uint32 => TensorData::Uint32(vec![0; len]),
            DataType::Uint64 => TensorData::Uint64(vec![0; len]),
            DataType::Int8 => TensorData::Int8(vec![0; len]),
            DataType::Int16 => TensorData::Int16(vec![0; len]),
            DataType::Int32 => TensorData::Int32(vec![0; len]),
            DataType::Int64 => TensorData::Int64(vec![0; len]),
            DataType::Fp16 => TensorData::Fp16(vec![f16::ZERO; len]),
            DataType::Fp32 => TensorData::Fp32(vec![0.0; len]),
            DataType::Fp64 => TensorData::Fp64(vec![0.0; len]),
            DataType::Bytes => TensorData::Bytes(vec![Vec::new(); len]),
        }
    }
}

impl TensorData {
    /// Joins tensors of one datatype end to end (row-major: along the first axis).
    /// `None` if the parts do not all have this datatype.
    pub fn concat(parts: Vec<TensorData>) -> Option<TensorData> {
        let mut parts = parts.into_iter();
        let mut first = parts.next()?;
        for part in parts {
            match (&mut first, part) {
                (TensorData::Bool(a), TensorData::Bool(b)) => a.extend(b),
                (TensorData::Uint8(a), TensorData::Uint8(b)) => a.extend(b),
                (TensorData::Uint16(a), TensorData::Uint16(b)) => a.extend(b),
                (TensorData::Uint32(a), TensorData::Uint32(b)) => a.extend(b),
                (TensorData::Uint64(a), TensorData::Uint64(b)) => a.extend(b),
                (TensorData::Int8(a), TensorData::Int8(b)) => a.extend(b),
                (TensorData::Int16(a), TensorData::Int16(b)) => a.extend(b),
                (TensorData::Int32(a), TensorData::Int32(b)) => a.extend(b),
                (TensorData::Int64(a), TensorData::Int64(b)) => a.extend(b),
                (TensorData::Fp16(a), TensorData::Fp16(b)) => a.extend(b),
                (TensorData::Fp32(a), TensorData::Fp32(b)) => a.extend(b),
                (TensorData::Fp64(a), TensorData::Fp64(b)) => a.extend(b),
                (TensorData::Bytes(a), TensorData::Bytes(b)) => a.extend(b),
                _ => return None,
            }
        }
        Some(first)
    }

    /// Cuts into consecutive parts of the given element counts (the inverse of
    /// [`TensorData::concat`]); `None` if the counts do not add up to the length.
    pub fn split(self, counts: &[usize]) -> Option<Vec<TensorData>> {
        if counts.iter().sum::<usize>() != self.len() {
            return None;
        }
        fn cut<T>(mut v: Vec<T>, counts: &[usize], wrap: fn(Vec<T>) -> TensorData) -> Vec<TensorData> {
            let mut out = Vec::with_capacity(counts.len());
            for &n in counts.iter().rev() {
                out.push(wrap(v.split_off(v.len() - n)));
            }
            out.reverse();
            out
        }
        Some(match self {
            TensorData::Bool(v) => cut(v, counts, TensorData::Bool),
            TensorData::Uint8(v) => cut(v, counts, TensorData::Uint8),
            TensorData::Uint16(v) => cut(v, counts, TensorData::Uint16),
            TensorData::Uint32(v) => cut(v, counts, TensorData::Uint32),
            TensorData::Uint64(v) => cut(v, counts, TensorData::Uint64),
            TensorData::Int8(v) => cut(v, counts, TensorData::Int8),
            TensorData::Int16(v) => cut(v, counts, TensorData::Int16),
            TensorData::Int32(v) => cut(v, counts, TensorData::Int32),
            TensorData::Int64(v) => cut(v, counts, TensorData::Int64),
            TensorData::Fp16(v) => cut(v, counts, TensorData::Fp16),
            TensorData::Fp32(v) => cut(v, counts, TensorData::Fp32),
            TensorData::Fp64(v) => cut(v, counts, TensorData::Fp64),
            TensorData::Bytes(v) => cut(v, counts, TensorData::Bytes),
        })
    }
}

/// A named tensor with a concrete shape.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    pub name: String,
    pub shape: Vec<usize>,
    pub data: TensorData,
}

impl Tensor {
    /// Builds a tensor, checking that the element count matches the shape.
    pub fn new(name: impl Into<String>, shape: Vec<usize>, data: TensorData) -> Result<Self, String> {
        let name = name.into();
        let expected = element_count(&shape).ok_or_else(|| format!("shape {shape:?} of '{name}' overflows"))?;
        if expected != data.len() {
            return Err(format!("'{name}' has {} elements but shape {shape:?} needs {expected}", data.len()));
        }
        Ok(Tensor { name, shape, data })
    }

    pub fn datatype(&self) -> DataType {
        self.data.datatype()
    }
}

/// The number of elements of `shape`, or `None` on overflow.
pub fn element_count(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_checks_element_count() {
        assert!(Tensor::new("x", vec![2, 3], TensorData::Fp32(vec![0.0; 6])).is_ok());
        let err = Tensor::new("x", vec![2, 3], TensorData::Fp32(vec![0.0; 5])).unwrap_err();
        assert!(err.contains("'x' has 5 elements"), "{err}");
        assert!(Tensor::new("x", vec![usize::MAX, 2], TensorData::Fp32(vec![])).is_err());
    }

    #[test]
    fn concat_and_split_are_inverse() {
        let parts = vec![TensorData::Int32(vec![1, 2]), TensorData::Int32(vec![]), TensorData::Int32(vec![3, 4, 5])];
        let joined = TensorData::concat(parts.clone()).unwrap();
        assert_eq!(joined, TensorData::Int32(vec![1, 2, 3, 4, 5]));
        assert_eq!(joined.split(&[2, 0, 3]).unwrap(), parts);
        assert!(TensorData::Int32(vec![1]).split(&[2]).is_none());
        assert!(TensorData::concat(vec![TensorData::Int32(vec![1]), TensorData::Fp32(vec![1.0])]).is_none());
    }

    #[test]
    fn zeros_have_the_datatype() {
        for d in DataType::ALL {
            let z = TensorData::zeros(d, 3);
            assert_eq!(z.datatype(), d);
            assert_eq!(z.len(), 3);
        }
    }
}
