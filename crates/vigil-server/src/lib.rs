//! Vigil's protocol adapters: the KServe V2 REST API over axum. Handlers are thin:
//! they decode, call [`vigil_runtime::InferenceService`], and encode.
#![forbid(unsafe_code)]

mod config;
mod error;
mod grpc;
mod protocol;
mod v2;

pub use config::{Limits, OnnxRuntimeConfig, ServerConfig};
pub use error::ApiError;

use axum::Router;
use axum::http::StatusCode;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::transport::server::TcpIncoming;
use tower_http::decompression::RequestDecompressionLayer;
use vigil_runtime::models::{LoadSettings, ModelSet};
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
    #[error("gRPC server: {0}")]
    Grpc(#[from] tonic::transport::Error),
}

/// Where to serve: V2 REST, and V2 gRPC if given.
pub struct Listeners {
    pub http: TcpListener,
    pub grpc: Option<TcpListener>,
}

/// The model versions a configuration asks for: the demo, a repository, or both.
pub fn model_sources(config: &ServerConfig) -> Result<Vec<ModelSource>, ServerError> {
    if !config.demo && config.model_repository.is_none() {
        return Err(ServerError::Config("nothing to serve: give --model-repository DIR or --demo".into()));
    }
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
    Ok(sources)
}

/// Serves on `listeners` until `shutdown` completes, then stops accepting and lets
/// in-flight requests finish, for at most `shutdown_grace_seconds`, and returns.
/// Connections still open when the grace period ends are closed when the tokio
/// runtime is dropped (the binary exits right after `run`; an embedder must drop
/// its runtime too).
/// Models load in the background: the server is live at once and ready when
/// loading is done.
pub async fn run(
    config: ServerConfig,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let models = Arc::new(ModelSet::new(model_sources(&config)?));
    let loader = Arc::clone(&models);
    let settings = LoadSettings {
        default_backend: config.default_backend,
        onnxruntime_library: config.onnxruntime.library.clone(),
        max_tensor_elements: config.limits.max_tensor_elements,
    };
    std::thread::Builder::new().name("vigil-model-loader".into()).spawn(move || loader.load_all(&settings))?;
    let state = AppState { service: InferenceService::new(models), limits: config.limits };

    let (stop, stopping) = watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop.send(true);
    });
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    tracing::info!(addr = %listeners.http.local_addr()?, "serving the KServe V2 REST API");
    let http = axum::serve(listeners.http, router(state.clone())).with_graceful_shutdown(stopped(stopping.clone()));
    let grpc = match listeners.grpc {
        Some(listener) => {
            tracing::info!(grpc_addr = %listener.local_addr()?, "serving the KServe V2 gRPC API");
            Some(
                tonic::transport::Server::builder()
                    .add_service(grpc::service(state))
                    .serve_with_incoming_shutdown(TcpIncoming::from(listener), stopped(stopping.clone())),
            )
        }
        None => None,
    };
    let serve = async {
        let grpc = async {
            match grpc {
                Some(server) => server.await.map_err(ServerError::from),
                None => Ok(()),
            }
        };
        tokio::try_join!(async { http.await.map_err(ServerError::from) }, grpc).map(|_| ())
    };
    let grace = Duration::from_secs(config.shutdown_grace_seconds);
    let deadline = async move {
        stopped(stopping).await;
        tokio::time::sleep(grace).await;
    };
    tokio::select! {
        served = serve => served?,
        () = deadline => tracing::warn!(seconds = grace.as_secs(), "requests still in flight after the shutdown grace period: closing them"),
    }
    tracing::info!("stopped");
    Ok(())
}

pub fn router(state: AppState) -> Router {
    v2::routes(state.limits.max_body_bytes)
        .fallback(|| async { ApiError::no_route(StatusCode::NOT_FOUND, "no such route") })
        .method_not_allowed_fallback(|| async {
            ApiError::no_route(StatusCode::METHOD_NOT_ALLOWED, "this route does not take that method")
        })
        .with_state(state)
        // gzip/deflate request bodies (tritonclient's request compression); the
        // body limit applies to the decompressed size.
        .layer(RequestDecompressionLayer::new())
}
