//! The server's configuration: one struct, filled by the binary from defaults,
//! `vigil.toml`, `VIGIL_*` variables and flags.

use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Address to listen on.
    pub addr: SocketAddr,
    /// A model repository: `DIR/<model>/<version>/model.onnx`, optional `DIR/<model>/config.toml`.
    pub model_repository: Option<PathBuf>,
    /// Serve the built-in demo models.
    pub demo: bool,
    pub limits: Limits,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            model_repository: None,
            demo: false,
            limits: Limits::default(),
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
