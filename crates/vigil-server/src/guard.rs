//! The REST guard: for every request, find the route's entry in the
//! permission table, authenticate the caller, apply its rate limit, check its
//! grants against the route's target, and audit what the table says to audit
//! (every control-plane call and every refusal). Handlers find the
//! [`Principal`] in the request's extensions.

use crate::permissions::{Access, RouteAccess, rest_routes};
use crate::security::{Refusal, Security};
use crate::serve::ClientCertificate;
use crate::{ApiError, REQUEST_ID, vigil_error};
use axum::extract::{ConnectInfo, FromRequestParts, MatchedPath, RawPathParams, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use vigil_core::ErrorCode;
use vigil_core::security::{NewAuditEvent, Target};
use vigil_security::{AuthFailure, Principal};

/// The permission table, indexed by method and route, with the security state.
pub struct Guard {
    pub security: Arc<Security>,
    table: HashMap<(Method, &'static str), Access>,
}

impl Guard {
    pub fn new(security: Arc<Security>) -> Guard {
        let table =
            rest_routes().into_iter().map(|RouteAccess { method, path, access }| ((method, path), access)).collect();
        Guard { security, table }
    }
}

/// The bearer credential of a request, if any.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    bearer_value(headers.get(header::AUTHORIZATION)?.to_str().ok()?)
}

/// The credential in an `Authorization: Bearer …` value.
pub fn bearer_value(value: &str) -> Option<&str> {
    let (scheme, credential) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| credential.trim())
}

/// Why the guard stopped a request.
pub enum Stop {
    Refused(Refusal),
    Forbidden(String),
}

impl Stop {
    pub fn error(&self) -> vigil_core::Error {
        match self {
            Stop::Refused(Refusal::Unauthenticated(f)) => {
                vigil_core::Error::new(ErrorCode::Unauthenticated, f.to_string())
            }
            Stop::Refused(Refusal::RateLimited(wait)) => vigil_core::Error::new(
                ErrorCode::RateLimited,
                format!("too many requests: retry in {} s", retry_seconds(*wait)),
            ),
            Stop::Forbidden(message) => vigil_core::Error::new(ErrorCode::Forbidden, message.clone()),
        }
    }
}

/// A request as the guard sees it, whatever the protocol.
pub struct Call {
    pub credential: Option<String>,
    /// A verified client certificate's common name (mTLS).
    pub certificate: Option<String>,
    pub client: IpAddr,
    /// For the audit log: `PUT /api/v1/endpoints/{endpoint}`, `gRPC ModelInfer`.
    pub action: String,
    pub request_id: String,
}

impl Guard {
    /// The one place that decides: authenticate, rate-limit, authorize. A
    /// refusal is audited (without waiting). On success, returns the principal
    /// and the target as the audit names it.
    pub fn decide<'p>(
        &self,
        call: &Call,
        role: vigil_core::security::Role,
        target: Target<'p>,
        params: &[(&str, &str)],
    ) -> Result<(Principal, String), Stop> {
        let security = &self.security;
        let event = |principal: &str, target: String, outcome: String| NewAuditEvent {
            principal: principal.to_owned(),
            action: call.action.clone(),
            target,
            outcome,
            source: call.client.to_string(),
            request_id: call.request_id.clone(),
            ..NewAuditEvent::default()
        };
        let target_text = match target_text(target) {
            t if t.is_empty() => params.iter().map(|(k, v)| format!("{k}:{v}")).collect::<Vec<_>>().join(" "),
            t => t,
        };
        let principal = match security.authenticate(call.credential.as_deref(), call.certificate.as_deref()) {
            Ok(p) => p,
            Err(failure) => {
                let claimed = match &failure {
                    AuthFailure::UnknownKey(id)
                    | AuthFailure::WrongSecret(id)
                    | AuthFailure::Revoked(id)
                    | AuthFailure::Expired(id) => format!("key:{id}"),
                    AuthFailure::UnboundCertificate(cn) => format!("cert:CN={cn}"),
                    _ => "-".to_owned(),
                };
                // Past the limit, failures from the address get 429 and are not
                // audited one by one: a flood must not fill the log.
                security.failed(call.client).map_err(Stop::Refused)?;
                security.audit_later(event(&claimed, target_text, format!("unauthenticated: {failure}")));
                return Err(Stop::Refused(Refusal::Unauthenticated(failure)));
            }
        };
        security.admit(&principal).map_err(Stop::Refused)?;
        if !principal.allows(role, target) {
            security.audit_later(event(&principal.id, target_text, format!("denied: needs {role}")));
            return Err(Stop::Forbidden(format!(
                "{} may not do this: it needs the {role} role on {}",
                principal.id,
                describe(target)
            )));
        }
        Ok((principal, target_text))
    }
}

pub async fn guard(State(guard): State<Arc<Guard>>, request: Request, next: Next) -> Response {
    let peer =
        request.extensions().get::<ConnectInfo<SocketAddr>>().map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |c| c.0.ip());
    let forwarded = request.headers().get("x-forwarded-for").and_then(|v| v.to_str().ok());
    let client = guard.security.client_address(peer, forwarded);
    let route = request.extensions().get::<MatchedPath>().map(|m| m.as_str().to_owned());
    let access = route.as_deref().and_then(|r| guard.table.get(&(request.method().clone(), r))).copied();
    let call = Call {
        credential: bearer(request.headers()).map(str::to_owned),
        certificate: request.extensions().get::<ClientCertificate>().map(|c| c.0.clone()),
        client,
        action: format!("{} {}", request.method(), route.as_deref().unwrap_or("(no route)")),
        request_id: request.headers().get(REQUEST_ID).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned(),
    };
    let (role, on) = match access {
        Some(Access::Public) => return next.run(request).await,
        Some(Access::Needs(role, on)) => (role, on),
        None => {
            // No such route or method: only a known caller learns that (404/405).
            let known_path = route.as_deref().is_some_and(|r| guard.table.keys().any(|(_, p)| *p == r));
            if route.is_some() && !known_path {
                // A route missing from the table, which the tests rule out.
                return vigil_error(ErrorCode::Forbidden, "this route has no permission entry").into_response();
            }
            return match guard.decide(&call, vigil_core::security::Role::Predictor, Target::Any, &[]) {
                Ok(_) => next.run(request).await,
                Err(stop) => stopped(&stop),
            };
        }
    };
    let (mut parts, body) = request.into_parts();
    let params = match RawPathParams::from_request_parts(&mut parts, &()).await {
        Ok(p) => p,
        Err(e) => return ApiError::bad_request(format!("bad path: {}", e.body_text())).into_response(),
    };
    let params: Vec<(&str, &str)> = params.iter().collect();
    let Some(target) = on.target(|name| params.iter().find(|(k, _)| *k == name).map(|(_, v)| *v)) else {
        return vigil_error(ErrorCode::Internal, "a permission entry names a parameter the route lacks")
            .into_response();
    };
    let (principal, target_text) = match guard.decide(&call, role, target, &params) {
        Ok(decided) => decided,
        Err(stop) => return stopped(&stop),
    };
    let control_plane = call.action.contains(" /api/v1/");
    let principal_id = principal.id.clone();
    let mut request = Request::from_parts(parts, body);
    request.extensions_mut().insert(principal);
    let response = next.run(request).await;
    if control_plane {
        let status = response.status();
        let outcome = if status.is_success() { "ok".to_owned() } else { format!("error: {}", status.as_u16()) };
        guard
            .security
            .audit(NewAuditEvent {
                principal: principal_id,
                action: call.action,
                target: target_text,
                outcome,
                source: client.to_string(),
                request_id: call.request_id,
                ..NewAuditEvent::default()
            })
            .await;
    }
    response
}

fn target_text(target: Target<'_>) -> String {
    match target {
        Target::Any | Target::Global => String::new(),
        Target::Endpoint(n) => format!("endpoint:{n}"),
        Target::Model(n) => format!("model:{n}"),
    }
}

fn describe(target: Target<'_>) -> String {
    match target_text(target) {
        t if t.is_empty() => "everything (a global grant)".to_owned(),
        t => t,
    }
}

fn retry_seconds(wait: Duration) -> u64 {
    wait.max(Duration::from_secs(1)).as_secs_f64().ceil() as u64
}

/// The error, with a `WWW-Authenticate` challenge on 401 and `Retry-After` on 429.
fn stopped(stop: &Stop) -> Response {
    let mut response = ApiError::from(stop.error()).into_response();
    match stop {
        Stop::Refused(Refusal::Unauthenticated(_)) => {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        Stop::Refused(Refusal::RateLimited(wait)) => {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(retry_seconds(*wait)));
        }
        Stop::Forbidden(_) => {}
    }
    response
}

/// Security headers on every response.
pub async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; frame-ancestors 'none'"),
    );
    headers.entry(header::CACHE_CONTROL).or_insert(HeaderValue::from_static("no-store"));
    response
}
