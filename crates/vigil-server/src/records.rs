//! The records API: named features in, labelled predictions out, for models
//! whose version declares a feature spec. KServe V1 / TensorFlow Serving's
//! `POST /v1/models/{name}:predict`, and the same at
//! `POST /api/v1/endpoints/{endpoint}/predict`. The work is the inference
//! service's ([`vigil_runtime::InferenceService::predict`]); this adapter
//! decodes, encodes and times.

use crate::permissions::{Access, On};
use crate::telemetry::Served;
use crate::v2::{Operation, VERSION_HEADER, body_error, observed, served};
use crate::{ApiError, AppState};
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json};
use bytes::Bytes;
use serde_json::{Value, json};
use std::time::Instant;
use vigil_core::features::{RecordError, Records, Rule};
use vigil_core::security::Role;
use vigil_security::Principal;

pub fn operations() -> Vec<Operation> {
    let on = |param| Access::Needs(Role::Predictor, On::Endpoint(param));
    let verb = Access::Needs(Role::Predictor, On::EndpointVerb("model"));
    vec![
        Operation { method: Method::GET, path: "/v1/models/{model}", access: on("model"), route: get(status) },
        Operation { method: Method::POST, path: "/v1/models/{model}", access: verb, route: post(predict_v1) },
        Operation {
            method: Method::POST,
            path: "/api/v1/endpoints/{endpoint}/predict",
            access: on("endpoint"),
            route: post(predict_api),
        },
    ]
}

/// KServe V1's model status: `{"name", "ready"}`.
async fn status(State(state): State<AppState>, Path(model): Path<String>) -> Result<Response, ApiError> {
    let d = state.service.models().describe(&model, None)?;
    let ready = d.is_ready();
    let code = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    Ok((code, Json(json!({ "name": d.name, "ready": ready }))).into_response())
}

/// `POST /v1/models/{name}:predict`: the verb rides on the last segment.
async fn predict_v1(
    State(state): State<AppState>,
    Path(target): Path<String>,
    principal: Option<Extension<Principal>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    match target.split_once(':') {
        Some((model, "predict")) => predict(&state, model, principal, &headers, body).await,
        _ => ApiError::no_route(StatusCode::NOT_FOUND, "no such route: records go to /v1/models/{name}:predict")
            .into_response(),
    }
}

async fn predict_api(
    State(state): State<AppState>,
    Path(endpoint): Path<String>,
    principal: Option<Extension<Principal>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    predict(&state, &endpoint, principal, &headers, body).await
}

/// Serves one records request, then hands what it did to telemetry, as the
/// V2 route does.
async fn predict(
    state: &AppState,
    model: &str,
    principal: Option<Extension<Principal>>,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let principal = principal.as_ref().map_or("", |p| p.id.as_str());
    observed(state, model, principal, headers, |ids| async move {
        let answered = answer(state, model, headers, body, ids).await;
        if let Err(e) = &answered
            && !e.details.is_empty()
        {
            count_problems(state, model, &e.details.iter().collect::<Vec<_>>());
        }
        answered
    })
    .await
}

/// Data quality of what the records API refused: problems by rule.
fn count_problems(state: &AppState, endpoint: &str, problems: &[&RecordError]) {
    let mut by_rule: Vec<(Rule, u64)> = Vec::new();
    for p in problems {
        match by_rule.iter_mut().find(|(r, _)| *r == p.rule) {
            Some((_, n)) => *n += 1,
            None => by_rule.push((p.rule, 1)),
        }
    }
    for (rule, n) in by_rule {
        let labels = [("endpoint", endpoint.to_owned()), ("rule", rule.as_str().to_owned())];
        state.telemetry.metrics.add("vigil_record_problems_total", &labels, n);
    }
}

async fn answer(
    state: &AppState,
    model: &str,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
    trace: Option<vigil_runtime::TraceIds>,
) -> Result<(Response, Served), ApiError> {
    let started = Instant::now();
    let body = body.map_err(body_error)?;
    let records = Records::from_json(&body)?;
    let decoded = started.elapsed();
    let pin = match headers.get(VERSION_HEADER) {
        Some(v) => {
            Some(v.to_str().map_err(|_| ApiError::bad_request(format!("{VERSION_HEADER}: not a version name")))?)
        }
        None => None,
    };
    let deadline = match headers.get("x-vigil-timeout-ms") {
        Some(v) => {
            let ms = v
                .to_str()
                .ok()
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or_else(|| ApiError::bad_request("x-vigil-timeout-ms: a whole number of milliseconds"))?;
            crate::protocol::deadline(ms.saturating_mul(1000))
        }
        None => None,
    };
    let mut outcome =
        state.service.predict(model, pin, records, state.limits.max_tensor_elements, deadline, trace).await?;
    let encoding = Instant::now();
    let rejected: Vec<&RecordError> = outcome.predictions.iter().filter_map(|p| p.as_ref().err()).flatten().collect();
    if !rejected.is_empty() {
        count_problems(state, model, &rejected);
    }
    let predictions: Vec<Value> = std::mem::take(&mut outcome.predictions)
        .into_iter()
        .map(|p| p.unwrap_or_else(|problems| json!({ "errors": problems })))
        .collect();
    let body = json!({ "predictions": predictions, "model_name": outcome.model, "model_version": outcome.version });
    let timing = outcome.timing;
    let stages = [
        decoded + timing.prepare,
        timing.queue,
        timing.inference,
        timing.postprocess + encoding.elapsed(),
        started.elapsed(),
    ];
    Ok(served(Json(body).into_response(), outcome.version, stages, timing.batch, outcome.logged.take()))
}
