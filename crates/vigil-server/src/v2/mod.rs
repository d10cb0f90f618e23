//! KServe V2 / Open Inference Protocol REST routes, with Triton's binary tensor
//! extension and repository index.

pub(crate) mod codec;

use crate::permissions::{Access, On};
use crate::telemetry::{Answered, Protocol, Served};
use crate::traces::TraceParent;
use crate::{ApiError, AppState};
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post};
use axum::{Json, Router};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::time::{Duration, Instant};
use vigil_core::security::Role;
use vigil_core::{DataType, ErrorCode, TensorSpec};
use vigil_runtime::models::ModelDescription;

/// Extensions this server implements (Triton's names). `model_repository` is
/// the index only: models are loaded at start, not through the API.
const EXTENSIONS: [&str; 2] = ["binary_tensor_data", "model_repository"];

/// A data-plane route and who may call it.
pub struct Operation {
    pub method: Method,
    pub path: &'static str,
    pub access: Access,
    pub(crate) route: MethodRouter<AppState>,
}

/// Every data-plane route. Inference and model metadata are about the
/// endpoint the path names; liveness and readiness are open to probes.
pub fn operations() -> Vec<Operation> {
    use Method as M;
    use Role::{Predictor as P, Reader as R};
    let op = |method, path, access, route| Operation { method, path, access, route };
    let on_model = |role| Access::Needs(role, On::Endpoint("model"));
    vec![
        op(M::GET, "/metrics", Access::Needs(R, On::Global), get(metrics)),
        op(M::GET, "/v2/health/live", Access::Public, get(live)),
        op(M::GET, "/v2/health/ready", Access::Public, get(ready)),
        op(M::GET, "/v2", Access::Needs(P, On::Any), get(server_metadata)),
        op(M::POST, "/v2/repository/index", Access::Needs(R, On::Global), post(repository_index)),
        op(M::GET, "/v2/models/{model}", on_model(P), get(model_metadata)),
        op(M::GET, "/v2/models/{model}/versions/{version}", on_model(P), get(model_metadata)),
        op(M::GET, "/v2/models/{model}/config", on_model(P), get(model_config)),
        op(M::GET, "/v2/models/{model}/versions/{version}/config", on_model(P), get(model_config)),
        op(M::GET, "/v2/models/{model}/ready", on_model(P), get(model_ready)),
        op(M::GET, "/v2/models/{model}/versions/{version}/ready", on_model(P), get(model_ready)),
        op(M::POST, "/v2/models/{model}/infer", on_model(P), post(infer)),
        op(M::POST, "/v2/models/{model}/versions/{version}/infer", on_model(P), post(infer)),
    ]
}

/// The data plane's routes: V2, and the records API beside it.
pub fn routes(max_body_bytes: usize) -> Router<AppState> {
    operations()
        .into_iter()
        .chain(crate::records::operations())
        .fold(Router::new(), |router, o| router.route(o.path, o.route))
        .layer(DefaultBodyLimit::max(max_body_bytes))
}

/// Prometheus text format.
pub(crate) async fn metrics(State(state): State<AppState>) -> Response {
    let text = state.telemetry.render(&state.service);
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

async fn live() -> Json<Value> {
    Json(json!({ "live": true }))
}

async fn ready(State(state): State<AppState>) -> Response {
    let ready = state.ready();
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(json!({ "ready": ready }))).into_response()
}

async fn server_metadata() -> Json<Value> {
    Json(json!({ "name": "vigil", "version": env!("CARGO_PKG_VERSION"), "extensions": EXTENSIONS }))
}

/// `{model}` and the optional `{version}` of a route, percent-decoded.
struct ModelPath {
    model: String,
    version: Option<String>,
}

impl<S: Send + Sync> FromRequestParts<S> for ModelPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path(mut params) = Path::<HashMap<String, String>>::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::bad_request(format!("bad path: {}", e.body_text())))?;
        // Names are checked where every protocol resolves them (`ModelSet::choose`).
        Ok(ModelPath { model: params.remove("model").unwrap_or_default(), version: params.remove("version") })
    }
}

fn specs(specs: &[TensorSpec]) -> Value {
    json!(specs.iter().map(|s| json!({ "name": s.name, "datatype": s.datatype, "shape": s.shape })).collect::<Vec<_>>())
}

async fn model_metadata(State(state): State<AppState>, p: ModelPath) -> Result<Json<Value>, ApiError> {
    let d = state.service.models().describe(&p.model, p.version.as_deref())?;
    let (inputs, outputs) =
        d.state.signature().map(|s| (specs(&s.inputs), specs(&s.outputs))).unwrap_or((json!([]), json!([])));
    let mut body = json!({
        "name": d.name,
        "versions": d.versions,
        "platform": ModelDescription::PLATFORM,
        "inputs": inputs,
        "outputs": outputs,
        "state": d.state.name(),
    });
    if let Some(backend) = d.backend() {
        body["backend"] = json!(backend);
    }
    if let Some(reason) = d.state.reason() {
        body["reason"] = json!(reason);
    }
    Ok(Json(body))
}

/// Triton's model configuration (`GET .../config`), which `perf_analyzer` reads
/// before it measures: the signature as `input`/`output` with `TYPE_*` datatypes.
/// `max_batch_size` is 0 because the dims given are full shapes.
async fn model_config(State(state): State<AppState>, p: ModelPath) -> Result<Json<Value>, ApiError> {
    let d = state.service.models().describe(&p.model, p.version.as_deref())?;
    let signature = d.state.signature().cloned().unwrap_or_default();
    let tensors = |specs: &[TensorSpec]| -> Vec<Value> {
        specs.iter().map(|s| json!({"name": s.name, "data_type": triton_type(s.datatype), "dims": s.shape})).collect()
    };
    Ok(Json(json!({
        "name": d.name,
        "platform": ModelDescription::PLATFORM,
        "backend": d.backend().unwrap_or(""),
        "max_batch_size": 0,
        "input": tensors(&signature.inputs),
        "output": tensors(&signature.outputs),
    })))
}

/// Triton's `TYPE_*` name for a datatype.
pub(crate) fn triton_type(d: DataType) -> String {
    match d {
        DataType::Bytes => "TYPE_STRING".to_owned(),
        other => format!("TYPE_{}", other.as_str()),
    }
}

async fn model_ready(State(state): State<AppState>, p: ModelPath) -> Result<Response, ApiError> {
    let d = state.service.models().describe(&p.model, p.version.as_deref())?;
    let ready = d.is_ready();
    let mut body = json!({ "name": d.name, "version": d.version, "ready": ready, "state": d.state.name() });
    if let Some(reason) = d.state.reason() {
        body["reason"] = json!(reason);
    }
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    Ok((status, Json(body)).into_response())
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct IndexRequest {
    #[serde(default)]
    ready: bool,
}

async fn repository_index(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let body = body.map_err(body_error)?;
    let request: IndexRequest = if body.iter().all(u8::is_ascii_whitespace) {
        IndexRequest::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| ApiError::bad_request(format!("malformed JSON: {e}")))?
    };
    let mut index = Vec::new();
    for endpoint in state.service.models().endpoints() {
        for v in &endpoint.versions {
            let vstate = v.state();
            if request.ready && !vstate.is_ready() {
                continue;
            }
            index.push(json!({
                "name": endpoint.name,
                "version": v.version,
                "state": vstate.name(),
                "reason": vstate.reason().unwrap_or(""),
            }));
        }
    }
    Ok(Json(Value::Array(index)))
}

/// Serves one inference, then hands what it did to telemetry.
async fn infer(
    State(state): State<AppState>,
    p: ModelPath,
    principal: Option<axum::Extension<vigil_security::Principal>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let principal = principal.as_ref().map_or("", |p| p.id.as_str());
    observed(&state, &p.model, principal, &headers, |ids| answer(&state, &p, &headers, body, ids)).await
}

/// Runs `answer` for one REST data-plane request to `model`, then hands what
/// it did to telemetry: metrics, the request log line, the trace (started
/// here, under the caller's `traceparent`) and, when drawn, the prediction
/// log record. Every REST route that runs a model goes through here.
pub(crate) async fn observed<F, Fut>(
    state: &AppState,
    model: &str,
    principal: &str,
    headers: &HeaderMap,
    answer: F,
) -> Response
where
    F: FnOnce(Option<vigil_runtime::TraceIds>) -> Fut,
    Fut: std::future::Future<Output = Result<(Response, Served), ApiError>>,
{
    let _counted = state.telemetry.metrics.in_flight();
    let started = Instant::now();
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let request_id = header(crate::REQUEST_ID.as_str()).unwrap_or_default();
    let trace = header("traceparent").and_then(TraceParent::parse);
    let request_trace = state.telemetry.start_trace(trace);
    let ids = request_trace.as_ref().map(|t| t.ids);
    let mut answered = Answered::start(Protocol::Rest, request_id, trace, ids, principal);
    match answer(ids).await {
        Ok((response, mut served)) => {
            let logged = served.logged.take();
            answered.served(model, &served, response.status().as_u16());
            state.telemetry.answered(&answered, logged, request_trace);
            response
        }
        Err(e) => {
            let known = state.service.models().endpoint(model).is_some();
            answered.failed(if known { model } else { "" }, e.status.as_u16(), e.code, started.elapsed());
            state.telemetry.answered(&answered, None, request_trace);
            e.into_response()
        }
    }
}

async fn answer(
    state: &AppState,
    p: &ModelPath,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
    trace: Option<vigil_runtime::TraceIds>,
) -> Result<(Response, Served), ApiError> {
    let started = Instant::now();
    let body = body.map_err(body_error)?;
    let request = codec::decode_request(headers, &body, &state.limits)?;
    let decoded = started.elapsed();
    // A version in the path wins; else `x-vigil-version` pins one for testing.
    let pin = match p.version.clone() {
        Some(v) => Some(v),
        None => match headers.get(VERSION_HEADER) {
            Some(v) => Some(
                v.to_str()
                    .map_err(|_| ApiError::bad_request(format!("{VERSION_HEADER}: not a version name")))?
                    .to_owned(),
            ),
            None => None,
        },
    };
    let mut outcome = state
        .service
        .infer(&p.model, pin.as_deref(), request.inputs, request.output_names, request.deadline, trace)
        .await?;
    let logged = outcome.logged.take();
    let answered = outcome.version.clone();
    let timing = outcome.timing;
    let encoding = Instant::now();
    let response = codec::encode_response(&outcome, request.id, &request.binary_outputs);
    let logged = vigil_runtime::InferenceOutcome::log_outputs(logged, outcome.outputs);
    let stages = [decoded + timing.prepare, timing.queue, timing.inference, encoding.elapsed(), started.elapsed()];
    Ok(served(response, answered, stages, timing.batch, logged))
}

/// An answer of a REST data-plane route, stamped with the version that
/// answered (`x-vigil-version`) and its stages (`Server-Timing`), with what
/// telemetry needs of it.
pub(crate) fn served(
    mut response: Response,
    version: String,
    stages: [Duration; 5],
    batch: Option<usize>,
    logged: Option<vigil_runtime::Logged>,
) -> (Response, Served) {
    if let Ok(value) = HeaderValue::from_str(&version) {
        response.headers_mut().insert(VERSION_HEADER, value);
    }
    if let Ok(value) = HeaderValue::from_str(&server_timing(&stages)) {
        response.headers_mut().insert(SERVER_TIMING, value);
    }
    (response, Served { version, stages, batch, logged })
}

/// The `Server-Timing` header (W3C): each stage's duration in milliseconds,
/// to the microsecond. Written with integer formatting into one buffer: this
/// runs on every request, and float formatting costs several times more.
pub(crate) fn server_timing(stages: &[Duration; 5]) -> String {
    use std::fmt::Write;
    let mut text = String::with_capacity(128);
    for (i, (name, d)) in crate::metrics::STAGES.iter().zip(stages).enumerate() {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        let sep = if i == 0 { "" } else { ", " };
        let _ = write!(text, "{sep}{name};dur={}.{:03}", us / 1000, us % 1000);
    }
    text
}

/// Says which version answered; on a request, pins one.
pub(crate) const VERSION_HEADER: HeaderName = HeaderName::from_static("x-vigil-version");
const SERVER_TIMING: HeaderName = HeaderName::from_static("server-timing");

pub(crate) fn body_error(e: BytesRejection) -> ApiError {
    let status = e.status();
    let mut err = ApiError::bad_request(format!("could not read the body: {}", e.body_text()));
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        err =
            vigil_core::Error::new(ErrorCode::PayloadTooLarge, "the request body is larger than limits.max_body_bytes")
                .into();
    }
    err
}
