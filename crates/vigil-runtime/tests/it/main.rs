//! Backend conformance: one suite, run unchanged against every backend
//! (tract always; ONNX Runtime when `ORT_DYLIB_PATH` is set, as `.ci/run` does).

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use serde::de::DeserializeSeed;
use serde_json::Value;
use std::path::{Path, PathBuf};
use vigil_core::elements::ElementsSeed;
use vigil_core::{Backend, DataType, ErrorCode, LoadOptions, LoadedModel, Signature, Tensor, TensorData};
use vigil_runtime::onnx;
use vigil_runtime::ort_backend::OrtBackend;
use vigil_runtime::tract_backend::TractBackend;

fn models_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models")
}

/// Expected cases (from onnxruntime in Python) for models in the given folders.
fn cases(repositories: &[&str]) -> Vec<Value> {
    let all: Vec<Value> =
        serde_json::from_str(&std::fs::read_to_string(models_dir().join("expected.json")).unwrap()).unwrap();
    all.into_iter().filter(|c| repositories.iter().any(|r| c["repository"] == *r)).collect()
}

fn tensor(name: &str, t: &Value) -> Tensor {
    let datatype: DataType = t["datatype"].as_str().unwrap().parse().unwrap();
    let shape: Vec<usize> = t["shape"].as_array().unwrap().iter().map(|d| d.as_u64().unwrap() as usize).collect();
    let data = ElementsSeed { datatype, max_len: usize::MAX }.deserialize(&t["data"]).unwrap();
    Tensor::new(name, shape, data).unwrap()
}

fn load(backend: &dyn Backend, case: &Value, options: &LoadOptions) -> (Signature, Box<dyn LoadedModel>) {
    let model = case["model"].as_str().unwrap();
    let path = models_dir().join(case["repository"].as_str().unwrap()).join(model).join("1/model.onnx");
    let bytes = std::fs::read(path).unwrap();
    let signature = onnx::read_signature(&bytes).unwrap();
    let loaded = backend.load(&bytes, &signature, options).unwrap_or_else(|e| panic!("{model}: {e}"));
    (signature, loaded)
}

fn inputs(signature: &Signature, case: &Value) -> Vec<Tensor> {
    let given = case["inputs"].as_object().unwrap().iter().map(|(n, t)| tensor(n, t)).collect();
    signature.arrange_inputs(given).unwrap()
}

fn assert_close(got: &Tensor, want: &Tensor, what: &str) {
    assert_eq!(got.shape, want.shape, "{what}: shape");
    match (&got.data, &want.data) {
        (TensorData::Fp32(g), TensorData::Fp32(w)) => {
            for (i, (g, w)) in g.iter().zip(w).enumerate() {
                assert!((g - w).abs() <= 1e-5 || g == w, "{what}[{i}]: {g} vs {w}");
            }
        }
        (g, w) => assert_eq!(g, w, "{what}"),
    }
}

fn check_case(backend: &dyn Backend, case: &Value, options: &LoadOptions) {
    let model = case["model"].as_str().unwrap();
    let (signature, loaded) = load(backend, case, options);
    let outputs = loaded.infer(inputs(&signature, case)).unwrap();
    assert_eq!(outputs.len(), signature.outputs.len());
    for (out, spec) in outputs.iter().zip(&signature.outputs) {
        assert_eq!(out.name, spec.name);
        assert_eq!(out.datatype(), spec.datatype, "{model}.{}", spec.name);
        assert_close(out, &tensor(&spec.name, &case["outputs"][&spec.name]), &format!("{model}.{}", spec.name));
    }
}

macro_rules! conformance {
    ($name:ident, $backend:expr, $repositories:expr) => {
        mod $name {
            use super::*;

            fn backend() -> Option<&'static dyn Backend> {
                $backend
            }

            #[test]
            fn outputs_match_onnxruntime_in_python() {
                let Some(b) = backend() else { return };
                for case in cases($repositories) {
                    check_case(b, &case, &LoadOptions::default());
                }
            }

            #[test]
            fn any_batch_size_gives_the_same_rows() {
                let Some(b) = backend() else { return };
                let case = &cases(&["demo"])[0];
                let (signature, model) = load(b, case, &LoadOptions::default());
                let rows = inputs(&signature, case).remove(0);
                let TensorData::Fp32(data) = &rows.data else { panic!() };
                let first = model
                    .infer(vec![Tensor::new("features", vec![1, 30], TensorData::Fp32(data[..30].to_vec())).unwrap()])
                    .unwrap();
                let many: Vec<f32> = data[..30].iter().copied().cycle().take(30 * 64).collect();
                let batch =
                    model.infer(vec![Tensor::new("features", vec![64, 30], TensorData::Fp32(many)).unwrap()]).unwrap();
                assert_eq!(batch[1].shape, vec![64, 2]);
                let TensorData::Fp32(p1) = &first[1].data else { panic!() };
                let TensorData::Fp32(p64) = &batch[1].data else { panic!() };
                for row in p64.chunks(2) {
                    assert!((row[0] - p1[0]).abs() < 1e-6 && (row[1] - p1[1]).abs() < 1e-6);
                }
            }

            #[test]
            fn many_threads_share_one_model() {
                let Some(b) = backend() else { return };
                let case = &cases(&["demo"])[1];
                let options = LoadOptions { instances: 2, ..LoadOptions::default() };
                let (signature, model) = load(b, case, &options);
                let want = model.infer(inputs(&signature, case)).unwrap();
                std::thread::scope(|s| {
                    for _ in 0..4 {
                        s.spawn(|| {
                            for _ in 0..25 {
                                assert_eq!(model.infer(inputs(&signature, case)).unwrap(), want);
                            }
                        });
                    }
                });
            }

            #[test]
            fn strings_that_are_not_utf8_are_invalid_input() {
                let Some(b) = backend() else { return };
                let case = &cases(&["test"])[0];
                let (signature, model) = load(b, case, &LoadOptions::default());
                let mut given = inputs(&signature, case);
                let strings = given.iter_mut().find(|t| t.datatype() == DataType::Bytes).unwrap();
                strings.data = TensorData::Bytes(vec![vec![0xff, 0xfe]; 6]);
                let err = model.infer(given).unwrap_err();
                assert_eq!(err.code(), ErrorCode::InvalidInput, "{err}");
                assert!(err.message().contains("in_bytes"), "{err}");
            }

            #[test]
            fn optimisation_level_does_not_change_results() {
                let Some(b) = backend() else { return };
                let options = LoadOptions {
                    optimization_level: vigil_core::backend::OptimizationLevel::Disable,
                    intra_op_threads: 1,
                    ..LoadOptions::default()
                };
                for case in cases(&["demo"]) {
                    check_case(b, &case, &options);
                }
            }
        }
    };
}

conformance!(tract, Some(&TractBackend), &["demo", "test"]);
conformance!(onnxruntime, onnxruntime(), &["demo", "test", "onnxruntime"]);

fn onnxruntime() -> Option<&'static dyn Backend> {
    if std::env::var_os("ORT_DYLIB_PATH").is_none_or(|p| p.is_empty()) {
        eprintln!("skipped: ONNX Runtime conformance needs ORT_DYLIB_PATH (.ci/run sets it)");
        return None;
    }
    Some(OrtBackend::get(None).unwrap())
}

#[test]
fn tract_refuses_what_it_cannot_run_with_a_reason() {
    let case = &cases(&["onnxruntime"])[0];
    let path = models_dir().join("onnxruntime/iris_boosting/1/model.onnx");
    let bytes = std::fs::read(path).unwrap();
    let signature = onnx::read_signature(&bytes).unwrap();
    assert_eq!(signature.inputs[0].name, case["inputs"].as_object().unwrap().keys().next().unwrap().as_str());
    let err = TractBackend.load(&bytes, &signature, &LoadOptions::default()).err().unwrap();
    assert!(err.contains("tract"), "{err}");
}

#[test]
fn a_configured_library_that_is_missing_is_a_clear_error() {
    // `find_library`, not `OrtBackend::get`: the latter loads once per process.
    let err = vigil_runtime::ort_backend::find_library(Some(Path::new("/no/such/libonnxruntime.so"))).unwrap_err();
    assert!(err.contains("/no/such/libonnxruntime.so") && err.contains("not a file"), "{err}");
}

#[test]
fn signatures_come_from_the_graph() {
    let bytes = std::fs::read(models_dir().join("demo/digits_cnn/1/model.onnx")).unwrap();
    let s = onnx::read_signature(&bytes).unwrap();
    assert_eq!(s.inputs[0].shape, vec![-1, 1, 8, 8]);
    assert_eq!(s.outputs.iter().map(|o| o.name.as_str()).collect::<Vec<_>>(), ["probabilities", "label"]);
    for bad in [&b""[..], b"garbage", &bytes[..bytes.len() / 3]] {
        assert!(onnx::read_signature(bad).is_err());
    }
}
