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
    let (predictions, next) = crate::predictions::read(&*c.predictions, &c.security.vault, &query).await?;
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

/// Attaches a reference profile (built by `vigil monitor baseline`) to a
/// model version: served requests to it are counted against it from then on.
pub async fn put_profile(
    State(c): Control,
    Extension(who): Caller,
    Path((model, version)): Path<(String, String)>,
    Body(profile): Body<vigil_monitor::drift::ReferenceProfile>,
) -> ApiResult {
    profile.validate().map_err(ApiError::bad_request)?;
    let record = c.registry.version(&model, &version).await?;
    let text = serde_json::to_string(&profile).map_err(|e| vigil_error(ErrorCode::Internal, e.to_string()))?;
    c.registry.store.put_profile(&record.model, &record.version.to_string(), &text, &who.id).await?;
    if let Err(e) = c.monitoring.reload(&c.service).await {
        tracing::warn!(error = %e, "could not reload the reference profiles");
    }
    ok(
        json!({ "model": record.model, "version": record.version, "features": profile.features.len(), "rows": profile.rows }),
    )
}

/// A model version's reference profile.
pub async fn get_profile(State(c): Control, Path((model, version)): Path<(String, String)>) -> ApiResult {
    let record = c.registry.version(&model, &version).await?;
    let wanted = record.version.to_string();
    let stored = c.registry.store.profiles().await?;
    let found = stored.into_iter().find(|p| p.model == record.model && p.version == wanted).ok_or_else(|| {
        vigil_core::Error::not_found(format!("model {} version {wanted} has no reference profile", quoted(&model)))
    })?;
    let profile: serde_json::Value =
        serde_json::from_str(&found.profile).map_err(|e| vigil_error(ErrorCode::Storage, e.to_string()))?;
    ok(profile)
}

#[derive(Deserialize, utoipa::ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct MonitorQuery {
    /// RFC 3339, inclusive (default: an hour ago).
    since: Option<String>,
    /// RFC 3339, exclusive (default: now).
    until: Option<String>,
}

/// Drift and data quality of each of the endpoint's versions over a time
/// range, every replica's windows merged.
pub async fn monitor(
    State(c): Control,
    Path(endpoint): Path<String>,
    query: Result<Query<MonitorQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult {
    let Query(q) = query.map_err(|e| ApiError::bad_request(format!("query: {}", e.body_text())))?;
    vigil_core::names::check_name("endpoint", &endpoint)?;
    let seconds = |field: &str, text: Option<&str>, default: i64| -> Result<i64, ApiError> {
        match text {
            None => Ok(default),
            Some(t) => humantime::parse_rfc3339_weak(t)
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .and_then(|d| i64::try_from(d.as_secs()).ok())
                .ok_or_else(|| ApiError::bad_request(format!("{field}: an RFC 3339 time, like 2026-11-26T10:00:00Z"))),
        }
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    let since = seconds("since", q.since.as_deref(), now - 3600)?;
    let until = seconds("until", q.until.as_deref(), now + 1)?;
    let versions = c.monitoring.report(&endpoint, since, until).await?;
    let micros = |s: i64| s.saturating_mul(1_000_000);
    let quality = crate::feedback::quality(
        &*c.registry.store,
        &c.service,
        &endpoint,
        micros(since),
        micros(until),
        c.monitoring.window_s(),
    )
    .await?;
    ok(json!({ "endpoint": endpoint, "since_s": since, "until_s": until, "versions": versions, "quality": quality }))
}

/// Ground truth for logged predictions: joined by request id (and record
/// index) with the prediction log, stored, and scored by the monitor route.
pub async fn post_feedback(
    State(c): Control,
    Path(endpoint): Path<String>,
    Body(request): Body<crate::feedback::FeedbackRequest>,
) -> ApiResult {
    let store = &*c.registry.store;
    let joined = crate::feedback::record(
        store,
        &*c.predictions,
        &c.security.vault,
        &c.service,
        &endpoint,
        &request.feedback,
        c.monitoring.feedback_horizon,
    )
    .await?;
    ok(json!(joined))
}
