//! Control-plane handlers for keys, secrets and the audit log (all Owner
//! only: see [`crate::api::operations`]).

use crate::api::{ApiResult, Body, Caller, Control, body_error, ok, parse_json};
use crate::{ApiError, vigil_error};
use axum::extract::rejection::BytesRejection;
use axum::extract::{Extension, Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use bytes::Bytes;
use serde::Deserialize;
use serde_json::json;
use std::time::{Duration, SystemTime};
use vigil_core::ErrorCode;
use vigil_core::security::{ChainCheck, KeyRecord, Role, Scope};
use vigil_security::{format_time, keys};
use vigil_store::AuditFilter;

/// The largest secret value.
pub const MAX_SECRET_BYTES: usize = 64 * 1024;

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KeyRequest {
    /// What the key is for.
    #[serde(default)]
    name: String,
    role: Role,
    /// `*` (default), `endpoint:NAME` or `model:NAME`.
    #[serde(default)]
    #[schema(value_type = String)]
    scope: Option<Scope>,
    /// The key stops working this many seconds from now; default never.
    expires_in_seconds: Option<u64>,
}

#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateRequest {
    /// How long the old key keeps working, in seconds (default 86400).
    overlap_seconds: Option<u64>,
    /// The new key's lifetime; default never expires.
    expires_in_seconds: Option<u64>,
}

fn new_key(
    name: String,
    role: Role,
    scope: Scope,
    expires_in: Option<u64>,
    by: &str,
) -> Result<(String, KeyRecord), ApiError> {
    if name.len() > 256 || name.chars().any(char::is_control) {
        return Err(ApiError::bad_request("body.name: at most 256 printable characters"));
    }
    let key = keys::generate().map_err(|e| vigil_error(ErrorCode::Internal, format!("random generator: {e}")))?;
    let now = SystemTime::now();
    let expires_at = match expires_in {
        Some(s) => Some(format_time(
            now.checked_add(Duration::from_secs(s))
                .ok_or_else(|| ApiError::bad_request("body.expires_in_seconds: too large"))?,
        )),
        None => None,
    };
    let record = KeyRecord {
        id: key.id,
        name,
        role,
        scope,
        hash: key.hash,
        created_by: by.to_owned(),
        created_at: format_time(now),
        expires_at,
        revoked_at: None,
        rotated_from: None,
    };
    Ok((key.token, record))
}

pub async fn list_keys(State(c): Control) -> ApiResult {
    ok(json!({ "keys": c.security.store.list_keys().await? }))
}

pub async fn create_key(State(c): Control, Extension(who): Caller, Body(request): Body<KeyRequest>) -> ApiResult {
    let scope = request.scope.unwrap_or(Scope::Global);
    let (token, record) = new_key(request.name, request.role, scope, request.expires_in_seconds, &who.id)?;
    c.security.store.create_key(&record).await?;
    c.security.reload_keys().await?;
    Ok((StatusCode::CREATED, axum::Json(json!({ "key": token, "record": record }))).into_response())
}

pub async fn revoke_key(State(c): Control, Path(id): Path<String>) -> ApiResult {
    let record = c.security.store.revoke_key(&id, &format_time(SystemTime::now())).await?;
    c.security.reload_keys().await?;
    ok(record)
}

pub async fn rotate_key(
    State(c): Control,
    Extension(who): Caller,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let body = body.map_err(body_error)?;
    let request: RotateRequest =
        if body.iter().all(u8::is_ascii_whitespace) { RotateRequest::default() } else { parse_json(&body)? };
    let keys = c.security.store.list_keys().await?;
    let old = keys
        .into_iter()
        .find(|k| k.id == id)
        .ok_or_else(|| vigil_error(ErrorCode::NotFound, format!("no API key {}", vigil_core::names::quoted(&id))))?;
    let (token, mut record) =
        new_key(old.name.clone(), old.role, old.scope.clone(), request.expires_in_seconds, &who.id)?;
    record.rotated_from = Some(old.id.clone());
    let overlap = Duration::from_secs(request.overlap_seconds.unwrap_or(86_400));
    let old_until = SystemTime::now()
        .checked_add(overlap)
        .ok_or_else(|| ApiError::bad_request("body.overlap_seconds: too large"))?;
    c.security.store.rotate_key(&old.id, &format_time(old_until), &record).await?;
    c.security.reload_keys().await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(json!({ "key": token, "record": record, "old_key_expires_at": format_time(old_until) })),
    )
        .into_response())
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SecretRequest {
    /// The value (UTF-8, at most 64 KiB). Stored encrypted; never listed or logged.
    value: String,
}

pub async fn list_secrets(State(c): Control) -> ApiResult {
    ok(json!({ "secrets": c.security.store.list_secrets().await? }))
}

pub async fn put_secret(
    State(c): Control,
    Extension(who): Caller,
    Path(name): Path<String>,
    Body(request): Body<SecretRequest>,
) -> ApiResult {
    if request.value.len() > MAX_SECRET_BYTES {
        return Err(vigil_error(ErrorCode::PayloadTooLarge, "body.value: a secret is at most 64 KiB"));
    }
    let at = format_time(SystemTime::now());
    let vault = &c.security.vault;
    let seal = |version| {
        vault
            .seal(&name, version, request.value.as_bytes(), &who.id, &at)
            .map_err(|e| vigil_core::Error::new(ErrorCode::Internal, e.to_string()))
    };
    let info = c.security.store.put_secret(&name, &seal).await?;
    Ok((StatusCode::CREATED, axum::Json(info)).into_response())
}

pub async fn get_secret(State(c): Control, Path(name): Path<String>) -> ApiResult {
    reveal(&c, &name, None).await
}

pub async fn get_secret_version(State(c): Control, Path((name, version)): Path<(String, String)>) -> ApiResult {
    let version =
        version.parse().map_err(|_| ApiError::bad_request(format!("version: '{version}' is not a version number")))?;
    reveal(&c, &name, Some(version)).await
}

async fn reveal(c: &crate::api::ControlPlane, name: &str, version: Option<u64>) -> ApiResult {
    let sealed = c.security.store.get_secret(name, version).await?;
    let value = c.security.vault.open(&sealed).map_err(|e| vigil_error(ErrorCode::Storage, e.to_string()))?;
    let value = String::from_utf8(value).map_err(|_| vigil_error(ErrorCode::Storage, "the secret is not UTF-8"))?;
    ok(json!({ "name": sealed.name, "version": sealed.version, "value": value,
               "created_by": sealed.created_by, "created_at": sealed.created_at }))
}

pub async fn delete_secret(State(c): Control, Path(name): Path<String>) -> ApiResult {
    c.security.store.delete_secret(&name).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Re-seals every data key under the current master key. Safe to run while
/// serving and to repeat: each version moves only if still under the old key.
pub async fn rewrap(State(c): Control) -> ApiResult {
    let mut moved = 0u64;
    for sealed in c.security.store.sealed_secrets().await? {
        let was = sealed.master_key_id.clone();
        let rewrapped = c.security.vault.rewrap(&sealed).map_err(|e| vigil_error(ErrorCode::Storage, e.to_string()))?;
        if let Some(rewrapped) = rewrapped
            && c.security.store.rewrap_secret(&rewrapped, &was).await?
        {
            moved += 1;
        }
    }
    ok(json!({ "rewrapped": moved, "master_key_id": c.security.vault.current_key_id() }))
}

#[derive(Deserialize, utoipa::ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    principal: Option<String>,
    action: Option<String>,
    /// RFC 3339.
    since: Option<String>,
    /// RFC 3339.
    until: Option<String>,
    /// Only events after this sequence number.
    after: Option<u64>,
    /// Only events before this sequence number (paging with `order=newest`).
    before: Option<u64>,
    /// `oldest` (chain order, the default) or `newest` first.
    order: Option<String>,
    /// At most this many (default 100, at most 1000).
    limit: Option<u32>,
}

pub async fn list_audit(
    State(c): Control,
    query: Result<Query<AuditQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult {
    let Query(q) = query.map_err(|e| ApiError::bad_request(format!("query: {}", e.body_text())))?;
    for (field, value) in [("since", &q.since), ("until", &q.until)] {
        if let Some(v) = value
            && vigil_security::parse_time(v).is_none()
        {
            return Err(ApiError::bad_request(format!("{field}: '{}' is not an RFC 3339 time", v.escape_debug())));
        }
    }
    let newest_first = match q.order.as_deref() {
        None | Some("oldest") => false,
        Some("newest") => true,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "order: '{}' is not 'oldest' or 'newest'",
                other.chars().take(40).collect::<String>().escape_debug()
            )));
        }
    };
    let filter = AuditFilter {
        after_seq: q.after.unwrap_or(0),
        before_seq: q.before.unwrap_or(0),
        newest_first,
        principal: q.principal,
        action: q.action,
        since: q.since,
        until: q.until,
        limit: q.limit.unwrap_or(100).clamp(1, 1000),
    };
    ok(json!({ "events": c.security.store.list_audit(&filter).await? }))
}

/// Walks the whole chain from the first event.
pub async fn verify_audit(State(c): Control) -> ApiResult {
    let Some((head_seq, head_hash)) = c.security.store.audit_head().await? else {
        let reason = "the store's audit head (the last event's number and hash) is missing or unreadable: it was \
                      deleted or edited";
        return ok(json!({ "intact": false, "events": 0, "broken": { "seq": 1, "reason": reason } }));
    };
    let mut check = ChainCheck::default();
    let mut filter = AuditFilter { limit: 1000, ..AuditFilter::default() };
    let verdict = loop {
        let page = c.security.store.list_audit(&filter).await?;
        let Some(last) = page.last() else { break check.finish(head_seq, &head_hash) };
        filter.after_seq = last.seq;
        if let Err(broken) = page.iter().try_for_each(|e| check.next(e)) {
            break Err(broken);
        }
    };
    match verdict {
        Ok(n) => ok(json!({ "intact": true, "events": n })),
        Err(broken) => ok(json!({ "intact": false, "events": head_seq, "broken": broken })),
    }
}
