//! How recorded requests are kept inside a prediction chunk.
//!
//! Writing runs for every logged request, so it is binary: the tensors' raw
//! bytes and a few length-prefixed strings, with no JSON and no float
//! formatting. Reading (the predictions API, ground-truth joins) is rare, so
//! it pays for the JSON: a version with a feature spec gets its features by
//! name and its predictions from the spec and signature that the chunk keeps
//! once (its *schemas*), compiled again when the chunk is read. A chunk is
//! therefore readable on its own, whatever became of the version since.
//!
//! Payload: [`MAGIC`], the records back to back, the schemas (a count, then
//! each as JSON), and the schemas' offset (8 bytes, little-endian) last: the
//! schemas are known only once every record is in, and putting them after
//! the records spares a copy of the chunk. Counts and lengths are LEB128
//! varints; strings and byte runs are a length and the bytes. A record is: time (zigzag varint,
//! µs), version, request id, principal; its rows (0 for none, else count + 1,
//! then each); its schema (0 for none, else index + 1); its inputs and its
//! outputs (a count, then tensors); and its features (0 when they are read
//! from the inputs with the schema, else rows + 1, then per row a count of
//! `(feature index, value)`), written only when redaction rules touch a
//! feature. A tensor is its name, datatype, shape, then 0 and its raw bytes
//! (the V2 binary layout) or 1 and an HMAC-SHA-256 of its values.
//!
//! Chunks from before this format are JSON lines; [`read`] reads both.

use super::Record;
use crate::protocol::{decode_raw, encode_raw};
use crate::v2::codec::JsonElements;
use hmac::{Hmac, Mac};
use serde_json::{Map, Value, json};
use std::sync::Arc;
use vigil_core::features::{FeaturePipeline, FeatureValue};
use vigil_core::predictions::{PredictionLogging, RedactAction};
use vigil_core::{DataType, Tensor, TensorData};

/// The first bytes of a binary payload (a JSON-lines one starts with `{`).
pub const MAGIC: &[u8; 4] = b"VPL\x02";

/// A chunk's records as they are appended, and the feature pipelines of the
/// versions among them that have a spec.
pub struct ChunkBody {
    records: Vec<u8>,
    schemas: Vec<Arc<FeaturePipeline>>,
}

impl ChunkBody {
    pub fn new() -> ChunkBody {
        // Room for 256 records of about 350 bytes (the demo's are ~260):
        // growing a 64 KiB buffer mid-chunk copied it whole.
        let mut records = Vec::with_capacity(96 * 1024);
        records.extend_from_slice(MAGIC);
        ChunkBody { records, schemas: Vec::new() }
    }

    /// Bytes so far.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Appends `r`, redacted as its endpoint's rules say.
    pub fn push(&mut self, r: &Record<'_>, time_us: i64, key: &[u8; 32]) {
        let out = &mut self.records;
        put_varint(out, zigzag(time_us));
        put_bytes(out, r.version.as_bytes());
        put_bytes(out, r.request_id.as_bytes());
        put_bytes(out, r.principal.as_bytes());
        match &r.logged.rows {
            Some(rows) => {
                put_varint(out, rows.len() as u64 + 1);
                for &row in rows {
                    put_varint(out, row as u64);
                }
            }
            None => put_varint(out, 0),
        }
        let settings = &r.logged.settings;
        match &r.logged.features {
            Some(pipeline) => {
                let schema = match self.schemas.iter().position(|s| Arc::ptr_eq(s, pipeline)) {
                    Some(i) => i,
                    None => {
                        self.schemas.push(Arc::clone(pipeline));
                        self.schemas.len() - 1
                    }
                };
                put_varint(out, schema as u64 + 1);
                let rules = feature_rules(pipeline, settings);
                if rules.is_empty() {
                    put_tensors(out, &r.logged.inputs, |_| None, key);
                    put_tensors(out, &r.logged.outputs, |_| None, key);
                    put_varint(out, 0);
                } else {
                    put_varint(out, 0);
                    put_tensors(out, &r.logged.outputs, |_| None, key);
                    put_features(out, pipeline, &r.logged.inputs, &rules, key);
                }
            }
            None => {
                put_varint(out, 0);
                put_tensors(out, &r.logged.inputs, |name| settings.redaction(name), key);
                put_tensors(out, &r.logged.outputs, |_| None, key);
                put_varint(out, 0);
            }
        }
    }

    /// The payload to seal: the records, then the schemas and their offset.
    pub fn finish(self) -> Vec<u8> {
        let mut out = self.records;
        let offset = out.len() as u64;
        put_varint(&mut out, self.schemas.len() as u64);
        for p in &self.schemas {
            put_bytes(&mut out, p.schema().as_bytes());
        }
        out.extend_from_slice(&offset.to_le_bytes());
        out
    }
}

/// Each feature's redaction (its own name's rule, else its input's), or
/// nothing when no rule touches the version's features: the common case,
/// where the inputs are kept as they are.
fn feature_rules(pipeline: &FeaturePipeline, settings: &PredictionLogging) -> Vec<Option<RedactAction>> {
    if settings.redact.is_empty() {
        return Vec::new();
    }
    let rules: Vec<Option<RedactAction>> = pipeline
        .feature_inputs()
        .map(|(feature, input)| settings.redaction(feature).or_else(|| settings.redaction(input)))
        .collect();
    if rules.iter().all(Option::is_none) { Vec::new() } else { rules }
}

fn put_tensors(
    out: &mut Vec<u8>,
    tensors: &[Tensor],
    redaction: impl Fn(&str) -> Option<RedactAction>,
    key: &[u8; 32],
) {
    let kept: Vec<(&Tensor, Option<RedactAction>)> =
        tensors.iter().map(|t| (t, redaction(&t.name))).filter(|(_, r)| *r != Some(RedactAction::Drop)).collect();
    put_varint(out, kept.len() as u64);
    for (t, rule) in kept {
        put_bytes(out, t.name.as_bytes());
        put_bytes(out, t.datatype().as_str().as_bytes());
        put_varint(out, t.shape.len() as u64);
        for &d in &t.shape {
            put_varint(out, d as u64);
        }
        if rule == Some(RedactAction::Hash) {
            out.push(1);
            let text = serde_json::to_vec(&JsonElements(&t.data)).unwrap_or_default();
            out.extend_from_slice(&hmac(key, &text));
        } else {
            out.push(0);
            // The length goes first: measured, so that the bytes are encoded
            // straight into the chunk.
            put_varint(out, raw_size(&t.data) as u64);
            encode_raw(&t.data, out);
        }
    }
}

/// The bytes `encode_raw` writes for `data`.
fn raw_size(data: &TensorData) -> usize {
    match data {
        TensorData::Bytes(v) => v.iter().map(|b| 4 + b.len()).sum(),
        other => other.len() * other.datatype().element_size().unwrap_or(1),
    }
}

/// The features by name with their redaction applied: for versions whose
/// rules touch a feature (the inputs are then not kept).
fn put_features(
    out: &mut Vec<u8>,
    pipeline: &FeaturePipeline,
    inputs: &[Tensor],
    rules: &[Option<RedactAction>],
    key: &[u8; 32],
) {
    // Rows are framed after the fact: collect (row, index, value) first.
    let mut rows: Vec<Vec<u8>> = Vec::new();
    let mut counts: Vec<u64> = Vec::new();
    let mut last = None::<usize>;
    pipeline.visit(inputs, |i, value| {
        if last.is_none_or(|l| i <= l) {
            rows.push(Vec::new());
            counts.push(0);
        }
        last = Some(i);
        let rule = rules.get(i).copied().flatten();
        let (Some(row), Some(count)) = (rows.last_mut(), counts.last_mut()) else { return };
        if rule == Some(RedactAction::Drop) {
            return;
        }
        *count += 1;
        put_varint(row, i as u64);
        if rule == Some(RedactAction::Hash) {
            row.push(5);
            row.extend_from_slice(&hmac(key, value.to_json().to_string().as_bytes()));
            return;
        }
        match value {
            FeatureValue::Number(x) if x.is_finite() => {
                row.push(1);
                row.extend_from_slice(&x.to_le_bytes());
            }
            FeatureValue::Number(_) | FeatureValue::Unknown => row.push(0),
            FeatureValue::Integer(n) => {
                row.push(2);
                put_varint(row, zigzag(n));
            }
            FeatureValue::Bool(b) => row.extend_from_slice(&[3, u8::from(b)]),
            FeatureValue::Category(c) => {
                row.push(4);
                put_bytes(row, c.as_bytes());
            }
            FeatureValue::Text(t) => {
                row.push(4);
                put_bytes(row, t);
            }
        }
    });
    put_varint(out, rows.len() as u64 + 1);
    for (row, count) in rows.iter().zip(&counts) {
        put_varint(out, *count);
        out.extend_from_slice(row);
    }
}

/// HMAC-SHA-256 of `data` under the log's redaction key.
pub fn hmac(key: &[u8; 32], data: &[u8]) -> [u8; 32] {
    // HMAC takes keys of any length: this cannot fail.
    let Ok(mut mac) = <Hmac<sha2::Sha256> as Mac>::new_from_slice(key) else { return [0; 32] };
    mac.update(data);
    mac.finalize().into_bytes().into()
}

fn zigzag(n: i64) -> u64 {
    ((n << 1) ^ (n >> 63)) as u64
}

fn unzigzag(n: u64) -> i64 {
    ((n >> 1) as i64) ^ -((n & 1) as i64)
}

fn put_varint(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// Reads a payload's fields, refusing anything cut short or out of bounds.
struct Reader<'a> {
    bytes: &'a [u8],
}

type Read<T> = Result<T, String>;

impl<'a> Reader<'a> {
    fn done(&self) -> bool {
        self.bytes.is_empty()
    }

    fn u8(&mut self) -> Read<u8> {
        let (&b, rest) = self.bytes.split_first().ok_or("cut short")?;
        self.bytes = rest;
        Ok(b)
    }

    fn varint(&mut self) -> Read<u64> {
        let mut n = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.u8()?;
            n |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return Ok(n);
            }
        }
        Err("a number runs past 64 bits".into())
    }

    /// A count of things each taking at least one byte: never more than are left.
    fn count(&mut self) -> Read<usize> {
        let n = self.varint()?;
        usize::try_from(n)
            .ok()
            .filter(|&n| n <= self.bytes.len())
            .ok_or_else(|| format!("count {n} exceeds the payload"))
    }

    fn take(&mut self, n: usize) -> Read<&'a [u8]> {
        if n > self.bytes.len() {
            return Err("cut short".into());
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    fn bytes(&mut self) -> Read<&'a [u8]> {
        let n = self.count()?;
        self.take(n)
    }

    fn str(&mut self) -> Read<&'a str> {
        std::str::from_utf8(self.bytes()?).map_err(|_| "a string is not UTF-8".to_owned())
    }

    fn tensors(&mut self) -> Read<Vec<Stored>> {
        let n = self.count()?;
        let mut tensors = Vec::with_capacity(n);
        for _ in 0..n {
            let name = self.str()?.to_owned();
            let datatype: DataType = self.str()?.parse().map_err(|_| "unknown datatype".to_owned())?;
            let dims = self.count()?;
            let shape = (0..dims)
                .map(|_| self.varint().map(|d| usize::try_from(d).unwrap_or(usize::MAX)))
                .collect::<Read<Vec<usize>>>()?;
            let count = vigil_core::tensor::element_count(&shape).ok_or("shape overflows")?;
            let stored = match self.u8()? {
                0 => {
                    let bytes = self.bytes()?;
                    // `Tensor::new` checks the elements against the shape
                    // (BYTES data may hold fewer than the shape says).
                    Stored::Tensor(Tensor::new(name, shape, decode_raw(datatype, count, bytes)?)?)
                }
                // A hash stands for values that are not here: its shape is shown, never used.
                1 => Stored::Hashed { name, datatype, shape, mac: self.take(32)?.to_vec() },
                k => return Err(format!("unknown tensor kind {k}")),
            };
            tensors.push(stored);
        }
        Ok(tensors)
    }

    fn value(&mut self) -> Read<Value> {
        Ok(match self.u8()? {
            0 => Value::Null,
            1 => json!(f64::from_le_bytes(self.take(8)?.try_into().map_err(|_| "cut short")?)),
            2 => json!(unzigzag(self.varint()?)),
            3 => json!(self.u8()? != 0),
            4 => json!(String::from_utf8_lossy(self.bytes()?)),
            5 => json!({ "hmac_sha256": hex::encode(self.take(32)?) }),
            k => return Err(format!("unknown value kind {k}")),
        })
    }
}

/// A tensor as read back: its values, or the hash that stands for them.
enum Stored {
    Tensor(Tensor),
    Hashed { name: String, datatype: DataType, shape: Vec<usize>, mac: Vec<u8> },
}

impl Stored {
    fn to_json(&self) -> Value {
        match self {
            Stored::Tensor(t) => json!({
                "name": t.name, "datatype": t.datatype(), "shape": t.shape,
                "data": serde_json::to_value(JsonElements(&t.data)).unwrap_or(Value::Null),
            }),
            Stored::Hashed { name, datatype, shape, mac } => json!({
                "name": name, "datatype": datatype, "shape": shape, "hmac_sha256": hex::encode(mac),
            }),
        }
    }
}

fn tensors_only(stored: Vec<Stored>) -> Vec<Tensor> {
    stored
        .into_iter()
        .filter_map(|s| match s {
            Stored::Tensor(t) => Some(t),
            Stored::Hashed { .. } => None,
        })
        .collect()
}

/// A payload's records as JSON, in the order written: `time_us`, `version`,
/// `request_id`, `principal`, the outputs, and either the inputs (no feature
/// spec, or one that no longer compiles) or the features by name with each
/// row's prediction; `rows` when records were set aside as invalid.
pub fn read(payload: &[u8]) -> Read<Vec<Value>> {
    let body = payload.strip_prefix(MAGIC).ok_or("not a binary prediction chunk")?;
    let (body, offset) = body.split_last_chunk::<8>().ok_or("cut short")?;
    let at = usize::try_from(u64::from_le_bytes(*offset))
        .ok()
        .and_then(|at| at.checked_sub(MAGIC.len()))
        .filter(|&at| at <= body.len())
        .ok_or("the schemas' offset is out of range")?;
    let (records, schemas) = body.split_at(at);
    let mut s = Reader { bytes: schemas };
    let count = s.count()?;
    let mut pipelines = Vec::with_capacity(count);
    for _ in 0..count {
        pipelines.push(FeaturePipeline::from_schema(s.bytes()?).ok().map(Arc::new));
    }
    let mut r = Reader { bytes: records };
    let mut records = Vec::new();
    while !r.done() {
        let mut record = Map::new();
        record.insert("time_us".into(), json!(unzigzag(r.varint()?)));
        record.insert("version".into(), json!(r.str()?));
        record.insert("request_id".into(), json!(r.str()?));
        record.insert("principal".into(), json!(r.str()?));
        let rows = match r.count()? {
            0 => None,
            n => Some((1..n).map(|_| r.varint()).collect::<Read<Vec<u64>>>()?),
        };
        let pipeline = match r.varint()? {
            0 => None,
            i => Some(
                pipelines.get(usize::try_from(i - 1).unwrap_or(usize::MAX)).ok_or("schema index out of range")?.clone(),
            ),
        };
        let inputs = r.tensors()?;
        let outputs = r.tensors()?;
        let features = match r.count()? {
            0 => None,
            n => {
                let mut listed = Vec::with_capacity(n - 1);
                for _ in 1..n {
                    let mut row = Map::new();
                    for _ in 0..r.count()? {
                        let index = r.varint()?;
                        let value = r.value()?;
                        let name = pipeline
                            .as_ref()
                            .and_then(|p| p.as_ref())
                            .and_then(|p| p.spec().features.get(usize::try_from(index).unwrap_or(usize::MAX)))
                            .map_or_else(|| format!("#{index}"), |f| f.name.clone());
                        row.insert(name, value);
                    }
                    listed.push(Value::Object(row));
                }
                Some(listed)
            }
        };
        record.insert("outputs".into(), Value::Array(outputs.iter().map(Stored::to_json).collect()));
        let compiled = pipeline.flatten();
        match &compiled {
            Some(p) => {
                let row_count = features
                    .as_ref()
                    .map(Vec::len)
                    .or_else(|| {
                        inputs.first().and_then(|s| match s {
                            Stored::Tensor(t) => t.shape.first().copied(),
                            Stored::Hashed { .. } => None,
                        })
                    })
                    .unwrap_or(0);
                let outputs = tensors_only(outputs);
                if let Ok(predictions) = p.full_predictions(&outputs, row_count) {
                    record.insert("predictions".into(), Value::Array(predictions));
                }
                let features = match features {
                    Some(f) => f,
                    None => {
                        let decoded = p.decode(&tensors_only(inputs)).unwrap_or_default();
                        decoded.into_iter().map(Value::Object).collect()
                    }
                };
                record.insert("features".into(), Value::Array(features));
            }
            None => {
                if !inputs.is_empty() {
                    record.insert("inputs".into(), Value::Array(inputs.iter().map(Stored::to_json).collect()));
                }
                if let Some(f) = features {
                    record.insert("features".into(), Value::Array(f));
                }
            }
        }
        if let Some(rows) = rows {
            record.insert("rows".into(), json!(rows));
        }
        records.push(Value::Object(record));
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::SystemTime;
    use vigil_core::features::FeatureSpec;
    use vigil_core::predictions::Redaction;
    use vigil_core::{Signature, TensorSpec};
    use vigil_runtime::Logged;

    const KEY: [u8; 32] = [9; 32];

    fn pipeline() -> Arc<FeaturePipeline> {
        let spec: FeatureSpec = serde_json::from_value(json!({
            "features": [
                {"name": "age", "type": "numerical", "transform": {"standard": {"mean": 40.0, "scale": 10.0}}},
                {"name": "plan", "type": "categorical", "vocabulary": ["basic", "pro"], "transform": "one_hot"},
                {"name": "active", "type": "boolean"}
            ],
            "prediction": {"type": "classification", "output": "probabilities", "labels": ["no", "yes"]},
            "records": {}
        }))
        .expect("spec");
        let signature = Signature {
            inputs: vec![TensorSpec::new("x", DataType::Fp32, vec![-1, 4])],
            outputs: vec![TensorSpec::new("probabilities", DataType::Fp32, vec![-1, 2])],
        };
        Arc::new(FeaturePipeline::compile(spec, &signature).expect("compiles"))
    }

    fn tensor(name: &str, rows: usize, v: Vec<f32>) -> Tensor {
        Tensor { name: name.into(), shape: vec![rows, v.len() / rows], data: TensorData::Fp32(v) }
    }

    /// Two rows: (age 45, pro, active) and (age 20, basic, not active).
    fn record(features: Option<Arc<FeaturePipeline>>, redact: Vec<Redaction>) -> Record<'static> {
        Record {
            endpoint: "churn",
            version: "3",
            request_id: "req-1",
            principal: "key:abc",
            time: SystemTime::now(),
            logged: Logged {
                settings: Arc::new(PredictionLogging { sample_rate: 1.0, redact, ..Default::default() }),
                inputs: vec![tensor("x", 2, vec![0.5, 0.0, 1.0, 1.0, -2.0, 1.0, 0.0, 0.0])],
                outputs: vec![tensor("probabilities", 2, vec![0.2, 0.8, 0.9, 0.1])],
                features,
                rows: None,
            },
        }
    }

    fn round_trip(records: &[Record<'_>]) -> Vec<Value> {
        let mut body = ChunkBody::new();
        for (i, r) in records.iter().enumerate() {
            body.push(r, i as i64 - 1, &KEY);
        }
        read(&body.finish()).expect("reads back")
    }

    #[test]
    fn features_and_predictions_are_read_back_by_name_from_the_raw_inputs() {
        let p = pipeline();
        let read = round_trip(&[record(Some(Arc::clone(&p)), Vec::new())]);
        let r = &read[0];
        assert_eq!(r["time_us"], -1);
        assert_eq!(
            (&r["version"], &r["request_id"], &r["principal"]),
            (&json!("3"), &json!("req-1"), &json!("key:abc"))
        );
        assert_eq!(
            r["features"],
            json!([{"age": 45.0, "plan": "pro", "active": true}, {"age": 20.0, "plan": "basic", "active": false}])
        );
        let inputs = &record(None, Vec::new()).logged;
        assert_eq!(r["predictions"], json!(p.full_predictions(&inputs.outputs, 2).expect("predictions")));
        assert_eq!(r["predictions"][0]["label"], "yes");
        assert!(r.get("inputs").is_none(), "the features stand for the inputs");
        assert_eq!(r["outputs"][0]["data"], json!([0.2f32, 0.8f32, 0.9f32, 0.1f32]));
        assert_eq!(r["outputs"][0]["shape"], json!([2, 2]));
    }

    #[test]
    fn tensors_without_a_spec_come_back_as_tensors_with_their_redaction() {
        let redact = vec![Redaction { input: "x".into(), action: RedactAction::Hash }];
        let r = &round_trip(&[record(None, redact)])[0];
        let x = &r["inputs"][0];
        assert_eq!((&x["name"], &x["datatype"], &x["shape"]), (&json!("x"), &json!("FP32"), &json!([2, 4])));
        assert!(x.get("data").is_none(), "hashed, not kept");
        let values = serde_json::to_vec(&json!([0.5, 0.0, 1.0, 1.0, -2.0, 1.0, 0.0, 0.0])).expect("json");
        assert_eq!(x["hmac_sha256"], json!(hex::encode(hmac(&KEY, &values))));
        let dropped =
            &round_trip(&[record(None, vec![Redaction { input: "x".into(), action: RedactAction::Drop }])])[0];
        assert!(dropped.get("inputs").is_none() && dropped["outputs"].is_array());
        assert!(dropped.get("features").is_none() && dropped.get("predictions").is_none());
    }

    #[test]
    fn rules_on_features_are_applied_when_written() {
        let redact = vec![
            Redaction { input: "age".into(), action: RedactAction::Drop },
            Redaction { input: "plan".into(), action: RedactAction::Hash },
        ];
        let mut body = ChunkBody::new();
        body.push(&record(Some(pipeline()), redact), 0, &KEY);
        let payload = body.finish();
        let r = &read(&payload).expect("reads")[0];
        let hashed = |plan: &str| json!({ "hmac_sha256": hex::encode(hmac(&KEY, format!("\"{plan}\"").as_bytes())) });
        assert_eq!(
            r["features"],
            json!([{"plan": hashed("pro"), "active": true}, {"plan": hashed("basic"), "active": false}])
        );
        assert_eq!(r["predictions"][1]["label"], "no");
        assert!(r.get("inputs").is_none());
        // The input tensor holding the age (0.5 scaled) is not kept either.
        let scaled_age = 0.5f32.to_le_bytes();
        assert!(!payload.windows(4).any(|w| w == scaled_age), "no raw input in the payload");
    }

    #[test]
    fn each_pipeline_is_kept_once_per_chunk() {
        let (a, b) = (pipeline(), pipeline());
        let records = [
            record(Some(Arc::clone(&a)), Vec::new()),
            record(Some(Arc::clone(&b)), Vec::new()),
            record(Some(Arc::clone(&a)), Vec::new()),
            record(None, Vec::new()),
        ];
        let mut body = ChunkBody::new();
        for r in &records {
            body.push(r, 0, &KEY);
        }
        assert_eq!(body.schemas.len(), 2);
        let read = read(&body.finish()).expect("reads");
        assert_eq!(read.len(), 4);
        assert!(read[..3].iter().all(|r| r["features"][0]["plan"] == "pro"));
        assert!(read[3]["inputs"].is_array());
    }

    #[test]
    fn rows_set_aside_are_kept() {
        let mut r = record(Some(pipeline()), Vec::new());
        r.logged.rows = Some(vec![0, 2]);
        assert_eq!(round_trip(&[r])[0]["rows"], json!([0, 2]));
    }

    #[test]
    fn a_schema_that_no_longer_compiles_leaves_the_inputs_readable() {
        let mut body = ChunkBody::new();
        body.push(&record(Some(pipeline()), Vec::new()), 0, &KEY);
        let mut payload = body.finish();
        // Break the stored schema's JSON (its first byte, after the count and length).
        let offset = u64::from_le_bytes(payload[payload.len() - 8..].try_into().expect("8 bytes")) as usize;
        let at = offset + 1 + varint_len(&payload[offset + 1..]);
        payload[at] = b'!';
        let r = &read(&payload).expect("reads")[0];
        assert!(r.get("features").is_none() && r.get("predictions").is_none());
        assert_eq!(r["inputs"][0]["data"][0], 0.5);
    }

    fn varint_len(bytes: &[u8]) -> usize {
        bytes.iter().position(|b| b & 0x80 == 0).map_or(bytes.len(), |p| p + 1)
    }

    /// Cut, flipped and random payloads are refused or read, never a panic.
    #[test]
    fn hostile_payloads_never_panic() {
        let mut body = ChunkBody::new();
        body.push(&record(Some(pipeline()), Vec::new()), 0, &KEY);
        let redact = vec![Redaction { input: "plan".into(), action: RedactAction::Hash }];
        body.push(&record(Some(pipeline()), redact), 0, &KEY);
        body.push(&record(None, Vec::new()), 0, &KEY);
        let payload = body.finish();
        for cut in 0..payload.len() {
            let _ = read(&payload[..cut]);
        }
        for at in 0..payload.len() {
            for flip in [0x01u8, 0x02, 0x80, 0xff] {
                let mut bad = payload.clone();
                bad[at] ^= flip;
                let _ = read(&bad);
            }
        }
        let framed = |middle: &[u8], offset: u64| [MAGIC.as_slice(), middle, &offset.to_le_bytes()].concat();
        let mut rng = fastrand::Rng::with_seed(7);
        for _ in 0..2000 {
            let middle: Vec<u8> = (0..rng.usize(0..200)).map(|_| rng.u8(..)).collect();
            let offset = rng.u64(0..middle.len() as u64 + 8);
            let _ = read(&framed(&middle, offset));
        }
        let mut huge = Vec::new();
        put_varint(&mut huge, u64::MAX);
        assert!(read(&framed(&huge, 4)).is_err(), "a count past the payload");
        assert!(read(b"{\"json\": 1}").is_err());
        assert!(read(MAGIC).is_err(), "no offset");
        assert!(read(&framed(&[], 4)).is_err(), "no schema count");
        assert!(read(&framed(&[0], 3)).is_err(), "an offset inside the magic");
        assert!(read(&framed(&[0], 9)).is_err(), "an offset past the end");
        assert!(read(&framed(&[0], u64::MAX)).is_err());
        assert_eq!(read(&framed(&[0], 4)).expect("empty chunk"), Vec::<Value>::new());
        assert!(read(&framed(&[0x80], 4)).is_err(), "a varint cut short");
    }

    #[test]
    fn varints_and_zigzag_round_trip() {
        for n in [0i64, 1, -1, 63, -64, 1 << 40, i64::MIN, i64::MAX] {
            let mut out = Vec::new();
            put_varint(&mut out, zigzag(n));
            let mut r = Reader { bytes: &out };
            assert_eq!(unzigzag(r.varint().expect("reads")), n);
            assert!(r.done());
        }
    }
}
