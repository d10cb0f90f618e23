//! Where Vigil keeps its state: the metadata store (one trait, SQLite and
//! PostgreSQL behind it) and the artifact store (content-addressed blobs on a
//! local disk, S3 or Azure Blob), plus safe unpacking of pushed model packages.
#![forbid(unsafe_code)]

mod alert_sql;
pub mod artifacts;
pub mod audit_scope;
mod location;
mod monitor_sql;
pub mod package;
pub mod prediction_objects;
mod prediction_sql;
mod security_sql;
mod sql;

pub use artifacts::ArtifactStore;
pub use prediction_objects::ObjectPredictionStore;
pub use sql::{PostgresStore, SqliteStore};

use async_trait::async_trait;
use std::path::Path;
use std::sync::Arc;
use vigil_core::Error;
use vigil_core::predictions::{ChunkFilter, ChunkPolicy, StoredChunk};
use vigil_core::registry::{Alias, AliasEvent, EndpointSpec, ModelSummary, NewVersion, Revision, VersionRecord};
use vigil_core::security::{AuditEvent, KeyRecord, NewAuditEvent, SealedSecret, SecretInfo};

/// The registry's metadata. Every write is one transaction: a refused change
/// leaves nothing behind. Both implementations pass the same conformance suite
/// (`tests/it/metadata.rs`).
#[async_trait]
pub trait MetadataStore:
    SecurityStore + PredictionStore + AlertRuleStore + MonitorStore + Leadership + Send + Sync
{
    /// `sqlite` or `postgres`.
    fn kind(&self) -> &'static str;

    /// Registers a version, numbered one above the model's highest. The same
    /// artifact and manifest again returns the existing version and `false`.
    async fn register_version(&self, new: NewVersion) -> Result<(VersionRecord, bool), Error>;
    async fn list_models(&self) -> Result<Vec<ModelSummary>, Error>;
    /// Versions in ascending order; `NotFound` for an unknown model.
    async fn list_versions(&self, model: &str) -> Result<Vec<VersionRecord>, Error>;
    async fn get_version(&self, model: &str, version: u64) -> Result<VersionRecord, Error>;
    /// Refused (`Conflict`) while an endpoint's current revision uses the
    /// version or an alias points at it.
    async fn delete_version(&self, model: &str, version: u64) -> Result<(), Error>;

    /// Points `alias` at a version (creating or moving it) and records the move.
    async fn set_alias(&self, model: &str, alias: &str, version: u64, by: &str) -> Result<Alias, Error>;
    async fn delete_alias(&self, model: &str, alias: &str, by: &str) -> Result<(), Error>;
    /// A model's aliases; `NotFound` for an unknown model.
    async fn list_aliases(&self, model: &str) -> Result<Vec<Alias>, Error>;
    /// Every move of one alias, oldest first.
    async fn alias_history(&self, model: &str, alias: &str) -> Result<Vec<AliasEvent>, Error>;

    /// Makes `spec` the endpoint's policy as a new revision (creating the
    /// endpoint if needed), capturing the digest of every version it names. A
    /// spec equal to the current one makes no revision and returns the current.
    /// With `expect`, the change is refused (`Conflict`) unless the current
    /// revision is that one: a change computed from a revision cannot undo
    /// another made meanwhile.
    async fn put_endpoint(
        &self,
        name: &str,
        spec: &EndpointSpec,
        comment: &str,
        by: &str,
        expect: Option<u64>,
    ) -> Result<Revision, Error>;
    /// The current revision of every endpoint, by name.
    async fn list_endpoints(&self) -> Result<Vec<Revision>, Error>;
    /// The current revision of one endpoint.
    async fn endpoint(&self, name: &str) -> Result<Revision, Error>;
    /// Every revision of an endpoint, oldest first.
    async fn revisions(&self, name: &str) -> Result<Vec<Revision>, Error>;
    async fn delete_endpoint(&self, name: &str) -> Result<(), Error>;

    /// A number that grows with every change: replicas poll it.
    async fn generation(&self) -> Result<u64, Error>;
}

/// Seals a secret's value as the version it is given (the version is part of
/// the encryption's associated data, so it must be known first).
pub type SealFn<'a> = dyn Fn(u64) -> Result<SealedSecret, Error> + Send + Sync + 'a;

/// Which audit events to list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditFilter {
    /// Only events after this one (for paging).
    pub after_seq: u64,
    /// Only events before this one (paging newest first); 0: no bound.
    pub before_seq: u64,
    /// Newest first (what people read) instead of in chain order.
    pub newest_first: bool,
    pub principal: Option<String>,
    /// An exact action (`PUT /api/v1/endpoints/{endpoint}`) or its method (`PUT`).
    pub action: Option<String>,
    /// RFC 3339: at or after.
    pub since: Option<String>,
    /// RFC 3339: before.
    pub until: Option<String>,
    pub limit: u32,
}

impl Default for AuditFilter {
    fn default() -> Self {
        AuditFilter {
            after_seq: 0,
            before_seq: 0,
            newest_first: false,
            principal: None,
            action: None,
            since: None,
            until: None,
            limit: 1000,
        }
    }
}

/// Keys, the audit chain and sealed secrets. Key and secret changes bump the
/// generation (replicas reload their key rings); audit appends do not.
#[async_trait]
pub trait SecurityStore: Send + Sync {
    async fn create_key(&self, key: &KeyRecord) -> Result<(), Error>;
    /// Creates `key` only if there are no keys at all (the first start's Owner
    /// key; replicas starting together create one between them).
    async fn create_first_key(&self, key: &KeyRecord) -> Result<bool, Error>;
    /// Every key, revoked and expired ones included, with its hash.
    async fn list_keys(&self) -> Result<Vec<KeyRecord>, Error>;
    /// Revokes a key (idempotent) and returns it.
    async fn revoke_key(&self, id: &str, at: &str) -> Result<KeyRecord, Error>;
    /// Creates `new` and makes `old` expire at `old_expires_at` (not later
    /// than it already would), in one transaction.
    async fn rotate_key(&self, old: &str, old_expires_at: &str, new: &KeyRecord) -> Result<(), Error>;

    /// Appends an event to the hash chain.
    async fn append_audit(&self, event: NewAuditEvent) -> Result<AuditEvent, Error>;
    /// Events in chain order.
    async fn list_audit(&self, filter: &AuditFilter) -> Result<Vec<AuditEvent>, Error>;
    /// The number and hash of the last event appended; `None` when the head
    /// row is missing or unreadable (tampering, which verification reports).
    async fn audit_head(&self) -> Result<Option<(u64, String)>, Error>;

    /// Stores a new version of a secret, sealed by `seal`.
    async fn put_secret(&self, name: &str, seal: &SealFn<'_>) -> Result<SecretInfo, Error>;
    /// A version of a secret (the latest when `None`).
    async fn get_secret(&self, name: &str, version: Option<u64>) -> Result<SealedSecret, Error>;
    /// Every secret's latest version, without values.
    async fn list_secrets(&self) -> Result<Vec<SecretInfo>, Error>;
    /// Deletes every version of a secret.
    async fn delete_secret(&self, name: &str) -> Result<(), Error>;
    /// Every version of every secret, sealed (for rewrapping).
    async fn sealed_secrets(&self) -> Result<Vec<SealedSecret>, Error>;
    /// Replaces a version's wrapped data key if it is still wrapped by master
    /// key `was`; `false` when something else changed it meanwhile.
    async fn rewrap_secret(&self, rewrapped: &SealedSecret, was: &str) -> Result<bool, Error>;
}

/// An alert rule made through the API, as JSON (the store does not read it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRule {
    pub name: String,
    pub rule: String,
    pub updated_by: String,
    pub updated_at: String,
}

/// Alert rules made through the API. Changes bump the generation.
#[async_trait]
pub trait AlertRuleStore: Send + Sync {
    /// Creates or replaces the rule `name`.
    async fn put_alert_rule(&self, name: &str, rule: &str, by: &str) -> Result<(), Error>;
    async fn delete_alert_rule(&self, name: &str) -> Result<(), Error>;
    /// Every stored rule, by name.
    async fn alert_rules(&self) -> Result<Vec<StoredRule>, Error>;
}

/// A version's reference profile, as JSON (the store does not read it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredProfile {
    pub model: String,
    pub version: String,
    pub profile: String,
    pub updated_by: String,
    pub updated_at: String,
}

/// What one replica served of one endpoint version in one window, counted
/// on the version's reference profile (JSON).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredWindow {
    pub endpoint: String,
    pub version: String,
    /// The window's start, in seconds since the epoch.
    pub start_s: i64,
    pub replica: String,
    pub sketch: String,
}

/// Reference profiles (changes bump the generation) and served windows
/// (writes do not).
#[async_trait]
pub trait MonitorStore: Send + Sync {
    /// Creates or replaces the profile of `model` `version`.
    async fn put_profile(&self, model: &str, version: &str, profile: &str, by: &str) -> Result<(), Error>;
    async fn profiles(&self) -> Result<Vec<StoredProfile>, Error>;
    /// Creates or replaces a replica's window.
    async fn put_window(&self, window: &StoredWindow) -> Result<(), Error>;
    /// `endpoint`'s windows starting in `since_s..until_s`, by version and start.
    async fn windows(&self, endpoint: &str, since_s: i64, until_s: i64) -> Result<Vec<StoredWindow>, Error>;
    /// Creates or replaces ground truth rows, in one transaction.
    async fn put_feedback(&self, rows: &[StoredFeedback]) -> Result<(), Error>;
    /// `endpoint`'s ground truth for predictions made in `since_us..until_us`.
    async fn feedback(&self, endpoint: &str, since_us: i64, until_us: i64) -> Result<Vec<StoredFeedback>, Error>;
    /// Deletes windows that started, and ground truth of predictions made,
    /// before `before_s`; returns how many rows went.
    async fn prune_monitoring(&self, before_s: i64) -> Result<u64, Error>;
}

/// A logged prediction's row joined with its ground truth (both JSON).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredFeedback {
    pub endpoint: String,
    pub request_id: String,
    /// The record's index in its request.
    pub row: u64,
    pub version: String,
    /// When the prediction was made, and when its truth arrived (µs since the epoch).
    pub predicted_us: i64,
    pub received_us: i64,
    pub prediction: String,
    pub truth: String,
}

/// Which replica does the work that must be done once (sending alert
/// notifications): on PostgreSQL, the one holding an advisory lock, taken
/// over by another within one call after its session ends.
#[async_trait]
pub trait Leadership: Send + Sync {
    /// Whether this replica leads now (trying to become the leader if none does).
    async fn lead(&self) -> bool;
}

/// The prediction log's sealed chunks. Writes do not bump the generation.
#[async_trait]
pub trait PredictionStore: Send + Sync {
    async fn insert_chunk(&self, chunk: &StoredChunk) -> Result<(), Error>;
    /// Chunks matching `filter`, by (`first_us`, `id`), at most `filter.limit`.
    async fn list_chunks(&self, filter: &ChunkFilter) -> Result<Vec<StoredChunk>, Error>;
    /// Deletes `endpoint`'s chunks whose last record is older than
    /// `before_us`, then its oldest until the rest take at most `max_bytes`;
    /// returns how many chunks went.
    async fn prune_chunks(&self, endpoint: &str, before_us: i64, max_bytes: u64) -> Result<u64, Error>;
    /// How the writer should group records for this store.
    fn chunk_policy(&self) -> ChunkPolicy {
        ChunkPolicy::ROWS
    }
}

/// Opens (creating if needed) and migrates the metadata store at `url`:
/// `postgres://…` or `sqlite://PATH`; with no URL, `DATA_DIR/vigil.db`.
pub async fn open_metadata(url: Option<&str>, data_dir: &Path) -> Result<Arc<dyn MetadataStore>, Error> {
    match url {
        Some(u) if u.starts_with("postgres://") || u.starts_with("postgresql://") => {
            Ok(Arc::new(PostgresStore::connect(u).await?))
        }
        Some(u) if u.starts_with("sqlite:") => Ok(Arc::new(SqliteStore::connect(u).await?)),
        Some(u) => Err(Error::invalid_input(format!(
            "database_url: expected postgres://… or sqlite://…, got '{}'",
            u.split(':').next().unwrap_or_default()
        ))),
        None => {
            private_data_dir(data_dir)?;
            let path = data_dir.join("vigil.db");
            private_files(&path)?;
            Ok(Arc::new(SqliteStore::connect(&format!("sqlite://{}", path.display())).await?))
        }
    }
}

/// Makes the data directory (0700) or tightens an existing one to 0700,
/// unless it is a shared sticky directory such as `/tmp`, which is left as it
/// is with a warning: its files are still private (see [`private_files`]).
pub fn private_data_dir(dir: &Path) -> Result<(), Error> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let failed = |e: std::io::Error| Error::storage(format!("the data directory {}: {e}", dir.display()));
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(failed)?;
    let mode = std::fs::metadata(dir).map_err(failed)?.permissions().mode();
    if mode & 0o1000 != 0 {
        tracing::warn!(dir = %dir.display(), "the data directory is a shared sticky directory; keep Vigil's data in its own");
    } else if mode & 0o077 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(failed)?;
    }
    Ok(())
}

/// The SQLite database, made (or tightened) to 0600 before SQLite opens it:
/// SQLite gives its WAL and shared-memory files the database's mode.
fn private_files(db: &Path) -> Result<(), Error> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let failed = |e: std::io::Error| Error::storage(format!("{}: {e}", db.display()));
    std::fs::OpenOptions::new().create(true).append(true).mode(0o600).open(db).map_err(failed)?;
    for suffix in ["", "-wal", "-shm"] {
        let file = std::path::PathBuf::from(format!("{}{suffix}", db.display()));
        if file.exists() {
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).map_err(failed)?;
        }
    }
    Ok(())
}

/// Now, as the stores write times: RFC 3339, UTC, milliseconds.
pub(crate) fn now() -> String {
    humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()
}

/// Helpers for tests against real outside components, shared by every crate's tests.
#[doc(hidden)]
pub mod testing {
    use sqlx::Connection;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// Says that a test is skipped for want of an outside component, or fails
    /// it when `VIGIL_TEST_REQUIRE_ALL` is set (CI sets it, so that a component
    /// that did not come up cannot pass for green).
    pub fn skipped<T>(test: &str, why: &str) -> Option<T> {
        if std::env::var_os("VIGIL_TEST_REQUIRE_ALL").is_some() {
            panic!("{test}: {why}, and VIGIL_TEST_REQUIRE_ALL says every component must be there");
        }
        eprintln!("skipped {test}: {why}");
        None
    }

    /// A new, empty PostgreSQL database on the server at `VIGIL_TEST_DATABASE_URL`,
    /// as a URL; `None` (saying so) when the variable is not set.
    pub async fn fresh_postgres(test: &str) -> Option<String> {
        static N: AtomicU32 = AtomicU32::new(0);
        let Ok(admin) = std::env::var("VIGIL_TEST_DATABASE_URL") else {
            return skipped(test, "VIGIL_TEST_DATABASE_URL (a PostgreSQL server) is not set");
        };
        let name = format!("vigil_test_{}_{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed));
        let mut conn = sqlx::PgConnection::connect(&admin).await.expect("VIGIL_TEST_DATABASE_URL does not connect");
        let drop = format!("DROP DATABASE IF EXISTS {name}");
        sqlx::raw_sql(sqlx::AssertSqlSafe(drop)).execute(&mut conn).await.expect("drop database");
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .expect("create database");
        let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b);
        Some(format!("{base}/{name}"))
    }

    /// A unique prefix for objects a test writes into a shared bucket.
    pub fn unique_prefix(test: &str) -> String {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
        format!("{test}-{}-{nanos}", std::process::id())
    }
}
