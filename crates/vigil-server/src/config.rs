//! The server's configuration: one struct, filled by the binary from defaults,
//! `vigil.toml`, `VIGIL_*` variables and flags.

use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::PathBuf;
use vigil_runtime::model_config::BackendChoice;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Address of the V2 REST API.
    pub addr: SocketAddr,
    /// Address of the V2 gRPC API.
    pub grpc_addr: SocketAddr,
    /// A model repository: `DIR/<model>/<version>/model.onnx`, optional `DIR/<model>/config.toml`.
    pub model_repository: Option<PathBuf>,
    /// Serve the built-in demo models.
    pub demo: bool,
    /// Where the embedded defaults keep state: `vigil.db` (SQLite) and `artifacts/`.
    pub data_dir: PathBuf,
    /// The metadata store: `postgres://…` to share it between replicas, or
    /// `sqlite://PATH`; default `DATA_DIR/vigil.db`.
    pub database_url: Option<String>,
    /// The artifact store: `s3://bucket/prefix`, `az://container/prefix` or a
    /// directory; default `DATA_DIR/artifacts`.
    pub artifact_store: Option<String>,
    /// How often to look for registry changes made elsewhere (another replica), in milliseconds.
    pub sync_interval_ms: u64,
    /// The backend for models whose config says `backend = "auto"` (the default):
    /// `auto` = ONNX Runtime when it can be loaded, else tract.
    pub default_backend: BackendChoice,
    pub onnxruntime: OnnxRuntimeConfig,
    pub limits: Limits,
    /// After SIGTERM, how long requests in flight may take before they are cut.
    pub shutdown_grace_seconds: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OnnxRuntimeConfig {
    /// Path to `libonnxruntime.so.*`; else `ORT_DYLIB_PATH`, else a pip-installed `onnxruntime`.
    pub library: Option<PathBuf>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            grpc_addr: SocketAddr::from(([127, 0, 0, 1], 8081)),
            model_repository: None,
            demo: false,
            data_dir: PathBuf::from("vigil-data"),
            database_url: None,
            artifact_store: None,
            sync_interval_ms: 500,
            default_backend: BackendChoice::Auto,
            onnxruntime: OnnxRuntimeConfig::default(),
            limits: Limits::default(),
            shutdown_grace_seconds: 30,
        }
    }
}

impl ServerConfig {
    /// The artifact store's location, with the default filled in.
    pub fn artifact_location(&self) -> String {
        self.artifact_store.clone().unwrap_or_else(|| self.data_dir.join("artifacts").display().to_string())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest request body in bytes; larger bodies get 413.
    pub max_body_bytes: usize,
    /// Most elements in one input tensor; more get 400 before anything is allocated.
    pub max_tensor_elements: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_body_bytes: 64 * 1024 * 1024, max_tensor_elements: 16 * 1024 * 1024 }
    }
}
