//! Decoding tensor elements from any self-describing serde format (JSON request
//! bodies, TOML warm-up samples): nested or flat arrays, checked per datatype.
//!
//! One streaming pass straight into the typed vector, so a JSON request never
//! builds a tree of values, and a count limit stops runaway input early.

use crate::datatype::DataType;
use crate::tensor::TensorData;
use half::f16;
use serde::de::{self, DeserializeSeed, Deserializer, SeqAccess, Visitor};
use std::fmt;
use std::marker::PhantomData;

/// Decodes the elements of one tensor: `datatype` and at most `max_len` elements.
pub struct ElementsSeed {
    pub datatype: DataType,
    pub max_len: usize,
}

impl<'de> DeserializeSeed<'de> for ElementsSeed {
    type Value = TensorData;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<TensorData, D::Error> {
        let n = self.max_len;
        Ok(match self.datatype {
            DataType::Bool => TensorData::Bool(collect(d, n)?),
            DataType::Uint8 => TensorData::Uint8(collect(d, n)?),
            DataType::Uint16 => TensorData::Uint16(collect(d, n)?),
            DataType::Uint32 => TensorData::Uint32(collect(d, n)?),
            DataType::Uint64 => TensorData::Uint64(collect(d, n)?),
            DataType::Int8 => TensorData::Int8(collect(d, n)?),
            DataType::Int16 => TensorData::Int16(collect(d, n)?),
            DataType::Int32 => TensorData::Int32(collect(d, n)?),
            DataType::Int64 => TensorData::Int64(collect(d, n)?),
            DataType::Fp16 => TensorData::Fp16(collect(d, n)?),
            DataType::Fp32 => TensorData::Fp32(collect(d, n)?),
            DataType::Fp64 => TensorData::Fp64(collect(d, n)?),
            DataType::Bytes => TensorData::Bytes(collect(d, n)?),
        })
    }
}

fn collect<'de, T: Element, D: Deserializer<'de>>(d: D, max_len: usize) -> Result<Vec<T>, D::Error> {
    let mut out = Vec::with_capacity(max_len.min(1 << 16));
    d.deserialize_any(Flatten { out: &mut out, max_len })?;
    Ok(out)
}

/// A scalar type that tensor elements of one datatype convert into.
trait Element: Sized {
    const WHAT: &'static str;
    fn from_bool(_: bool) -> Option<Self> {
        None
    }
    fn from_i64(_: i64) -> Option<Self> {
        None
    }
    fn from_u64(_: u64) -> Option<Self> {
        None
    }
    fn from_f64(_: f64) -> Option<Self> {
        None
    }
    fn from_str(_: &str) -> Option<Self> {
        None
    }
}

impl Element for bool {
    const WHAT: &'static str = "true or false";
    fn from_bool(v: bool) -> Option<Self> {
        Some(v)
    }
}

macro_rules! integer_element {
    ($t:ty, $what:literal) => {
        impl Element for $t {
            const WHAT: &'static str = $what;
            fn from_i64(v: i64) -> Option<Self> {
                <$t>::try_from(v).ok()
            }
            fn from_u64(v: u64) -> Option<Self> {
                <$t>::try_from(v).ok()
            }
        }
    };
}
integer_element!(u8, "an integer in 0..=255");
integer_element!(u16, "an integer in 0..=65535");
integer_element!(u32, "an integer in 0..=4294967295");
integer_element!(u64, "an integer in 0..=18446744073709551615");
integer_element!(i8, "an integer in -128..=127");
integer_element!(i16, "an integer in -32768..=32767");
integer_element!(i32, "an integer in -2147483648..=2147483647");
integer_element!(i64, "an integer in the INT64 range");

// Numbers beyond a float type's range would silently become infinities: refuse them.
macro_rules! float_element {
    ($t:ty, $what:literal, $conv:expr, $max:expr) => {
        impl Element for $t {
            const WHAT: &'static str = $what;
            fn from_i64(v: i64) -> Option<Self> {
                <Self as Element>::from_f64(v as f64)
            }
            fn from_u64(v: u64) -> Option<Self> {
                <Self as Element>::from_f64(v as f64)
            }
            fn from_f64(v: f64) -> Option<Self> {
                (v.is_finite() && v.abs() <= $max).then(|| $conv(v))
            }
        }
    };
}
float_element!(f16, "a number within the FP16 range (|x| <= 65504)", f16::from_f64, 65504.0);
float_element!(f32, "a number within the FP32 range", |v| v as f32, f32::MAX as f64);
float_element!(f64, "a finite number", |v| v, f64::MAX);

impl Element for Vec<u8> {
    const WHAT: &'static str = "a string";
    fn from_str(v: &str) -> Option<Self> {
        Some(v.as_bytes().to_vec())
    }
}

struct Flatten<'a, T> {
    out: &'a mut Vec<T>,
    max_len: usize,
}

impl<T: Element> Flatten<'_, T> {
    fn push<E: de::Error>(self, v: Option<T>, unexpected: de::Unexpected<'_>) -> Result<(), E> {
        if self.out.len() >= self.max_len {
            return Err(E::custom(format_args!("more elements than the shape allows ({})", self.max_len)));
        }
        match v {
            Some(v) => {
                self.out.push(v);
                Ok(())
            }
            None => Err(E::custom(format_args!("element {} is {unexpected}, expected {}", self.out.len(), T::WHAT))),
        }
    }
}

impl<'de, T: Element> Visitor<'de> for Flatten<'_, T> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "an array of {}", T::WHAT)
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<(), E> {
        self.push(T::from_bool(v), de::Unexpected::Bool(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        self.push(T::from_i64(v), de::Unexpected::Signed(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        self.push(T::from_u64(v), de::Unexpected::Unsigned(v))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        self.push(T::from_f64(v), de::Unexpected::Float(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        self.push(T::from_str(v), de::Unexpected::Str(v))
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.push(None, de::Unexpected::Unit)
    }
    fn visit_map<A: de::MapAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        self.push(None, de::Unexpected::Map)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let Flatten { out, max_len } = self;
        while seq.next_element_seed(FlattenSeed::<T> { out: &mut *out, max_len, _t: PhantomData })?.is_some() {}
        Ok(())
    }
}

struct FlattenSeed<'a, T> {
    out: &'a mut Vec<T>,
    max_len: usize,
    _t: PhantomData<T>,
}

impl<'de, T: Element> DeserializeSeed<'de> for FlattenSeed<'_, T> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(Flatten { out: self.out, max_len: self.max_len })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(datatype: DataType, json: &str) -> Result<TensorData, String> {
        let mut de = serde_json::Deserializer::from_str(json);
        ElementsSeed { datatype, max_len: 8 }.deserialize(&mut de).map_err(|e| e.to_string())
    }

    #[test]
    fn flat_and_nested_are_the_same() {
        assert_eq!(decode(DataType::Int32, "[1,2,3,4]"), Ok(TensorData::Int32(vec![1, 2, 3, 4])));
        assert_eq!(decode(DataType::Int32, "[[1,2],[3,4]]"), Ok(TensorData::Int32(vec![1, 2, 3, 4])));
    }

    #[test]
    fn every_datatype_decodes() {
        assert_eq!(decode(DataType::Bool, "[true,false]"), Ok(TensorData::Bool(vec![true, false])));
        assert_eq!(decode(DataType::Uint8, "[0,255]"), Ok(TensorData::Uint8(vec![0, 255])));
        assert_eq!(decode(DataType::Int8, "[-128,127]"), Ok(TensorData::Int8(vec![-128, 127])));
        assert_eq!(decode(DataType::Uint64, "[18446744073709551615]"), Ok(TensorData::Uint64(vec![u64::MAX])));
        assert_eq!(
            decode(DataType::Fp16, "[1.5, 2]"),
            Ok(TensorData::Fp16(vec![f16::from_f32(1.5), f16::from_f32(2.0)]))
        );
        assert_eq!(decode(DataType::Fp32, "[0.5, -1]"), Ok(TensorData::Fp32(vec![0.5, -1.0])));
        assert_eq!(decode(DataType::Fp64, "[1e300]"), Ok(TensorData::Fp64(vec![1e300])));
        assert_eq!(
            decode(DataType::Bytes, r#"["a","héllo"]"#),
            Ok(TensorData::Bytes(vec![b"a".to_vec(), "héllo".as_bytes().to_vec()]))
        );
    }

    #[test]
    fn out_of_range_and_wrong_types_are_named() {
        let e = decode(DataType::Uint8, "[1, 256]").unwrap_err();
        assert!(e.contains("element 1") && e.contains("0..=255"), "{e}");
        assert!(decode(DataType::Int8, "[1.5]").unwrap_err().contains("expected an integer"));
        assert!(decode(DataType::Fp16, "[70000]").unwrap_err().contains("FP16 range"));
        assert!(decode(DataType::Fp32, "[1e39]").unwrap_err().contains("FP32 range"));
        assert!(decode(DataType::Fp32, r#"["1.0"]"#).unwrap_err().contains("string"));
        assert!(decode(DataType::Fp32, "[null]").unwrap_err().contains("expected a number"));
        assert!(decode(DataType::Bool, "[1]").unwrap_err().contains("true or false"));
        assert!(decode(DataType::Bytes, "[1]").unwrap_err().contains("a string"));
        assert!(decode(DataType::Fp32, r#"[{"a":1}]"#).is_err());
        assert!(decode(DataType::Fp32, "[NaN]").is_err());
    }

    #[test]
    fn stops_at_the_limit() {
        let e = decode(DataType::Int32, "[1,2,3,4,5,6,7,8,9]").unwrap_err();
        assert!(e.contains("more elements than the shape allows (8)"), "{e}");
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let deep = format!("{}1{}", "[".repeat(100_000), "]".repeat(100_000));
        assert!(decode(DataType::Int32, &deep).is_err());
    }
}
