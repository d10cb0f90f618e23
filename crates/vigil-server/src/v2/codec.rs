//! V2 request decoding and response encoding: JSON tensors and Triton's binary
//! tensor data extension (a JSON header of `Inference-Header-Content-Length`
//! bytes, then the raw tensors in input order).

use crate::{ApiError, Limits, protocol};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
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
    #[serde(default, deserialize_with = "null_as_empty")]
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
    #[serde(default, deserialize_with = "null_as_empty")]
    parameters: Map<String, Value>,
    #[serde(borrow, default)]
    data: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct OutputJson {
    name: String,
    #[serde(default, deserialize_with = "null_as_empty")]
    parameters: Map<String, Value>,
}

/// Some V2 clients send `"parameters": null`; it means none.
fn null_as_empty<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Map<String, Value>, D::Error> {
    Ok(Option::<Map<String, Value>>::deserialize(d)?.unwrap_or_default())
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
    /// From the `timeout` parameter (microseconds, as Triton): past it, the model is not run.
    pub deadline: Option<std::time::Instant>,
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
    let deadline = match request.parameters.get("timeout") {
        None => None,
        Some(v) => protocol::deadline(v.as_u64().ok_or_else(|| {
            ApiError::bad_request("request: parameter 'timeout' must be a whole number of microseconds")
        })?),
    };
    let mut by_name = Vec::new();
    // No `outputs`, or an empty list, means every output (as Triton does).
    let output_names = match request.outputs.filter(|o| !o.is_empty()) {
        None => None,
        Some(outputs) => {
            let mut names = Vec::with_capacity(outputs.len());
            for o in outputs {
                let owner = format!("output {}", quoted(&o.name));
                if let Some(p) = protocol::UNSUPPORTED_OUTPUT_PARAMETERS.iter().find(|p| o.parameters.contains_key(**p))
                {
                    return Err(ApiError::bad_request(format!("{owner}: parameter '{p}' is not supported")));
                }
                if let Some(b) = bool_param(&o.parameters, "binary_data", &owner)? {
                    by_name.push((o.name.clone(), b));
                }
                names.push(o.name);
            }
            Some(names)
        }
    };
    Ok(DecodedRequest {
        id: request.id,
        inputs,
        output_names,
        binary_outputs: BinaryOutputs { default, by_name },
        deadline,
    })
}

fn decode_input(input: InputJson<'_>, binary: &mut &[u8], limits: &Limits) -> Result<Tensor, ApiError> {
    let name = quoted(&input.name);
    let bad = |msg: String| ApiError::bad_request(format!("input {name}: {msg}"));
    let (datatype, shape, count) = protocol::tensor_header(&input.datatype, &input.shape, limits).map_err(bad)?;
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
            protocol::decode_raw(datatype, count, bytes).map_err(bad)?
        }
        (None, Some(raw)) => {
            let mut de = serde_json::Deserializer::from_str(raw.get());
            ElementsSeed { datatype, max_len: count }.deserialize(&mut de).map_err(|e| bad(format!("data: {e}")))?
        }
    };
    protocol::tensor(input.name, shape, count, data).map_err(bad)
}

/// JSON elements of a tensor: FP16 as numbers, BYTES as (lossy UTF-8) strings.
/// Non-finite floats become `null`, as JSON has no NaN; ask for binary output
/// to get them (and non-UTF-8 bytes) exactly.
pub(crate) struct JsonElements<'a>(pub &'a TensorData);

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

pub fn encode_response(outcome: &InferenceOutcome, id: Option<String>, binary: &BinaryOutputs) -> Response {
    let mut blobs = Vec::new();
    let mut any_binary = false;
    let mut outputs = Vec::with_capacity(outcome.outputs.len());
    for t in &outcome.outputs {
        let (parameters, data) = if binary.is_binary(&t.name) {
            any_binary = true;
            let start = blobs.len();
            protocol::encode_raw(&t.data, &mut blobs);
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
    if !any_binary {
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
        decode_request(&map, body, &Limits { max_body_bytes: 1 << 20, max_tensor_elements: 1000, ..Limits::default() })
            .map_err(|e| e.message)
    }

    fn with_binary(json: &str, binary: &[u8]) -> Result<DecodedRequest, String> {
        let mut body = json.as_bytes().to_vec();
        body.extend_from_slice(binary);
        decode(&[(HEADER_LENGTH, json.len().to_string())], &body)
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

    mod hostile {
        //! Whatever arrives, decoding answers Ok or a 4xx error, and never panics;
        //! what it accepts is consistent with its shape.
        use super::*;
        use proptest::prelude::*;

        fn limits() -> Limits {
            Limits { max_body_bytes: 1 << 20, max_tensor_elements: 4096, ..Limits::default() }
        }

        fn check(headers: &HeaderMap, body: &[u8]) {
            match decode_request(headers, body, &limits()) {
                Ok(r) => {
                    for t in &r.inputs {
                        assert_eq!(t.data.len(), t.shape.iter().product::<usize>());
                    }
                }
                Err(e) => assert!(e.status.is_client_error(), "{}: {}", e.status, e.message),
            }
        }

        fn datatype() -> impl Strategy<Value = &'static str> {
            prop::sample::select(vec![
                "BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64", "FP16", "FP32",
                "FP64", "BYTES", "BF16", "", "fp32",
            ])
        }

        fn element() -> impl Strategy<Value = Value> {
            prop_oneof![
                any::<bool>().prop_map(Value::from),
                any::<i64>().prop_map(Value::from),
                any::<u64>().prop_map(Value::from),
                any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Value::from),
                ".{0,8}".prop_map(Value::from),
                Just(Value::Null),
            ]
        }

        fn input() -> impl Strategy<Value = Value> {
            let data = prop::collection::vec(element(), 0..12).prop_map(Value::from);
            let nested = prop::collection::vec(prop::collection::vec(element(), 0..4).prop_map(Value::from), 0..4)
                .prop_map(Value::from);
            (
                ".{0,6}",
                datatype(),
                prop::collection::vec(-2i64..6, 0..4),
                prop_oneof![data, nested, Just(Value::Null)],
                prop::option::of(0u64..64),
            )
                .prop_map(|(name, datatype, shape, data, binary)| {
                    let mut v = serde_json::json!({"name": name, "datatype": datatype, "shape": shape});
                    match binary {
                        Some(size) => v["parameters"] = serde_json::json!({"binary_data_size": size}),
                        None if !data.is_null() => v["data"] = data,
                        None => {}
                    }
                    v
                })
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]

            #[test]
            fn arbitrary_bytes(body in prop::collection::vec(any::<u8>(), 0..256), header in prop::option::of(0usize..300)) {
                let mut headers = HeaderMap::new();
                if let Some(n) = header {
                    headers.insert(HEADER_LENGTH, HeaderValue::from(n));
                }
                check(&headers, &body);
            }

            #[test]
            fn arbitrary_requests(inputs in prop::collection::vec(input(), 0..4), tail in prop::collection::vec(any::<u8>(), 0..128)) {
                let json = serde_json::to_vec(&serde_json::json!({"inputs": inputs})).unwrap();
                let mut headers = HeaderMap::new();
                headers.insert(HEADER_LENGTH, HeaderValue::from(json.len()));
                let mut body = json.clone();
                body.extend_from_slice(&tail);
                check(&headers, &body);
                check(&HeaderMap::new(), &json);
            }

            #[test]
            fn arbitrary_raw_tensors(
                seed in prop::collection::vec(any::<u8>(), 0..96),
                count in 0usize..24,
                exact in any::<bool>(),
                dt in datatype(),
            ) {
                let Ok(datatype) = dt.parse::<DataType>() else { return Ok(()) };
                // Half the time exactly as many bytes as `count` elements need.
                let bytes: Vec<u8> = match (exact, datatype.element_size()) {
                    (true, Some(size)) => seed.iter().copied().cycle().take(count * size).collect(),
                    _ => seed,
                };
                if let Ok(data) = protocol::decode_raw(datatype, count, &bytes) {
                    // Fixed-size types fill the bytes exactly; BYTES may hold fewer elements.
                    if datatype != DataType::Bytes {
                        prop_assert_eq!(data.len(), count);
                    }
                    let mut back = Vec::new();
                    protocol::encode_raw(&data, &mut back);
                    if datatype == DataType::Bool {
                        // Any non-zero byte is true, and comes back as 1.
                        prop_assert_eq!(back, bytes.iter().map(|&b| u8::from(b != 0)).collect::<Vec<_>>());
                    } else {
                        prop_assert_eq!(back, bytes);
                    }
                }
            }
        }
    }
}
