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
    pub security: SecurityConfig,
    /// Serve plain HTTP and gRPC on an address other than loopback. Without
    /// it, the server refuses to start that way: credentials would cross the
    /// network in the clear.
    pub insecure_no_tls: bool,
    pub tls: TlsConfig,
    /// After SIGTERM, how long requests in flight may take before they are cut.
    pub shutdown_grace_seconds: u64,
    /// Also serve `/metrics` here, without authentication (a scrape port that
    /// only the monitoring network reaches; it exposes no model data).
    pub metrics_addr: Option<SocketAddr>,
    /// Export traces over OTLP/HTTP to this collector (`http://host:4318`).
    pub otlp_endpoint: Option<String>,
    /// Share of traces sampled when the caller did not decide (`traceparent`).
    pub trace_sample_ratio: f64,
    pub prediction_log: PredictionLogConfig,
    pub alerts: crate::alerting::AlertsConfig,
    pub monitoring: crate::monitoring::MonitoringConfig,
}

/// The prediction log: where it is kept, its buffer, and the logging of
/// endpoints that set none.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PredictionLogConfig {
    /// `metadata` (the default): rows of the metadata store, readable within
    /// a second. `artifacts`: objects in the artifact store. Or an object
    /// store of its own: `s3://bucket/prefix`, `az://container/prefix` or a
    /// directory. Objects hold up to 4096 records each and are written every
    /// 10 s: for volumes a database should not hold.
    pub store: Option<String>,
    /// Records waiting to be written; beyond this they are dropped and counted.
    pub buffer: usize,
    /// Their bytes (encoded, as stored): the bound for large inputs, such as images.
    pub buffer_bytes: usize,
    /// For the demo, a model repository, and registry endpoints whose policy
    /// has no `logging` (sample_rate 0, the default, is off).
    pub default: vigil_core::predictions::PredictionLogging,
}

impl Default for PredictionLogConfig {
    fn default() -> Self {
        PredictionLogConfig {
            store: None,
            buffer: crate::predictions::DEFAULT_BUFFER,
            buffer_bytes: crate::predictions::DEFAULT_BUFFER_BYTES,
            default: Default::default(),
        }
    }
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
            security: SecurityConfig::default(),
            insecure_no_tls: false,
            tls: TlsConfig::default(),
            shutdown_grace_seconds: 30,
            metrics_addr: None,
            otlp_endpoint: None,
            trace_sample_ratio: 1.0,
            prediction_log: PredictionLogConfig::default(),
            monitoring: crate::monitoring::MonitoringConfig::default(),
            alerts: Default::default(),
        }
    }
}

impl ServerConfig {
    /// Where the prediction log goes: `None` for the metadata store, else an
    /// object store's location (`artifacts` resolved).
    pub fn prediction_log_location(&self) -> Option<String> {
        match self.prediction_log.store.as_deref() {
            None | Some("metadata") => None,
            Some("artifacts") => Some(self.artifact_location()),
            Some(other) => Some(other.to_owned()),
        }
    }

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
    /// A client must send a whole request head within this many milliseconds
    /// of starting it, else the connection is closed (slow-client attacks).
    pub header_timeout_ms: u64,
    /// Largest request head (request line and headers) in bytes; larger gets 431.
    pub max_header_bytes: usize,
    /// A client must send a whole request body within this many milliseconds
    /// of the head, else it gets 408 and the connection is closed.
    pub body_timeout_ms: u64,
    /// Request bodies and package uploads being read or unpacked, all
    /// together, in bytes; past it a request gets 503 (retry shortly).
    pub max_inflight_bytes: u64,
    /// Most nodes in a model's graph; bigger models fail to register and load.
    pub max_model_nodes: usize,
    /// How long loading and warming one model version may take, in milliseconds.
    pub load_timeout_ms: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: 64 * 1024 * 1024,
            max_tensor_elements: 16 * 1024 * 1024,
            header_timeout_ms: 10_000,
            max_header_bytes: 64 * 1024,
            body_timeout_ms: 60_000,
            max_inflight_bytes: 512 * 1024 * 1024,
            max_model_nodes: 50_000,
            load_timeout_ms: 120_000,
        }
    }
}

/// TLS for both APIs, from PEM files (read again when they change).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// The certificate chain (PEM).
    pub cert_file: Option<PathBuf>,
    /// Its private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key_file: Option<PathBuf>,
    /// Accept client certificates signed by this CA (mTLS); a certificate's
    /// common name is bound to a role in `security.client_certificates`.
    pub client_ca_file: Option<PathBuf>,
    /// Refuse connections without a client certificate (else a bearer token will do).
    pub require_client_cert: bool,
    /// How often to look for new certificate files, in milliseconds.
    pub reload_interval_ms: u64,
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig {
            cert_file: None,
            key_file: None,
            client_ca_file: None,
            require_client_cert: false,
            reload_interval_ms: 5000,
        }
    }
}

/// Authentication, rate limits and the secrets vault.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SecurityConfig {
    /// On the first start (no keys in the store), write the new Owner key to
    /// this file (mode 0600) instead of printing it.
    pub bootstrap_key_file: Option<PathBuf>,
    /// The secrets vault's master key: a file holding 64 hex digits. Else the
    /// `VIGIL_MASTER_KEY` variable; else `DATA_DIR/master.key`, created on the
    /// first start (back it up: secrets cannot be read without it).
    pub master_key_file: Option<PathBuf>,
    /// Master keys from before a rotation: secrets they sealed still open, and
    /// `POST /api/v1/secrets/rewrap` moves them to the current key.
    pub previous_master_key_files: Vec<PathBuf>,
    /// Requests per second per principal (a GCRA bucket); more get 429 with
    /// `Retry-After`. 0 (the default) = no limit: a throttle is a capacity
    /// decision, and a default one would cut legitimate load; key guessing is
    /// limited separately, always.
    pub requests_per_second: u32,
    /// How many requests a principal may send at once above the rate (at least the rate).
    pub burst: u32,
    /// Failed authentications per minute per client address; more get 429.
    pub auth_failures_per_minute: u32,
    /// Proxies (IPs or CIDRs) whose `X-Forwarded-For` names the client.
    /// Anyone else's is ignored.
    pub trusted_proxies: Vec<String>,
    /// Origins allowed to call from a browser (CORS). None by default.
    pub cors_origins: Vec<String>,
    /// Also write every audit event as a JSON line on stdout (for a SIEM).
    pub audit_stdout: bool,
    /// Roles for client certificates (mTLS), by common name.
    pub client_certificates: Vec<CertificateBinding>,
    /// Bearer tokens from an OIDC issuer (Entra ID, Keycloak, …), besides API keys.
    pub oidc: Option<vigil_security::OidcConfig>,
}

/// A client certificate's common name bound to a role on a scope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertificateBinding {
    pub common_name: String,
    pub role: vigil_core::security::Role,
    /// `*` (default), `endpoint:NAME` or `model:NAME`.
    #[serde(default = "everything")]
    pub scope: vigil_core::security::Scope,
}

fn everything() -> vigil_core::security::Scope {
    vigil_core::security::Scope::Global
}

impl Default for SecurityConfig {
    fn default() -> Self {
        SecurityConfig {
            bootstrap_key_file: None,
            master_key_file: None,
            previous_master_key_files: Vec::new(),
            requests_per_second: 0,
            burst: 0,
            auth_failures_per_minute: 30,
            trusted_proxies: Vec::new(),
            cors_origins: Vec::new(),
            audit_stdout: false,
            client_certificates: Vec::new(),
            oidc: None,
        }
    }
}
