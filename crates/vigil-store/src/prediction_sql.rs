//! The SQL implementation of [`PredictionStore`](crate::PredictionStore),
//! stamped out for both pools from `sql.rs` like the others.

/// Implements `PredictionStore` for a store type with a `pool` field.
macro_rules! prediction_store {
    ($store:ident) => {
        #[async_trait]
        impl $crate::PredictionStore for $store {
            async fn insert_predictions(&self, records: &[StoredPrediction]) -> Result<(), Error> {
                let mut tx = self.pool.begin().await.map_err(db_error)?;
                for r in records {
                    sqlx::query(
                        "INSERT INTO predictions (id, endpoint, version, request_id, principal, time_us, \
                         master_key_id, wrapped_key, ciphertext, size_bytes) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                    )
                    .bind(&r.id)
                    .bind(&r.endpoint)
                    .bind(&r.version)
                    .bind(&r.request_id)
                    .bind(&r.principal)
                    .bind(r.time_us)
                    .bind(&r.master_key_id)
                    .bind(hex::encode(&r.wrapped_key))
                    .bind(hex::encode(&r.ciphertext))
                    .bind(i64::try_from(r.ciphertext.len() + r.wrapped_key.len()).unwrap_or(i64::MAX))
                    .execute(&mut *tx)
                    .await
                    .map_err(db_error)?;
                }
                tx.commit().await.map_err(db_error)
            }

            async fn list_predictions(&self, f: &PredictionFilter) -> Result<Vec<StoredPrediction>, Error> {
                // Absent filters are bound as values that match everything, so
                // that one statement serves every combination.
                let (after_time, after_id) = f.after.clone().unwrap_or((i64::MIN, String::new()));
                let rows = sqlx::query(
                    "SELECT id, endpoint, version, request_id, principal, time_us, master_key_id, wrapped_key, ciphertext \
                     FROM predictions WHERE endpoint = $1 \
                     AND ($2 = '' OR version = $2) AND ($3 = '' OR request_id = $3) \
                     AND time_us >= $4 AND time_us < $5 \
                     AND (time_us > $6 OR (time_us = $6 AND id > $7)) \
                     ORDER BY time_us, id LIMIT $8",
                )
                .bind(&f.endpoint)
                .bind(f.version.clone().unwrap_or_default())
                .bind(f.request_id.clone().unwrap_or_default())
                .bind(f.since_us.unwrap_or(i64::MIN))
                .bind(f.until_us.unwrap_or(i64::MAX))
                .bind(after_time)
                .bind(after_id)
                .bind(i64::from(f.limit))
                .fetch_all(&self.pool)
                .await
                .map_err(db_error)?;
                rows.iter()
                    .map(|row| {
                        Ok(StoredPrediction {
                            id: row.try_get("id").map_err(db_error)?,
                            endpoint: row.try_get("endpoint").map_err(db_error)?,
                            version: row.try_get("version").map_err(db_error)?,
                            request_id: row.try_get("request_id").map_err(db_error)?,
                            principal: row.try_get("principal").map_err(db_error)?,
                            time_us: row.try_get("time_us").map_err(db_error)?,
                            master_key_id: row.try_get("master_key_id").map_err(db_error)?,
                            wrapped_key: hex_column!(row, "prediction", "wrapped_key")?,
                            ciphertext: hex_column!(row, "prediction", "ciphertext")?,
                        })
                    })
                    .collect()
            }

            async fn prune_predictions(&self, endpoint: &str, before_us: i64, max_bytes: u64) -> Result<u64, Error> {
                let mut deleted = sqlx::query("DELETE FROM predictions WHERE endpoint = $1 AND time_us < $2")
                    .bind(endpoint)
                    .bind(before_us)
                    .execute(&self.pool)
                    .await
                    .map_err(db_error)?
                    .rows_affected();
                // The newest record whose running total (newest first) passes
                // the limit: it and everything older go.
                let cut = sqlx::query(
                    "SELECT time_us, id FROM (SELECT time_us, id, \
                     SUM(size_bytes) OVER (ORDER BY time_us DESC, id DESC) AS running \
                     FROM predictions WHERE endpoint = $1) AS t WHERE running > $2 \
                     ORDER BY time_us DESC, id DESC LIMIT 1",
                )
                .bind(endpoint)
                .bind(i64::try_from(max_bytes).unwrap_or(i64::MAX))
                .fetch_optional(&self.pool)
                .await
                .map_err(db_error)?;
                if let Some(row) = cut {
                    let (time_us, id): (i64, String) =
                        (row.try_get("time_us").map_err(db_error)?, row.try_get("id").map_err(db_error)?);
                    deleted += sqlx::query(
                        "DELETE FROM predictions WHERE endpoint = $1 AND (time_us < $2 OR (time_us = $2 AND id <= $3))",
                    )
                    .bind(endpoint)
                    .bind(time_us)
                    .bind(id)
                    .execute(&self.pool)
                    .await
                    .map_err(db_error)?
                    .rows_affected();
                }
                Ok(deleted)
            }
        }
    };
}

pub(crate) use prediction_store;
