//! In-process cost of one single-row prediction of the demo tabular model:
//! the raw backends (the limit) against Vigil's whole V2 REST path without the
//! network (JSON decode, checks, scheduler queue and worker, encode).
//!
//!     cargo bench -p vigil-server            # ORT_DYLIB_PATH adds ONNX Runtime
//!
//! Compare each `v2_rest_*` with its `raw_*` in the same run: the difference is
//! what Vigil adds per request.

#![allow(clippy::unwrap_used)] // bench setup: a panic is the report

use axum::body::Body;
use axum::http::Request;
use divan::Bencher;
use std::sync::Arc;
use tower::ServiceExt;
use vigil_core::{Backend, LoadOptions, LoadedModel, Tensor, TensorData};
use vigil_runtime::model_config::BackendChoice;
use vigil_runtime::models::{LoadSettings, ModelSet};
use vigil_runtime::ort_backend::OrtBackend;
use vigil_runtime::tract_backend::TractBackend;
use vigil_runtime::{InferenceService, demo, onnx};
use vigil_server::telemetry::Telemetry;
use vigil_server::{AppState, Limits};

fn main() {
    divan::main();
}

const MODEL: &[u8] = include_bytes!("../../../models/demo/breast_cancer/1/model.onnx");

fn row() -> Vec<f32> {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../models/expected.json")).unwrap();
    let cases: serde_json::Value = serde_json::from_str(&text).unwrap();
    cases[0]["inputs"]["features"]["data"].as_array().unwrap()[..30]
        .iter()
        .map(|v| v.as_f64().unwrap() as f32)
        .collect()
}

fn onnxruntime() -> Option<&'static OrtBackend> {
    std::env::var_os("ORT_DYLIB_PATH").and_then(|_| OrtBackend::get(None).ok())
}

fn raw(b: Bencher, backend: &dyn Backend) {
    let signature = onnx::read_signature(MODEL).unwrap();
    let options = LoadOptions { instances: 1, ..LoadOptions::default() };
    let model: Box<dyn LoadedModel> = backend.load(MODEL, &signature, &options).unwrap();
    let input = Tensor::new("features", vec![1, 30], TensorData::Fp32(row())).unwrap();
    b.bench(|| model.infer(vec![input.clone()]).unwrap());
}

#[divan::bench]
fn raw_tract(b: Bencher) {
    raw(b, &TractBackend);
}

#[divan::bench]
fn raw_onnxruntime(b: Bencher) {
    match onnxruntime() {
        Some(ort) => raw(b, ort),
        None => eprintln!("raw_onnxruntime skipped: set ORT_DYLIB_PATH"),
    }
}

fn v2_rest(b: Bencher, backend: BackendChoice) {
    let models = ModelSet::new(demo::sources());
    models.load_all(&LoadSettings {
        default_backend: backend,
        onnxruntime_library: None,
        max_tensor_elements: 1 << 24,
        ..LoadSettings::default()
    });
    v2_rest_on(b, Arc::new(models));
}

fn v2_rest_on(b: Bencher, models: Arc<ModelSet>) {
    v2_rest_with(b, models, false, Telemetry::metrics_only());
}

fn tract_demo() -> Arc<ModelSet> {
    let models = ModelSet::new(demo::sources());
    models.load_all(&LoadSettings {
        default_backend: BackendChoice::Tract,
        onnxruntime_library: None,
        max_tensor_elements: 1 << 24,
        ..LoadSettings::default()
    });
    Arc::new(models)
}

/// The overhead baseline: no metrics, no request log, no prediction log.
#[divan::bench]
fn telemetry_off(b: Bencher) {
    v2_rest_with(b, tract_demo(), false, Telemetry { enabled: false, ..Telemetry::metrics_only() });
}

/// Metrics alone (no subscriber, so the log line's macro finds no one listening).
#[divan::bench]
fn telemetry_metrics(b: Bencher) {
    v2_rest_with(b, tract_demo(), false, Telemetry::metrics_only());
}

/// Metrics, and the per-request log line written as JSON (to a sink, so the
/// formatting is paid but no terminal is).
#[divan::bench]
fn telemetry_metrics_and_logs(b: Bencher) {
    json_logs_to_sink();
    v2_rest_with(b, tract_demo(), false, Telemetry::metrics_only());
}

/// Everything on: metrics, the log line, and 100 % prediction logging into
/// an in-memory SQLite, sealed by the vault (the writer shares the thread).
#[divan::bench]
fn telemetry_all_with_full_prediction_log(b: Bencher) {
    json_logs_to_sink();
    full_prediction_log(b);
}

/// Metrics and 100 % prediction logging, without the per-request log line
/// (`RUST_LOG=vigil::request=off`).
#[divan::bench]
fn telemetry_metrics_and_full_prediction_log(b: Bencher) {
    full_prediction_log(b);
}

fn full_prediction_log(b: Bencher) {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let log = runtime.block_on(async {
        let store: Arc<dyn vigil_store::PredictionStore> =
            Arc::new(vigil_store::SqliteStore::connect("sqlite::memory:").await.unwrap());
        let vault = Arc::new(vigil_security::vault::Vault::new(
            vigil_security::vault::MasterKey::from_bytes([7; 32]),
            Vec::new(),
        ));
        vigil_server::predictions::PredictionLog::start(
            store,
            vault,
            vigil_server::predictions::Buffer { records: 1 << 20, bytes: 1 << 30 },
        )
    });
    let telemetry = Telemetry { predictions: Some(Arc::clone(&log)), ..Telemetry::metrics_only() };
    let logging = vigil_core::predictions::PredictionLogging { sample_rate: 1.0, ..Default::default() };
    v2_rest_run(b, tract_demo(), false, telemetry, Some(logging), runtime, None);
    let (_, written, dropped) = log.stats().first().cloned().unwrap_or_default();
    eprintln!("prediction log: {written} written, {dropped} dropped");
}

fn json_logs_to_sink() {
    let _ = tracing_subscriber::fmt()
        .event_format(vigil_server::json_log::JsonLines)
        .with_env_filter(tracing_subscriber::EnvFilter::new("info"))
        .with_writer(std::io::sink)
        .try_init();
}

/// The V2 REST path in process; with `authenticated`, behind the guard that
/// `run` serves, each request carrying an API key (checked, rate-limit free,
/// authorized on the endpoint).
fn v2_rest_with(b: Bencher, models: Arc<ModelSet>, authenticated: bool, telemetry: Telemetry) {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    v2_rest_run(b, models, authenticated, telemetry, None, runtime, None);
}

/// The V2 REST path in process, for `call` (a path and a V2 JSON body), by
/// default the demo's one row.
fn v2_rest_run(
    b: Bencher,
    models: Arc<ModelSet>,
    authenticated: bool,
    telemetry: Telemetry,
    logging: Option<vigil_core::predictions::PredictionLogging>,
    runtime: tokio::runtime::Runtime,
    call: Option<(&'static str, Vec<u8>)>,
) {
    let state = AppState {
        service: InferenceService::new(models).with_default_logging(logging),
        limits: Limits::default(),
        deployer: None,
        telemetry: Arc::new(telemetry),
    };
    let (router, key) = if authenticated {
        let dir = std::env::temp_dir().join(format!("vigil-bench-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let config =
            vigil_server::SecurityConfig { bootstrap_key_file: Some(dir.join("owner.key")), ..Default::default() };
        let security = runtime.block_on(async {
            let store = vigil_store::SqliteStore::connect("sqlite::memory:").await.unwrap();
            vigil_server::security::Security::open(&config, Arc::new(store), &dir).await.unwrap()
        });
        let key = std::fs::read_to_string(dir.join("owner.key")).unwrap().trim().to_owned();
        let guard = Arc::new(vigil_server::guard::Guard::new(security));
        (vigil_server::guarded_router(state, guard).unwrap(), Some(format!("Bearer {key}")))
    } else {
        (vigil_server::router(state), None)
    };
    let (path, body) = call.unwrap_or_else(|| {
        let inputs = serde_json::json!([{"name": "features", "datatype": "FP32", "shape": [1, 30], "data": row()}]);
        ("/v2/models/breast_cancer/infer", serde_json::to_vec(&serde_json::json!({ "inputs": inputs })).unwrap())
    });
    b.bench(|| {
        let mut request = Request::post(path);
        if let Some(key) = &key {
            request = request.header("authorization", key);
        }
        let request = request.body(Body::from(body.clone())).unwrap();
        let response = runtime.block_on(router.clone().oneshot(request)).unwrap();
        assert!(response.status().is_success());
        runtime.block_on(axum::body::to_bytes(response.into_body(), usize::MAX)).unwrap()
    });
}

#[divan::bench]
fn v2_rest_in_process_tract(b: Bencher) {
    v2_rest(b, BackendChoice::Tract);
}

/// `v2_rest_in_process_tract` as served: behind the guard, with an API key.
#[divan::bench]
fn v2_rest_in_process_tract_authenticated(b: Bencher) {
    let models = ModelSet::new(demo::sources());
    models.load_all(&LoadSettings {
        default_backend: BackendChoice::Tract,
        onnxruntime_library: None,
        max_tensor_elements: 1 << 24,
        ..LoadSettings::default()
    });
    v2_rest_with(b, Arc::new(models), true, Telemetry::metrics_only());
}

/// The same model behind a registry endpoint whose policy splits 50/50 over
/// two versions: what a weighted draw adds to `v2_rest_in_process_tract`.
#[divan::bench]
fn v2_rest_in_process_tract_policy(b: Bencher) {
    use vigil_core::registry::{EndpointSpec, Route};
    use vigil_runtime::{Endpoint, ModelVersion, Routing};
    let settings = LoadSettings {
        default_backend: BackendChoice::Tract,
        onnxruntime_library: None,
        max_tensor_elements: 1 << 24,
        ..LoadSettings::default()
    };
    let versions: Vec<Arc<ModelVersion>> = ["1", "2"]
        .into_iter()
        .map(|n| {
            let mut source = demo::sources().remove(0);
            source.version = n.into();
            let v = ModelVersion::new(source);
            v.load(&settings);
            v
        })
        .collect();
    let spec = EndpointSpec {
        model: "breast_cancer".into(),
        traffic: vec![Route { version: 1, weight: 50 }, Route { version: 2, weight: 50 }],
        shadows: Vec::new(),
        logging: None,
    };
    let endpoint = Endpoint::new("breast_cancer".into(), Some(1), versions, Routing::Policy(spec));
    v2_rest_on(b, Arc::new(ModelSet::from_endpoints([Arc::new(endpoint)])));
}

#[divan::bench]
fn v2_rest_in_process_onnxruntime(b: Bencher) {
    if onnxruntime().is_none() {
        eprintln!("v2_rest_in_process_onnxruntime skipped: set ORT_DYLIB_PATH");
        return;
    }
    v2_rest(b, BackendChoice::Onnxruntime);
}

const BOOSTING: &[u8] = include_bytes!("../../../models/onnxruntime/iris_boosting/1/model.onnx");

/// One iris flower (4 FP32 measurements).
const FLOWER: [f32; 4] = [6.8, 2.8, 4.8, 1.4];

/// scikit-learn's scaler and gradient boosting (TreeEnsembleClassifier), which
/// only ONNX Runtime runs: the raw backend.
#[divan::bench]
fn raw_onnxruntime_boosting(b: Bencher) {
    let Some(ort) = onnxruntime() else {
        eprintln!("raw_onnxruntime_boosting skipped: set ORT_DYLIB_PATH");
        return;
    };
    let signature = onnx::read_signature(BOOSTING).unwrap();
    let options = LoadOptions { instances: 1, ..LoadOptions::default() };
    let model = ort.load(BOOSTING, &signature, &options).unwrap();
    let input = Tensor::new("measurements", vec![1, 4], TensorData::Fp32(FLOWER.to_vec())).unwrap();
    b.bench(|| model.infer(vec![input.clone()]).unwrap());
}

/// The same model over Vigil's V2 REST path (served from the model repository).
#[divan::bench]
fn v2_rest_in_process_onnxruntime_boosting(b: Bencher) {
    if onnxruntime().is_none() {
        eprintln!("v2_rest_in_process_onnxruntime_boosting skipped: set ORT_DYLIB_PATH");
        return;
    }
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../models/onnxruntime");
    let models = ModelSet::new(vigil_runtime::repository::scan(std::path::Path::new(dir)).unwrap());
    models.load_all(&LoadSettings {
        default_backend: BackendChoice::Onnxruntime,
        onnxruntime_library: None,
        max_tensor_elements: 1 << 24,
        ..LoadSettings::default()
    });
    let inputs = serde_json::json!([{"name": "measurements", "datatype": "FP32", "shape": [1, 4], "data": FLOWER}]);
    let body = serde_json::to_vec(&serde_json::json!({ "inputs": inputs })).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let call = Some(("/v2/models/iris_boosting/infer", body));
    v2_rest_run(b, Arc::new(models), false, Telemetry::metrics_only(), None, runtime, call);
}
