//! Tensor encodings and checks shared by the V2 protocols: the raw layout
//! used by Triton's binary extension over HTTP and by `raw_*_contents` over gRPC,
//! and the checks of a tensor header (datatype, shape, size limit).

use crate::Limits;
use half::f16;
use vigil_core::{DataType, TensorData};

/// The deadline for a request-level `timeout` parameter in microseconds
/// (Triton's unit); 0 means none, as in Triton.
pub fn deadline(timeout_us: u64) -> Option<std::time::Instant> {
    if timeout_us == 0 {
        return None;
    }
    std::time::Instant::now().checked_add(std::time::Duration::from_micros(timeout_us))
}

/// Output parameters of Triton's that Vigil does not implement: refused rather
/// than silently ignored, so that a client never mistakes raw outputs for them.
pub const UNSUPPORTED_OUTPUT_PARAMETERS: [&str; 3] =
    ["classification", "shared_memory_region", "shared_memory_byte_size"];

/// Most dimensions a tensor may have (ONNX models stay far below).
pub const MAX_RANK: usize = 32;

/// Parses a datatype and shape and checks the element count against the limit,
/// before anything the size of the tensor is allocated.
pub fn tensor_header(datatype: &str, shape: &[i64], limits: &Limits) -> Result<(DataType, Vec<usize>, usize), String> {
    let datatype: DataType = datatype.parse().map_err(|e| format!("{e}"))?;
    if shape.len() > MAX_RANK {
        return Err(format!("shape has {} dimensions; at most {MAX_RANK} are accepted", shape.len()));
    }
    let dims = shape
        .iter()
        .map(|&d| usize::try_from(d).map_err(|_| format!("shape {shape:?} has a negative dimension")))
        .collect::<Result<Vec<usize>, _>>()?;
    let count =
        vigil_core::tensor::element_count(&dims).filter(|&n| n <= limits.max_tensor_elements).ok_or_else(|| {
            format!("shape {dims:?} has more elements than limits.max_tensor_elements ({})", limits.max_tensor_elements)
        })?;
    Ok((datatype, dims, count))
}

/// The decoded tensor, once its element count is checked against the shape
/// [`tensor_header`] read.
pub fn tensor(name: String, shape: Vec<usize>, count: usize, data: TensorData) -> Result<vigil_core::Tensor, String> {
    if data.len() != count {
        return Err(format!("has {} values but shape {shape:?} needs {count}", data.len()));
    }
    vigil_core::Tensor::new(name, shape, data)
}

/// Little-endian elements, or for BYTES each element as a 4-byte length then bytes.
pub fn decode_raw(datatype: DataType, count: usize, bytes: &[u8]) -> Result<TensorData, String> {
    if let Some(size) = datatype.element_size()
        && Some(bytes.len()) != count.checked_mul(size)
    {
        return Err(format!(
            "binary_data_size is {} bytes but {count} {datatype} elements need {}",
            bytes.len(),
            count.saturating_mul(size)
        ));
    }
    macro_rules! le {
        ($t:ty, $n:literal) => {
            bytes.chunks_exact($n).map(|c| <$t>::from_le_bytes(c.try_into().unwrap_or([0; $n]))).collect()
        };
    }
    Ok(match datatype {
        DataType::Bool => TensorData::Bool(bytes.iter().map(|&b| b != 0).collect()),
        DataType::Uint8 => TensorData::Uint8(bytes.to_vec()),
        DataType::Int8 => TensorData::Int8(bytes.iter().map(|&b| b as i8).collect()),
        DataType::Uint16 => TensorData::Uint16(le!(u16, 2)),
        DataType::Uint32 => TensorData::Uint32(le!(u32, 4)),
        DataType::Uint64 => TensorData::Uint64(le!(u64, 8)),
        DataType::Int16 => TensorData::Int16(le!(i16, 2)),
        DataType::Int32 => TensorData::Int32(le!(i32, 4)),
        DataType::Int64 => TensorData::Int64(le!(i64, 8)),
        DataType::Fp16 => TensorData::Fp16(bytes.chunks_exact(2).map(|c| f16::from_le_bytes([c[0], c[1]])).collect()),
        DataType::Fp32 => TensorData::Fp32(le!(f32, 4)),
        DataType::Fp64 => TensorData::Fp64(le!(f64, 8)),
        DataType::Bytes => {
            let mut rest = bytes;
            let mut out = Vec::with_capacity(count.min(bytes.len() / 4));
            while !rest.is_empty() {
                if out.len() == count {
                    return Err(format!("the binary data holds more than {count} BYTES elements"));
                }
                let (len, tail) = rest
                    .split_first_chunk::<4>()
                    .ok_or_else(|| format!("BYTES element {} has a truncated 4-byte length", out.len()))?;
                let len = u32::from_le_bytes(*len) as usize;
                if len > tail.len() {
                    return Err(format!(
                        "BYTES element {} declares {len} bytes but only {} remain",
                        out.len(),
                        tail.len()
                    ));
                }
                let (element, tail) = tail.split_at(len);
                out.push(element.to_vec());
                rest = tail;
            }
            TensorData::Bytes(out)
        }
    })
}

/// Appends each element's `N` little-endian bytes. Sized once, then filled
/// in place: a loop of `extend_from_slice` checks the capacity for every
/// element (this runs for every gRPC answer and every prediction log record).
fn put_le<const N: usize, T: Copy>(out: &mut Vec<u8>, v: &[T], bytes: impl Fn(T) -> [u8; N]) {
    let start = out.len();
    out.resize(start + N * v.len(), 0);
    for (to, &x) in out[start..].chunks_exact_mut(N).zip(v) {
        to.copy_from_slice(&bytes(x));
    }
}

pub fn encode_raw(data: &TensorData, out: &mut Vec<u8>) {
    match data {
        TensorData::Bool(v) => out.extend(v.iter().map(|&b| u8::from(b))),
        TensorData::Uint8(v) => out.extend_from_slice(v),
        TensorData::Uint16(v) => put_le(out, v, u16::to_le_bytes),
        TensorData::Uint32(v) => put_le(out, v, u32::to_le_bytes),
        TensorData::Uint64(v) => put_le(out, v, u64::to_le_bytes),
        TensorData::Int8(v) => put_le(out, v, i8::to_le_bytes),
        TensorData::Int16(v) => put_le(out, v, i16::to_le_bytes),
        TensorData::Int32(v) => put_le(out, v, i32::to_le_bytes),
        TensorData::Int64(v) => put_le(out, v, i64::to_le_bytes),
        TensorData::Fp16(v) => put_le(out, v, f16::to_le_bytes),
        TensorData::Fp32(v) => put_le(out, v, f32::to_le_bytes),
        TensorData::Fp64(v) => put_le(out, v, f64::to_le_bytes),
        TensorData::Bytes(v) => {
            for b in v {
                // Elements over 4 GiB cannot be framed; the body limit keeps them far away.
                out.extend_from_slice(&u32::try_from(b.len()).unwrap_or(u32::MAX).to_le_bytes());
                out.extend_from_slice(b);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_round_trips_every_datatype() {
        let cases = [
            TensorData::Bool(vec![true, false]),
            TensorData::Uint8(vec![0, 255]),
            TensorData::Uint16(vec![0, 65535]),
            TensorData::Uint32(vec![0, u32::MAX]),
            TensorData::Uint64(vec![0, u64::MAX]),
            TensorData::Int8(vec![-128, 127]),
            TensorData::Int16(vec![i16::MIN, 1]),
            TensorData::Int32(vec![i32::MIN, 1]),
            TensorData::Int64(vec![i64::MIN, 1]),
            TensorData::Fp16(vec![f16::from_f32(-1.5), f16::NAN]),
            TensorData::Fp32(vec![f32::INFINITY, 0.1]),
            TensorData::Fp64(vec![f64::NEG_INFINITY, 0.1]),
            TensorData::Bytes(vec![b"".to_vec(), vec![0xff, 0x00, 0x41]]),
        ];
        for data in cases {
            let mut bytes = Vec::new();
            encode_raw(&data, &mut bytes);
            let back = decode_raw(data.datatype(), 2, &bytes).unwrap();
            // Compare bit patterns so that NaN equals itself.
            let (mut a, mut b) = (Vec::new(), Vec::new());
            encode_raw(&back, &mut a);
            encode_raw(&data, &mut b);
            assert_eq!(a, b, "{:?}", data.datatype());
        }
    }
}
