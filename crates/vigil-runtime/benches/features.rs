//! Cost of the records API's own stages, per record, on the demo specs:
//! preprocessing (check every value against the spec and write the model's
//! input columns) and postprocessing (outputs to labelled predictions).
//!
//!     cargo bench -p vigil-runtime --bench features
//!
//! `baseline_read_floats` is the least any records API does: look each named
//! feature up in the parsed record and copy it into an f32 row. Compare the
//! `encode_*` lines with it, in the same run; divide by 256 records (and by the
//! features per record) for the cost per value.

#![allow(clippy::unwrap_used)] // bench setup: a panic is the report

use divan::Bencher;
use serde_json::{Value, json};
use vigil_core::features::{FeaturePipeline, Records};
use vigil_core::{Tensor, TensorData};
use vigil_runtime::model_config::ModelConfig;
use vigil_runtime::onnx;

fn main() {
    divan::main();
}

const RECORDS: usize = 256;

fn models() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models")
}

fn pipeline(model: &str) -> FeaturePipeline {
    let dir = models().join("demo").join(model);
    let config = ModelConfig::parse(&std::fs::read_to_string(dir.join("config.toml")).unwrap()).unwrap();
    let signature = onnx::read_signature(&std::fs::read(dir.join("1/model.onnx")).unwrap()).unwrap();
    FeaturePipeline::compile(config.feature_spec().unwrap(), &signature).unwrap()
}

/// `RECORDS` records cycling through the committed examples.
fn records(model: &str) -> Records {
    let text = std::fs::read_to_string(models().join("features_expected.json")).unwrap();
    let all: Vec<Value> = serde_json::from_str(&text).unwrap();
    let case = all.into_iter().find(|c| c["model"] == model).unwrap();
    let examples = case["records"].as_array().unwrap();
    let rows: Vec<Value> = examples.iter().cycle().take(RECORDS).cloned().collect();
    Records::from_json(json!({ "instances": rows }).to_string().as_bytes()).unwrap()
}

#[divan::bench]
fn baseline_read_floats(bencher: Bencher) {
    let p = pipeline("breast_cancer");
    let names: Vec<String> = p.spec().features.iter().map(|f| f.name.clone()).collect();
    let Records::Rows(rows) = records("breast_cancer") else { unreachable!() };
    bencher.bench(|| {
        let mut out = Vec::with_capacity(rows.len() * names.len());
        for row in &rows {
            for name in &names {
                out.push(row.get(name).and_then(Value::as_f64).unwrap_or(0.0) as f32);
            }
        }
        divan::black_box(out)
    });
}

/// 30 numerical features per record (7680 values).
#[divan::bench]
fn encode_breast_cancer(bencher: Bencher) {
    let (p, r) = (pipeline("breast_cancer"), records("breast_cancer"));
    bencher.bench(|| divan::black_box(p.encode(&r, usize::MAX).unwrap()));
}

/// 6 features per record: scaled numbers, one-hot, ordinal, boolean, two inputs.
#[divan::bench]
fn encode_credit(bencher: Bencher) {
    let (p, r) = (pipeline("credit"), records("credit"));
    bencher.bench(|| divan::black_box(p.encode(&r, usize::MAX).unwrap()));
}

/// Probabilities to a label with its probabilities, per record.
#[divan::bench]
fn predictions_breast_cancer(bencher: Bencher) {
    let p = pipeline("breast_cancer");
    let probabilities: Vec<f32> = (0..RECORDS).flat_map(|i| [i as f32 / 512.0, 1.0 - i as f32 / 512.0]).collect();
    let outputs = vec![
        Tensor::new("label", vec![RECORDS], TensorData::Int64(vec![1; RECORDS])).unwrap(),
        Tensor::new("probabilities", vec![RECORDS, 2], TensorData::Fp32(probabilities)).unwrap(),
    ];
    bencher.bench(|| divan::black_box(p.predictions(&outputs, RECORDS).unwrap()));
}
