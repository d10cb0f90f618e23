//! Command-line arguments and the layered configuration:
//! flag > environment (`VIGIL_*`) > `vigil.toml` > default.

use clap::{Args, Parser, Subcommand, ValueEnum};
use figment::Figment;
use figment::providers::{Format, Serialized, Toml};
use serde::Serialize;
use std::net::SocketAddr;
use std::path::PathBuf;
use vigil_server::ServerConfig;

use crate::client::{ClientArgs, EndpointsCommand, ModelsCommand};
use crate::client_security::{AuditCommand, KeysCommand, SecretsCommand};

#[derive(Parser, Debug)]
#[command(name = "vigil", version, about = "Serve, version, secure and watch ML models")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the model server (KServe V2 REST and gRPC, the /api/v1 control plane).
    Serve(Box<ServeArgs>),
    /// Register, list, show and delete model versions; move aliases (calls a running server).
    Models {
        #[command(flatten)]
        client: ClientArgs,
        #[command(subcommand)]
        command: ModelsCommand,
    },
    /// Set endpoints' traffic, list revisions, roll back, export and apply (calls a running server).
    Endpoints {
        #[command(flatten)]
        client: ClientArgs,
        #[command(subcommand)]
        command: EndpointsCommand,
    },
    /// Create, list, revoke and rotate API keys (Owner; calls a running server).
    Keys {
        #[command(flatten)]
        client: ClientArgs,
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Set, get, list and delete encrypted secrets (Owner; calls a running server).
    Secrets {
        #[command(flatten)]
        client: ClientArgs,
        #[command(subcommand)]
        command: SecretsCommand,
    },
    /// List audit events and verify the hash chain (Owner; calls a running server).
    Audit {
        #[command(flatten)]
        client: ClientArgs,
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Tail or export an endpoint's prediction log (Contributor; calls a running server).
    Predictions {
        #[command(flatten)]
        client: ClientArgs,
        #[command(subcommand)]
        command: crate::client_predictions::PredictionsCommand,
    },
    /// Attach a reference profile from training data; show an endpoint's drift (calls a running server).
    Monitor {
        #[command(flatten)]
        client: ClientArgs,
        #[command(subcommand)]
        command: crate::client_monitor::MonitorCommand,
    },
}

/// Every key can come from a flag, a `VIGIL_*` variable (nested keys joined by
/// `__`, e.g. `VIGIL_LIMITS__MAX_BODY_BYTES`) or `vigil.toml` (`[limits]
/// max_body_bytes = …`); a flag beats the variable, which beats the file.
#[derive(Args, Debug, Default, Serialize)]
#[command(after_help = CONFIG_HELP)]
pub struct ServeArgs {
    /// TOML file with any of the keys below.
    #[arg(long, env = "VIGIL_CONFIG", value_name = "FILE")]
    #[serde(skip)]
    pub config: Option<PathBuf>,

    /// Address of the V2 REST API [default: 127.0.0.1:8080].
    #[arg(long, env = "VIGIL_ADDR")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub addr: Option<SocketAddr>,

    /// Address of the V2 gRPC API [default: 127.0.0.1:8081].
    #[arg(long, env = "VIGIL_GRPC_ADDR")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grpc_addr: Option<SocketAddr>,

    /// Model repository: DIR/<model>/<version>/model.onnx, optional DIR/<model>/config.toml.
    #[arg(long, env = "VIGIL_MODEL_REPOSITORY", value_name = "DIR")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model_repository: Option<PathBuf>,

    /// Serve the built-in demo models (breast_cancer, digits_cnn).
    #[arg(long, env = "VIGIL_DEMO", num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub demo: Option<bool>,

    /// Where the embedded defaults keep state (vigil.db, artifacts/) [default: vigil-data].
    #[arg(long, env = "VIGIL_DATA_DIR", value_name = "DIR")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,

    /// Metadata store: postgres://… (shared by replicas) or sqlite://PATH [default: DATA_DIR/vigil.db].
    #[arg(long, env = "VIGIL_DATABASE_URL", value_name = "URL")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database_url: Option<String>,

    /// Artifact store: s3://bucket/prefix, az://container/prefix or a directory
    /// [default: DATA_DIR/artifacts]. Credentials from AWS_* / AZURE_* variables.
    #[arg(long, env = "VIGIL_ARTIFACT_STORE", value_name = "URL")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub artifact_store: Option<String>,

    /// How often to look for registry changes made through other replicas, in ms [default: 500].
    #[arg(long, env = "VIGIL_SYNC_INTERVAL_MS", value_name = "MS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sync_interval_ms: Option<u64>,

    /// Backend for models whose config says `auto`: auto (ONNX Runtime when it loads, else tract),
    /// onnxruntime or tract [default: auto].
    #[arg(long, env = "VIGIL_DEFAULT_BACKEND", value_name = "BACKEND")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default_backend: Option<Backend>,

    #[command(flatten)]
    pub onnxruntime: OnnxRuntimeArgs,

    #[command(flatten)]
    pub prediction_log: PredictionLogArgs,

    #[command(flatten)]
    pub limits: LimitArgs,

    #[command(flatten)]
    pub security: SecurityArgs,

    #[command(flatten)]
    pub tls: TlsArgs,

    /// Serve plain HTTP on a non-loopback address (TLS terminated in front, e.g. by an ingress).
    #[arg(long, env = "VIGIL_INSECURE_NO_TLS", num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub insecure_no_tls: Option<bool>,

    /// Also serve /metrics here, without authentication (for a scrape port only monitoring reaches).
    #[arg(long, env = "VIGIL_METRICS_ADDR", value_name = "ADDR")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics_addr: Option<SocketAddr>,

    /// Export traces over OTLP/HTTP (protobuf) to this collector, e.g. http://127.0.0.1:4318.
    #[arg(long, env = "VIGIL_OTLP_ENDPOINT", value_name = "URL")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub otlp_endpoint: Option<String>,

    /// Share of traces sampled when the caller's traceparent did not decide [default: 1.0].
    #[arg(long, env = "VIGIL_TRACE_SAMPLE_RATIO", value_name = "RATIO")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trace_sample_ratio: Option<f64>,

    /// After SIGINT/SIGTERM, seconds that requests in flight may still take [default: 30].
    #[arg(long, env = "VIGIL_SHUTDOWN_GRACE_SECONDS", value_name = "SECONDS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shutdown_grace_seconds: Option<u64>,

    /// Log format [default: text].
    #[arg(long, env = "VIGIL_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    #[serde(skip)]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    Auto,
    Onnxruntime,
    Tract,
}

#[derive(Args, Debug, Default, Serialize)]
pub struct OnnxRuntimeArgs {
    /// ONNX Runtime library (libonnxruntime.so.*) [default: ORT_DYLIB_PATH, else pip's onnxruntime].
    #[arg(long = "onnxruntime-library", env = "VIGIL_ONNXRUNTIME__LIBRARY", value_name = "FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub library: Option<PathBuf>,
}

#[derive(Args, Debug, Default, Serialize)]
pub struct PredictionLogArgs {
    /// Where the prediction log is kept: metadata (the metadata store), artifacts (the artifact
    /// store), or s3://…, az://… or a directory [default: metadata].
    #[arg(long = "prediction-log-store", env = "VIGIL_PREDICTION_LOG__STORE", value_name = "WHERE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub store: Option<String>,

    #[command(flatten)]
    #[serde(skip_serializing_if = "DefaultLoggingArgs::is_empty")]
    pub default: DefaultLoggingArgs,
}

#[derive(Args, Debug, Default, Serialize)]
pub struct DefaultLoggingArgs {
    /// Share of requests recorded for endpoints whose policy sets no logging (the demo, a
    /// repository), in [0, 1] [default: 0].
    #[arg(
        long = "prediction-log-sample-rate",
        env = "VIGIL_PREDICTION_LOG__DEFAULT__SAMPLE_RATE",
        value_name = "RATE"
    )]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sample_rate: Option<f64>,
}

impl DefaultLoggingArgs {
    fn is_empty(&self) -> bool {
        self.sample_rate.is_none()
    }
}

#[derive(Args, Debug, Default, Serialize)]
pub struct LimitArgs {
    /// Largest request body in bytes; larger gets 413 [default: 67108864 = 64 MiB].
    #[arg(long, env = "VIGIL_LIMITS__MAX_BODY_BYTES", value_name = "BYTES")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_body_bytes: Option<usize>,

    /// Most elements in one input tensor; more gets 400 [default: 16777216].
    #[arg(long, env = "VIGIL_LIMITS__MAX_TENSOR_ELEMENTS", value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_tensor_elements: Option<usize>,

    /// A request head must arrive within this many ms, else the connection closes [default: 10000].
    #[arg(long, env = "VIGIL_LIMITS__HEADER_TIMEOUT_MS", value_name = "MS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub header_timeout_ms: Option<u64>,

    /// Largest request head in bytes; larger gets 431 [default: 65536].
    #[arg(long, env = "VIGIL_LIMITS__MAX_HEADER_BYTES", value_name = "BYTES")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_header_bytes: Option<usize>,

    /// A request body must arrive within this many ms of its head, else 408 [default: 60000].
    #[arg(long, env = "VIGIL_LIMITS__BODY_TIMEOUT_MS", value_name = "MS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body_timeout_ms: Option<u64>,

    /// Bytes of request bodies and unpacked packages held at once; past it 503 [default: 536870912].
    #[arg(long, env = "VIGIL_LIMITS__MAX_INFLIGHT_BYTES", value_name = "BYTES")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_inflight_bytes: Option<u64>,

    /// Most nodes in a model's graph; bigger models are refused at push and load [default: 50000].
    #[arg(long, env = "VIGIL_LIMITS__MAX_MODEL_NODES", value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_model_nodes: Option<usize>,

    /// Loading and warming one model version may take this many ms, else it fails [default: 120000].
    #[arg(long, env = "VIGIL_LIMITS__LOAD_TIMEOUT_MS", value_name = "MS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub load_timeout_ms: Option<u64>,
}

#[derive(Args, Debug, Default, Serialize)]
pub struct TlsArgs {
    /// TLS certificate chain (PEM) for both APIs; reloaded when the file changes.
    #[arg(long = "tls-cert-file", env = "VIGIL_TLS__CERT_FILE", value_name = "FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<PathBuf>,

    /// The certificate's private key (PEM).
    #[arg(long = "tls-key-file", env = "VIGIL_TLS__KEY_FILE", value_name = "FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,

    /// Accept client certificates from this CA (mTLS; roles in [[security.client_certificates]]).
    #[arg(long = "tls-client-ca-file", env = "VIGIL_TLS__CLIENT_CA_FILE", value_name = "FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_ca_file: Option<PathBuf>,
}

#[derive(Args, Debug, Default, Serialize)]
pub struct SecurityArgs {
    /// On the first start, write the new Owner key to this file (mode 0600) instead of printing it.
    #[arg(long, env = "VIGIL_SECURITY__BOOTSTRAP_KEY_FILE", value_name = "FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bootstrap_key_file: Option<PathBuf>,

    /// Secrets master key (64 hex digits) [default: VIGIL_MASTER_KEY, else DATA_DIR/master.key, created].
    #[arg(long, env = "VIGIL_SECURITY__MASTER_KEY_FILE", value_name = "FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub master_key_file: Option<PathBuf>,

    /// Requests per second per principal; more get 429 [default: 0 = no limit].
    #[arg(long, env = "VIGIL_SECURITY__REQUESTS_PER_SECOND", value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requests_per_second: Option<u32>,

    /// Failed authentications per minute per client address [default: 30].
    #[arg(long, env = "VIGIL_SECURITY__AUTH_FAILURES_PER_MINUTE", value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth_failures_per_minute: Option<u32>,

    /// Proxies (IPs or CIDRs, comma-separated) whose X-Forwarded-For names the client.
    #[arg(long, env = "VIGIL_SECURITY__TRUSTED_PROXIES", value_delimiter = ',', value_name = "CIDRS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trusted_proxies: Option<Vec<String>>,

    /// Origins allowed to call from browsers (CORS), comma-separated [default: none].
    #[arg(long, env = "VIGIL_SECURITY__CORS_ORIGINS", value_delimiter = ',', value_name = "ORIGINS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cors_origins: Option<Vec<String>>,

    /// Also write every audit event to stdout as a JSON line (for a SIEM).
    #[arg(long, env = "VIGIL_SECURITY__AUDIT_STDOUT", num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audit_stdout: Option<bool>,
}

#[derive(Debug, Clone, Copy, Default, ValueEnum, Serialize)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

const CONFIG_HELP: &str = "\
Configuration file keys (vigil.toml), with their variables:
  addr = \"127.0.0.1:8080\"           VIGIL_ADDR
  grpc_addr = \"127.0.0.1:8081\"      VIGIL_GRPC_ADDR
  model_repository = \"models\"        VIGIL_MODEL_REPOSITORY
  demo = false                        VIGIL_DEMO
  data_dir = \"vigil-data\"             VIGIL_DATA_DIR
  database_url = \"postgres://…\"       VIGIL_DATABASE_URL (default: sqlite in data_dir)
  artifact_store = \"s3://bucket/p\"    VIGIL_ARTIFACT_STORE (default: data_dir/artifacts)
  sync_interval_ms = 500              VIGIL_SYNC_INTERVAL_MS
  default_backend = \"auto\"            VIGIL_DEFAULT_BACKEND
  shutdown_grace_seconds = 30         VIGIL_SHUTDOWN_GRACE_SECONDS
  insecure_no_tls = false             VIGIL_INSECURE_NO_TLS (needed for plain HTTP off loopback)
  metrics_addr = \"0.0.0.0:9464\"      VIGIL_METRICS_ADDR (/metrics only, no authentication)
  otlp_endpoint = \"http://c:4318\"    VIGIL_OTLP_ENDPOINT (OTLP/HTTP traces)
  trace_sample_ratio = 1.0            VIGIL_TRACE_SAMPLE_RATIO (when traceparent does not decide)
  [prediction_log]
  store = \"metadata\"                  VIGIL_PREDICTION_LOG__STORE (or \"artifacts\", s3://…, az://…, a directory)
  buffer = 10000                      (records waiting to be written; more are dropped and counted)
  buffer_bytes = 268435456            (the same bound in bytes, for large inputs such as images)
  [prediction_log.default]            (endpoints whose policy sets no `logging`: the demo, a repository)
  sample_rate = 0.0                   VIGIL_PREDICTION_LOG__DEFAULT__SAMPLE_RATE
  redact = [{ input = \"ssn\", action = \"drop\" }]   (or \"hash\": HMAC under a key from the master key)
  retention_hours = 168   max_bytes = 1073741824
  [monitoring]
  window_seconds = 60                 (drift windows, counted per replica, stored, merged when read)
  feedback_horizon_hours = 168        (ground truth joins predictions logged at most this long ago)
  retention_days = 30                 (stored windows and ground truth older than this are deleted)
  [onnxruntime]
  library = \"/path/libonnxruntime.so\" VIGIL_ONNXRUNTIME__LIBRARY (else ORT_DYLIB_PATH)
  [limits]
  max_body_bytes = 67108864           VIGIL_LIMITS__MAX_BODY_BYTES
  max_tensor_elements = 16777216      VIGIL_LIMITS__MAX_TENSOR_ELEMENTS
  header_timeout_ms = 10000           VIGIL_LIMITS__HEADER_TIMEOUT_MS
  max_header_bytes = 65536            VIGIL_LIMITS__MAX_HEADER_BYTES
  body_timeout_ms = 60000             VIGIL_LIMITS__BODY_TIMEOUT_MS (the whole body, else 408)
  max_inflight_bytes = 536870912      VIGIL_LIMITS__MAX_INFLIGHT_BYTES (bodies and unpacked packages held at once)
  max_model_nodes = 50000             VIGIL_LIMITS__MAX_MODEL_NODES (bigger graphs are refused)
  load_timeout_ms = 120000            VIGIL_LIMITS__LOAD_TIMEOUT_MS (one version's load and warm-up)
  [tls]
  cert_file = \"server.pem\"           VIGIL_TLS__CERT_FILE (with key_file: HTTPS and gRPC over TLS)
  key_file = \"server.key\"            VIGIL_TLS__KEY_FILE
  client_ca_file = \"ca.pem\"          VIGIL_TLS__CLIENT_CA_FILE (mTLS)
  require_client_cert = false
  reload_interval_ms = 5000           (certificate files are re-read when they change)
  [security]
  bootstrap_key_file = \"owner.key\"    VIGIL_SECURITY__BOOTSTRAP_KEY_FILE (first start: else printed)
  master_key_file = \"master.key\"      VIGIL_SECURITY__MASTER_KEY_FILE (else VIGIL_MASTER_KEY, else data_dir)
  previous_master_key_files = []      (keys before a rotation; then `vigil secrets rewrap`)
  requests_per_second = 0             VIGIL_SECURITY__REQUESTS_PER_SECOND (0 = no limit)
  burst = 0                           (requests above the rate at once; at least the rate)
  auth_failures_per_minute = 30       VIGIL_SECURITY__AUTH_FAILURES_PER_MINUTE
  trusted_proxies = []                VIGIL_SECURITY__TRUSTED_PROXIES
  cors_origins = []                   VIGIL_SECURITY__CORS_ORIGINS
  audit_stdout = false                VIGIL_SECURITY__AUDIT_STDOUT
  [[security.client_certificates]]    (mTLS: a certificate's common name bound to a role)
  common_name = \"billing\"  role = \"predictor\"  scope = \"endpoint:fraud\"
Logging: RUST_LOG (e.g. info, vigil_server=debug; vigil::request=off drops the per-request lines),
--log-format text|json.";

impl ServeArgs {
    /// Defaults, then the file, then flags and variables (clap has already let a
    /// flag win over its variable).
    pub fn resolve(&self) -> anyhow::Result<ServerConfig> {
        let mut figment = Figment::from(Serialized::defaults(ServerConfig::default()));
        if let Some(path) = &self.config {
            if !path.is_file() {
                anyhow::bail!("config file {} does not exist", path.display());
            }
            figment = figment.merge(Toml::file_exact(path));
        }
        Ok(figment.merge(Serialized::defaults(self)).extract()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> ServeArgs {
        let mut all = vec!["vigil", "serve"];
        all.extend_from_slice(args);
        match Cli::try_parse_from(all).unwrap().command {
            Command::Serve(a) => *a,
            _ => unreachable!(),
        }
    }

    /// A fresh directory holding `vigil.toml` with `text`: the directory and the file.
    fn config_file(tag: &str, text: &str) -> (std::path::PathBuf, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!("vigil-cli-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("vigil.toml");
        std::fs::write(&file, text).unwrap();
        (dir, file)
    }

    #[test]
    fn defaults_apply_without_anything() {
        let c = ServeArgs::default().resolve().unwrap();
        assert_eq!(c, ServerConfig::default());
        assert_eq!(c.addr.to_string(), "127.0.0.1:8080");
        assert_eq!(c.limits.max_body_bytes, 64 << 20);
    }

    #[test]
    fn flags_beat_the_file_which_beats_defaults() {
        let (dir, file) = config_file(
            "flags",
            "addr = '0.0.0.0:9000'\ndemo = true\n[limits]\nmax_body_bytes = 10\nmax_tensor_elements = 5\n",
        );
        let path = file.to_str().unwrap();

        let from_file = parse(&["--config", path]).resolve().unwrap();
        assert_eq!(from_file.addr.to_string(), "0.0.0.0:9000");
        assert!(from_file.demo);
        assert_eq!(from_file.limits.max_body_bytes, 10);

        let flagged = parse(&["--config", path, "--addr", "127.0.0.1:1", "--max-body-bytes", "20", "--demo=false"])
            .resolve()
            .unwrap();
        assert_eq!(flagged.addr.to_string(), "127.0.0.1:1");
        assert_eq!(flagged.limits.max_body_bytes, 20);
        assert_eq!(flagged.limits.max_tensor_elements, 5, "keys without a flag keep the file's value");
        assert!(!flagged.demo);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn prediction_log_flags_merge_into_the_files_section() {
        let (dir, file) =
            config_file("log", "[prediction_log]\nbuffer = 5\n[prediction_log.default]\nsample_rate = 0.1\n");
        let path = file.to_str().unwrap();
        let c = parse(&["--config", path, "--prediction-log-store", "s3://b/p", "--prediction-log-sample-rate", "0.5"])
            .resolve()
            .unwrap();
        assert_eq!(c.prediction_log.store.as_deref(), Some("s3://b/p"));
        assert_eq!(c.prediction_log.buffer, 5);
        assert_eq!(c.prediction_log.default.sample_rate, 0.5);
        assert_eq!(c.prediction_log.default.retention_hours, 168);
        assert_eq!(parse(&["--config", path]).resolve().unwrap().prediction_log.default.sample_rate, 0.1);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn bad_files_are_clear_errors() {
        let (dir, file) = config_file("bad", "adr = '0.0.0.0:9000'\n");
        let err = parse(&["--config", file.to_str().unwrap()]).resolve().unwrap_err().to_string();
        assert!(err.contains("adr"), "{err}");
        std::fs::write(&file, "addr = 'not an address'\n").unwrap();
        assert!(parse(&["--config", file.to_str().unwrap()]).resolve().is_err());
        let missing = parse(&["--config", "/no/such/vigil.toml"]).resolve().unwrap_err().to_string();
        assert!(missing.contains("does not exist"), "{missing}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
