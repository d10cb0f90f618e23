//! Vigil's protocol adapters: the KServe V2 REST API over axum. Handlers are thin:
//! they decode, call [`vigil_runtime::InferenceService`], and encode.
#![forbid(unsafe_code)]

mod config;
mod error;
mod v2;

pub use config::{Limits, OnnxRuntimeConfig, ServerConfig};
pub use error::ApiError;

use axum::Router;
use std::future::Future;
use std::sync::Arc;
use tokio::net::TcpListener;
use vigil_runtime::models::{Backends, ModelSet};
use vigil_runtime::{InferenceService, ModelSource, demo, repository};

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    pub service: InferenceService,
    pub limits: Limits,
}

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("configuration: {0}")]
    Config(String),
    #[error("server I/O: {0}")]
    Io(#[from] std::io::Error),
}

/// The model versions a configuration asks for: the demo, a repository, or both.
pub fn model_sources(config: &ServerConfig) -> Result<Vec<ModelSource>, ServerError> {
    let mut sources = if config.demo { demo::sources() } else { Vec::new() };
    if let Some(dir) = &config.model_repository {
        let scanned = repository::scan(dir).map_err(ServerError::Config)?;
        if let Some(clash) = scanned.iter().find(|s| sources.iter().any(|d| d.model == s.model)) {
            return Err(ServerError::Config(format!(
                "model '{}' is both a demo model and in {}",
                clash.model,
                dir.display()
            )));
        }
        sources.extend(scanned);
    }
    if !config.demo && config.model_repository.is_none() {
        return Err(ServerError::Config("nothing to serve: give --model-repository DIR or --demo".into()));
    }
    Ok(sources)
}

/// Serves on `listener` until `shutdown` completes, then stops accepting, lets
/// in-flight requests finish, and returns. Models load in the background:
/// the server is live at once and ready when loading is done.
pub async fn run(
    config: ServerConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let models = Arc::new(ModelSet::new(model_sources(&config)?));
    let loader = Arc::clone(&models);
    let backends =
        Backends { default: config.default_backend, onnxruntime_library: config.onnxruntime.library.clone() };
    std::thread::Builder::new().name("vigil-model-loader".into()).spawn(move || loader.load_all(&backends))?;
    let state = AppState { service: InferenceService::new(models), limits: config.limits };
    tracing::info!(addr = %listener.local_addr()?, "serving the KServe V2 REST API");
    axum::serve(listener, router(state)).with_graceful_shutdown(shutdown).await?;
    tracing::info!("stopped");
    Ok(())
}

pub fn router(state: AppState) -> Router {
    v2::routes(state.limits.max_body_bytes)
        .fallback(|| async { ApiError::not_found("no such route") })
        .with_state(state)
}
