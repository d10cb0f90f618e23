//! The control plane: REST under `/api/v1`. Every route is declared once, in
//! [`operations`], with the role it needs, and the router and the OpenAPI
//! document are both built from that table: no route can exist without a
//! permission or go undocumented. Handlers are thin over [`Registry`] and
//! [`Deployer`].

use crate::deploy::{DeployStatus, Deployer};
use crate::registry::{EndpointExport, Registry, TrafficRequest, VersionRef};
use crate::{ApiError, vigil_error};
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Extension, FromRequest, Path, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, delete, get, post, put};
use axum::{Json, Router};
use bytes::Bytes;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;
use vigil_core::registry::Role;
use vigil_runtime::InferenceService;
use vigil_security::Principal;

/// What the control-plane handlers share.
pub struct ControlPlane {
    pub registry: Registry,
    pub deployer: Arc<Deployer>,
    pub service: InferenceService,
    pub security: Arc<crate::security::Security>,
    pub alerting: Arc<crate::alerting::Alerting>,
    pub monitoring: Arc<crate::monitoring::Monitoring>,
    /// Where the prediction log is kept: the metadata store or an object store.
    pub predictions: Arc<dyn vigil_store::PredictionStore>,
}

pub(crate) type Control = State<Arc<ControlPlane>>;
pub(crate) type ApiResult = Result<Response, ApiError>;

/// Who is calling: the guard puts the principal on every request it lets through.
pub(crate) type Caller = Extension<Principal>;

/// One route of the control plane: method, path, the role it needs, what it
/// does, and what it takes and returns (for the document).
pub struct Operation {
    pub method: Method,
    pub path: &'static str,
    pub role: Role,
    pub summary: &'static str,
    pub request: Takes,
    pub reply: Gives,
    route: MethodRouter<Arc<ControlPlane>>,
}

/// A request body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Takes {
    Nothing,
    /// JSON of the named schema (`components.schemas`).
    Json(&'static str),
    /// A model package (tar/tar.gz), or JSON `StoredVersion`.
    Package,
}

/// A success body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gives {
    /// 204, no body.
    Nothing,
    /// An object of the named schema.
    One(&'static str),
    /// `{"<field>": [<schema>, …]}`.
    List(&'static str, &'static str),
    /// An endpoint: its revision, deployment status and shadow results.
    Endpoint,
    /// A model with its versions and aliases.
    Model,
    /// `{"created": bool, "version": VersionRecord}` (201 when created).
    Registered,
    /// This document.
    Document,
    /// `{"key": "vgl_…", "record": KeyRecord}` (201).
    NewKey,
}

/// Every control-plane route.
pub fn operations() -> Vec<Operation> {
    use crate::api_security as s;
    use Gives::{Endpoint, List, One};
    use Method as M;
    use Role::{Contributor as C, Owner as O, Reader as R};
    let op = |method, path, role, summary, request, reply, route| Operation {
        method,
        path,
        role,
        summary,
        request,
        reply,
        route,
    };
    vec![
        op(
            M::GET,
            "/api/v1/models",
            R,
            "List models",
            Takes::Nothing,
            List("models", "ModelSummary"),
            get(list_models),
        ),
        op(
            M::GET,
            "/api/v1/models/{model}",
            R,
            "A model, its versions and aliases",
            Takes::Nothing,
            Gives::Model,
            get(show_model),
        ),
        op(
            M::GET,
            "/api/v1/models/{model}/versions",
            R,
            "A model's versions",
            Takes::Nothing,
            List("versions", "VersionRecord"),
            get(list_versions),
        ),
        op(
            M::POST,
            "/api/v1/models/{model}/versions",
            C,
            "Register a version: a tar/tar.gz package (model.onnx, vigil.toml), or JSON {digest, manifest} for an artifact already stored",
            Takes::Package,
            Gives::Registered,
            post(push_version),
        ),
        op(
            M::GET,
            "/api/v1/models/{model}/versions/{version}",
            R,
            "A version, by number or alias",
            Takes::Nothing,
            One("VersionRecord"),
            get(show_version),
        ),
        op(
            M::DELETE,
            "/api/v1/models/{model}/versions/{version}",
            C,
            "Delete a version (refused while it takes traffic or an alias points at it)",
            Takes::Nothing,
            Gives::Nothing,
            delete(delete_version),
        ),
        op(
            M::GET,
            "/api/v1/models/{model}/aliases",
            R,
            "A model's aliases",
            Takes::Nothing,
            List("aliases", "Alias"),
            get(list_aliases),
        ),
        op(
            M::PUT,
            "/api/v1/models/{model}/aliases/{alias}",
            C,
            "Point an alias at a version",
            Takes::Json("AliasRequest"),
            One("Alias"),
            put(set_alias),
        ),
        op(
            M::DELETE,
            "/api/v1/models/{model}/aliases/{alias}",
            C,
            "Delete an alias",
            Takes::Nothing,
            Gives::Nothing,
            delete(delete_alias),
        ),
        op(
            M::GET,
            "/api/v1/models/{model}/aliases/{alias}/history",
            R,
            "Every move of an alias",
            Takes::Nothing,
            List("history", "AliasEvent"),
            get(alias_history),
        ),
        op(
            M::GET,
            "/api/v1/endpoints",
            R,
            "Endpoints with their current revision and status",
            Takes::Nothing,
            List("endpoints", "EndpointView"),
            get(list_endpoints),
        ),
        op(
            M::GET,
            "/api/v1/endpoints/{endpoint}",
            R,
            "An endpoint: revision, status, shadow comparisons",
            Takes::Nothing,
            Endpoint,
            get(show_endpoint),
        ),
        op(
            M::PUT,
            "/api/v1/endpoints/{endpoint}",
            C,
            "Set an endpoint's traffic policy; answers once this server serves it",
            Takes::Json("TrafficRequest"),
            Endpoint,
            put(set_endpoint),
        ),
        op(
            M::DELETE,
            "/api/v1/endpoints/{endpoint}",
            C,
            "Delete an endpoint and its history",
            Takes::Nothing,
            Gives::Nothing,
            delete(delete_endpoint),
        ),
        op(
            M::GET,
            "/api/v1/endpoints/{endpoint}/revisions",
            R,
            "An endpoint's revisions, oldest first",
            Takes::Nothing,
            List("revisions", "Revision"),
            get(revisions),
        ),
        op(
            M::POST,
            "/api/v1/endpoints/{endpoint}/rollback",
            C,
            "Restore a revision (default: the latest earlier one that differs) as a new revision",
            Takes::Json("RollbackRequest"),
            Endpoint,
            post(rollback),
        ),
        op(
            M::GET,
            "/api/v1/endpoints/{endpoint}/export",
            R,
            "Everything needed to recreate the endpoint",
            Takes::Nothing,
            One("EndpointExport"),
            get(export),
        ),
        op(
            M::POST,
            "/api/v1/apply",
            C,
            "Make an endpoint match an export (idempotent)",
            Takes::Json("EndpointExport"),
            Endpoint,
            post(apply),
        ),
        op(M::GET, "/api/v1/openapi.json", R, "This document", Takes::Nothing, Gives::Document, get(openapi)),
        op(
            M::GET,
            "/api/v1/keys",
            O,
            "API keys (never the keys themselves)",
            Takes::Nothing,
            List("keys", "KeyRecord"),
            get(s::list_keys),
        ),
        op(
            M::POST,
            "/api/v1/keys",
            O,
            "Create an API key; the answer is the only time the key is shown",
            Takes::Json("KeyRequest"),
            Gives::NewKey,
            post(s::create_key),
        ),
        op(
            M::DELETE,
            "/api/v1/keys/{key}",
            O,
            "Revoke an API key",
            Takes::Nothing,
            One("KeyRecord"),
            delete(s::revoke_key),
        ),
        op(
            M::POST,
            "/api/v1/keys/{key}/rotate",
            O,
            "Replace a key with a new one of the same role and scope; the old one keeps working for the overlap",
            Takes::Json("RotateRequest"),
            Gives::NewKey,
            post(s::rotate_key),
        ),
        op(
            M::GET,
            "/api/v1/secrets",
            O,
            "Secrets (names and versions, never values)",
            Takes::Nothing,
            List("secrets", "SecretInfo"),
            get(s::list_secrets),
        ),
        op(
            M::PUT,
            "/api/v1/secrets/{secret}",
            O,
            "Store a new version of a secret (encrypted at rest)",
            Takes::Json("SecretRequest"),
            One("SecretInfo"),
            put(s::put_secret),
        ),
        op(
            M::GET,
            "/api/v1/secrets/{secret}",
            O,
            "A secret's latest value (audited)",
            Takes::Nothing,
            One("SecretValue"),
            get(s::get_secret),
        ),
        op(
            M::GET,
            "/api/v1/secrets/{secret}/versions/{version}",
            O,
            "A secret's value at a version (audited)",
            Takes::Nothing,
            One("SecretValue"),
            get(s::get_secret_version),
        ),
        op(
            M::DELETE,
            "/api/v1/secrets/{secret}",
            O,
            "Delete every version of a secret",
            Takes::Nothing,
            Gives::Nothing,
            delete(s::delete_secret),
        ),
        op(
            M::POST,
            "/api/v1/vault/rewrap",
            O,
            "After a master-key rotation: re-seal every secret's data key under the current master key",
            Takes::Nothing,
            One("RewrapResult"),
            post(s::rewrap),
        ),
        op(
            M::GET,
            "/api/v1/endpoints/{endpoint}/predictions",
            C,
            "Recorded predictions (inputs, outputs), filtered by version, request_id, since, until; paged by after and limit",
            Takes::Nothing,
            List("predictions", "PredictionRecord"),
            get(crate::api_observe::list_predictions),
        ),
        op(
            M::PUT,
            "/api/v1/models/{model}/versions/{version}/profile",
            C,
            "Attach a reference profile (from `vigil monitor baseline`): served requests are counted against it",
            Takes::Json("ReferenceProfile"),
            One("ProfileAttached"),
            put(crate::api_observe::put_profile),
        ),
        op(
            M::GET,
            "/api/v1/models/{model}/versions/{version}/profile",
            R,
            "A version's reference profile",
            Takes::Nothing,
            One("ReferenceProfile"),
            get(crate::api_observe::get_profile),
        ),
        op(
            M::POST,
            "/api/v1/endpoints/{endpoint}/feedback",
            C,
            "Ground truth for logged predictions ({request_id, index, label | value}, up to 1000), joined with the prediction log",
            Takes::Json("FeedbackRequest"),
            One("FeedbackJoined"),
            post(crate::api_observe::post_feedback),
        ),
        op(
            M::GET,
            "/api/v1/endpoints/{endpoint}/monitor",
            R,
            "Drift, data quality and model quality per version over since..until (default the last hour), every replica's windows merged",
            Takes::Nothing,
            One("Monitor"),
            get(crate::api_observe::monitor),
        ),
        op(
            M::GET,
            "/api/v1/alerts",
            R,
            "Pending and firing alerts, and the rules they come from",
            Takes::Nothing,
            One("Alerts"),
            get(crate::api_observe::list_alerts),
        ),
        op(
            M::PUT,
            "/api/v1/alerts/rules/{rule}",
            C,
            "Create or replace an alert rule (rules in the configuration cannot be changed here)",
            Takes::Json("AlertRule"),
            One("AlertRule"),
            put(crate::api_observe::put_alert_rule),
        ),
        op(
            M::DELETE,
            "/api/v1/alerts/rules/{rule}",
            C,
            "Delete an alert rule made through the API",
            Takes::Nothing,
            Gives::Nothing,
            delete(crate::api_observe::delete_alert_rule),
        ),
        op(
            M::GET,
            "/api/v1/audit",
            O,
            "Audit events, filtered by principal, action (or method), since, until; paged by after and limit",
            Takes::Nothing,
            List("events", "AuditEvent"),
            get(s::list_audit),
        ),
        op(
            M::GET,
            "/api/v1/audit/verify",
            O,
            "Check the audit hash chain end to end",
            Takes::Nothing,
            One("AuditVerification"),
            get(s::verify_audit),
        ),
    ]
}

/// The control plane's router. Packages may be far larger than inference
/// bodies, so registration has its own limit.
pub fn routes(control: Arc<ControlPlane>, max_package_bytes: usize) -> Router {
    let mut paths: BTreeMap<&str, MethodRouter<Arc<ControlPlane>>> = BTreeMap::new();
    for o in operations() {
        let limit = if o.request == Takes::Package { max_package_bytes } else { MAX_JSON_BYTES };
        let route = o.route.layer(DefaultBodyLimit::max(limit));
        let merged = match paths.remove(o.path) {
            Some(existing) => existing.merge(route),
            None => route,
        };
        paths.insert(o.path, merged);
    }
    let mut router = Router::new();
    for (path, route) in paths {
        router = router.route(path, route);
    }
    router.with_state(control)
}

/// Control-plane JSON bodies (policies, exports) are small: a megabyte is plenty.
pub const MAX_JSON_BYTES: usize = 1 << 20;

/// A JSON body whose errors are ours: 400 naming the field, not axum's 422 text.
pub(crate) struct Body<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = Bytes::from_request(req, state).await.map_err(body_error)?;
        parse_json(&bytes).map(Body)
    }
}

/// Parses a JSON body; an error names the field it is about (`traffic[0].weight: …`).
pub(crate) fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let at = if path == "." { "body".to_owned() } else { format!("body.{path}") };
        ApiError::bad_request(format!("{at}: {}", e.inner()))
    })
}

pub(crate) fn body_error(e: BytesRejection) -> ApiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        return vigil_error(vigil_core::ErrorCode::PayloadTooLarge, "the body is larger than the limit for this route");
    }
    ApiError::bad_request(format!("could not read the body: {}", e.body_text()))
}

pub(crate) fn ok(value: impl serde::Serialize) -> ApiResult {
    Ok(Json(value).into_response())
}

fn parse_version(version: &str) -> Result<u64, ApiError> {
    version.parse().map_err(|_| ApiError::bad_request(format!("version: '{version}' is not a version number")))
}

async fn list_models(State(c): Control) -> ApiResult {
    ok(json!({ "models": c.registry.store.list_models().await? }))
}

async fn show_model(State(c): Control, Path(model): Path<String>) -> ApiResult {
    let versions = c.registry.store.list_versions(&model).await?;
    let aliases = c.registry.store.list_aliases(&model).await?;
    ok(json!({ "name": model, "versions": versions, "aliases": aliases }))
}

async fn list_versions(State(c): Control, Path(model): Path<String>) -> ApiResult {
    ok(json!({ "versions": c.registry.store.list_versions(&model).await? }))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct StoredVersion {
    digest: String,
    #[serde(default)]
    manifest: String,
}

async fn push_version(
    State(c): Control,
    Extension(who): Caller,
    Path(model): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let body = body.map_err(body_error)?;
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let (record, created) = if is_json {
        let stored: StoredVersion = parse_json(&body)?;
        c.registry.register_stored(&model, &stored.digest, stored.manifest, &who.id).await?
    } else {
        c.registry.push(&model, body, &who.id).await?
    };
    let status = if created { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, Json(json!({ "created": created, "version": record }))).into_response())
}

async fn show_version(State(c): Control, Path((model, version)): Path<(String, String)>) -> ApiResult {
    ok(c.registry.version(&model, &version).await?)
}

async fn delete_version(State(c): Control, Path((model, version)): Path<(String, String)>) -> ApiResult {
    c.registry.store.delete_version(&model, parse_version(&version)?).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn list_aliases(State(c): Control, Path(model): Path<String>) -> ApiResult {
    ok(json!({ "aliases": c.registry.store.list_aliases(&model).await? }))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct AliasRequest {
    version: VersionRef,
}

async fn set_alias(
    State(c): Control,
    Extension(who): Caller,
    Path((model, alias)): Path<(String, String)>,
    Body(request): Body<AliasRequest>,
) -> ApiResult {
    let version = c.registry.resolve_version(&model, &request.version).await?;
    ok(c.registry.store.set_alias(&model, &alias, version, &who.id).await?)
}

async fn delete_alias(
    State(c): Control,
    Extension(who): Caller,
    Path((model, alias)): Path<(String, String)>,
) -> ApiResult {
    c.registry.store.delete_alias(&model, &alias, &who.id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn alias_history(State(c): Control, Path((model, alias)): Path<(String, String)>) -> ApiResult {
    ok(json!({ "history": c.registry.store.alias_history(&model, &alias).await? }))
}

fn endpoint_json(c: &ControlPlane, revision: &vigil_core::registry::Revision) -> Value {
    let status = c.deployer.status(&revision.endpoint).unwrap_or_else(|| DeployStatus {
        serving_revision: None,
        desired_revision: revision.revision,
        error: Some("not synced to this server yet".into()),
    });
    let shadows: Vec<Value> = c
        .service
        .shadows()
        .stats(&revision.endpoint)
        .into_iter()
        .map(|(version, s)| json!({ "version": version, "stats": s }))
        .collect();
    json!({
        "name": revision.endpoint,
        "revision": revision,
        "status": status,
        "shadow_results": shadows,
    })
}

async fn list_endpoints(State(c): Control) -> ApiResult {
    let all = c.registry.store.list_endpoints().await?;
    ok(json!({ "endpoints": all.iter().map(|r| endpoint_json(&c, r)).collect::<Vec<_>>() }))
}

async fn show_endpoint(State(c): Control, Path(endpoint): Path<String>) -> ApiResult {
    let revision = c.registry.store.endpoint(&endpoint).await?;
    ok(endpoint_json(&c, &revision))
}

/// After a change, this server serves it before answering, so that the
/// answer says whether it took (the other replicas follow within the sync
/// interval). The change is committed either way: a failed sync is reported in
/// the status, and the watcher retries it.
async fn applied(c: &ControlPlane, revision: vigil_core::registry::Revision) -> ApiResult {
    if let Err(e) = c.deployer.sync().await {
        let mut body = endpoint_json(c, &revision);
        body["status"]["error"] = json!(format!("recorded, but not yet served here: {e}"));
        return ok(body);
    }
    // What is current now (another change may have landed meanwhile).
    let current = c.registry.store.endpoint(&revision.endpoint).await.unwrap_or(revision);
    ok(endpoint_json(c, &current))
}

async fn set_endpoint(
    State(c): Control,
    Extension(who): Caller,
    Path(endpoint): Path<String>,
    Body(request): Body<TrafficRequest>,
) -> ApiResult {
    let revision = c.registry.set_traffic(&endpoint, request, &who).await?;
    applied(&c, revision).await
}

async fn delete_endpoint(State(c): Control, Path(endpoint): Path<String>) -> ApiResult {
    c.registry.store.delete_endpoint(&endpoint).await?;
    c.deployer.sync().await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn revisions(State(c): Control, Path(endpoint): Path<String>) -> ApiResult {
    ok(json!({ "revisions": c.registry.store.revisions(&endpoint).await? }))
}

#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct RollbackRequest {
    to: Option<u64>,
}

async fn rollback(
    State(c): Control,
    Extension(who): Caller,
    Path(endpoint): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let body = body.map_err(body_error)?;
    let request: RollbackRequest =
        if body.iter().all(u8::is_ascii_whitespace) { RollbackRequest::default() } else { parse_json(&body)? };
    let revision = c.registry.rollback(&endpoint, request.to, &who).await?;
    applied(&c, revision).await
}

async fn export(State(c): Control, Extension(who): Caller, Path(endpoint): Path<String>) -> ApiResult {
    ok(c.registry.export(&endpoint, &who).await?)
}

async fn apply(State(c): Control, Extension(who): Caller, Body(doc): Body<EndpointExport>) -> ApiResult {
    let revision = c.registry.apply(doc, &who).await?;
    applied(&c, revision).await
}

async fn openapi() -> ApiResult {
    ok(openapi_document())
}

/// The named schemas the document refers to, derived from the types the
/// handlers read and write (utoipa), plus the shapes built here.
fn schemas() -> serde_json::Map<String, Value> {
    use utoipa::openapi::{RefOr, schema::Schema};
    type Found = Vec<(String, RefOr<Schema>)>;
    fn add<T: utoipa::ToSchema>(found: &mut Found) {
        found.push((T::name().into_owned(), T::schema()));
        T::schemas(found);
    }
    let mut found: Found = Vec::new();
    add::<vigil_core::registry::ModelSummary>(&mut found);
    add::<vigil_core::registry::VersionRecord>(&mut found);
    add::<vigil_core::registry::Alias>(&mut found);
    add::<vigil_core::registry::AliasEvent>(&mut found);
    add::<vigil_core::registry::Revision>(&mut found);
    add::<crate::deploy::DeployStatus>(&mut found);
    add::<TrafficRequest>(&mut found);
    add::<EndpointExport>(&mut found);
    add::<AliasRequest>(&mut found);
    add::<StoredVersion>(&mut found);
    add::<RollbackRequest>(&mut found);
    add::<vigil_core::security::KeyRecord>(&mut found);
    add::<vigil_core::security::SecretInfo>(&mut found);
    add::<vigil_core::security::AuditEvent>(&mut found);
    add::<vigil_core::security::BrokenLink>(&mut found);
    add::<crate::api_security::KeyRequest>(&mut found);
    add::<crate::api_security::RotateRequest>(&mut found);
    add::<crate::api_security::SecretRequest>(&mut found);
    add::<crate::feedback::FeedbackRequest>(&mut found);
    let mut map: serde_json::Map<String, Value> =
        found.into_iter().map(|(name, schema)| (name, serde_json::to_value(schema).unwrap_or_default())).collect();
    let r = |name: &str| json!({"$ref": format!("#/components/schemas/{name}")});
    map.insert(
        "EndpointView".into(),
        json!({"type": "object", "required": ["name", "revision", "status", "shadow_results"], "properties": {
            "name": {"type": "string"},
            "revision": r("Revision"),
            "status": r("DeployStatus"),
            "shadow_results": {"type": "array", "items": {"type": "object", "properties": {
                "version": {"type": "string"},
                "stats": {"type": "object", "description": "mirrored, agreed, disagreed, failed, dropped",
                          "additionalProperties": {"type": "integer"}}}}},
        }}),
    );
    let tensor = json!({"type": "object", "required": ["name", "datatype", "shape"], "properties": {
        "name": {"type": "string"}, "datatype": {"type": "string"},
        "shape": {"type": "array", "items": {"type": "integer"}},
        "data": {"type": "array", "description": "the elements, row-major (absent when redacted)"},
        "hmac_sha256": {"type": "string", "description": "for an input redacted by hash"}}});
    map.insert(
        "PredictionRecord".into(),
        json!({"type": "object", "required": ["id", "cursor", "time", "endpoint", "version", "request_id", "outputs"],
            "properties": {
            "id": {"type": "string"}, "cursor": {"type": "string", "description": "pass as `after` for the next page"},
            "time": {"type": "string"}, "endpoint": {"type": "string"}, "version": {"type": "string"},
            "request_id": {"type": "string"}, "principal": {"type": "string"},
            "inputs": {"type": "array", "items": tensor.clone(), "description": "versions without a feature spec"},
            "features": {"type": "array", "items": {"type": "object"}, "description":
                "versions with a feature spec: each row's features by name, instead of the input tensors"},
            "predictions": {"type": "array", "items": {"type": "object"}, "description": "each row's prediction, every probability kept"},
            "rows": {"type": "array", "items": {"type": "integer"}, "description": "the request index of each row, when records were set aside"},
            "outputs": {"type": "array", "items": tensor}}}),
    );
    map.insert(
        "AlertRule".into(),
        json!({"type": "object", "required": ["name", "signal", "condition"], "additionalProperties": false, "properties": {
            "name": {"type": "string", "description": "1-64 letters, digits, _ or -"},
            "signal": {"type": "string", "enum": ["error_ratio", "p99_latency_seconds", "request_rate", "queue_depth", "drift_score", "accuracy"]},
            "endpoint": {"type": "string", "description": "absent: one alert per endpoint"},
            "condition": {"type": "object", "description":
                "{kind: threshold, op: > >= < <=, value} or {kind: anomaly, method: ewma|robust_z, baseline_seconds, threshold, direction: up|down|both, min_samples}"},
            "for_seconds": {"type": "integer"}, "severity": {"type": "string"}, "summary": {"type": "string"}}}),
    );
    map.insert(
        "Alerts".into(),
        json!({"type": "object", "required": ["alerts", "rules"], "properties": {
            "alerts": {"type": "array", "items": {"type": "object", "description":
                "rule, endpoint, state (pending|firing), severity, summary, value, since, fingerprint"}},
            "rules": {"type": "array", "items": {"type": "object", "description":
                "an AlertRule, with source: config or api"}}}}),
    );
    map.insert(
        "ReferenceProfile".into(),
        json!({"type": "object", "required": ["rows", "features"], "properties": {
            "rows": {"type": "integer"},
            "features": {"type": "array", "items": {"type": "object", "description":
                "name, count, missing, type (numerical: min, max, mean, std, quantiles, distinct, bins {edges}, deciles {edges}, histogram; categorical: categories, counts)"}}}}),
    );
    map.insert(
        "ProfileAttached".into(),
        json!({"type": "object", "required": ["model", "version"], "properties": {
            "model": {"type": "string"}, "version": {"type": "integer"}, "features": {"type": "integer"}, "rows": {"type": "integer"}}}),
    );
    map.insert(
        "FeedbackJoined".into(),
        json!({"type": "object", "required": ["joined", "not_found"], "properties": {
            "joined": {"type": "integer"},
            "not_found": {"type": "array", "items": {"type": "string"}, "description":
                "request ids not in the prediction log within the horizon"}}}),
    );
    map.insert(
        "Monitor".into(),
        json!({"type": "object", "required": ["endpoint", "versions"], "properties": {
            "endpoint": {"type": "string"}, "since_s": {"type": "integer"}, "until_s": {"type": "integer"},
            "versions": {"type": "array", "items": {"type": "object", "description":
                "version, windows, drift {features: [{feature, method, score, threshold, drifted, count, missing, psi, jensen_shannon, chi_square_p, ks_statistic, ks_p, wasserstein_normed, missing_share, out_of_range_share, unseen_share}], drifted_features, drift_share, dataset_drift}"}},
            "quality": {"type": "array", "items": {"type": "object", "description":
                "version, classification {count, accuracy, precision, recall, f1, roc_auc, log_loss} or regression {count, mae, rmse, r2}"}}}}),
    );
    map.insert(
        "SecretValue".into(),
        json!({"type": "object", "required": ["name", "version", "value"], "properties": {
            "name": {"type": "string"}, "version": {"type": "integer"}, "value": {"type": "string"},
            "created_by": {"type": "string"}, "created_at": {"type": "string"}}}),
    );
    map.insert(
        "RewrapResult".into(),
        json!({"type": "object", "required": ["rewrapped", "master_key_id"], "properties": {
            "rewrapped": {"type": "integer"}, "master_key_id": {"type": "string"}}}),
    );
    map.insert(
        "AuditVerification".into(),
        json!({"type": "object", "required": ["intact", "events"], "properties": {
            "intact": {"type": "boolean"}, "events": {"type": "integer"}, "broken": r("BrokenLink")}}),
    );
    map.insert(
        "Error".into(),
        json!({"type": "object", "required": ["error", "code"], "properties": {
            "error": {"type": "string", "description": "what is wrong, naming the field"},
            "code": {"type": "string", "description": "stable: invalid_input, not_found, conflict, payload_too_large, storage, …"}}}),
    );
    map
}

/// The OpenAPI 3.1 document, built from [`operations`]: every path and method
/// with its path parameters, summary, role (`x-vigil-role`), request and
/// response schemas, and the error shape.
pub fn openapi_document() -> Value {
    let r = |name: &str| json!({"$ref": format!("#/components/schemas/{name}")});
    let json_body = |schema: Value| json!({"application/json": {"schema": schema}});
    let mut paths = serde_json::Map::new();
    for o in operations() {
        let params: Vec<Value> = o
            .path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
            .collect();
        let success = match o.reply {
            Gives::Nothing => json!({"204": {"description": "done"}}),
            Gives::One(name) => json!({"200": {"description": "ok", "content": json_body(r(name))}}),
            Gives::List(field, name) => json!({"200": {"description": "ok", "content": json_body(
                json!({"type": "object", "required": [field], "properties": {field: {"type": "array", "items": r(name)}}})
            )}}),
            Gives::Endpoint => {
                json!({"200": {"description": "the endpoint as this server now serves it", "content": json_body(r("EndpointView"))}})
            }
            Gives::Model => {
                json!({"200": {"description": "ok", "content": json_body(json!({"type": "object", "properties": {
                "name": {"type": "string"},
                "versions": {"type": "array", "items": r("VersionRecord")},
                "aliases": {"type": "array", "items": r("Alias")}}}))}})
            }
            Gives::Registered => {
                let body = json_body(json!({"type": "object", "required": ["created", "version"], "properties": {
                    "created": {"type": "boolean"}, "version": r("VersionRecord")}}));
                json!({"201": {"description": "registered", "content": body.clone()},
                       "200": {"description": "the same content was registered before", "content": body}})
            }
            Gives::NewKey => {
                json!({"201": {"description": "created; the only time the key is shown", "content": json_body(json!({
                    "type": "object", "required": ["key", "record"], "properties": {
                        "key": {"type": "string", "description": "vgl_<id>_<secret><checksum>"},
                        "record": r("KeyRecord"),
                        "old_key_expires_at": {"type": "string"}}}))}})
            }
            Gives::Document => {
                json!({"200": {"description": "OpenAPI 3.1", "content": json_body(json!({"type": "object"}))}})
            }
        };
        let mut responses = success;
        responses["default"] = json!({"description": "error", "content": json_body(r("Error"))});
        let mut operation = json!({
            "summary": o.summary,
            "operationId": format!("{}_{}", o.method.as_str().to_lowercase(), o.path.trim_start_matches("/api/v1/").replace(['/', '{', '}'], "_")),
            "parameters": params,
            "x-vigil-role": o.role,
            "responses": responses,
        });
        match o.request {
            Takes::Nothing => {}
            Takes::Json(name) => operation["requestBody"] = json!({"required": true, "content": json_body(r(name))}),
            Takes::Package => {
                let binary = json!({"schema": {"type": "string", "format": "binary"}});
                operation["requestBody"] = json!({"required": true, "content": {
                    "application/gzip": binary.clone(),
                    "application/x-tar": binary,
                    "application/json": {"schema": r("StoredVersion")},
                }});
            }
        }
        let entry = paths.entry(o.path).or_insert_with(|| json!({}));
        entry[o.method.as_str().to_lowercase()] = operation;
    }
    json!({
        "openapi": "3.1.0",
        "info": {"title": "Vigil control plane", "version": env!("CARGO_PKG_VERSION")},
        "paths": paths,
        "components": {"schemas": schemas()},
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_operation_is_unique_and_documented() {
        let ops = operations();
        let mut seen = std::collections::BTreeSet::new();
        for o in &ops {
            assert!(seen.insert((o.method.clone(), o.path)), "{} {} twice", o.method, o.path);
            assert!(o.path.starts_with("/api/v1/"), "{}", o.path);
            let reads = o.method == Method::GET;
            let owners = ["/api/v1/keys", "/api/v1/secrets", "/api/v1/vault", "/api/v1/audit"];
            if owners.iter().any(|p| o.path.starts_with(p)) {
                assert_eq!(o.role, Role::Owner, "{} {}: keys, secrets and audit are the Owner's", o.method, o.path);
            } else if o.path.ends_with("/predictions") {
                // Recorded inputs may hold personal data: more than reading state.
                assert_eq!(o.role, Role::Contributor, "{} {}: prediction payloads", o.method, o.path);
            } else {
                assert_eq!(o.role == Role::Reader, reads, "{} {}: reads need Reader, changes more", o.method, o.path);
            }
        }
        let doc = openapi_document();
        for o in &ops {
            let documented = &doc["paths"][o.path][o.method.as_str().to_lowercase()];
            assert_eq!(documented["summary"], o.summary);
        }
        // Every schema referred to anywhere is defined.
        let text = doc.to_string();
        for piece in text.split("#/components/schemas/").skip(1) {
            let name: String = piece.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
            assert!(doc["components"]["schemas"][&name].is_object(), "{name} is referred to but not defined");
        }
        let traffic = &doc["components"]["schemas"]["TrafficRequest"];
        assert!(traffic["properties"]["traffic"].is_object(), "{traffic}");
    }
}
