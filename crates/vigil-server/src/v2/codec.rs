//! V2 request decoding and response encoding: JSON tensors and Triton's binary
//! tensor data extension (a JSON header of `Inference-Header-Content-Length`
//! bytes, then the raw tensors in input order).

use crate::{ApiError, Limits};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use half::f16;
use serde::de::DeserializeSeed;
use serde::ser::{SerializeSeq, Serializer};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use vigil_core::elements::ElementsSeed;
use vigil_core::names::quoted;
use vigil_core::{DataType, Tensor, TensorData, with_tensor_data};
use vigil_runtime::InferenceOutcome;

pub const HEADER_LENGTH: &str = "inference-header-content-length";

#[derive(Deserialize)]
struct RequestJson<'a> {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    parameters: Map<String, Value>,
    #[serde(borrow)]
    inputs: Vec<InputJson<'a>>,
    #[serde(default)]
    outputs: Option<Vec<OutputJson>>,
}

#[derive(Deserialize)]
struct InputJson<'a> {
    name: String,
    shape: Vec<i64>,
    datatype: String,
    #[serde(default)]
    parameters: Map<String, Value>,
    #[serde(borrow, default)]
    data: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct OutputJson {
    name: String,
    #[serde(default)]
    parameters: Map<String, Value>,
}

/// A decoded request, ready for the inference service.
#[derive(Debug)]
pub struct DecodedRequest {
    pub id: Option<String>,
    pub inputs: Vec<Tensor>,
    /// Outputs asked for, in order; `None` means all.
    pub output_names: Option<Vec<String>>,
    /// Which outputs go back as binary: by name, or all when `binary_data_output`.
    pub binary_outputs: BinaryOutputs,
}

#[derive(Debug)]
pub struct BinaryOutputs {
    default: bool,
    by_name: Vec<(String, bool)>,
}

impl BinaryOutputs {
    fn is_binary(&self, name: &str) -> bool {
        self.by_name.iter().find(|(n, _)| n == name).map_or(self.default, |(_, b)| *b)
    }
}

fn bool_param(params: &Map<String, Value>, key: &str, owner: &str) -> Result<Option<bool>, ApiError> {
    match params.get(key) {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(ApiError::bad_request(format!("{owner}: parameter '{key}' must be true or false"))),
    }
}

pub fn decode_request(headers: &HeaderMap, body: &[u8], limits: &Limits) -> Result<DecodedRequest, ApiError> {
    let header_len = match headers.get(HEADER_LENGTH) {
        None => body.len(),
        Some(v) => {
            let n: usize = v
                .to_str()
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .ok_or_else(|| ApiError::bad_request("Inference-Header-Content-Length is not a number"))?;
            if n > body.len() {
                return Err(ApiError::bad_request(format!(
                    "Inference-Header-Content-Length ({n}) is larger than the body ({} bytes)",
                    body.len()
                )));
            }
            n
        }
    };
    let (json, mut binary) = body.split_at(header_len);
    let request: RequestJson<'_> =
        serde_json::from_slice(json).map_err(|e| ApiError::bad_request(format!("malformed JSON: {e}")))?;
    let mut inputs = Vec::with_capacity(request.inputs.len());
    for input in request.inputs {
        inputs.push(decode_input(input, &mut binary, limits)?);
    }
    if !binary.is_empty() {
        return Err(ApiError::bad_request(format!(
            "the binary section is {} bytes longer than the inputs' binary_data_size declare",
            binary.len()
        )));
    }
    let default = bool_param(&request.parameters, "binary_data_output", "request")?.unwrap_or(false);
    let mut by_name = Vec::new();
    let output_names = match request.outputs {
        None => None,
        Some(outputs) => {
            let mut names = Vec::with_capacity(outputs.len());
            for o in outputs {
                if let Some(b) = bool_param(&o.parameters, "binary_data", &format!("output {}", quoted(&o.name)))? {
                    by_name.push((o.name.clone(), b));
                }
                names.push(o.name);
            }
            Some(names)
        }
    };
    Ok(DecodedRequest { id: request.id, inputs, output_names, binary_outputs: BinaryOutputs { default, by_name } })
}

fn decode_input(input: InputJson<'_>, binary: &mut &[u8], limits: &Limits) -> Result<Tensor, ApiError> {
    let name = quoted(&input.name);
    let bad = |msg: String| ApiError::bad_request(format!("input {name}: {msg}"));
    let datatype: DataType = input.datatype.parse().map_err(|e| bad(format!("{e}")))?;
    let shape = input
        .shape
        .iter()
        .map(|&d| usize::try_from(d).map_err(|_| bad(format!("shape {:?} has a negative dimension", input.shape))))
        .collect::<Result<Vec<usize>, _>>()?;
    let count =
        vigil_core::tensor::element_count(&shape).filter(|&n| n <= limits.max_tensor_elements).ok_or_else(|| {
            bad(format!(
                "shape {shape:?} has more elements than limits.max_tensor_elements ({})",
                limits.max_tensor_elements
            ))
        })?;
    let binary_size = match input.parameters.get("binary_data_size") {
        None => None,
        Some(v) => Some(
            v.as_u64()
                .and_then(|n| usize::try_from(n).ok())
                .ok_or_else(|| bad("binary_data_size must be a non-negative integer".into()))?,
        ),
    };
    let data = match (binary_size, input.data) {
        (Some(_), Some(_)) => return Err(bad("has both data and binary_data_size".into())),
        (None, None) => {
            return Err(bad("has no data (give data, or binary_data_size with the binary extension)".into()));
        }
        (Some(size), None) => {
            if size > binary.len() {
                return Err(bad(format!(
                    "binary_data_size is {size} bytes but only {} remain in the binary section (shorter than declared)",
                    binary.len()
                )));
            }
            let (bytes, rest) = binary.split_at(size);
            *binary = rest;
            decode_binary(datatype, count, bytes).map_err(bad)?
        }
        (None, Some(raw)) => {
            let mut de = serde_json::Deserializer::from_str(raw.get());
            ElementsSeed { datatype, max_len: count }.deserialize(&mut de).map_err(|e| bad(format!("data: {e}")))?
        }
    };
    if data.len() != count {
        return Err(bad(format!("has {} values but shape {shape:?} needs {count}", data.len())));
    }
    Tensor::new(input.name, shape, data).map_err(bad)
}

/// Little-endian elements, or for BYTES each element as a 4-byte length then bytes.
fn decode_binary(datatype: DataType, count: usize, bytes: &[u8]) -> Result<TensorData, String> {
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

fn encode_binary(data: &TensorData, out: &mut Vec<u8>) {
    macro_rules! le {
        ($v:expr) => {
            for x in $v {
                out.extend_from_slice(&x.to_le_bytes());
            }
        };
    }
    match data {
        TensorData::Bool(v) => out.extend(v.iter().map(|&b| u8::from(b))),
        TensorData::Uint8(v) => out.extend_from_slice(v),
        TensorData::Uint16(v) => le!(v),
        TensorData::Uint32(v) => le!(v),
        TensorData::Uint64(v) => le!(v),
        TensorData::Int8(v) => le!(v),
        TensorData::Int16(v) => le!(v),
        TensorData::Int32(v) => le!(v),
        TensorData::Int64(v) => le!(v),
        TensorData::Fp16(v) => le!(v),
        TensorData::Fp32(v) => le!(v),
        TensorData::Fp64(v) => le!(v),
        TensorData::Bytes(v) => {
            for b in v {
                // Elements over 4 GiB cannot be framed; the body limit keeps them far away.
                out.extend_from_slice(&u32::try_from(b.len()).unwrap_or(u32::MAX).to_le_bytes());
                out.extend_from_slice(b);
            }
        }
    }
}

/// JSON elements of a tensor: FP16 as numbers, BYTES as (lossy UTF-8) strings.
/// Non-finite floats become `null`, as JSON has no NaN; ask for binary output
/// to get them (and non-UTF-8 bytes) exactly.
struct JsonElements<'a>(&'a TensorData);

impl Serialize for JsonElements<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        match self.0 {
            TensorData::Fp16(v) => {
                for x in v {
                    seq.serialize_element(&x.to_f32())?;
                }
            }
            TensorData::Bytes(v) => {
                for x in v {
                    seq.serialize_element(&String::from_utf8_lossy(x))?;
                }
            }
            other => with_tensor_data!(other, v => for x in v { seq.serialize_element(x)?; }),
        }
        seq.end()
    }
}

#[derive(Serialize)]
struct ResponseJson<'a> {
    model_name: &'a str,
    model_version: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<String>,
    outputs: Vec<OutputTensorJson<'a>>,
}

#[derive(Serialize)]
struct OutputTensorJson<'a> {
    name: &'a str,
    datatype: DataType,
    shape: &'a [usize],
    #[serde(skip_serializing_if = "Option::is_none")]
    parameters: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<JsonElements<'a>>,
}

pub fn encode_response(outcome: InferenceOutcome, id: Option<String>, binary: &BinaryOutputs) -> Response {
    let mut blobs = Vec::new();
    let mut outputs = Vec::with_capacity(outcome.outputs.len());
    for t in &outcome.outputs {
        let (parameters, data) = if binary.is_binary(&t.name) {
            let start = blobs.len();
            encode_binary(&t.data, &mut blobs);
            (Some(serde_json::json!({ "binary_data_size": blobs.len() - start })), None)
        } else {
            (None, Some(JsonElements(&t.data)))
        };
        outputs.push(OutputTensorJson { name: &t.name, datatype: t.datatype(), shape: &t.shape, parameters, data });
    }
    let response = ResponseJson { model_name: &outcome.model, model_version: &outcome.version, id, outputs };
    let mut body = match serde_json::to_vec(&response) {
        Ok(b) => b,
        Err(e) => {
            return ApiError::from(vigil_core::Error::new(vigil_core::ErrorCode::Internal, e.to_string()))
                .into_response();
        }
    };
    let mut headers = HeaderMap::new();
    if blobs.is_empty() && outcome.outputs.iter().all(|t| !binary.is_binary(&t.name)) {
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    } else {
        headers.insert(HEADER_LENGTH, HeaderValue::from(body.len()));
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
        body.extend_from_slice(&blobs);
    }
    (headers, body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(headers: &[(&'static str, String)], body: &[u8]) -> Result<DecodedRequest, String> {
        let mut map = HeaderMap::new();
        for (k, v) in headers {
            map.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        decode_request(&map, body, &Limits { max_body_bytes: 1 << 20, max_tensor_elements: 1000 })
            .map_err(|e| e.message)
    }

    fn with_binary(json: &str, binary: &[u8]) -> Result<DecodedRequest, String> {
        let mut body = json.as_bytes().to_vec();
        body.extend_from_slice(binary);
        decode(&[(HEADER_LENGTH, json.len().to_string())], &body)
    }

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
            encode_binary(&data, &mut bytes);
            let back = decode_binary(data.datatype(), 2, &bytes).unwrap();
            // Compare bit patterns so that NaN equals itself.
            let (mut a, mut b) = (Vec::new(), Vec::new());
            encode_binary(&back, &mut a);
            encode_binary(&data, &mut b);
            assert_eq!(a, b, "{:?}", data.datatype());
        }
    }

    #[test]
    fn binary_sections_must_match_declarations() {
        let json = r#"{"inputs":[{"name":"x","shape":[2],"datatype":"FP32","parameters":{"binary_data_size":8}}]}"#;
        assert!(with_binary(json, &[0; 8]).is_ok());
        assert!(with_binary(json, &[0; 7]).unwrap_err().contains("shorter than declared"));
        assert!(with_binary(json, &[0; 9]).unwrap_err().contains("1 bytes longer"));
        let json = r#"{"inputs":[{"name":"x","shape":[3],"datatype":"FP32","parameters":{"binary_data_size":8}}]}"#;
        assert!(with_binary(json, &[0; 8]).unwrap_err().contains("3 FP32 elements need 12"));
        let json = r#"{"inputs":[{"name":"x","shape":[1],"datatype":"FP32","parameters":{"binary_data_size":-1}}]}"#;
        assert!(with_binary(json, &[]).unwrap_err().contains("non-negative integer"));
    }

    #[test]
    fn hostile_bytes_elements_are_refused() {
        let json = r#"{"inputs":[{"name":"s","shape":[1],"datatype":"BYTES","parameters":{"binary_data_size":6}}]}"#;
        assert!(with_binary(json, &[2, 0, 0, 0, b'h', b'i']).is_ok());
        assert!(with_binary(json, &[200, 0, 0, 0, b'h', b'i']).unwrap_err().contains("declares 200 bytes"));
        let json = r#"{"inputs":[{"name":"s","shape":[1],"datatype":"BYTES","parameters":{"binary_data_size":3}}]}"#;
        assert!(with_binary(json, &[2, 0, 0]).unwrap_err().contains("truncated"));
        let json = r#"{"inputs":[{"name":"s","shape":[1],"datatype":"BYTES","parameters":{"binary_data_size":8}}]}"#;
        assert!(with_binary(json, &[0; 8]).unwrap_err().contains("more than 1 BYTES"));
        let json = r#"{"inputs":[{"name":"s","shape":[2],"datatype":"BYTES","parameters":{"binary_data_size":4}}]}"#;
        assert!(with_binary(json, &[0; 4]).unwrap_err().contains("has 1 values"));
    }

    #[test]
    fn header_length_is_checked() {
        assert!(decode(&[(HEADER_LENGTH, "999".into())], b"{}").unwrap_err().contains("larger than the body"));
        assert!(decode(&[(HEADER_LENGTH, "x".into())], b"{}").unwrap_err().contains("not a number"));
        assert!(decode(&[(HEADER_LENGTH, "-1".into())], b"{}").unwrap_err().contains("not a number"));
    }

    #[test]
    fn json_inputs_are_checked() {
        let one = |input: &str| decode(&[], format!(r#"{{"inputs":[{input}]}}"#).as_bytes());
        assert!(one(r#"{"name":"x","shape":[2],"datatype":"INT32","data":[1,2]}"#).is_ok());
        assert!(
            one(r#"{"name":"x","shape":[2],"datatype":"INT32","data":[1]}"#)
                .unwrap_err()
                .contains("has 1 values but shape [2] needs 2")
        );
        assert!(
            one(r#"{"name":"x","shape":[2],"datatype":"INT32","data":[1,2,3]}"#)
                .unwrap_err()
                .contains("more elements than the shape allows")
        );
        assert!(one(r#"{"name":"x","shape":[-1],"datatype":"INT32","data":[1]}"#).unwrap_err().contains("negative"));
        assert!(
            one(r#"{"name":"x","shape":[2000],"datatype":"INT32","data":[]}"#)
                .unwrap_err()
                .contains("max_tensor_elements")
        );
        assert!(
            one(r#"{"name":"x","shape":[4294967296,4294967296,4294967296],"datatype":"INT32","data":[]}"#)
                .unwrap_err()
                .contains("max_tensor_elements")
        );
        assert!(
            one(r#"{"name":"x","shape":[1],"datatype":"FP8","data":[1]}"#)
                .unwrap_err()
                .contains("unsupported datatype 'FP8'")
        );
        assert!(one(r#"{"name":"x","shape":[1],"datatype":"FP32"}"#).unwrap_err().contains("has no data"));
        assert!(decode(&[], b"{\"inputs\":[").unwrap_err().contains("malformed JSON"));
        assert!(decode(&[], b"").unwrap_err().contains("malformed JSON"));
        assert!(decode(&[], b"{}").unwrap_err().contains("missing field `inputs`"));
    }

    #[test]
    fn output_preferences() {
        let r = decode(&[], br#"{"inputs":[],"parameters":{"binary_data_output":true},"outputs":[{"name":"a","parameters":{"binary_data":false}},{"name":"b"}]}"#).unwrap();
        assert_eq!(r.output_names, Some(vec!["a".into(), "b".into()]));
        assert!(!r.binary_outputs.is_binary("a"));
        assert!(r.binary_outputs.is_binary("b"));
        assert!(decode(&[], br#"{"inputs":[],"outputs":[{"name":"a","parameters":{"binary_data":"yes"}}]}"#).is_err());
    }
}
