//! The SQL implementation of [`SecurityStore`](crate::SecurityStore), stamped
//! out for both pools from `sql.rs` like the registry's (same schema and
//! queries on SQLite and PostgreSQL).

/// Implements `SecurityStore` for a store type with a `pool` field. Invoked in
/// `sql.rs`, where `write_tx!` and the helpers are in scope.
macro_rules! security_store {
    ($store:ident) => {
        #[async_trait]
        impl $crate::SecurityStore for $store {
            async fn create_key(&self, key: &KeyRecord) -> Result<(), Error> {
                let mut tx = write_tx!(self.pool);
                insert_key!(tx, key);
                commit!(tx);
                Ok(())
            }

            async fn create_first_key(&self, key: &KeyRecord) -> Result<bool, Error> {
                let mut tx = write_tx!(self.pool);
                let any = sqlx::query("SELECT id FROM api_keys LIMIT 1").fetch_optional(&mut *tx).await.map_err(db_error)?;
                if any.is_some() {
                    return Ok(false);
                }
                insert_key!(tx, key);
                tx.commit().await.map_err(db_error)?;
                Ok(true)
            }

            async fn list_keys(&self) -> Result<Vec<KeyRecord>, Error> {
                let rows = sqlx::query(concat!("SELECT ", key_columns!(), " FROM api_keys ORDER BY created_at, id"))
                    .fetch_all(&self.pool)
                    .await
                    .map_err(db_error)?;
                rows.iter().map(|row| Ok(key_from_row!(row))).collect()
            }

            async fn revoke_key(&self, id: &str, at: &str) -> Result<KeyRecord, Error> {
                let mut tx = write_tx!(self.pool);
                sqlx::query("UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
                    .bind(at)
                    .bind(id)
                    .execute(&mut *tx)
                    .await
                    .map_err(db_error)?;
                let row = sqlx::query(concat!("SELECT ", key_columns!(), " FROM api_keys WHERE id = $1"))
                    .bind(id)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(db_error)?
                    .ok_or_else(|| no_key(id))?;
                let key = key_from_row!(row);
                commit!(tx);
                Ok(key)
            }

            async fn rotate_key(&self, old: &str, old_expires_at: &str, new: &KeyRecord) -> Result<(), Error> {
                let mut tx = write_tx!(self.pool);
                let changed = sqlx::query(
                    "UPDATE api_keys SET expires_at = $1 WHERE id = $2 AND revoked_at IS NULL \
                     AND (expires_at IS NULL OR expires_at > $1)",
                )
                .bind(old_expires_at)
                .bind(old)
                .execute(&mut *tx)
                .await
                .map_err(db_error)?;
                if changed.rows_affected() == 0 {
                    let exists = sqlx::query("SELECT id FROM api_keys WHERE id = $1 AND revoked_at IS NULL")
                        .bind(old)
                        .fetch_optional(&mut *tx)
                        .await
                        .map_err(db_error)?;
                    if exists.is_none() {
                        return Err(no_key(old));
                    }
                }
                insert_key!(tx, new);
                commit!(tx);
                Ok(())
            }

            async fn append_audit(&self, event: NewAuditEvent) -> Result<AuditEvent, Error> {
                // Not a registry change: no generation bump. Locking the head
                // row serialises appends.
                let mut tx = self.pool.begin().await.map_err(db_error)?;
                let event = chain_audit!(tx, event);
                tx.commit().await.map_err(db_error)?;
                Ok(event)
            }

            async fn list_audit(&self, filter: &AuditFilter) -> Result<Vec<AuditEvent>, Error> {
                macro_rules! audit_query {
                    ($order:literal) => {
                        concat!(
                            "SELECT ", audit_columns!(), " FROM audit_events WHERE seq > $1 AND ($7 = 0 OR seq < $7) ",
                            "AND ($2 = '' OR principal = $2) AND ($3 = '' OR action = $3 OR action LIKE $3 || ' %') ",
                            "AND ($4 = '' OR time >= $4) AND ($5 = '' OR time < $5) ORDER BY seq ", $order, " LIMIT $6"
                        )
                    };
                }
                let sql = if filter.newest_first { audit_query!("DESC") } else { audit_query!("ASC") };
                let rows = sqlx::query(sql)
                    .bind(to_i64(filter.after_seq, "after")?)
                    .bind(filter.principal.as_deref().unwrap_or_default())
                    .bind(filter.action.as_deref().unwrap_or_default())
                    .bind(filter.since.as_deref().unwrap_or_default())
                    .bind(filter.until.as_deref().unwrap_or_default())
                    .bind(i64::from(filter.limit))
                    .bind(to_i64(filter.before_seq, "before")?)
                    .fetch_all(&self.pool)
                    .await
                    .map_err(db_error)?;
                rows.iter().map(|row| Ok(audit_from_row!(row))).collect()
            }

            async fn audit_head(&self) -> Result<Option<(u64, String)>, Error> {
                let Some(row) = sqlx::query("SELECT seq, hash FROM audit_head WHERE id = 1")
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(db_error)?
                else {
                    return Ok(None);
                };
                let seq: Option<i64> = row.try_get("seq").ok().flatten();
                let hash: Option<String> = row.try_get("hash").ok().flatten();
                Ok(seq.zip(hash).and_then(|(seq, hash)| Some((u64::try_from(seq).ok()?, hash))))
            }

            async fn put_secret(&self, name: &str, seal: &SealFn<'_>) -> Result<SecretInfo, Error> {
                check_name("secret", name)?;
                // Write first: a SQLite transaction that reads and then writes
                // fails (busy) when another writer got in between.
                let mut tx = write_tx!(self.pool);
                let last: Option<i64> = sqlx::query("SELECT MAX(version) FROM secrets WHERE name = $1")
                    .bind(name)
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(db_error)?
                    .try_get(0)
                    .map_err(db_error)?;
                let version = to_u64(last.unwrap_or(0)) + 1;
                let sealed = seal(version)?;
                sqlx::query(
                    "INSERT INTO secrets (name, version, master_key_id, wrapped_key, ciphertext, created_by, created_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7)",
                )
                .bind(name)
                .bind(to_i64(version, "version")?)
                .bind(&sealed.master_key_id)
                .bind(to_hex(&sealed.wrapped_key))
                .bind(to_hex(&sealed.ciphertext))
                .bind(&sealed.created_by)
                .bind(&sealed.created_at)
                .execute(&mut *tx)
                .await
                .map_err(db_error)?;
                commit!(tx);
                Ok(SecretInfo { name: name.to_owned(), version, created_by: sealed.created_by, created_at: sealed.created_at })
            }

            async fn get_secret(&self, name: &str, version: Option<u64>) -> Result<SealedSecret, Error> {
                if version == Some(0) {
                    // 0 is how the query below says "the latest": never from outside.
                    return Err(Error::not_found(format!("secret {} has no version 0 (versions start at 1)", quoted(name))));
                }
                let row = sqlx::query(concat!(
                    "SELECT ", secret_columns!(), " FROM secrets WHERE name = $1 AND ($2 = 0 OR version = $2) ",
                    "ORDER BY version DESC LIMIT 1"
                ))
                .bind(name)
                .bind(to_i64(version.unwrap_or(0), "version")?)
                .fetch_optional(&self.pool)
                .await
                .map_err(db_error)?
                .ok_or_else(|| match version {
                    Some(v) => Error::not_found(format!("secret {} has no version {v}", quoted(name))),
                    None => Error::not_found(format!("no secret {}", quoted(name))),
                })?;
                secret_from_row!(row)
            }

            async fn list_secrets(&self) -> Result<Vec<SecretInfo>, Error> {
                let rows = sqlx::query(
                    "SELECT s.name, s.version, s.created_by, s.created_at FROM secrets s \
                     JOIN (SELECT name, MAX(version) AS version FROM secrets GROUP BY name) latest \
                     ON latest.name = s.name AND latest.version = s.version ORDER BY s.name",
                )
                .fetch_all(&self.pool)
                .await
                .map_err(db_error)?;
                rows.iter()
                    .map(|row| {
                        Ok(SecretInfo {
                            name: row.try_get("name").map_err(db_error)?,
                            version: to_u64(row.try_get("version").map_err(db_error)?),
                            created_by: row.try_get("created_by").map_err(db_error)?,
                            created_at: row.try_get("created_at").map_err(db_error)?,
                        })
                    })
                    .collect()
            }

            async fn delete_secret(&self, name: &str) -> Result<(), Error> {
                let mut tx = write_tx!(self.pool);
                let deleted =
                    sqlx::query("DELETE FROM secrets WHERE name = $1").bind(name).execute(&mut *tx).await.map_err(db_error)?;
                if deleted.rows_affected() == 0 {
                    return Err(Error::not_found(format!("no secret {}", quoted(name))));
                }
                commit!(tx);
                Ok(())
            }

            async fn sealed_secrets(&self) -> Result<Vec<SealedSecret>, Error> {
                let rows = sqlx::query(concat!("SELECT ", secret_columns!(), " FROM secrets ORDER BY name, version"))
                    .fetch_all(&self.pool)
                    .await
                    .map_err(db_error)?;
                rows.iter().map(|row| secret_from_row!(row)).collect()
            }

            async fn rewrap_secret(&self, rewrapped: &SealedSecret, was: &str) -> Result<bool, Error> {
                let mut tx = write_tx!(self.pool);
                let changed = sqlx::query(
                    "UPDATE secrets SET master_key_id = $1, wrapped_key = $2 WHERE name = $3 AND version = $4 AND master_key_id = $5",
                )
                .bind(&rewrapped.master_key_id)
                .bind(to_hex(&rewrapped.wrapped_key))
                .bind(&rewrapped.name)
                .bind(to_i64(rewrapped.version, "version")?)
                .bind(was)
                .execute(&mut *tx)
                .await
                .map_err(db_error)?;
                commit!(tx);
                Ok(changed.rows_affected() == 1)
            }
        }
    };
}
pub(crate) use security_store;

/// Appends an event to the audit chain inside the transaction `$tx` (the head
/// row's update serialises appends) and evaluates to the chained event.
macro_rules! chain_audit {
    ($tx:ident, $event:expr) => {{
        let tx = &mut $tx;
        let event: NewAuditEvent = $event;
        let head = sqlx::query("UPDATE audit_head SET seq = seq + 1 WHERE id = 1 RETURNING seq")
            .fetch_one(&mut **tx)
            .await
            .map_err(db_error)?;
        let seq: i64 = head.try_get(0).map_err(db_error)?;
        let prev = if seq == 1 {
            GENESIS_HASH.to_owned()
        } else {
            sqlx::query("SELECT hash FROM audit_events WHERE seq = $1")
                .bind(seq - 1)
                .fetch_optional(&mut **tx)
                .await
                .map_err(db_error)?
                .map(|row| row.try_get::<String, _>(0))
                .transpose()
                .map_err(db_error)?
                // A missing predecessor is tampering: chain onto a
                // hash that cannot verify, so `verify` names it.
                .unwrap_or_else(|| "missing".to_owned())
        };
        let event = AuditEvent::chain(to_u64(seq), event, &prev);
        sqlx::query(
            "INSERT INTO audit_events (seq, time, principal, action, target, outcome, source, request_id, prev_hash, hash) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(seq)
        .bind(&event.time)
        .bind(&event.principal)
        .bind(&event.action)
        .bind(&event.target)
        .bind(&event.outcome)
        .bind(&event.source)
        .bind(&event.request_id)
        .bind(&event.prev_hash)
        .bind(&event.hash)
        .execute(&mut **tx)
        .await
        .map_err(db_error)?;
        sqlx::query("UPDATE audit_head SET hash = $1 WHERE id = 1")
            .bind(&event.hash)
            .execute(&mut **tx)
            .await
            .map_err(db_error)?;
        event
    }};
}
pub(crate) use chain_audit;

macro_rules! insert_key {
    ($tx:ident, $key:expr) => {{
        let key: &KeyRecord = $key;
        check_name("key id", &key.id)?;
        sqlx::query(
            "INSERT INTO api_keys (id, name, role, scope, hash, created_by, created_at, expires_at, revoked_at, rotated_from) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(&key.id)
        .bind(&key.name)
        .bind(key.role.as_str())
        .bind(key.scope.to_string())
        .bind(&key.hash)
        .bind(&key.created_by)
        .bind(&key.created_at)
        .bind(&key.expires_at)
        .bind(&key.revoked_at)
        .bind(&key.rotated_from)
        .execute(&mut *$tx)
        .await
        .map_err(db_error)?;
    }};
}
pub(crate) use insert_key;

macro_rules! key_columns {
    () => {
        "id, name, role, scope, hash, created_by, created_at, expires_at, revoked_at, rotated_from"
    };
}
pub(crate) use key_columns;

macro_rules! key_from_row {
    ($row:expr) => {{
        let row = &$row;
        let bad = |what: &str, e: Error| Error::storage(format!("metadata store holds a bad key {what}: {e}"));
        KeyRecord {
            id: row.try_get("id").map_err(db_error)?,
            name: row.try_get("name").map_err(db_error)?,
            role: row.try_get::<String, _>("role").map_err(db_error)?.parse().map_err(|e| bad("role", e))?,
            scope: row.try_get::<String, _>("scope").map_err(db_error)?.parse().map_err(|e| bad("scope", e))?,
            hash: row.try_get("hash").map_err(db_error)?,
            created_by: row.try_get("created_by").map_err(db_error)?,
            created_at: row.try_get("created_at").map_err(db_error)?,
            expires_at: row.try_get("expires_at").map_err(db_error)?,
            revoked_at: row.try_get("revoked_at").map_err(db_error)?,
            rotated_from: row.try_get("rotated_from").map_err(db_error)?,
        }
    }};
}
pub(crate) use key_from_row;

macro_rules! audit_columns {
    () => {
        "seq, time, principal, action, target, outcome, source, request_id, prev_hash, hash"
    };
}
pub(crate) use audit_columns;

macro_rules! audit_from_row {
    ($row:expr) => {{
        let row = &$row;
        AuditEvent {
            seq: to_u64(row.try_get("seq").map_err(db_error)?),
            time: row.try_get("time").map_err(db_error)?,
            principal: row.try_get("principal").map_err(db_error)?,
            action: row.try_get("action").map_err(db_error)?,
            target: row.try_get("target").map_err(db_error)?,
            outcome: row.try_get("outcome").map_err(db_error)?,
            source: row.try_get("source").map_err(db_error)?,
            request_id: row.try_get("request_id").map_err(db_error)?,
            prev_hash: row.try_get("prev_hash").map_err(db_error)?,
            hash: row.try_get("hash").map_err(db_error)?,
        }
    }};
}
pub(crate) use audit_from_row;

macro_rules! secret_columns {
    () => {
        "name, version, master_key_id, wrapped_key, ciphertext, created_by, created_at"
    };
}
pub(crate) use secret_columns;

/// Sealed bytes as hex text (one column type on both stores). `hex::encode`
/// collects chars one by one; encoding into a byte buffer is several times
/// cheaper.
pub(crate) fn to_hex(bytes: &[u8]) -> String {
    let mut out = vec![0u8; bytes.len() * 2];
    // The buffer is exactly twice the input, so this cannot fail.
    let _ = hex::encode_to_slice(bytes, &mut out);
    String::from_utf8(out).unwrap_or_default()
}

/// A sealed value's bytes, kept as hex text (one column type on both stores).
macro_rules! hex_column {
    ($row:expr, $what:literal, $column:literal) => {
        hex::decode($row.try_get::<String, _>($column).map_err(db_error)?)
            .map_err(|e| Error::storage(format!("metadata store holds a bad {} {}: {e}", $what, $column)))
    };
}
pub(crate) use hex_column;

macro_rules! secret_from_row {
    ($row:expr) => {{
        let row = &$row;
        Ok::<_, Error>(SealedSecret {
            name: row.try_get("name").map_err(db_error)?,
            version: to_u64(row.try_get("version").map_err(db_error)?),
            master_key_id: row.try_get("master_key_id").map_err(db_error)?,
            wrapped_key: hex_column!(row, "secret", "wrapped_key")?,
            ciphertext: hex_column!(row, "secret", "ciphertext")?,
            created_by: row.try_get("created_by").map_err(db_error)?,
            created_at: row.try_get("created_at").map_err(db_error)?,
        })
    }};
}
pub(crate) use secret_from_row;

#[cfg(test)]
mod tests {
    #[test]
    fn to_hex_is_hex_encode() {
        let bytes: Vec<u8> = (0..=255).collect();
        assert_eq!(super::to_hex(&bytes), hex::encode(&bytes));
        assert_eq!(super::to_hex(&[]), "");
    }
}
