//! The SQL implementation of [`MonitorStore`](crate::MonitorStore), stamped
//! out for both pools from `sql.rs` like the others.

/// Implements `MonitorStore` for a store type with a `pool` field.
macro_rules! monitor_store {
    ($store:ident) => {
        #[async_trait]
        impl $crate::MonitorStore for $store {
            async fn put_profile(&self, model: &str, version: &str, profile: &str, by: &str) -> Result<(), Error> {
                let mut tx = write_tx!(self.pool);
                sqlx::query(
                    "INSERT INTO reference_profiles (model, version, profile, updated_by, updated_at) \
                     VALUES ($1, $2, $3, $4, $5) \
                     ON CONFLICT (model, version) DO UPDATE SET profile = $3, updated_by = $4, updated_at = $5",
                )
                .bind(model)
                .bind(version)
                .bind(profile)
                .bind(by)
                .bind(now())
                .execute(&mut *tx)
                .await
                .map_err(db_error)?;
                commit!(tx);
                Ok(())
            }

            async fn profiles(&self) -> Result<Vec<StoredProfile>, Error> {
                let rows = sqlx::query(
                    "SELECT model, version, profile, updated_by, updated_at FROM reference_profiles \
                     ORDER BY model, version",
                )
                .fetch_all(&self.pool)
                .await
                .map_err(db_error)?;
                rows.iter()
                    .map(|row| {
                        Ok(StoredProfile {
                            model: row.try_get("model").map_err(db_error)?,
                            version: row.try_get("version").map_err(db_error)?,
                            profile: row.try_get("profile").map_err(db_error)?,
                            updated_by: row.try_get("updated_by").map_err(db_error)?,
                            updated_at: row.try_get("updated_at").map_err(db_error)?,
                        })
                    })
                    .collect()
            }

            async fn put_window(&self, w: &StoredWindow) -> Result<(), Error> {
                sqlx::query(
                    "INSERT INTO monitor_windows (endpoint, version, start_s, replica, sketch) \
                     VALUES ($1, $2, $3, $4, $5) \
                     ON CONFLICT (endpoint, version, start_s, replica) DO UPDATE SET sketch = $5",
                )
                .bind(&w.endpoint)
                .bind(&w.version)
                .bind(w.start_s)
                .bind(&w.replica)
                .bind(&w.sketch)
                .execute(&self.pool)
                .await
                .map_err(db_error)?;
                Ok(())
            }

            async fn windows(&self, endpoint: &str, since_s: i64, until_s: i64) -> Result<Vec<StoredWindow>, Error> {
                let rows = sqlx::query(
                    "SELECT endpoint, version, start_s, replica, sketch FROM monitor_windows \
                     WHERE endpoint = $1 AND start_s >= $2 AND start_s < $3 ORDER BY version, start_s, replica",
                )
                .bind(endpoint)
                .bind(since_s)
                .bind(until_s)
                .fetch_all(&self.pool)
                .await
                .map_err(db_error)?;
                rows.iter()
                    .map(|row| {
                        Ok(StoredWindow {
                            endpoint: row.try_get("endpoint").map_err(db_error)?,
                            version: row.try_get("version").map_err(db_error)?,
                            start_s: row.try_get("start_s").map_err(db_error)?,
                            replica: row.try_get("replica").map_err(db_error)?,
                            sketch: row.try_get("sketch").map_err(db_error)?,
                        })
                    })
                    .collect()
            }

            async fn put_feedback(&self, rows: &[StoredFeedback]) -> Result<(), Error> {
                let mut tx = self.pool.begin().await.map_err(db_error)?;
                for f in rows {
                    sqlx::query(
                        "INSERT INTO feedback (endpoint, request_id, row_index, version, predicted_us, received_us, \
                         prediction, truth) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
                         ON CONFLICT (endpoint, request_id, row_index) DO UPDATE SET version = $4, \
                         predicted_us = $5, received_us = $6, prediction = $7, truth = $8",
                    )
                    .bind(&f.endpoint)
                    .bind(&f.request_id)
                    .bind(to_i64(f.row, "row")?)
                    .bind(&f.version)
                    .bind(f.predicted_us)
                    .bind(f.received_us)
                    .bind(&f.prediction)
                    .bind(&f.truth)
                    .execute(&mut *tx)
                    .await
                    .map_err(db_error)?;
                }
                commit!(tx);
                Ok(())
            }

            async fn feedback(
                &self,
                endpoint: &str,
                since_us: i64,
                until_us: i64,
            ) -> Result<Vec<StoredFeedback>, Error> {
                let rows = sqlx::query(
                    "SELECT endpoint, request_id, row_index, version, predicted_us, received_us, prediction, truth \
                     FROM feedback WHERE endpoint = $1 AND predicted_us >= $2 AND predicted_us < $3 \
                     ORDER BY predicted_us, request_id, row_index",
                )
                .bind(endpoint)
                .bind(since_us)
                .bind(until_us)
                .fetch_all(&self.pool)
                .await
                .map_err(db_error)?;
                rows.iter()
                    .map(|row| {
                        Ok(StoredFeedback {
                            endpoint: row.try_get("endpoint").map_err(db_error)?,
                            request_id: row.try_get("request_id").map_err(db_error)?,
                            row: to_u64(row.try_get("row_index").map_err(db_error)?),
                            version: row.try_get("version").map_err(db_error)?,
                            predicted_us: row.try_get("predicted_us").map_err(db_error)?,
                            received_us: row.try_get("received_us").map_err(db_error)?,
                            prediction: row.try_get("prediction").map_err(db_error)?,
                            truth: row.try_get("truth").map_err(db_error)?,
                        })
                    })
                    .collect()
            }

            async fn prune_monitoring(&self, before_s: i64) -> Result<u64, Error> {
                let mut tx = self.pool.begin().await.map_err(db_error)?;
                let windows = sqlx::query("DELETE FROM monitor_windows WHERE start_s < $1")
                    .bind(before_s)
                    .execute(&mut *tx)
                    .await
                    .map_err(db_error)?;
                let feedback = sqlx::query("DELETE FROM feedback WHERE predicted_us < $1")
                    .bind(before_s.saturating_mul(1_000_000))
                    .execute(&mut *tx)
                    .await
                    .map_err(db_error)?;
                commit!(tx);
                Ok(windows.rows_affected() + feedback.rows_affected())
            }
        }
    };
}

pub(crate) use monitor_store;
