//! Starting a real server and building requests.

use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use vigil_runtime::model_config::BackendChoice;
use vigil_server::{Limits, Listeners, ServerConfig, ServerError};

/// Listeners for a server that is expected to refuse to start.
pub async fn http_only() -> Listeners {
    Listeners { http: TcpListener::bind("127.0.0.1:0").await.unwrap(), grpc: None, metrics: None }
}

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// An `Authorization` header line for raw HTTP requests.
pub fn auth_line(key: &str) -> String {
    format!("Authorization: Bearer {key}\r\n")
}

pub struct TestServer {
    pub base: String,
    /// `http://127.0.0.1:PORT` of the gRPC API.
    pub grpc: String,
    /// Sends the Owner key with every request.
    pub client: reqwest::Client,
    /// The Owner key made at the store's first start.
    pub key: String,
    /// `http://127.0.0.1:PORT` of the unauthenticated `/metrics` listener,
    /// when the config asked for one (any `metrics_addr`: a free port is used).
    pub metrics: Option<String>,
    stop: Option<oneshot::Sender<()>>,
    pub task: Option<JoinHandle<Result<(), ServerError>>>,
}

impl TestServer {
    /// The demo models plus the test repository (`models/test`).
    pub async fn demo() -> Self {
        Self::start(config(Some(repo_root().join("models/test")), Limits::default())).await
    }

    pub async fn start(config: ServerConfig) -> Self {
        Self::start_with_ca(config, None).await
    }

    /// A server with TLS in `config`, called through `https://` trusting `ca` (PEM).
    pub async fn start_with_ca(mut config: ServerConfig, ca: Option<&str>) -> Self {
        let key_file = config.security.bootstrap_key_file.clone().unwrap_or_else(|| owner_key_file(&config));
        config.security.bootstrap_key_file = Some(key_file.clone());
        let http = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let grpc = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let scheme = if ca.is_some() { "https" } else { "http" };
        let base = format!("{scheme}://{}", http.local_addr().unwrap());
        let grpc_base = format!("{scheme}://{}", grpc.local_addr().unwrap());
        let metrics = match config.metrics_addr {
            Some(_) => Some(TcpListener::bind("127.0.0.1:0").await.unwrap()),
            None => None,
        };
        let metrics_base = metrics.as_ref().map(|l| format!("http://{}", l.local_addr().unwrap()));
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(vigil_server::run(config, Listeners { http, grpc: Some(grpc), metrics }, async {
            let _ = stopped.await;
        }));
        let mut key = String::new();
        for _ in 0..400 {
            if let Ok(text) = std::fs::read_to_string(&key_file)
                && !text.is_empty()
            {
                key = text.trim().to_owned();
                break;
            }
            assert!(!task.is_finished(), "the server stopped: {:?}", task.await);
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        assert!(!key.is_empty(), "no Owner key in {}", key_file.display());
        let client = match ca {
            Some(ca) => https_client(ca, None, Some(&key)),
            None => authorized_client(&key),
        };
        let server = TestServer {
            base,
            grpc: grpc_base,
            client,
            key,
            metrics: metrics_base,
            stop: Some(stop),
            task: Some(task),
        };
        server.wait_ready().await;
        server
    }

    /// A gRPC client that sends the Owner key.
    pub async fn grpc_client(&self) -> GrpcClient {
        grpc_client_with(&self.grpc, Some(&self.key)).await
    }

    /// Waits until every model has loaded or failed, and then, if any is
    /// ready, until the server says it is ready (its first registry sync may
    /// finish after the models load). Readiness stays 503 when every model
    /// failed.
    async fn wait_ready(&self) {
        for _ in 0..400 {
            if let Ok(r) = self.client.post(self.url("/v2/repository/index")).send().await
                && let Ok(index) = r.json::<Value>().await
                && let Some(index) = index.as_array()
                && index.iter().all(|m| m["state"] != "LOADING")
            {
                if !index.iter().any(|m| m["state"] == "READY") {
                    return;
                }
                if self.client.get(self.url("/v2/health/ready")).send().await.is_ok_and(|r| r.status() == 200) {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("models did not finish loading");
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let r = self.client.get(self.url(path)).send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap())
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> (u16, Value) {
        self.post_raw(path, serde_json::to_vec(body).unwrap()).await
    }

    pub async fn post_raw(&self, path: &str, body: Vec<u8>) -> (u16, Value) {
        let r = self.client.post(self.url(path)).body(body).send().await.unwrap();
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}")))
    }

    /// Stops the server and waits for `run` to return.
    pub async fn stop(mut self) -> Result<(), ServerError> {
        let _ = self.stop.take().unwrap().send(());
        self.task.take().unwrap().await.unwrap()
    }

    pub fn signal_stop(&mut self) {
        let _ = self.stop.take().unwrap().send(());
    }
}

pub type GrpcClient = vigil_proto::inference::grpc_inference_service_client::GrpcInferenceServiceClient<
    tonic::service::interceptor::InterceptedService<tonic::transport::Channel, Bearer>,
>;

/// Adds `authorization: Bearer <key>` to every gRPC call.
#[derive(Clone)]
pub struct Bearer(pub Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>);

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut r: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            r.metadata_mut().insert("authorization", v.clone());
        }
        Ok(r)
    }
}

pub async fn grpc_client_with(addr: &str, key: Option<&str>) -> GrpcClient {
    let channel = tonic::transport::Endpoint::from_shared(addr.to_owned()).unwrap().connect().await.unwrap();
    let bearer = Bearer(key.map(|k| format!("Bearer {k}").parse().unwrap()));
    vigil_proto::inference::grpc_inference_service_client::GrpcInferenceServiceClient::with_interceptor(channel, bearer)
}

/// An HTTP client that sends `key` as a bearer token.
pub fn authorized_client(key: &str) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(reqwest::header::AUTHORIZATION, format!("Bearer {key}").parse().unwrap());
    reqwest::Client::builder().default_headers(headers).build().unwrap()
}

/// An HTTPS client trusting only `ca`, with a client certificate (PEM of
/// certificate and key) and a bearer key when given.
pub fn https_client(ca: &str, identity: Option<&str>, key: Option<&str>) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(key) = key {
        headers.insert(reqwest::header::AUTHORIZATION, format!("Bearer {key}").parse().unwrap());
    }
    let mut builder = reqwest::Client::builder()
        .default_headers(headers)
        .tls_certs_only([reqwest::Certificate::from_pem(ca.as_bytes()).unwrap()]);
    if let Some(identity) = identity {
        builder = builder.identity(reqwest::Identity::from_pem(identity.as_bytes()).unwrap());
    }
    builder.build().unwrap()
}

/// Where the first start writes the Owner key: one file per store, so that a
/// restarted server or a second replica finds the key the first one made.
pub fn owner_key_file(config: &ServerConfig) -> PathBuf {
    match &config.database_url {
        Some(url) => {
            let tag: String = url.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect();
            std::env::temp_dir().join(format!("vigil-owner-key-{tag}"))
        }
        None => {
            let dir = config.data_dir.display().to_string().replace(['/', '\\'], "_");
            std::env::temp_dir().join(format!("vigil-owner-key-{dir}"))
        }
    }
}

/// The demo plus `model_repository`, on tract so that results do not depend on
/// whether ONNX Runtime happens to be installed (the `onnxruntime` tests cover it).
pub fn config(model_repository: Option<PathBuf>, limits: Limits) -> ServerConfig {
    ServerConfig {
        demo: true,
        model_repository,
        limits,
        default_backend: BackendChoice::Tract,
        data_dir: temp_data_dir(),
        sync_interval_ms: 100,
        ..ServerConfig::default()
    }
}

/// A fresh data directory (SQLite and artifacts) for one server.
pub fn temp_data_dir() -> PathBuf {
    std::env::temp_dir().join(vigil_store::testing::unique_prefix("vigil-it-data"))
}

/// The cases written by `models/make_models.py` (inputs and onnxruntime's
/// outputs) for the models in `models/demo` and `models/test`, which every backend runs.
pub fn expected_cases() -> Vec<Value> {
    expected_cases_in(&["demo", "test"])
}

/// The cases for models in the given folders of `models/`.
pub fn expected_cases_in(repositories: &[&str]) -> Vec<Value> {
    let text = std::fs::read_to_string(repo_root().join("models/expected.json")).unwrap();
    let all = serde_json::from_str::<Vec<Value>>(&text).unwrap();
    all.into_iter().filter(|c| repositories.iter().any(|r| c["repository"] == *r)).collect()
}

pub fn case(model: &str) -> Value {
    expected_cases_in(&["demo", "test", "onnxruntime"]).into_iter().find(|c| c["model"] == model).unwrap()
}

/// ONNX Runtime's library from `ORT_DYLIB_PATH`, or `None` with a line saying the test is skipped.
pub fn onnxruntime_library(test: &str) -> Option<PathBuf> {
    match std::env::var_os("ORT_DYLIB_PATH") {
        Some(p) if !p.is_empty() => Some(PathBuf::from(p)),
        _ => vigil_store::testing::skipped(test, "set ORT_DYLIB_PATH to ONNX Runtime's library (.ci/run does)"),
    }
}

/// A V2 JSON request for a case's inputs.
pub fn request_for(case: &Value) -> Value {
    let inputs: Vec<Value> = case["inputs"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(name, t)| json!({"name": name, "datatype": t["datatype"], "shape": t["shape"], "data": t["data"]}))
        .collect();
    json!({ "inputs": inputs })
}

/// Asserts that a response output equals the expected tensor: same datatype and
/// shape, floats within 1e-5 (or equal as FP32, for values too large for an
/// absolute tolerance), everything else exact.
pub fn assert_tensor_matches(got: &Value, want: &Value, what: &str) {
    assert_eq!(got["datatype"], want["datatype"], "{what}: datatype");
    assert_eq!(got["shape"], want["shape"], "{what}: shape");
    let (g, w) = (got["data"].as_array().unwrap(), want["data"].as_array().unwrap());
    assert_eq!(g.len(), w.len(), "{what}: element count");
    for (i, (g, w)) in g.iter().zip(w).enumerate() {
        match (g.as_f64(), w.as_f64()) {
            (Some(g), Some(w)) if want["datatype"].as_str().unwrap().starts_with("FP") => {
                assert!((g - w).abs() <= 1e-5 || g as f32 == w as f32, "{what}[{i}]: got {g}, want {w}")
            }
            _ => assert_eq!(g, w, "{what}[{i}]"),
        }
    }
}

/// A temporary model repository, removed on drop.
pub struct TempRepo(pub PathBuf);

impl TempRepo {
    pub fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("vigil-it-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempRepo(dir)
    }

    pub fn model(&self, model: &str, version: &str, bytes: &[u8]) -> &Self {
        let dir = self.0.join(model).join(version);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("model.onnx"), bytes).unwrap();
        self
    }

    pub fn file(&self, rel: &str, text: &str) -> &Self {
        let path = self.0.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
        self
    }
}

impl Drop for TempRepo {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn model_bytes(rel: &str) -> Vec<u8> {
    std::fs::read(repo_root().join("models").join(rel)).unwrap()
}
