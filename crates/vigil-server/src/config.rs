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
            default_backend: BackendChoice::Auto,
            onnxruntime: OnnxRuntimeConfig::default(),
            limits: Limits::default(),
            shutdown_grace_seconds: 30,
        }
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
