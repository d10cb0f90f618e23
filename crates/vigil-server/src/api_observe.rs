//! Control-plane handlers for what the server observed: the prediction log
//! and alerts.

use crate::ApiError;
use crate::api::{ApiResult, Control, ok};
use axum::extract::{Path, Query, State};
use serde::Deserialize;
use serde_json::json;

#[derive(Deserialize, utoipa::ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct PredictionQuery {
    version: Option<String>,
    request_id: Option<String>,
    /// RFC 3339, inclusive.
    since: Option<String>,
    /// RFC 3339, exclusive.
    until: Option<String>,
    /// The `cursor` of the last record of the previous page.
    after: Option<String>,
    /// At most this many (default 100, at most 1000).
    limit: Option<u32>,
}

/// An endpoint's recorded predictions, in the order they were stored, opened by the vault.
pub async fn list_predictions(
    State(c): Control,
    Path(endpoint): Path<String>,
    query: Result<Query<PredictionQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult {
    let Query(q) = query.map_err(|e| ApiError::bad_request(format!("query: {}", e.body_text())))?;
    let query = crate::predictions::Query::new(
        &endpoint,
        q.version,
        q.request_id,
        q.since.as_deref(),
        q.until.as_deref(),
        q.after.as_deref(),
        q.limit,
    )?;
    let (predictions, next) = crate::predictions::read(&*c.registry.store, &c.security.vault, &query).await?;
    ok(json!({ "predictions": predictions, "next": next }))
}

/// This replica's pending and firing alerts and its rules.
pub async fn list_alerts(State(c): Control) -> ApiResult {
    ok(json!({ "alerts": c.alerting.active(), "rules": c.alerting.rules() }))
}
