//! Vigil's server: the KServe V2 REST (axum) and gRPC (tonic) data plane, the
//! `/api/v1` control plane over the registry, and the deployer that keeps what
//! is served in line with the registry. Handlers are thin: they decode, call
//! the services, and encode.
#![forbid(unsafe_code)]

pub mod alerting;
pub mod api;
mod api_observe;
mod api_security;
mod config;
pub mod deploy;
pub(crate) mod error;
pub mod feedback;
mod grpc;
pub mod guard;
pub mod json_log;
pub mod load_journal;
pub mod log_writer;
pub mod metrics;
pub mod monitoring;
pub mod permissions;
pub mod predictions;
mod protocol;
mod records;
pub mod registry;
pub mod request_limits;
pub mod security;
pub mod serve;
pub mod telemetry;
pub mod tls;
pub mod traces;
mod v2;

pub use config::{
    CertificateBinding, Limits, OnnxRuntimeConfig, PredictionLogConfig, SecurityConfig, ServerConfig, TlsConfig,
};
pub use error::ApiError;
pub(crate) use error::vigil_error;

use axum::Router;
use axum::http::StatusCode;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::transport::server::TcpIncoming;
use tower_http::decompression::RequestDecompressionLayer;
use vigil_core::budget::MemoryBudget;
use vigil_runtime::models::{LoadSettings, ModelSet};
use vigil_runtime::{InferenceService, ModelSource, demo, repository};
use vigil_store::ArtifactStore;
use vigil_store::package::PackageLimits;

use crate::api::ControlPlane;
use crate::deploy::Deployer;
use crate::registry::Registry;

/// What the data-plane handlers share.
#[derive(Clone)]
pub struct AppState {
    pub service: InferenceService,
    pub limits: Limits,
    /// With a registry, readiness also waits for its first sync.
    pub deployer: Option<Arc<Deployer>>,
    /// Metrics, logs, traces and the prediction log of answered requests.
    pub telemetry: Arc<telemetry::Telemetry>,
}

impl AppState {
    /// Ready to take traffic: models loaded (see `ModelSet::ready`) and the
    /// registry's endpoints synced once.
    pub fn ready(&self) -> bool {
        self.deployer.as_ref().is_none_or(|d| d.synced_once()) && self.service.ready()
    }
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
    /// `/metrics` alone, unauthenticated (`metrics_addr`).
    pub metrics: Option<TcpListener>,
}

/// The read-only model versions a configuration asks for: the demo, a
/// repository, both, or neither (then everything comes from the registry).
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
    Ok(sources)
}

/// Plain HTTP off loopback sends keys in the clear: refused unless the
/// configuration says so (TLS is terminated in front of the server).
fn check_transport(config: &ServerConfig, listeners: &Listeners, tls: bool) -> Result<(), ServerError> {
    if tls || config.insecure_no_tls {
        return Ok(());
    }
    let addrs = std::iter::once(&listeners.http).chain(listeners.grpc.as_ref()).map(TcpListener::local_addr);
    for addr in addrs {
        let addr = addr?;
        if !addr.ip().is_loopback() {
            return Err(ServerError::Config(format!(
                "refusing to serve plain HTTP on {addr}, which is not a loopback address: API keys would cross \
                 the network in the clear. Terminate TLS in front of Vigil and pass --insecure-no-tls, or bind 127.0.0.1"
            )));
        }
    }
    Ok(())
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
    security::refuse_early_references(&config)?;
    config
        .prediction_log
        .default
        .validate()
        .map_err(|e| ServerError::Config(format!("prediction_log.default: {e}")))?;
    let tls = tls::Tls::open(&config.tls)?;
    check_transport(&config, &listeners, tls.is_some())?;
    if let Some(tls) = &tls {
        Arc::clone(tls).watch(Duration::from_millis(config.tls.reload_interval_ms.max(10)));
    }
    // The data directory holds the database, the master key and the load
    // journal: nobody else on the machine may read it.
    vigil_store::private_data_dir(&config.data_dir).map_err(|e| ServerError::Config(e.to_string()))?;
    let sources = model_sources(&config)?;
    let fixed = Arc::new(ModelSet::new(sources.clone()));
    let settings = LoadSettings {
        default_backend: config.default_backend,
        onnxruntime_library: config.onnxruntime.library.clone(),
        max_tensor_elements: config.limits.max_tensor_elements,
        max_graph_nodes: config.limits.max_model_nodes,
        load_timeout: Duration::from_millis(config.limits.load_timeout_ms),
    };
    let store = vigil_store::open_metadata(config.database_url.as_deref(), &config.data_dir)
        .await
        .map_err(|e| ServerError::Config(e.to_string()))?;
    let artifacts = ArtifactStore::open(&config.artifact_location()).map_err(|e| ServerError::Config(e.to_string()))?;
    tracing::info!(metadata = store.kind(), artifacts = artifacts.location(), "registry opened");
    let prediction_store: Arc<dyn vigil_store::PredictionStore> = match config.prediction_log_location() {
        None => Arc::clone(&store) as Arc<dyn vigil_store::PredictionStore>,
        Some(location) => {
            let objects =
                vigil_store::ObjectPredictionStore::open(&location).map_err(|e| ServerError::Config(e.to_string()))?;
            tracing::info!(location = objects.location(), "prediction log kept in an object store");
            Arc::new(objects)
        }
    };
    let security = security::Security::open(&config.security, Arc::clone(&store), &config.data_dir).await?;
    // From here on, `${secret:NAME}` in configuration values means the secret.
    let config = security.resolve_references(&config).await?;
    let service =
        InferenceService::new(Arc::clone(&fixed)).with_default_logging(Some(config.prediction_log.default.clone()));
    let deployer = Arc::new(Deployer::new(
        Arc::clone(&store),
        artifacts.clone(),
        settings.clone(),
        service.clone(),
        fixed.endpoints().cloned().collect(),
        load_journal::LoadJournal::open(&config.data_dir),
    ));
    let alerting = alerting::Alerting::new(&config.alerts, Arc::clone(&store)).map_err(ServerError::Config)?;
    if let Err(e) = alerting.reload().await {
        tracing::warn!(error = %e, "could not load the alert rules made through the API");
    }
    let monitoring = monitoring::Monitoring::new(Arc::clone(&store), &config.monitoring);
    service.set_observer(Arc::clone(&monitoring) as Arc<dyn vigil_runtime::RequestObserver>);
    tokio::spawn(Arc::clone(&monitoring).run(service.clone()));
    // Bodies being read and packages being unpacked share one memory budget.
    let budget = MemoryBudget::new(config.limits.max_inflight_bytes);
    let control = Arc::new(ControlPlane {
        registry: Registry {
            budget: Arc::clone(&budget),
            store,
            artifacts,
            reserved: fixed.endpoints().map(|e| e.name.clone()).collect(),
            package_limits: PackageLimits::default(),
            graph_limits: vigil_runtime::onnx::GraphLimits {
                max_nodes: config.limits.max_model_nodes,
                max_elements: config.limits.max_tensor_elements,
            },
            uploads: tokio::sync::Semaphore::new(registry::CONCURRENT_UPLOADS),
        },
        deployer: Arc::clone(&deployer),
        service: service.clone(),
        security: Arc::clone(&security),
        alerting: Arc::clone(&alerting),
        monitoring,
        predictions: Arc::clone(&prediction_store),
    });
    let importer = Arc::clone(&control);
    tokio::spawn(async move { importer.registry.import(sources).await });
    let loader = Arc::clone(&fixed);
    std::thread::Builder::new().name("vigil-model-loader".into()).spawn(move || loader.load_all(&settings))?;
    let traces = match &config.otlp_endpoint {
        Some(url) => {
            let traces = Arc::new(traces::Traces::new(url, config.trace_sample_ratio).map_err(ServerError::Config)?);
            service.shadows().set_observer(Arc::clone(&traces) as Arc<dyn vigil_runtime::ShadowObserver>);
            Some(traces)
        }
        None => None,
    };
    let predictions = predictions::PredictionLog::start(
        prediction_store,
        Arc::clone(&security.vault),
        predictions::Buffer { records: config.prediction_log.buffer, bytes: config.prediction_log.buffer_bytes },
    );
    let telemetry = Arc::new(telemetry::Telemetry {
        enabled: true,
        metrics: metrics::Metrics::default(),
        traces,
        predictions: Some(predictions),
        alerts: Some(Arc::clone(&alerting)),
        monitoring: Some(Arc::clone(&control.monitoring)),
    });
    tokio::spawn(alerting.run(Arc::clone(&telemetry), service.clone()));
    let state = AppState { service, limits: config.limits, deployer: Some(Arc::clone(&deployer)), telemetry };
    let state_telemetry = Arc::clone(&state.telemetry);

    let (stop, stopping) = watch::channel(false);
    let upkept = (Arc::clone(&state.telemetry), Arc::clone(&security));
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(5));
        loop {
            every.tick().await;
            upkept.0.metrics.upkeep();
            upkept.1.upkeep();
        }
    });
    let metrics_only = match listeners.metrics {
        Some(listener) => {
            tracing::info!(metrics_addr = %listener.local_addr()?, "serving /metrics without authentication");
            let router = Router::new().route("/metrics", axum::routing::get(v2::metrics)).with_state(state.clone());
            let limits = serve::ConnectionLimits {
                header_timeout: Duration::from_secs(10),
                max_header_bytes: 16 * 1024,
                max_headers: 64,
            };
            Some(tokio::spawn(serve::serve_http(listener, router, None, limits, stopping.clone())))
        }
        None => None,
    };
    let interval = Duration::from_millis(config.sync_interval_ms.max(10));
    // Keys created or revoked through another replica take effect here within the interval.
    let keys = Arc::clone(&security);
    tokio::spawn(async move {
        let mut every = tokio::time::interval(interval);
        loop {
            every.tick().await;
            if let Err(e) = keys.refresh().await {
                tracing::warn!(error = %e, "could not reload the API keys");
            }
        }
    });
    // Bodies (REST and gRPC) and package unpacking share one memory budget.
    let body_limits = request_limits::RequestLimits::new(&config.limits, Arc::clone(&budget));
    let guard = Arc::new(guard::Guard::new(Arc::clone(&security)).with_body_limits(Arc::clone(&body_limits)));
    tokio::spawn(Arc::clone(&deployer).watch(interval, stopping.clone()));
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop.send(true);
    });
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    tracing::info!(addr = %listeners.http.local_addr()?, tls = tls.is_some(), "serving the KServe V2 REST API");
    let control = api::routes(control, PackageLimits::default().max_total_bytes as usize);
    let app = app(state.clone(), Some((control, Arc::clone(&guard))), &config.security.cors_origins)?;
    let connection_limits = serve::ConnectionLimits {
        header_timeout: Duration::from_millis(config.limits.header_timeout_ms.max(1)),
        max_header_bytes: config.limits.max_header_bytes,
        max_headers: 128,
    };
    let http = serve::serve_http(listeners.http, app, tls.clone(), connection_limits, stopping.clone());
    let (grpc_tls, grpc_stopping) = (tls.clone(), stopping.clone());
    let grpc = async move {
        let (tls, stopping) = (grpc_tls, grpc_stopping);
        let Some(listener) = listeners.grpc else { return Ok(()) };
        tracing::info!(grpc_addr = %listener.local_addr()?, tls = tls.is_some(), "serving the KServe V2 gRPC API");
        // Adaptive flow-control windows (as gRPC's own servers use): with
        // HTTP/2's default 64 KiB, an image-sized request waits on a
        // window update every 64 KiB.
        let server = tonic::transport::Server::builder()
            .http2_keepalive_interval(Some(Duration::from_secs(60)))
            .http2_adaptive_window(Some(true))
            .layer(request_limits::GrpcLimits(body_limits))
            .add_service(grpc::service(state, guard));
        match &tls {
            Some(tls) => {
                let incoming = serve::tls_incoming(listener, tls, stopping.clone());
                server.serve_with_incoming_shutdown(incoming, stopped(stopping.clone())).await?;
            }
            None => {
                let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
                server.serve_with_incoming_shutdown(incoming, stopped(stopping.clone())).await?
            }
        }
        Ok::<_, ServerError>(())
    };
    let serve = async { tokio::try_join!(async { http.await.map_err(ServerError::from) }, grpc).map(|_| ()) };
    let grace = Duration::from_secs(config.shutdown_grace_seconds);
    let deadline = async move {
        stopped(stopping).await;
        tokio::time::sleep(grace).await;
    };
    tokio::select! {
        served = serve => served?,
        () = deadline => tracing::warn!(seconds = grace.as_secs(), "requests still in flight after the shutdown grace period: closing them"),
    }
    if let Some(metrics_only) = metrics_only {
        metrics_only.abort();
    }
    // The last prediction records, then the last spans (sent off the
    // runtime: flushing waits on the exporter).
    if let Some(log) = &state_telemetry.predictions
        && tokio::time::timeout(Duration::from_secs(10), log.flush()).await.is_err()
    {
        tracing::warn!("the prediction log did not finish storing its last records within 10 s");
    }
    let _ = tokio::task::spawn_blocking(move || state_telemetry.traces.as_ref().map(|t| t.flush())).await;
    deployer.stopped();
    tracing::info!("stopped");
    Ok(())
}

/// The V2 data plane alone, without authentication (and so without the body
/// limits the guard applies): what the in-process benchmarks drive. Never
/// serve it; `run` serves the guarded app.
pub fn router(state: AppState) -> Router {
    app(state, None, &[]).unwrap_or_default()
}

/// The V2 data plane behind the guard: what `run` serves, less the control
/// plane (for embedding, and for the benchmark of what authentication costs).
pub fn guarded_router(state: AppState, guard: Arc<guard::Guard>) -> Result<Router, ServerError> {
    app(state, Some((Router::new(), guard)), &[])
}

/// The data plane, plus the guarded control plane when given (the guard then
/// covers every route, the data plane's too).
fn app(
    state: AppState,
    control: Option<(Router, Arc<guard::Guard>)>,
    cors_origins: &[String],
) -> Result<Router, ServerError> {
    let mut router = v2::routes(state.limits.max_body_bytes).with_state(state);
    let guard = control.map(|(control, guard)| {
        router = std::mem::take(&mut router).merge(control);
        guard
    });
    router = router
        .fallback(|| async { ApiError::no_route(StatusCode::NOT_FOUND, "no such route") })
        .method_not_allowed_fallback(|| async {
            ApiError::no_route(StatusCode::METHOD_NOT_ALLOWED, "this route does not take that method")
        });
    // The guard also watches bodies (deadline, memory budget) once the caller
    // is known; it sits inside decompression, so bodies count decompressed.
    if let Some(guard) = guard {
        router = router.layer(axum::middleware::from_fn_with_state(guard, guard::guard));
    }
    // gzip/deflate request bodies (tritonclient's request compression); the
    // body limit applies to the decompressed size.
    router = router.layer(RequestDecompressionLayer::new());
    if !cors_origins.is_empty() {
        router = router.layer(cors(cors_origins)?);
    }
    Ok(router.layer(axum::middleware::from_fn(guard::security_headers)).layer(axum::middleware::from_fn(request_id)))
}

/// Browsers may call from these origins only (no CORS at all unless configured).
fn cors(origins: &[String]) -> Result<tower_http::cors::CorsLayer, ServerError> {
    use axum::http::{HeaderValue, Method, header};
    let origins = origins
        .iter()
        .map(|o| {
            HeaderValue::from_str(o)
                .map_err(|_| ServerError::Config(format!("security.cors_origins: '{o}' is not a valid origin")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(tower_http::cors::CorsLayer::new()
        .allow_origin(origins)
        .allow_methods([Method::GET, Method::POST, Method::PUT, Method::DELETE])
        .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE, REQUEST_ID])
        .expose_headers([REQUEST_ID, header::HeaderName::from_static("server-timing")]))
}

/// The header that names a request end to end.
pub const REQUEST_ID: axum::http::HeaderName = axum::http::HeaderName::from_static("x-request-id");

/// Every request has an id: the caller's `x-request-id` when it is a sane one
/// (1–128 visible ASCII characters), else a new random one. Handlers see it on
/// the request; every response, errors included, carries it back.
async fn request_id(mut request: axum::extract::Request, next: axum::middleware::Next) -> axum::response::Response {
    let value = match request.headers().get(REQUEST_ID).filter(|v| sane_request_id(v.as_bytes())) {
        Some(v) => v.clone(),
        None => {
            let id = new_request_id();
            request.headers_mut().insert(REQUEST_ID, id.clone());
            id
        }
    };
    let mut response = next.run(request).await;
    response.headers_mut().insert(REQUEST_ID, value);
    response
}

/// A caller's request id is kept when it is 1–128 visible ASCII characters.
pub(crate) fn sane_request_id(b: &[u8]) -> bool {
    !b.is_empty() && b.len() <= 128 && b.iter().all(u8::is_ascii_graphic)
}

/// 32 random lowercase hex digits.
pub(crate) fn new_request_id() -> axum::http::HeaderValue {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut n = fastrand::u128(..);
    let mut digits = [0u8; 32];
    for d in digits.iter_mut().rev() {
        *d = HEX[(n & 0xf) as usize];
        n >>= 4;
    }
    axum::http::HeaderValue::from_bytes(&digits).unwrap_or_else(|_| axum::http::HeaderValue::from_static("0"))
}
