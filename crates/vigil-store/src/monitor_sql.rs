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
                tx.commit().await.map_err(db_error)
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
        }
    };
}

pub(crate) use monitor_store;
