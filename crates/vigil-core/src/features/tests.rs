//! The pipeline's rules, one by one, and hostile records. The transforms are
//! checked against scikit-learn's own output in vigil-runtime's tests
//! (`features.rs`), on the demo's committed spec and expected values.

use super::*;
use crate::features::FeatureValue;
use crate::{DataType, ErrorCode, Signature, TensorData, TensorSpec};
use serde_json::{Value, json};

fn signature(inputs: &[(&str, DataType, i64)]) -> Signature {
    Signature {
        inputs: inputs
            .iter()
            .map(|&(n, d, w)| TensorSpec::new(n, d, if w == 0 { vec![-1] } else { vec![-1, w] }))
            .collect(),
        outputs: vec![
            TensorSpec::new("probabilities", DataType::Fp32, vec![-1, 2]),
            TensorSpec::new("value", DataType::Fp32, vec![-1]),
        ],
    }
}

fn spec(features: Value) -> FeatureSpec {
    FeatureSpec {
        features: serde_json::from_value(features).unwrap(),
        prediction: None,
        records: RecordsPolicy::default(),
    }
}

/// A pipeline with one of every kind, into one FP32 input of 8 columns.
fn pipeline() -> FeaturePipeline {
    let s = spec(json!([
        {"name": "age", "type": "numerical", "datatype": "INT32", "min": 18, "max": 120,
         "transform": {"standard": {"mean": 40.0, "scale": 10.0}}},
        {"name": "income", "type": "numerical", "transform": {"min_max": {"data_min": 0.0, "data_max": 200.0, "range": [-1.0, 1.0]}}},
        {"name": "plan", "type": "categorical", "vocabulary": ["basic", "pro"], "unknown": "unknown_slot", "transform": "one_hot"},
        {"name": "tier", "type": "categorical", "datatype": "INT64", "vocabulary": [1, 2, 3], "transform": "ordinal",
         "unknown": "default", "default": 1},
        {"name": "member", "type": "boolean", "default": false},
        {"name": "debt", "type": "numerical", "default": 0.5},
    ]));
    FeaturePipeline::compile(s, &signature(&[("x", DataType::Fp32, 8)])).unwrap()
}

fn records(body: Value) -> Records {
    Records::from_json(body.to_string().as_bytes()).unwrap()
}

fn floats(t: &crate::Tensor) -> Vec<f32> {
    match &t.data {
        TensorData::Fp32(v) => v.clone(),
        other => panic!("{other:?}"),
    }
}

#[test]
fn encodes_every_kind_into_its_columns() {
    let p = pipeline();
    let r = records(json!({"instances": [
        {"age": 50, "income": 50.0, "plan": "pro", "tier": 3, "member": true, "debt": 0.25},
        {"age": 30, "income": 200, "plan": "enterprise", "tier": 9},
        [40, 0, "basic", 2, false, 1.5],
    ]}));
    let e = p.encode(&r, 1 << 20).unwrap();
    assert_eq!(e.rows, vec![0, 1, 2]);
    assert_eq!(e.tensors[0].shape, vec![3, 8]);
    #[rustfmt::skip]
    let want = [
        1.0, -0.5, 0.0, 1.0, 0.0, 2.0, 1.0, 0.25,
        -1.0, 1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.5, // unknown plan: its slot; unknown tier: the default (1, code 0)
        0.0, -1.0, 1.0, 0.0, 0.0, 1.0, 0.0, 1.5,
    ];
    assert_eq!(floats(&e.tensors[0]), want);
    // And back, by name, transforms undone.
    let back = p.decode(&e.tensors).unwrap();
    assert_eq!(back[0]["age"], json!(50));
    assert_eq!(back[0]["plan"], json!("pro"));
    assert_eq!(back[0]["tier"], json!(3));
    assert_eq!(back[0]["member"], json!(true));
    assert!((back[0]["income"].as_f64().unwrap() - 50.0).abs() < 1e-4);
    assert_eq!(back[1]["plan"], Value::Null, "the unknown slot decodes to null");
    assert_eq!(back[2]["debt"], json!(1.5));
}

#[test]
fn columns_give_the_same_tensors_as_rows() {
    let p = pipeline();
    let rows = records(
        json!({"instances": [{"age": 50, "income": 1, "plan": "pro", "tier": 3}, {"age": 20, "income": 2, "plan": "basic", "tier": 1}]}),
    );
    let cols =
        records(json!({"inputs": {"age": [50, 20], "income": [1, 2], "plan": ["pro", "basic"], "tier": [3, 1]}}));
    assert_eq!(p.encode(&rows, 1 << 20).unwrap().tensors, p.encode(&cols, 1 << 20).unwrap().tensors);
}

#[test]
fn every_problem_is_listed_by_record_field_and_rule() {
    let p = pipeline();
    let r = records(json!({"instances": [
        {"age": 50, "income": 1, "plan": "pro", "tier": 1},
        {"age": 17.5, "income": "lots", "plan": 3, "tier": 1, "colour": "red"},
        {"income": 1, "plan": "pro", "tier": 1, "member": "yes"},
        {"age": 1e300, "income": 1, "plan": "pro", "tier": 1.5},
        "not a record",
        [1, 2],
    ]}));
    let e = p.encode(&r, 1 << 20).unwrap_err();
    assert_eq!(e.code(), ErrorCode::InvalidInput);
    let got: Vec<(Option<usize>, &str, Rule)> =
        e.details().iter().map(|d| (d.record, d.field.as_str(), d.rule)).collect();
    assert_eq!(
        got,
        vec![
            (Some(1), "age", Rule::Range),
            (Some(1), "income", Rule::Type),
            (Some(1), "plan", Rule::Type),
            (Some(1), "colour", Rule::UnknownField),
            (Some(2), "age", Rule::Required),
            (Some(2), "member", Rule::Type),
            (Some(3), "age", Rule::Range),
            (Some(3), "tier", Rule::Type),
            (Some(4), "", Rule::Shape),
            (Some(5), "", Rule::Shape),
        ]
    );
    assert!(e.message().starts_with("10 problems in 5 of 6 records; first: record 1, age:"), "{}", e.message());
}

#[test]
fn report_mode_sets_invalid_records_aside_and_encodes_the_rest() {
    let mut s = pipeline().spec().clone();
    s.records.invalid_records = spec::InvalidRecords::Report;
    let p = FeaturePipeline::compile(s, &signature(&[("x", DataType::Fp32, 8)])).unwrap();
    let r = records(json!({"instances": [
        {"age": 10, "income": 1, "plan": "pro", "tier": 1},
        {"age": 40, "income": 1, "plan": "pro", "tier": 1},
        {"age": 40, "income": 1, "plan": "gold", "tier": 1},
    ]}));
    let e = p.encode(&r, 1 << 20).unwrap();
    assert_eq!(e.rows, vec![1, 2]);
    assert_eq!(e.tensors[0].shape, vec![2, 8]);
    assert_eq!(e.rejected.len(), 1);
    assert_eq!(e.rejected[0].0, 0);
    assert_eq!(e.rejected[0].1[0].rule, Rule::Range);
    // Row 0 of the tensor is record 1, not the rejected record's leftovers.
    assert_eq!(floats(&e.tensors[0])[0], 0.0);
}

#[test]
fn unknown_fields_can_be_ignored() {
    let mut s = pipeline().spec().clone();
    s.records.unknown_fields = spec::UnknownFields::Ignore;
    let p = FeaturePipeline::compile(s, &signature(&[("x", DataType::Fp32, 8)])).unwrap();
    let r = records(json!({"instances": [{"age": 40, "income": 1, "plan": "pro", "tier": 1, "note": "x"}]}));
    assert!(p.encode(&r, 1 << 20).is_ok());
    let r = records(json!({"inputs": {"age": [40], "income": [1], "plan": ["pro"], "tier": [1], "note": ["x"]}}));
    assert!(p.encode(&r, 1 << 20).is_ok());
}

#[test]
fn hostile_records_get_bounded_answers() {
    let p = pipeline();
    // Thousands of unknown fields: all counted, at most MAX_LISTED_ERRORS listed.
    let mut record: serde_json::Map<String, Value> = (0..5000).map(|i| (format!("f{i}"), json!(i))).collect();
    record.insert("age".into(), json!(40));
    let r = Records::Rows(vec![Value::Object(record)]);
    let e = p.encode(&r, 1 << 20).unwrap_err();
    assert_eq!(e.details().len(), MAX_LISTED_ERRORS);
    assert!(e.message().contains("more not listed"), "{}", e.message());
    // A huge field name and a huge category are echoed truncated.
    let name = "n".repeat(100_000);
    let r = records(json!({"instances": [{"age": 40, "income": 1, "plan": "p".repeat(100_000), "tier": 1, name: 1}]}));
    let e = p.encode(&r, 1 << 20).unwrap_err();
    assert!(e.details().iter().all(|d| d.field.len() < 100 && d.message.len() < 200), "{:?}", e.details());
    // Deeply nested values are a type error, not a crash.
    let nested = (0..100).fold(json!(1), |v, _| json!([v]));
    let r = Records::Rows(vec![json!({"age": nested, "income": {"a": {"b": 1}}, "plan": "pro", "tier": 1})]);
    let rules: Vec<Rule> = p.encode(&r, 1 << 20).unwrap_err().details().iter().map(|d| d.rule).collect();
    assert_eq!(rules, vec![Rule::Type, Rule::Type]);
    // A number beyond the input's FP32 range is refused, not sent as infinity.
    let r = records(json!({"instances": [{"age": 40, "income": 1e300, "plan": "pro", "tier": 1}]}));
    let e = p.encode(&r, 1 << 20).unwrap_err();
    assert_eq!((e.details()[0].field.as_str(), e.details()[0].rule), ("income", Rule::Range), "{e:?}");
    // More records than the tensor limit allows: refused before allocating.
    let many = Records::Rows(vec![json!({}); 1000]);
    assert!(p.encode(&many, 100).unwrap_err().message().contains("max_tensor_elements"));
}

#[test]
fn specs_that_do_not_fit_the_model_are_refused_naming_the_feature() {
    let num = |extra: Value| {
        let mut f = json!({"name": "a", "type": "numerical"});
        f.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        spec(json!([f]))
    };
    let one = signature(&[("x", DataType::Fp32, 1)]);
    let cases: Vec<(FeatureSpec, Signature, &str)> = vec![
        (spec(json!([])), one.clone(), "at least one feature"),
        (
            spec(json!([{"name": "a", "type": "numerical"}, {"name": "a", "type": "numerical"}])),
            signature(&[("x", DataType::Fp32, 2)]),
            "declared twice",
        ),
        (num(json!({"input": "y"})), one.clone(), "input 'y'"),
        (num(json!({})), signature(&[("x", DataType::Fp32, 2)]), "takes 2 columns"),
        (num(json!({})), signature(&[("x", DataType::Fp32, 1), ("y", DataType::Fp32, 1)]), "say which input"),
        (num(json!({"transform": {"standard": {"mean": 0.0, "scale": 0.0}}})), one.clone(), "scale > 0"),
        (
            num(json!({"transform": {"min_max": {"data_min": 1.0, "data_max": 1.0}}})),
            one.clone(),
            "data_max > data_min",
        ),
        (num(json!({"transform": "one_hot"})), one.clone(), "categorical"),
        (num(json!({"min": 5, "max": 1})), one.clone(), "above max"),
        (num(json!({"default": "x"})), one.clone(), "default"),
        (num(json!({"vocabulary": ["a"]})), one.clone(), "vocabulary is for categorical"),
        (num(json!({})), signature(&[("x", DataType::Bytes, 1)]), "cannot go to an input of type BYTES"),
        (
            num(json!({"datatype": "FP32", "transform": {"standard": {"mean": 0.0, "scale": 1.0}}})),
            signature(&[("x", DataType::Int64, 1)]),
            "cannot go",
        ),
        (
            spec(json!([{"name": "c", "type": "categorical", "transform": "one_hot"}])),
            one.clone(),
            "needs a vocabulary",
        ),
        (
            spec(json!([{"name": "c", "type": "categorical", "vocabulary": ["a", "a"], "transform": "ordinal"}])),
            one.clone(),
            "twice",
        ),
        (
            spec(
                json!([{"name": "c", "type": "categorical", "vocabulary": ["a"], "unknown": "default", "transform": "ordinal"}]),
            ),
            one.clone(),
            "needs a default",
        ),
        (spec(json!([{"name": "t", "type": "text"}])), one.clone(), "text cannot go"),
        (
            num(json!({})),
            Signature { inputs: vec![TensorSpec::new("x", DataType::Fp32, vec![4, 1])], outputs: vec![] },
            "dynamic batch",
        ),
    ];
    for (s, sig, expected) in cases {
        let e = FeaturePipeline::compile(s.clone(), &sig).unwrap_err();
        assert!(e.contains(expected), "{s:?}: {e}");
    }
    let mut unfed = spec(json!([{"name": "a", "type": "numerical", "input": "x"}]));
    let e = FeaturePipeline::compile(unfed.clone(), &signature(&[("x", DataType::Fp32, 1), ("y", DataType::Fp32, 1)]))
        .unwrap_err();
    assert!(e.contains("no feature goes to input 'y'"), "{e}");
    unfed.prediction = Some(PredictionSpec::Classification {
        output: "nope".into(),
        labels: vec!["a".into()],
        top_k: None,
        threshold: None,
    });
    let e = FeaturePipeline::compile(unfed, &one).unwrap_err();
    assert!(e.contains("output 'nope'"), "{e}");
}

fn with_prediction(prediction: PredictionSpec) -> Result<FeaturePipeline, String> {
    let mut s = spec(json!([{"name": "a", "type": "numerical"}]));
    s.prediction = Some(prediction);
    FeaturePipeline::compile(s, &signature(&[("x", DataType::Fp32, 1)]))
}

fn outputs(p: &[f32], v: &[f32]) -> Vec<crate::Tensor> {
    vec![
        crate::Tensor::new("probabilities", vec![p.len() / 2, 2], TensorData::Fp32(p.to_vec())).unwrap(),
        crate::Tensor::new("value", vec![v.len()], TensorData::Fp32(v.to_vec())).unwrap(),
    ]
}

#[test]
fn classification_labels_thresholds_and_top_k() {
    let labels = vec!["no".to_owned(), "yes".to_owned()];
    let class = |top_k, threshold| PredictionSpec::Classification {
        output: "probabilities".into(),
        labels: labels.clone(),
        top_k,
        threshold,
    };
    let out = outputs(&[0.25, 0.75, 0.6, 0.4], &[1.0, 2.0]);
    let p = with_prediction(class(None, None)).unwrap();
    assert_eq!(
        p.predictions(&out, 2).unwrap(),
        vec![
            json!({"label": "yes", "probabilities": {"no": 0.25, "yes": 0.75}}),
            json!({"label": "no", "probabilities": {"no": 0.6000000238418579, "yes": 0.4000000059604645}})
        ]
    );
    let p = with_prediction(class(None, Some(0.3))).unwrap();
    assert_eq!(p.predictions(&out, 2).unwrap()[1]["label"], "yes", "0.4 >= the threshold 0.3");
    let p = with_prediction(class(Some(1), None)).unwrap();
    assert_eq!(p.predictions(&out, 2).unwrap()[0]["probabilities"], json!({"yes": 0.75}));
    assert!(with_prediction(class(Some(3), None)).unwrap_err().contains("top_k"));
    assert!(with_prediction(class(None, Some(1.5))).unwrap_err().contains("threshold"));
    let three = PredictionSpec::Classification {
        output: "probabilities".into(),
        labels: vec!["a".into(), "b".into(), "c".into()],
        top_k: None,
        threshold: None,
    };
    assert!(with_prediction(three).unwrap_err().contains("3 labels"));
}

#[test]
fn predictions_are_visited_field_by_field_as_monitoring_counts_them() {
    let labels = vec!["no".to_owned(), "yes".to_owned()];
    let p = with_prediction(PredictionSpec::Classification {
        output: "probabilities".into(),
        labels,
        top_k: None,
        threshold: Some(0.3),
    })
    .unwrap();
    assert_eq!(p.prediction_fields(), ["label", "no", "yes"]);
    let mut seen = Vec::new();
    p.visit_predictions(&outputs(&[0.25, 0.75, 0.65, 0.35], &[1.0, 2.0]), |i, v| seen.push(format!("{i}={v:?}")));
    assert_eq!(
        seen,
        [
            "0=Category(\"yes\")",
            "1=Number(0.25)",
            "2=Number(0.75)",
            "0=Category(\"yes\")",
            "1=Number(0.6499999761581421)",
            "2=Number(0.3499999940395355)",
        ],
        "the threshold (0.3) decides, as in the answers"
    );
    let r =
        with_prediction(PredictionSpec::Regression { output: "value".into(), names: vec!["price".into()] }).unwrap();
    let mut seen = Vec::new();
    r.visit_predictions(&outputs(&[0.0, 0.0], &[1.5]), |i, v| seen.push((i, v == FeatureValue::Number(1.5))));
    assert_eq!(seen, [(0, true)]);
}

#[test]
fn regression_outputs_are_named_and_no_spec_names_every_output() {
    let p =
        with_prediction(PredictionSpec::Regression { output: "value".into(), names: vec!["price".into()] }).unwrap();
    let out = outputs(&[0.25, 0.75, 0.6, 0.4], &[1.5, 2.5]);
    assert_eq!(p.predictions(&out, 2).unwrap(), vec![json!({"price": 1.5}), json!({"price": 2.5})]);
    assert!(
        with_prediction(PredictionSpec::Regression { output: "value".into(), names: vec!["a".into(), "b".into()] })
            .is_err()
    );
    let bare = FeaturePipeline::compile(
        spec(json!([{"name": "a", "type": "numerical"}])),
        &signature(&[("x", DataType::Fp32, 1)]),
    )
    .unwrap();
    assert_eq!(
        bare.predictions(&out, 2).unwrap()[1],
        json!({"probabilities": [0.6000000238418579, 0.4000000059604645], "value": 2.5})
    );
}

#[test]
fn strings_and_booleans_reach_inputs_of_their_own_type() {
    let s = spec(json!([
        {"name": "review", "type": "text", "max_length": 10, "input": "text"},
        {"name": "country", "type": "categorical", "vocabulary": ["fr", "de"], "input": "country"},
        {"name": "flag", "type": "boolean", "input": "flag"},
    ]));
    let sig = signature(&[("text", DataType::Bytes, 0), ("country", DataType::Bytes, 1), ("flag", DataType::Bool, 1)]);
    let p = FeaturePipeline::compile(s, &sig).unwrap();
    let e =
        p.encode(&records(json!({"instances": [{"review": "great", "country": "de", "flag": true}]})), 100).unwrap();
    assert_eq!(e.tensors[0].shape, vec![1]);
    assert_eq!(e.tensors[0].data, TensorData::Bytes(vec![b"great".to_vec()]));
    assert_eq!(e.tensors[1].data, TensorData::Bytes(vec![b"de".to_vec()]));
    assert_eq!(e.tensors[2].data, TensorData::Bool(vec![true]));
    let e = p
        .encode(&records(json!({"instances": [{"review": "far too long", "country": "it", "flag": 1}]})), 100)
        .unwrap_err();
    let rules: Vec<Rule> = e.details().iter().map(|d| d.rule).collect();
    assert_eq!(rules, vec![Rule::Length, Rule::Vocabulary, Rule::Type]);
}

/// The schema compiles again into a pipeline that encodes the same way.
#[test]
fn a_pipeline_compiles_again_from_its_schema() {
    let p = pipeline();
    let again = FeaturePipeline::from_schema(p.schema().as_bytes()).expect("compiles");
    assert_eq!(again.spec(), p.spec());
    // The schema holds the signature too: equal schemas, equal signatures.
    assert_eq!(again.schema(), p.schema());
    let body = json!({"instances": [{"age": 41, "income": 80.0, "plan": "pro", "tier": 2, "member": true}]});
    let (a, b) = (p.encode(&records(body.clone()), 1 << 20), again.encode(&records(body), 1 << 20));
    assert_eq!(floats(&a.expect("encodes").tensors[0]), floats(&b.expect("encodes").tensors[0]));
    for bad in [&b"{"[..], b"{}", b"{\"spec\": {\"features\": []}, \"signature\": {\"inputs\": [], \"outputs\": []}}"] {
        assert!(FeaturePipeline::from_schema(bad).is_err());
    }
}
