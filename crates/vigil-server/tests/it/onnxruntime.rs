//! The same server on ONNX Runtime: every model, including the scikit-learn
//! pipeline that only ONNX Runtime can run, matches the expected outputs.

use crate::common::*;
use crate::infer::binary_infer;
use serde_json::json;
use vigil_runtime::model_config::BackendChoice;
use vigil_server::{Limits, OnnxRuntimeConfig, ServerConfig};

#[tokio::test]
async fn every_model_on_onnxruntime_matches() {
    let Some(library) = onnxruntime_library("every_model_on_onnxruntime_matches") else { return };
    let repo = TempRepo::new("ort");
    for case in expected_cases_in(&["test", "onnxruntime"]) {
        let model = case["model"].as_str().unwrap();
        let dir = case["repository"].as_str().unwrap();
        repo.model(model, "1", &model_bytes(&format!("{dir}/{model}/1/model.onnx")));
    }
    repo.file(
        "iris_boosting/config.toml",
        "[onnxruntime]\nintra_op_threads = 1\n[scheduling]\ninstances = 2\n[batching]\nmax_batch_size = 8\n",
    );
    let config = ServerConfig {
        demo: true,
        model_repository: Some(repo.0.clone()),
        default_backend: BackendChoice::Onnxruntime,
        onnxruntime: OnnxRuntimeConfig { library: Some(library) },
        limits: Limits::default(),
        data_dir: temp_data_dir(),
        ..ServerConfig::default()
    };
    let s = TestServer::start(config).await;
    for case in expected_cases_in(&["demo", "test", "onnxruntime"]) {
        let model = case["model"].as_str().unwrap();
        let (_, meta) = s.get(&format!("/v2/models/{model}")).await;
        assert_eq!(meta["backend"], "onnxruntime", "{model}: {meta}");
        let (status, out) = s.post_json(&format!("/v2/models/{model}/infer"), &request_for(&case)).await;
        assert_eq!(status, 200, "{model}: {out}");
        for got in out["outputs"].as_array().unwrap() {
            let name = got["name"].as_str().unwrap();
            assert_tensor_matches(got, &case["outputs"][name], &format!("{model}.{name}"));
        }
        let (status, _, _) = binary_infer(&s, model, &case).await;
        assert_eq!(status, 200, "{model} (binary)");
    }
    s.stop().await.unwrap();
}

/// tract cannot run `Scaler`/`TreeEnsembleClassifier`: the model is reported
/// with the reason, and a forced `backend = "onnxruntime"` without the library fails clearly.
#[tokio::test]
async fn a_model_tract_cannot_run_is_reported_on_tract() {
    let repo = TempRepo::new("tract-only");
    repo.model("iris_boosting", "1", &model_bytes("onnxruntime/iris_boosting/1/model.onnx"));
    let mut config = config(Some(repo.0.clone()), Limits::default());
    config.demo = false;
    let s = TestServer::start(config).await;
    let (status, ready) = s.get("/v2/models/iris_boosting/ready").await;
    assert_eq!(status, 503);
    assert!(ready["reason"].as_str().unwrap().contains("tract"), "{ready}");
    let (_, meta) = s.get("/v2/models/iris_boosting").await;
    assert_eq!(meta["inputs"], json!([{"name": "measurements", "datatype": "FP32", "shape": [-1, 4]}]));
    s.stop().await.unwrap();
}
