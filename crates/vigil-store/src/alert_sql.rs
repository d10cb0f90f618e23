//! The SQL implementation of [`AlertRuleStore`](crate::AlertRuleStore),
//! stamped out for both pools from `sql.rs` like the others.

/// Implements `AlertRuleStore` for a store type with a `pool` field.
macro_rules! alert_rule_store {
    ($store:ident) => {
        #[async_trait]
        impl $crate::AlertRuleStore for $store {
            async fn put_alert_rule(&self, name: &str, rule: &str, by: &str) -> Result<(), Error> {
                let mut tx = write_tx!(self.pool);
                sqlx::query(
                    "INSERT INTO alert_rules (name, rule, updated_by, updated_at) VALUES ($1, $2, $3, $4) \
                     ON CONFLICT (name) DO UPDATE SET rule = $2, updated_by = $3, updated_at = $4",
                )
                .bind(name)
                .bind(rule)
                .bind(by)
                .bind(now())
                .execute(&mut *tx)
                .await
                .map_err(db_error)?;
                commit!(tx);
                Ok(())
            }

            async fn delete_alert_rule(&self, name: &str) -> Result<(), Error> {
                let mut tx = write_tx!(self.pool);
                let deleted = sqlx::query("DELETE FROM alert_rules WHERE name = $1")
                    .bind(name)
                    .execute(&mut *tx)
                    .await
                    .map_err(db_error)?;
                if deleted.rows_affected() == 0 {
                    return Err(Error::not_found(format!("no alert rule {}", quoted(name))));
                }
                commit!(tx);
                Ok(())
            }

            async fn alert_rules(&self) -> Result<Vec<StoredRule>, Error> {
                let rows = sqlx::query("SELECT name, rule, updated_by, updated_at FROM alert_rules ORDER BY name")
                    .fetch_all(&self.pool)
                    .await
                    .map_err(db_error)?;
                rows.iter()
                    .map(|row| {
                        Ok(StoredRule {
                            name: row.try_get("name").map_err(db_error)?,
                            rule: row.try_get("rule").map_err(db_error)?,
                            updated_by: row.try_get("updated_by").map_err(db_error)?,
                            updated_at: row.try_get("updated_at").map_err(db_error)?,
                        })
                    })
                    .collect()
            }
        }
    };
}

pub(crate) use alert_rule_store;
