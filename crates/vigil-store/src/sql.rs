//! The SQL implementations of [`MetadataStore`]. SQLite and PostgreSQL share the
//! schema and every query (both take `$1` parameters), so one body serves both:
//! `sql_store!` stamps it out per pool type, which reads far better than the
//! generic sqlx trait bounds the alternative needs.

use crate::alert_sql::alert_rule_store;
use crate::monitor_sql::monitor_store;
use crate::prediction_sql::prediction_store;

use crate::security_sql::{
    audit_columns, audit_from_row, chain_audit, hex_column, insert_key, key_columns, key_from_row, secret_columns,
    secret_from_row, security_store, to_hex,
};
use crate::{AuditFilter, MetadataStore, SealFn, StoredFeedback, StoredProfile, StoredRule, StoredWindow, now};
use async_trait::async_trait;
use serde::Serialize;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};
use sqlx::{Row, SqlSafeStr};
use std::str::FromStr;
use std::time::Duration;
use vigil_core::Error;
use vigil_core::names::{check_name, quoted};
use vigil_core::predictions::{ChunkFilter, StoredChunk};
use vigil_core::registry::{Alias, AliasEvent, EndpointSpec, ModelSummary, NewVersion, Revision, VersionRecord};
use vigil_core::security::{AuditEvent, GENESIS_HASH, KeyRecord, NewAuditEvent, SealedSecret, SecretInfo};

fn migrator() -> Migrator {
    let migration = |n, name: &str, sql: &'static str| {
        Migration::new(n, name.to_owned().into(), MigrationType::Simple, sql.into_sql_str(), false)
    };
    Migrator::with_migrations(vec![
        migration(1, "registry", include_str!("../migrations/0001_registry.sql")),
        migration(2, "security", include_str!("../migrations/0002_security.sql")),
        migration(3, "predictions", include_str!("../migrations/0003_predictions.sql")),
        migration(4, "alert rules", include_str!("../migrations/0004_alert_rules.sql")),
        migration(5, "monitoring", include_str!("../migrations/0005_monitoring.sql")),
        migration(6, "feedback", include_str!("../migrations/0006_feedback.sql")),
    ])
}

pub(crate) fn db_error(e: sqlx::Error) -> Error {
    if let sqlx::Error::Database(d) = &e
        && d.is_unique_violation()
    {
        return Error::conflict(format!("a concurrent change got there first; retry ({d})"));
    }
    Error::storage(format!("metadata store: {e}"))
}

pub(crate) fn to_i64(v: u64, what: &str) -> Result<i64, Error> {
    i64::try_from(v).map_err(|_| Error::invalid_input(format!("{what}: {v} is too large")))
}

pub(crate) fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or_default()
}

fn json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

fn from_json<T: DeserializeOwned>(text: &str, what: &str) -> Result<T, Error> {
    serde_json::from_str(text).map_err(|e| Error::storage(format!("metadata store holds a bad {what}: {e}")))
}

/// Identical content = the same artifact and the same manifest.
fn content_key(new: &NewVersion) -> String {
    format!("{}+sha256:{}", new.digest, hex::encode(Sha256::digest(new.manifest.as_bytes())))
}

/// Aliases are names that are not numbers, so that `fraud/3` and `fraud/production` never mean the same thing.
fn check_alias(alias: &str) -> Result<(), Error> {
    check_name("alias", alias)?;
    if alias.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Error::invalid_input(format!(
            "alias: {} is a number; aliases must not look like versions",
            quoted(alias)
        )));
    }
    Ok(())
}

fn no_model(model: &str) -> Error {
    Error::not_found(format!("no model {}", quoted(model)))
}

fn no_version(model: &str, version: u64) -> Error {
    Error::not_found(format!("model {} has no version {version}", quoted(model)))
}

fn no_endpoint(name: &str) -> Error {
    Error::not_found(format!("no endpoint {}", quoted(name)))
}

macro_rules! sql_store {
    ($store:ident, $pool:ty, $kind:literal) => {
        impl $store {
            async fn migrate(pool: $pool) -> Result<Self, Error> {
                migrator().run(&pool).await.map_err(|e| Error::storage(format!("migrating the metadata store: {e}")))?;
                Ok($store::with_pool(pool))
            }
        }

        #[async_trait]
        impl MetadataStore for $store {
            fn kind(&self) -> &'static str {
                $kind
            }

            async fn register_version(&self, new: NewVersion) -> Result<(VersionRecord, bool), Error> {
                check_name("model", &new.model)?;
                let key = content_key(&new);
                let mut tx = write_tx!(self.pool);
                let existing = sqlx::query(concat!("SELECT ", version_columns!(), " FROM versions WHERE model = $1 AND content_key = $2"))
                    .bind(&new.model)
                    .bind(&key)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(db_error)?;
                if let Some(row) = existing {
                    return Ok((version_from_row!(row), false));
                }
                let created_at = now();
                sqlx::query("INSERT INTO models (name, created_at, last_version) VALUES ($1, $2, 0) ON CONFLICT (name) DO NOTHING")
                    .bind(&new.model)
                    .bind(&created_at)
                    .execute(&mut *tx)
                    .await
                    .map_err(db_error)?;
                let next: i64 = sqlx::query("UPDATE models SET last_version = last_version + 1 WHERE name = $1 RETURNING last_version")
                    .bind(&new.model)
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(db_error)?
                    .try_get(0)
                    .map_err(db_error)?;
                let record = VersionRecord {
                    model: new.model,
                    version: to_u64(next),
                    digest: new.digest,
                    size_bytes: new.size_bytes,
                    manifest: new.manifest,
                    signature: new.signature,
                    labels: new.labels,
                    metrics: new.metrics,
                    lineage: new.lineage,
                    created_by: new.created_by,
                    created_at,
                    vigil_version: env!("CARGO_PKG_VERSION").to_owned(),
                };
                sqlx::query(
                    "INSERT INTO versions (model, version, digest, content_key, size_bytes, manifest, signature, labels, \
                     metrics, lineage, created_by, created_at, vigil_version) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
                )
                .bind(&record.model)
                .bind(next)
                .bind(&record.digest)
                .bind(&key)
                .bind(to_i64(record.size_bytes, "size_bytes")?)
                .bind(&record.manifest)
                .bind(json(&record.signature))
                .bind(json(&record.labels))
                .bind(json(&record.metrics))
                .bind(json(&record.lineage))
                .bind(&record.created_by)
                .bind(&record.created_at)
                .bind(&record.vigil_version)
                .execute(&mut *tx)
                .await
                .map_err(db_error)?;
                commit!(tx);
                Ok((record, true))
            }

            async fn list_models(&self) -> Result<Vec<ModelSummary>, Error> {
                let rows = sqlx::query(
                    "SELECT m.name, m.created_at, COUNT(v.version) AS n, MAX(v.version) AS latest \
                     FROM models m LEFT JOIN versions v ON v.model = m.name \
                     GROUP BY m.name, m.created_at ORDER BY m.name",
                )
                .fetch_all(&self.pool)
                .await
                .map_err(db_error)?;
                rows.iter()
                    .map(|row| {
                        Ok(ModelSummary {
                            name: row.try_get("name").map_err(db_error)?,
                            created_at: row.try_get("created_at").map_err(db_error)?,
                            versions: to_u64(row.try_get("n").map_err(db_error)?),
                            latest_version: row.try_get::<Option<i64>, _>("latest").map_err(db_error)?.map(to_u64),
                        })
                    })
                    .collect()
            }

            async fn list_versions(&self, model: &str) -> Result<Vec<VersionRecord>, Error> {
                let exists = sqlx::query("SELECT name FROM models WHERE name = $1")
                    .bind(model)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(db_error)?;
                if exists.is_none() {
                    return Err(no_model(model));
                }
                let rows = sqlx::query(concat!("SELECT ", version_columns!(), " FROM versions WHERE model = $1 ORDER BY version"))
                    .bind(model)
                    .fetch_all(&self.pool)
                    .await
                    .map_err(db_error)?;
                rows.into_iter().map(|row| Ok(version_from_row!(row))).collect()
            }

            async fn get_version(&self, model: &str, version: u64) -> Result<VersionRecord, Error> {
                let row = sqlx::query(concat!("SELECT ", version_columns!(), " FROM versions WHERE model = $1 AND version = $2"))
                    .bind(model)
                    .bind(to_i64(version, "version")?)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(db_error)?
                    .ok_or_else(|| no_version(model, version))?;
                Ok(version_from_row!(row))
            }

            async fn delete_version(&self, model: &str, version: u64) -> Result<(), Error> {
                let v = to_i64(version, "version")?;
                let mut tx = write_tx!(self.pool);
                let aliases = sqlx::query("SELECT alias FROM aliases WHERE model = $1 AND version = $2 ORDER BY alias")
                    .bind(model)
                    .bind(v)
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(db_error)?;
                if let Some(row) = aliases.first() {
                    let alias: String = row.try_get("alias").map_err(db_error)?;
                    return Err(Error::conflict(format!(
                        "version {version} of {} is what alias {} points at; move or delete the alias first",
                        quoted(model),
                        quoted(&alias)
                    )));
                }
                let current = sqlx::query(
                    "SELECT r.endpoint, r.revision, r.spec FROM endpoints e \
                     JOIN revisions r ON r.endpoint = e.name AND r.revision = e.current_revision ORDER BY r.endpoint",
                )
                .fetch_all(&mut *tx)
                .await
                .map_err(db_error)?;
                for row in current {
                    let spec: EndpointSpec = from_json(&row.try_get::<String, _>("spec").map_err(db_error)?, "spec")?;
                    if spec.model == model && spec.uses(version) {
                        let endpoint: String = row.try_get("endpoint").map_err(db_error)?;
                        return Err(Error::conflict(format!(
                            "version {version} of {} takes traffic on endpoint {}; change its traffic first",
                            quoted(model),
                            quoted(&endpoint)
                        )));
                    }
                }
                let deleted = sqlx::query("DELETE FROM versions WHERE model = $1 AND version = $2")
                    .bind(model)
                    .bind(v)
                    .execute(&mut *tx)
                    .await
                    .map_err(db_error)?;
                if deleted.rows_affected() == 0 {
                    return Err(no_version(model, version));
                }
                commit!(tx);
                Ok(())
            }

            async fn set_alias(&self, model: &str, alias: &str, version: u64, by: &str) -> Result<Alias, Error> {
                check_alias(alias)?;
                let v = to_i64(version, "version")?;
                let mut tx = write_tx!(self.pool);
                sqlx::query("SELECT version FROM versions WHERE model = $1 AND version = $2")
                    .bind(model)
                    .bind(v)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(db_error)?
                    .ok_or_else(|| no_version(model, version))?;
                let at = now();
                sqlx::query(
                    "INSERT INTO aliases (model, alias, version, updated_by, updated_at) VALUES ($1, $2, $3, $4, $5) \
                     ON CONFLICT (model, alias) DO UPDATE SET version = excluded.version, \
                     updated_by = excluded.updated_by, updated_at = excluded.updated_at",
                )
                .bind(model)
                .bind(alias)
                .bind(v)
                .bind(by)
                .bind(&at)
                .execute(&mut *tx)
                .await
                .map_err(db_error)?;
                sqlx::query(
                    "INSERT INTO alias_history (model, alias, seq, version, changed_by, changed_at) \
                     SELECT $1, $2, COALESCE(MAX(seq), 0) + 1, $3, $4, $5 FROM alias_history WHERE model = $1 AND alias = $2",
                )
                .bind(model)
                .bind(alias)
                .bind(Some(v))
                .bind(by)
                .bind(&at)
                .execute(&mut *tx)
                .await
                .map_err(db_error)?;
                commit!(tx);
                Ok(Alias { model: model.into(), alias: alias.into(), version, updated_by: by.into(), updated_at: at })
            }

            async fn delete_alias(&self, model: &str, alias: &str, by: &str) -> Result<(), Error> {
                let mut tx = write_tx!(self.pool);
                let deleted = sqlx::query("DELETE FROM aliases WHERE model = $1 AND alias = $2")
                    .bind(model)
                    .bind(alias)
                    .execute(&mut *tx)
                    .await
                    .map_err(db_error)?;
                if deleted.rows_affected() == 0 {
                    return Err(Error::not_found(format!("model {} has no alias {}", quoted(model), quoted(alias))));
                }
                sqlx::query(
                    "INSERT INTO alias_history (model, alias, seq, version, changed_by, changed_at) \
                     SELECT $1, $2, COALESCE(MAX(seq), 0) + 1, NULL, $3, $4 FROM alias_history WHERE model = $1 AND alias = $2",
                )
                .bind(model)
                .bind(alias)
                .bind(by)
                .bind(now())
                .execute(&mut *tx)
                .await
                .map_err(db_error)?;
                commit!(tx);
                Ok(())
            }

            async fn list_aliases(&self, model: &str) -> Result<Vec<Alias>, Error> {
                check_name("model", model)?;
                sqlx::query("SELECT name FROM models WHERE name = $1")
                    .bind(model)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(db_error)?
                    .ok_or_else(|| no_model(model))?;
                let rows = sqlx::query(
                    "SELECT model, alias, version, updated_by, updated_at FROM aliases WHERE model = $1 ORDER BY alias",
                )
                .bind(model)
                .fetch_all(&self.pool)
                .await
                .map_err(db_error)?;
                rows.iter()
                    .map(|row| {
                        Ok(Alias {
                            model: row.try_get("model").map_err(db_error)?,
                            alias: row.try_get("alias").map_err(db_error)?,
                            version: to_u64(row.try_get("version").map_err(db_error)?),
                            updated_by: row.try_get("updated_by").map_err(db_error)?,
                            updated_at: row.try_get("updated_at").map_err(db_error)?,
                        })
                    })
                    .collect()
            }

            async fn alias_history(&self, model: &str, alias: &str) -> Result<Vec<AliasEvent>, Error> {
                let rows = sqlx::query(
                    "SELECT alias, version, changed_by, changed_at FROM alias_history \
                     WHERE model = $1 AND alias = $2 ORDER BY seq",
                )
                .bind(model)
                .bind(alias)
                .fetch_all(&self.pool)
                .await
                .map_err(db_error)?;
                if rows.is_empty() {
                    return Err(Error::not_found(format!("model {} never had alias {}", quoted(model), quoted(alias))));
                }
                rows.iter()
                    .map(|row| {
                        Ok(AliasEvent {
                            alias: row.try_get("alias").map_err(db_error)?,
                            version: row.try_get::<Option<i64>, _>("version").map_err(db_error)?.map(to_u64),
                            changed_by: row.try_get("changed_by").map_err(db_error)?,
                            changed_at: row.try_get("changed_at").map_err(db_error)?,
                        })
                    })
                    .collect()
            }

            async fn put_endpoint(
                &self,
                name: &str,
                spec: &EndpointSpec,
                comment: &str,
                by: &str,
                expect: Option<u64>,
            ) -> Result<Revision, Error> {
                check_name("endpoint", name)?;
                spec.validate()?;
                let mut tx = write_tx!(self.pool);
                let mut digests = std::collections::BTreeMap::new();
                for version in spec.versions() {
                    let row = sqlx::query("SELECT digest FROM versions WHERE model = $1 AND version = $2")
                        .bind(&spec.model)
                        .bind(to_i64(version, "version")?)
                        .fetch_optional(&mut *tx)
                        .await
                        .map_err(db_error)?
                        .ok_or_else(|| no_version(&spec.model, version))?;
                    digests.insert(version, row.try_get::<String, _>("digest").map_err(db_error)?);
                }
                let current = sqlx::query(concat!(
                    "SELECT ", revision_columns!(), " FROM endpoints e ",
                    "JOIN revisions r ON r.endpoint = e.name AND r.revision = e.current_revision WHERE e.name = $1"
                ))
                .bind(name)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db_error)?;
                let created_at = now();
                let found = current.as_ref().map(|row| row.try_get::<i64, _>("revision")).transpose().map_err(db_error)?;
                if let Some(expected) = expect
                    && found.map(to_u64) != Some(expected)
                {
                    return Err(Error::conflict(format!(
                        "endpoint {} changed meanwhile (its current revision is {}, not {expected}); look again and retry",
                        quoted(name),
                        found.map_or_else(|| "none".to_owned(), |r| r.to_string())
                    )));
                }
                let next = match current {
                    Some(row) => {
                        let current = revision_from_row!(row);
                        if current.spec == *spec && current.digests == digests {
                            return Ok(current);
                        }
                        current.revision + 1
                    }
                    None => {
                        sqlx::query("INSERT INTO endpoints (name, current_revision, created_by, created_at) VALUES ($1, 0, $2, $3)")
                            .bind(name)
                            .bind(by)
                            .bind(&created_at)
                            .execute(&mut *tx)
                            .await
                            .map_err(db_error)?;
                        1
                    }
                };
                let revision = Revision {
                    endpoint: name.into(),
                    revision: next,
                    spec: spec.clone(),
                    digests,
                    comment: comment.into(),
                    created_by: by.into(),
                    created_at,
                };
                let n = to_i64(next, "revision")?;
                sqlx::query(
                    "INSERT INTO revisions (endpoint, revision, spec, digests, comment, created_by, created_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7)",
                )
                .bind(name)
                .bind(n)
                .bind(json(&revision.spec))
                .bind(json(&revision.digests))
                .bind(comment)
                .bind(by)
                .bind(&revision.created_at)
                .execute(&mut *tx)
                .await
                .map_err(db_error)?;
                sqlx::query("UPDATE endpoints SET current_revision = $1 WHERE name = $2")
                    .bind(n)
                    .bind(name)
                    .execute(&mut *tx)
                    .await
                    .map_err(db_error)?;
                commit!(tx);
                Ok(revision)
            }

            async fn list_endpoints(&self) -> Result<Vec<Revision>, Error> {
                let rows = sqlx::query(concat!(
                    "SELECT ", revision_columns!(), " FROM endpoints e ",
                    "JOIN revisions r ON r.endpoint = e.name AND r.revision = e.current_revision ORDER BY e.name"
                ))
                .fetch_all(&self.pool)
                .await
                .map_err(db_error)?;
                rows.into_iter().map(|row| Ok(revision_from_row!(row))).collect()
            }

            async fn endpoint(&self, name: &str) -> Result<Revision, Error> {
                let row = sqlx::query(concat!(
                    "SELECT ", revision_columns!(), " FROM endpoints e ",
                    "JOIN revisions r ON r.endpoint = e.name AND r.revision = e.current_revision WHERE e.name = $1"
                ))
                .bind(name)
                .fetch_optional(&self.pool)
                .await
                .map_err(db_error)?
                .ok_or_else(|| no_endpoint(name))?;
                Ok(revision_from_row!(row))
            }

            async fn revisions(&self, name: &str) -> Result<Vec<Revision>, Error> {
                let rows = sqlx::query(concat!(
                    "SELECT ", revision_columns!(), " FROM revisions r WHERE r.endpoint = $1 ORDER BY r.revision"
                ))
                .bind(name)
                .fetch_all(&self.pool)
                .await
                .map_err(db_error)?;
                if rows.is_empty() {
                    return Err(no_endpoint(name));
                }
                rows.into_iter().map(|row| Ok(revision_from_row!(row))).collect()
            }

            async fn delete_endpoint(&self, name: &str) -> Result<(), Error> {
                let mut tx = write_tx!(self.pool);
                sqlx::query("DELETE FROM revisions WHERE endpoint = $1")
                    .bind(name)
                    .execute(&mut *tx)
                    .await
                    .map_err(db_error)?;
                let deleted = sqlx::query("DELETE FROM endpoints WHERE name = $1")
                    .bind(name)
                    .execute(&mut *tx)
                    .await
                    .map_err(db_error)?;
                if deleted.rows_affected() == 0 {
                    return Err(no_endpoint(name));
                }
                commit!(tx);
                Ok(())
            }

            async fn generation(&self) -> Result<u64, Error> {
                let value: i64 = sqlx::query("SELECT value FROM generation WHERE id = 1")
                    .fetch_one(&self.pool)
                    .await
                    .map_err(db_error)?
                    .try_get(0)
                    .map_err(db_error)?;
                Ok(to_u64(value))
            }
        }
    };
}

/// Begins a write: a transaction whose first statement bumps the generation
/// (replicas poll it; on PostgreSQL its row lock serialises writers).
macro_rules! write_tx {
    ($pool:expr) => {{
        let mut tx = $pool.begin().await.map_err(db_error)?;
        sqlx::query("UPDATE generation SET value = value + 1 WHERE id = 1")
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        tx
    }};
}

/// Commits a write begun with `write_tx!`. Inside an audited control-plane
/// call the call's audit event is appended in the same transaction first
/// (see [`crate::audit_scope`]): the change and its event commit together.
macro_rules! commit {
    ($tx:ident) => {{
        let chained = match $crate::audit_scope::pending() {
            Some(event) => Some(chain_audit!($tx, event)),
            None => None,
        };
        $tx.commit().await.map_err(db_error)?;
        if let Some(chained) = chained {
            $crate::audit_scope::committed(chained);
        }
    }};
}

macro_rules! version_columns {
    () => {
        "model, version, digest, size_bytes, manifest, signature, labels, metrics, lineage, created_by, created_at, vigil_version"
    };
}

macro_rules! version_from_row {
    ($row:expr) => {{
        let row = &$row;
        VersionRecord {
            model: row.try_get("model").map_err(db_error)?,
            version: to_u64(row.try_get("version").map_err(db_error)?),
            digest: row.try_get("digest").map_err(db_error)?,
            size_bytes: to_u64(row.try_get("size_bytes").map_err(db_error)?),
            manifest: row.try_get("manifest").map_err(db_error)?,
            signature: from_json(&row.try_get::<String, _>("signature").map_err(db_error)?, "signature")?,
            labels: from_json(&row.try_get::<String, _>("labels").map_err(db_error)?, "labels")?,
            metrics: from_json(&row.try_get::<String, _>("metrics").map_err(db_error)?, "metrics")?,
            lineage: from_json(&row.try_get::<String, _>("lineage").map_err(db_error)?, "lineage")?,
            created_by: row.try_get("created_by").map_err(db_error)?,
            created_at: row.try_get("created_at").map_err(db_error)?,
            vigil_version: row.try_get("vigil_version").map_err(db_error)?,
        }
    }};
}

macro_rules! revision_columns {
    () => {
        "r.endpoint, r.revision, r.spec, r.digests, r.comment, r.created_by, r.created_at"
    };
}

macro_rules! revision_from_row {
    ($row:expr) => {{
        let row = &$row;
        Revision {
            endpoint: row.try_get("endpoint").map_err(db_error)?,
            revision: to_u64(row.try_get("revision").map_err(db_error)?),
            spec: from_json(&row.try_get::<String, _>("spec").map_err(db_error)?, "spec")?,
            digests: from_json(&row.try_get::<String, _>("digests").map_err(db_error)?, "digests")?,
            comment: row.try_get("comment").map_err(db_error)?,
            created_by: row.try_get("created_by").map_err(db_error)?,
            created_at: row.try_get("created_at").map_err(db_error)?,
        }
    }};
}

/// The embedded default: one SQLite file (WAL, so readers never wait on the writer).
pub struct SqliteStore {
    pub(crate) pool: SqlitePool,
}

impl SqliteStore {
    fn with_pool(pool: SqlitePool) -> Self {
        SqliteStore { pool }
    }

    /// `sqlite://PATH` (created if missing) or `sqlite::memory:`.
    pub async fn connect(url: &str) -> Result<Self, Error> {
        let options = SqliteConnectOptions::from_str(url)
            .map_err(|e| Error::invalid_input(format!("database_url: {e}")))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true);
        // An in-memory database exists per connection: keep exactly one.
        let max = if url.contains(":memory:") { 1 } else { 4 };
        let pool = SqlitePoolOptions::new()
            .max_connections(max)
            .connect_with(options)
            .await
            .map_err(|e| Error::storage(format!("cannot open the SQLite database: {e}")))?;
        Self::migrate(pool).await
    }
}

/// Shared state for several replicas.
pub struct PostgresStore {
    pub(crate) pool: PgPool,
    /// The connection that holds the leader's advisory lock, on the replica
    /// that leads (the lock lives as long as the session).
    leader: tokio::sync::Mutex<Option<sqlx::PgConnection>>,
}

/// The advisory lock key of the replica that sends notifications.
const LEADER_LOCK: i64 = 0x5669_6769_6c00_0001;

/// One process owns a SQLite file, so it always leads.
#[async_trait]
impl crate::Leadership for SqliteStore {
    async fn lead(&self) -> bool {
        true
    }
}

#[async_trait]
impl crate::Leadership for PostgresStore {
    async fn lead(&self) -> bool {
        use sqlx::Connection;
        let mut held = self.leader.lock().await;
        if let Some(conn) = held.as_mut() {
            // Still leading while the session that holds the lock is alive.
            if conn.ping().await.is_ok() {
                return true;
            }
            *held = None;
        }
        let Ok(conn) = self.pool.acquire().await else { return false };
        // Out of the pool for good: the lock is the session's.
        let mut conn = conn.detach();
        let locked = sqlx::query_scalar::<_, bool>("SELECT pg_try_advisory_lock($1)")
            .bind(LEADER_LOCK)
            .fetch_one(&mut conn)
            .await
            .unwrap_or(false);
        if locked {
            *held = Some(conn);
        }
        locked
    }
}

impl PostgresStore {
    fn with_pool(pool: PgPool) -> Self {
        PostgresStore { pool, leader: tokio::sync::Mutex::new(None) }
    }

    pub async fn connect(url: &str) -> Result<Self, Error> {
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(10))
            .connect(url)
            .await
            // The URL may hold a password: never echo it.
            .map_err(|e| Error::storage(format!("cannot connect to the PostgreSQL database: {e}")))?;
        Self::migrate(pool).await
    }
}

sql_store!(SqliteStore, SqlitePool, "sqlite");
sql_store!(PostgresStore, PgPool, "postgres");
security_store!(SqliteStore);
security_store!(PostgresStore);
prediction_store!(SqliteStore);
prediction_store!(PostgresStore);
alert_rule_store!(SqliteStore);
alert_rule_store!(PostgresStore);
monitor_store!(SqliteStore);
monitor_store!(PostgresStore);

fn no_key(id: &str) -> Error {
    Error::not_found(format!("no API key {}", quoted(id)))
}
