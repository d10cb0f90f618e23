//! Control-plane handlers for what the server observed: the prediction log
//! and alerts.

use crate::api::{ApiResult, Body, Caller, Control, ok};
use crate::{ApiError, vigil_error};
use axum::Extension;
use axum::extract::{Path, Query, State};
use axum::response::IntoResponse;
use serde::Deserialize;
use serde_json::json;
use vigil_core::ErrorCode;
use vigil_core::names::quoted;
use vigil_monitor::AlertRule;

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

/// This replica's pending and firing alerts and its rules, each saying
/// where it comes from (`config` or `api`).
pub async fn list_alerts(State(c): Control) -> ApiResult {
    let rules: Vec<serde_json::Value> = c
        .alerting
        .rules()
        .into_iter()
        .map(|r| {
            let source = if c.alerting.configured(&r.name) { "config" } else { "api" };
            let mut rule = json!(r);
            rule["source"] = json!(source);
            rule
        })
        .collect();
    ok(json!({ "alerts": c.alerting.active(), "rules": rules }))
}

/// Creates or replaces an alert rule; every replica picks it up at its next evaluation.
pub async fn put_alert_rule(
    State(c): Control,
    Extension(who): Caller,
    Path(name): Path<String>,
    Body(rule): Body<AlertRule>,
) -> ApiResult {
    if rule.name != name {
        return Err(ApiError::bad_request(format!("name: {} is not the rule named in the path", quoted(&rule.name))));
    }
    if c.alerting.configured(&name) {
        return Err(vigil_error(
            ErrorCode::Conflict,
            format!("alert rule {} is set in the configuration, which the API cannot change", quoted(&name)),
        ));
    }
    rule.validate().map_err(|e| ApiError::bad_request(e.to_string()))?;
    let text = serde_json::to_string(&rule).map_err(|e| ApiError::bad_request(e.to_string()))?;
    c.registry.store.put_alert_rule(&name, &text, &who.id).await?;
    c.alerting.reload().await?;
    ok(rule)
}

pub async fn delete_alert_rule(State(c): Control, Path(name): Path<String>) -> ApiResult {
    if c.alerting.configured(&name) {
        return Err(vigil_error(
            ErrorCode::Conflict,
            format!("alert rule {} is set in the configuration, which the API cannot change", quoted(&name)),
        ));
    }
    c.registry.store.delete_alert_rule(&name).await?;
    c.alerting.reload().await?;
    Ok(axum::http::StatusCode::NO_CONTENT.into_response())
}
