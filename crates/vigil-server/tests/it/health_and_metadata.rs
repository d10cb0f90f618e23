//! Health, server and model metadata, readiness, repository index, and how a
//! model that fails to load is reported while the others serve.

use crate::common::*;
use serde_json::json;
use vigil_server::Limits;

#[tokio::test]
async fn health_routes_answer_with_status_and_body() {
    let s = TestServer::demo().await;
    assert_eq!(s.get("/v2/health/live").await, (200, json!({"live": true})));
    assert_eq!(s.get("/v2/health/ready").await, (200, json!({"ready": true})));
    let (status, meta) = s.get("/v2").await;
    assert_eq!(status, 200);
    assert_eq!(meta["name"], "vigil");
    assert_eq!(meta["version"], env!("CARGO_PKG_VERSION"));
    assert!(meta["extensions"].as_array().unwrap().contains(&json!("binary_tensor_data")));
    let (status, body) = s.get("/v2/nope").await;
    assert_eq!(status, 404);
    assert!(body["error"].is_string());
    s.stop().await.unwrap();
}

#[tokio::test]
async fn model_metadata_reads_the_signature_from_the_graph() {
    let s = TestServer::demo().await;
    for path in ["/v2/models/breast_cancer", "/v2/models/breast_cancer/versions/1"] {
        let (status, meta) = s.get(path).await;
        assert_eq!(status, 200, "{path}");
        assert_eq!(meta["name"], "breast_cancer");
        assert_eq!(meta["versions"], json!(["1"]));
        assert_eq!(meta["platform"], "onnx");
        assert_eq!(meta["state"], "READY");
        assert_eq!(meta["inputs"], json!([{"name": "features", "datatype": "FP32", "shape": [-1, 30]}]));
        assert_eq!(
            meta["outputs"],
            json!([
                {"name": "label", "datatype": "INT64", "shape": [-1]},
                {"name": "probabilities", "datatype": "FP32", "shape": [-1, 2]}
            ])
        );
    }
    let (_, cnn) = s.get("/v2/models/digits_cnn").await;
    assert_eq!(cnn["inputs"], json!([{"name": "image", "datatype": "FP32", "shape": [-1, 1, 8, 8]}]));
    s.stop().await.unwrap();
}

#[tokio::test]
async fn model_readiness_with_and_without_version() {
    let s = TestServer::demo().await;
    let (status, body) = s.get("/v2/models/digits_cnn/ready").await;
    assert_eq!(status, 200);
    assert_eq!(body["ready"], true);
    let (status, _) = s.get("/v2/models/digits_cnn/versions/1/ready").await;
    assert_eq!(status, 200);
    assert_eq!(s.get("/v2/models/digits_cnn/versions/7/ready").await.0, 404);
    assert_eq!(s.get("/v2/models/nope/ready").await.0, 404);
    s.stop().await.unwrap();
}

#[tokio::test]
async fn repository_index_lists_every_version() {
    let s = TestServer::demo().await;
    let (status, index) = s.post_raw("/v2/repository/index", Vec::new()).await;
    assert_eq!(status, 200);
    let names: Vec<&str> = index.as_array().unwrap().iter().map(|m| m["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["breast_cancer", "credit", "digits_cnn", "identity"]);
    assert!(index.as_array().unwrap().iter().all(|m| m["state"] == "READY" && m["version"] == "1"));
    let (status, ready_only) = s.post_json("/v2/repository/index", &json!({"ready": true})).await;
    assert_eq!(status, 200);
    assert_eq!(ready_only, index);
    assert_eq!(s.post_raw("/v2/repository/index", b"{".to_vec()).await.0, 400);
    s.stop().await.unwrap();
}

/// A repository with good and broken models: the broken ones are reported with
/// their reason, the good ones serve, and the default version is the highest
/// one that loaded.
#[tokio::test]
async fn broken_models_are_reported_while_the_others_serve() {
    let cnn = model_bytes("demo/digits_cnn/1/model.onnx");
    let repo = TempRepo::new("broken");
    repo.model("multi", "1", &model_bytes("test/identity/1/model.onnx"))
        .model("multi", "2", &model_bytes("demo/breast_cancer/1/model.onnx"))
        .model("multi", "10", &cnn[..cnn.len() / 2])
        .model("not_onnx", "1", b"this is not an ONNX model at all")
        .model("truncated", "1", &cnn[..cnn.len() / 2])
        .model("bad_config", "1", &cnn)
        .file("bad_config/config.toml", "backend = 'tensorflow'")
        .model("bad_override", "1", &cnn)
        .file("bad_override/config.toml", "[inputs.nope]\nshape = [1]")
        .model("bad_warmup", "1", &cnn)
        .file("bad_warmup/config.toml", "[warmup.inputs.image]\nshape = [1, 1, 8, 8]\ndata = [1, 2]")
        .model("huge_input", "1", &cnn)
        .file("huge_input/config.toml", "[inputs.image]\nshape = [1048576, 1, 8, 8]")
        .file("missing_file/1/README", "no model here")
        .model("good", "1", &cnn);
    // A FIFO would block a plain read forever; a link to a device would never end.
    std::fs::create_dir_all(repo.0.join("fifo/1")).unwrap();
    assert!(std::process::Command::new("mkfifo").arg(repo.0.join("fifo/1/model.onnx")).status().unwrap().success());
    std::fs::create_dir_all(repo.0.join("device/1")).unwrap();
    std::os::unix::fs::symlink("/dev/zero", repo.0.join("device/1/model.onnx")).unwrap();
    let mut config = config(Some(repo.0.clone()), Limits::default());
    config.demo = false;
    let s = TestServer::start(config).await;

    let (status, index) = s.post_raw("/v2/repository/index", Vec::new()).await;
    assert_eq!(status, 200);
    let state = |name: &str, version: &str| {
        index.as_array().unwrap().iter().find(|m| m["name"] == name && m["version"] == version).unwrap().clone()
    };
    assert_eq!(state("good", "1")["state"], "READY");
    assert_eq!(state("multi", "2")["state"], "READY");
    for (name, version, reason) in [
        ("multi", "10", "not a valid ONNX model"),
        ("not_onnx", "1", "not a valid ONNX model"),
        ("truncated", "1", "not a valid ONNX model"),
        ("bad_config", "1", "config.toml"),
        ("bad_override", "1", "input 'nope'"),
        ("bad_warmup", "1", "warm-up"),
        ("missing_file", "1", "model.onnx"),
        ("huge_input", "1", "max_tensor_elements"),
        ("fifo", "1", "not a regular file"),
        ("device", "1", "not a regular file"),
    ] {
        let m = state(name, version);
        assert_eq!(m["state"], "UNAVAILABLE", "{name}");
        assert!(m["reason"].as_str().unwrap().contains(reason), "{name}: {}", m["reason"]);
        let path = format!("/v2/models/{name}/versions/{version}");
        let (status, meta) = s.get(&path).await;
        assert_eq!(status, 200, "{path}");
        assert!(meta["reason"].as_str().unwrap().contains(reason));
        let (status, ready) = s.get(&format!("{path}/ready")).await;
        assert_eq!(status, 503, "{path}");
        assert_eq!(ready["ready"], false);
        let (status, err) = s.post_json(&format!("{path}/infer"), &request_for(&case("digits_cnn"))).await;
        assert_eq!(status, 503, "{path}");
        assert!(err["error"].as_str().unwrap().contains("failed to load"), "{err}");
    }

    // Versions order numerically; the default is the highest version that is ready (2, not 10).
    let (_, meta) = s.get("/v2/models/multi").await;
    assert_eq!(meta["versions"], json!(["1", "2", "10"]));
    assert_eq!(meta["inputs"][0]["name"], "features");
    let (_, v1) = s.get("/v2/models/multi/versions/1").await;
    assert_eq!(v1["inputs"][0]["name"], "in_bool");
    let (status, out) = s.post_json("/v2/models/multi/infer", &request_for(&case("breast_cancer"))).await;
    assert_eq!(status, 200);
    assert_eq!(out["model_version"], "2");

    // The healthy model serves, and the server is ready despite the broken ones.
    assert_eq!(s.get("/v2/health/ready").await.0, 200);
    let (status, _) = s.post_json("/v2/models/good/infer", &request_for(&case("digits_cnn"))).await;
    assert_eq!(status, 200);
    s.stop().await.unwrap();
}

#[tokio::test]
async fn an_empty_registry_is_ready_and_name_clashes_are_start_errors() {
    // Nothing to serve yet is a healthy server waiting for its first deployment.
    let mut c = config(None, Limits::default());
    c.demo = false;
    let s = TestServer::start(c).await;
    let mut ready = s.get("/v2/health/ready").await;
    for _ in 0..200 {
        if ready.0 == 200 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        ready = s.get("/v2/health/ready").await;
    }
    assert_eq!(ready, (200, json!({"ready": true})));
    s.stop().await.unwrap();

    let repo = TempRepo::new("clash");
    repo.model("digits_cnn", "1", &model_bytes("demo/digits_cnn/1/model.onnx"));
    let err = vigil_server::run(config(Some(repo.0.clone()), Limits::default()), http_only().await, async {})
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("both a demo model"), "{err}");

    let err = vigil_server::run(config(Some("/no/such/dir".into()), Limits::default()), http_only().await, async {})
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("cannot read the model repository"), "{err}");
}

#[tokio::test]
async fn a_server_whose_models_all_failed_is_not_ready() {
    let repo = TempRepo::new("all-failed");
    repo.model("broken", "1", b"not onnx");
    let mut c = config(Some(repo.0.clone()), Limits::default());
    c.demo = false;
    let s = TestServer::start(c).await;
    assert_eq!(s.get("/v2/health/live").await.0, 200);
    assert_eq!(s.get("/v2/health/ready").await, (503, json!({"ready": false})));
    s.stop().await.unwrap();

    let empty = TempRepo::new("empty");
    let mut c = config(Some(empty.0.clone()), Limits::default());
    c.demo = false;
    let err = vigil_server::run(c, http_only().await, async {}).await.unwrap_err().to_string();
    assert!(err.contains("holds no models"), "{err}");
}

#[tokio::test]
async fn triton_model_config_for_perf_analyzer() {
    let s = TestServer::demo().await;
    for path in ["/v2/models/breast_cancer/config", "/v2/models/breast_cancer/versions/1/config"] {
        let (status, config) = s.get(path).await;
        assert_eq!(status, 200);
        assert_eq!(config["name"], "breast_cancer");
        assert_eq!(config["max_batch_size"], 0);
        assert_eq!(config["input"], json!([{"name": "features", "data_type": "TYPE_FP32", "dims": [-1, 30]}]));
        assert_eq!(config["output"][0], json!({"name": "label", "data_type": "TYPE_INT64", "dims": [-1]}));
    }
    let (_, identity) = s.get("/v2/models/identity/config").await;
    assert!(identity["input"].as_array().unwrap().iter().any(|i| i["data_type"] == "TYPE_STRING"));
    assert_eq!(s.get("/v2/models/nope/config").await.0, 404);
    s.stop().await.unwrap();
}
