//! Cost of the records API's own stages on the demo's shapes: preprocessing
//! (check every value against the spec, write the model's input columns) and
//! postprocessing (outputs to labelled predictions), for 256 records.
//!
//!     cargo bench -p vigil-core --bench features
//!
//! `baseline_read_floats` is the least any records API does: look each named
//! feature up in the parsed record and copy it into an f32 row. Compare the
//! `encode_*` lines with it, in the same run. Per value: divide by 256 records
//! and by the features per record (30 for breast_cancer, 6 for credit). The
//! specs are the demo's (`models/demo/*/config.toml`) as JSON; the cost does
//! not depend on the fitted parameters.

#![allow(clippy::unwrap_used)] // bench setup: a panic is the report

use divan::Bencher;
use serde_json::{Value, json};
use vigil_core::features::{FeaturePipeline, FeatureSpec, PredictionSpec, Records};
use vigil_core::{DataType, Signature, Tensor, TensorData, TensorSpec};

fn main() {
    divan::main();
}

const RECORDS: usize = 256;

/// `RECORDS` records cycling through the committed examples of `model`.
fn records(model: &str) -> Records {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../models/features_expected.json");
    let all: Vec<Value> = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let case = all.into_iter().find(|c| c["model"] == model).unwrap();
    let rows: Vec<Value> = case["records"].as_array().unwrap().iter().cycle().take(RECORDS).cloned().collect();
    Records::from_json(json!({ "instances": rows }).to_string().as_bytes()).unwrap()
}

fn breast_cancer() -> (FeaturePipeline, Vec<String>) {
    let Records::Rows(rows) = records("breast_cancer") else { unreachable!() };
    let names: Vec<String> = rows[0].as_object().unwrap().keys().cloned().collect();
    let features = names.iter().map(|n| json!({"name": n, "type": "numerical", "min": 0.0})).collect::<Vec<_>>();
    let spec = FeatureSpec {
        features: serde_json::from_value(json!(features)).unwrap(),
        prediction: Some(PredictionSpec::Classification {
            output: "probabilities".into(),
            labels: vec!["malignant".into(), "benign".into()],
            top_k: None,
            threshold: None,
        }),
        records: Default::default(),
    };
    let signature = Signature {
        inputs: vec![TensorSpec::new("features", DataType::Fp32, vec![-1, 30])],
        outputs: vec![
            TensorSpec::new("label", DataType::Int64, vec![-1]),
            TensorSpec::new("probabilities", DataType::Fp32, vec![-1, 2]),
        ],
    };
    (FeaturePipeline::compile(spec, &signature).unwrap(), names)
}

fn credit() -> FeaturePipeline {
    let features = json!([
        {"name": "age", "type": "numerical", "datatype": "INT32", "min": 18, "max": 120,
         "transform": {"standard": {"mean": 48.7, "scale": 18.0}}, "input": "numeric"},
        {"name": "income", "type": "numerical", "min": 0.0,
         "transform": {"min_max": {"data_min": 14.3, "data_max": 237.8}}, "input": "numeric"},
        {"name": "debt_ratio", "type": "numerical", "min": 0.0, "max": 10.0, "input": "numeric"},
        {"name": "employment", "type": "categorical", "vocabulary": ["salaried", "self_employed", "unemployed", "retired"],
         "unknown": "unknown_slot", "transform": "one_hot", "input": "categorical"},
        {"name": "region", "type": "categorical", "vocabulary": ["north", "south", "east", "west"],
         "unknown": "unknown_slot", "transform": "ordinal", "input": "categorical"},
        {"name": "has_mortgage", "type": "boolean", "default": false, "input": "categorical"},
    ]);
    let spec = FeatureSpec {
        features: serde_json::from_value(features).unwrap(),
        prediction: None,
        records: Default::default(),
    };
    let signature = Signature {
        inputs: vec![
            TensorSpec::new("numeric", DataType::Fp32, vec![-1, 3]),
            TensorSpec::new("categorical", DataType::Fp32, vec![-1, 7]),
        ],
        outputs: vec![TensorSpec::new("probabilities", DataType::Fp32, vec![-1, 2])],
    };
    FeaturePipeline::compile(spec, &signature).unwrap()
}

#[divan::bench]
fn baseline_read_floats(bencher: Bencher) {
    let (_, names) = breast_cancer();
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
    let ((p, _), r) = (breast_cancer(), records("breast_cancer"));
    bencher.bench(|| divan::black_box(p.encode(&r, usize::MAX).unwrap()));
}

/// 6 features per record: scaled numbers, one-hot, ordinal, a boolean; two inputs.
#[divan::bench]
fn encode_credit(bencher: Bencher) {
    let (p, r) = (credit(), records("credit"));
    bencher.bench(|| divan::black_box(p.encode(&r, usize::MAX).unwrap()));
}

/// Probabilities to a label with its probabilities, per record.
#[divan::bench]
fn predictions_breast_cancer(bencher: Bencher) {
    let (p, _) = breast_cancer();
    let probabilities: Vec<f32> = (0..RECORDS).flat_map(|i| [i as f32 / 512.0, 1.0 - i as f32 / 512.0]).collect();
    let outputs = vec![
        Tensor::new("label", vec![RECORDS], TensorData::Int64(vec![1; RECORDS])).unwrap(),
        Tensor::new("probabilities", vec![RECORDS, 2], TensorData::Fp32(probabilities)).unwrap(),
    ];
    bencher.bench(|| divan::black_box(p.predictions(&outputs, RECORDS).unwrap()));
}
