//! The control plane: REST under `/api/v1`. Every route is declared once, in
//! [`operations`], with the role it needs, and the router and the OpenAPI
//! document are both built from that table: no route can exist without a
//! permission or go undocumented. Handlers are thin over [`Registry`] and
//! [`Deployer`].

use crate::deploy::{DeployStatus, Deployer};
use crate::registry::{EndpointExport, Registry, TrafficRequest, VersionRef};
use crate::{ApiError, vigil_error};
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, FromRequest, Path, Request, State};
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

/// What the control-plane handlers share.
pub struct ControlPlane {
    pub registry: Registry,
    pub deployer: Arc<Deployer>,
    pub service: InferenceService,
}

type Control = State<Arc<ControlPlane>>;
type ApiResult = Result<Response, ApiError>;

/// Who made a change. Until principals arrive with the security work, every
/// change is recorded as made by `anonymous`.
const ACTOR: &str = "anonymous";

/// One route of the control plane: method, path, the role it needs, and what it does.
pub struct Operation {
    pub method: Method,
    pub path: &'static str,
    pub role: Role,
    pub summary: &'static str,
    /// The request body, for the document: `None`, `json`, or `package` (tar/tar.gz).
    pub body: Option<&'static str>,
    route: MethodRouter<Arc<ControlPlane>>,
}

fn op(
    method: Method,
    path: &'static str,
    role: Role,
    summary: &'static str,
    body: Option<&'static str>,
    route: MethodRouter<Arc<ControlPlane>>,
) -> Operation {
    Operation { method, path, role, summary, body, route }
}

/// Every control-plane route.
pub fn operations() -> Vec<Operation> {
    use Role::{Contributor, Reader};
    let json = Some("json");
    vec![
        op(Method::GET, "/api/v1/models", Reader, "List models", None, get(list_models)),
        op(
            Method::GET,
            "/api/v1/models/{model}",
            Reader,
            "Show a model, its versions and aliases",
            None,
            get(show_model),
        ),
        op(Method::GET, "/api/v1/models/{model}/versions", Reader, "List a model's versions", None, get(list_versions)),
        op(
            Method::POST,
            "/api/v1/models/{model}/versions",
            Contributor,
            "Register a version: a tar/tar.gz package (model.onnx, vigil.toml), or JSON {digest, manifest} for an artifact already stored",
            Some("package"),
            post(push_version),
        ),
        op(
            Method::GET,
            "/api/v1/models/{model}/versions/{version}",
            Reader,
            "Show a version (by number or alias)",
            None,
            get(show_version),
        ),
        op(
            Method::DELETE,
            "/api/v1/models/{model}/versions/{version}",
            Contributor,
            "Delete a version (refused while it takes traffic or an alias points at it)",
            None,
            delete(delete_version),
        ),
        op(Method::GET, "/api/v1/models/{model}/aliases", Reader, "List a model's aliases", None, get(list_aliases)),
        op(
            Method::PUT,
            "/api/v1/models/{model}/aliases/{alias}",
            Contributor,
            "Point an alias at a version: {version}",
            json,
            put(set_alias),
        ),
        op(
            Method::DELETE,
            "/api/v1/models/{model}/aliases/{alias}",
            Contributor,
            "Delete an alias",
            None,
            delete(delete_alias),
        ),
        op(
            Method::GET,
            "/api/v1/models/{model}/aliases/{alias}/history",
            Reader,
            "Every move of an alias",
            None,
            get(alias_history),
        ),
        op(
            Method::GET,
            "/api/v1/endpoints",
            Reader,
            "List endpoints with their current revision and status",
            None,
            get(list_endpoints),
        ),
        op(
            Method::GET,
            "/api/v1/endpoints/{endpoint}",
            Reader,
            "Show an endpoint: revision, status, shadow comparisons",
            None,
            get(show_endpoint),
        ),
        op(
            Method::PUT,
            "/api/v1/endpoints/{endpoint}",
            Contributor,
            "Set an endpoint's traffic policy {model, traffic, shadows, comment}; answers once this server serves it",
            json,
            put(set_endpoint),
        ),
        op(
            Method::DELETE,
            "/api/v1/endpoints/{endpoint}",
            Contributor,
            "Delete an endpoint and its history",
            None,
            delete(delete_endpoint),
        ),
        op(
            Method::GET,
            "/api/v1/endpoints/{endpoint}/revisions",
            Reader,
            "An endpoint's revisions, oldest first",
            None,
            get(revisions),
        ),
        op(
            Method::POST,
            "/api/v1/endpoints/{endpoint}/rollback",
            Contributor,
            "Restore a revision {to} (default: the previous different one) as a new revision",
            json,
            post(rollback),
        ),
        op(
            Method::GET,
            "/api/v1/endpoints/{endpoint}/export",
            Reader,
            "Everything needed to recreate the endpoint",
            None,
            get(export),
        ),
        op(
            Method::POST,
            "/api/v1/apply",
            Contributor,
            "Make an endpoint match an export (idempotent)",
            json,
            post(apply),
        ),
        op(Method::GET, "/api/v1/openapi.json", Reader, "This document", None, get(openapi)),
    ]
}

/// The control plane's router. Packages may be far larger than inference
/// bodies, so registration has its own limit.
pub fn routes(control: Arc<ControlPlane>, max_package_bytes: usize) -> Router {
    let mut paths: BTreeMap<&str, MethodRouter<Arc<ControlPlane>>> = BTreeMap::new();
    for o in operations() {
        let limit = if o.body == Some("package") { max_package_bytes } else { MAX_JSON_BYTES };
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
struct Body<T>(T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = Bytes::from_request(req, state).await.map_err(body_error)?;
        parse_json(&bytes).map(Body)
    }
}

/// Parses a JSON body; an error names the field it is about (`traffic[0].weight: …`).
fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let at = if path == "." { "body".to_owned() } else { format!("body.{path}") };
        ApiError::bad_request(format!("{at}: {}", e.inner()))
    })
}

fn body_error(e: BytesRejection) -> ApiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        return vigil_error(vigil_core::ErrorCode::PayloadTooLarge, "the body is larger than the limit for this route");
    }
    ApiError::bad_request(format!("could not read the body: {}", e.body_text()))
}

fn ok(value: impl serde::Serialize) -> ApiResult {
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StoredVersion {
    digest: String,
    #[serde(default)]
    manifest: String,
}

async fn push_version(
    State(c): Control,
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
        c.registry.register_stored(&model, &stored.digest, stored.manifest, ACTOR).await?
    } else {
        c.registry.push(&model, body, ACTOR).await?
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AliasRequest {
    version: VersionRef,
}

async fn set_alias(
    State(c): Control,
    Path((model, alias)): Path<(String, String)>,
    Body(request): Body<AliasRequest>,
) -> ApiResult {
    let version = c.registry.resolve_version(&model, &request.version).await?;
    ok(c.registry.store.set_alias(&model, &alias, version, ACTOR).await?)
}

async fn delete_alias(State(c): Control, Path((model, alias)): Path<(String, String)>) -> ApiResult {
    c.registry.store.delete_alias(&model, &alias, ACTOR).await?;
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
    Path(endpoint): Path<String>,
    Body(request): Body<TrafficRequest>,
) -> ApiResult {
    let revision = c.registry.set_traffic(&endpoint, request, ACTOR).await?;
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

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RollbackRequest {
    to: Option<u64>,
}

async fn rollback(State(c): Control, Path(endpoint): Path<String>, body: Result<Bytes, BytesRejection>) -> ApiResult {
    let body = body.map_err(body_error)?;
    let request: RollbackRequest =
        if body.iter().all(u8::is_ascii_whitespace) { RollbackRequest::default() } else { parse_json(&body)? };
    let revision = c.registry.rollback(&endpoint, request.to, ACTOR).await?;
    applied(&c, revision).await
}

async fn export(State(c): Control, Path(endpoint): Path<String>) -> ApiResult {
    ok(c.registry.export(&endpoint).await?)
}

async fn apply(State(c): Control, Body(doc): Body<EndpointExport>) -> ApiResult {
    let revision = c.registry.apply(doc, ACTOR).await?;
    applied(&c, revision).await
}

async fn openapi() -> ApiResult {
    ok(openapi_document())
}

/// The OpenAPI 3.1 document, built from [`operations`]: every path, method,
/// path parameter, summary, the role it needs (`x-vigil-role`) and the error shape.
pub fn openapi_document() -> Value {
    let mut paths = serde_json::Map::new();
    for o in operations() {
        let params: Vec<Value> = o
            .path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
            .collect();
        let mut operation = json!({
            "summary": o.summary,
            "operationId": format!("{}_{}", o.method.as_str().to_lowercase(), o.path.trim_start_matches("/api/v1/").replace(['/', '{', '}'], "_")),
            "parameters": params,
            "x-vigil-role": o.role,
            "responses": {
                "2XX": {"description": "success", "content": {"application/json": {}}},
                "default": {"description": "error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
            },
        });
        match o.body {
            Some("package") => {
                operation["requestBody"] = json!({"required": true, "content": {
                    "application/gzip": {"schema": {"type": "string", "format": "binary"}},
                    "application/x-tar": {"schema": {"type": "string", "format": "binary"}},
                    "application/json": {"schema": {"type": "object", "required": ["digest"], "properties": {
                        "digest": {"type": "string"}, "manifest": {"type": "string"}}}},
                }});
            }
            Some(_) => operation["requestBody"] = json!({"required": false, "content": {"application/json": {}}}),
            None => {}
        }
        let entry = paths.entry(o.path).or_insert_with(|| json!({}));
        entry[o.method.as_str().to_lowercase()] = operation;
    }
    json!({
        "openapi": "3.1.0",
        "info": {"title": "Vigil control plane", "version": env!("CARGO_PKG_VERSION")},
        "paths": paths,
        "components": {"schemas": {"Error": {
            "type": "object",
            "required": ["error", "code"],
            "properties": {"error": {"type": "string"}, "code": {"type": "string"}},
        }}},
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
            assert_eq!(o.role == Role::Reader, reads, "{} {}: reads need Reader, changes more", o.method, o.path);
        }
        let doc = openapi_document();
        for o in &ops {
            let documented = &doc["paths"][o.path][o.method.as_str().to_lowercase()];
            assert_eq!(documented["summary"], o.summary);
        }
    }
}
