//! The SQL implementation of [`PredictionStore`](crate::PredictionStore),
//! stamped out for both pools from `sql.rs` like the others.

/// Implements `PredictionStore` for a store type with a `pool` field.
macro_rules! prediction_store {
    ($store:ident) => {
        #[async_trait]
        impl $crate::PredictionStore for $store {
            async fn insert_chunk(&self, c: &StoredChunk) -> Result<(), Error> {
                sqlx::query(
                    "INSERT INTO prediction_chunks (id, endpoint, first_us, last_us, records, master_key_id, \
                     wrapped_key, ciphertext, size_bytes) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                )
                .bind(&c.id)
                .bind(&c.endpoint)
                .bind(c.first_us)
                .bind(c.last_us)
                .bind(i64::from(c.records))
                .bind(&c.master_key_id)
                .bind(&c.wrapped_key)
                .bind(&c.ciphertext)
                .bind(i64::try_from(c.ciphertext.len() + c.wrapped_key.len()).unwrap_or(i64::MAX))
                .execute(&self.pool)
                .await
                .map_err(db_error)?;
                Ok(())
            }

            async fn list_chunks(&self, f: &ChunkFilter) -> Result<Vec<StoredChunk>, Error> {
                // Absent filters are bound as values that match everything, so
                // that one statement serves every combination.
                let (from_time, from_id) = f.from.clone().unwrap_or((i64::MIN, String::new()));
                let rows = sqlx::query(
                    "SELECT id, endpoint, first_us, last_us, records, master_key_id, wrapped_key, ciphertext \
                     FROM prediction_chunks WHERE endpoint = $1 AND last_us >= $2 AND first_us < $3 \
                     AND (first_us > $4 OR (first_us = $4 AND id >= $5)) \
                     ORDER BY first_us, id LIMIT $6",
                )
                .bind(&f.endpoint)
                .bind(f.since_us.unwrap_or(i64::MIN))
                .bind(f.until_us.unwrap_or(i64::MAX))
                .bind(from_time)
                .bind(from_id)
                .bind(i64::from(f.limit))
                .fetch_all(&self.pool)
                .await
                .map_err(db_error)?;
                rows.iter()
                    .map(|row| {
                        Ok(StoredChunk {
                            id: row.try_get("id").map_err(db_error)?,
                            endpoint: row.try_get("endpoint").map_err(db_error)?,
                            first_us: row.try_get("first_us").map_err(db_error)?,
                            last_us: row.try_get("last_us").map_err(db_error)?,
                            records: u32::try_from(row.try_get::<i64, _>("records").map_err(db_error)?)
                                .unwrap_or(u32::MAX),
                            master_key_id: row.try_get("master_key_id").map_err(db_error)?,
                            wrapped_key: row.try_get("wrapped_key").map_err(db_error)?,
                            ciphertext: row.try_get("ciphertext").map_err(db_error)?,
                        })
                    })
                    .collect()
            }

            async fn prune_chunks(&self, endpoint: &str, before_us: i64, max_bytes: u64) -> Result<u64, Error> {
                let mut deleted = sqlx::query("DELETE FROM prediction_chunks WHERE endpoint = $1 AND last_us < $2")
                    .bind(endpoint)
                    .bind(before_us)
                    .execute(&self.pool)
                    .await
                    .map_err(db_error)?
                    .rows_affected();
                // The newest chunk whose running total (newest first) passes
                // the limit: it and everything older go.
                let cut = sqlx::query(
                    "SELECT first_us, id FROM (SELECT first_us, id, \
                     SUM(size_bytes) OVER (ORDER BY first_us DESC, id DESC) AS running \
                     FROM prediction_chunks WHERE endpoint = $1) AS t WHERE running > $2 \
                     ORDER BY first_us DESC, id DESC LIMIT 1",
                )
                .bind(endpoint)
                .bind(i64::try_from(max_bytes).unwrap_or(i64::MAX))
                .fetch_optional(&self.pool)
                .await
                .map_err(db_error)?;
                if let Some(row) = cut {
                    let (first_us, id): (i64, String) =
                        (row.try_get("first_us").map_err(db_error)?, row.try_get("id").map_err(db_error)?);
                    deleted += sqlx::query(
                        "DELETE FROM prediction_chunks WHERE endpoint = $1 \
                         AND (first_us < $2 OR (first_us = $2 AND id <= $3))",
                    )
                    .bind(endpoint)
                    .bind(first_us)
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
