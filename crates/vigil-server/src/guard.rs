//! The REST guard: for every request, find the route's entry in the
//! permission table, authenticate the caller, apply its rate limit, check its
//! grants against the route's target, and audit what the table says to audit
//! (every control-plane call and every refusal). Handlers find the
//! [`Principal`] in the request's extensions.

use crate::permissions::{Access, On, RouteAccess, rest_routes};
use crate::request_limits::RequestLimits;
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
    /// Each route's access, and whether its calls are audited.
    table: HashMap<(Method, &'static str), (Access, bool)>,
    /// The deadline and memory budget of request bodies, applied here once
    /// the caller is known (an unauthenticated request reserves nothing, and
    /// no layer of its own is added to every request's path).
    body_limits: Option<Arc<RequestLimits>>,
}

impl Guard {
    pub fn new(security: Arc<Security>) -> Guard {
        let table =
            rest_routes().into_iter().map(|r: RouteAccess| ((r.method, r.path), (r.access, r.audited))).collect();
        Guard { security, table, body_limits: None }
    }

    /// Watches the bodies of the requests it lets in.
    pub fn with_body_limits(mut self, limits: Arc<RequestLimits>) -> Guard {
        self.body_limits = Some(limits);
        self
    }
}

/// The bearer credential of a request, if any.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    bearer_value(headers.get(header::AUTHORIZATION)?.to_str().ok()?)
}

/// A request carrying several `Authorization` headers is refused outright:
/// which one a proxy or a server honours differs, and an attacker can use that.
pub const SEVERAL_CREDENTIALS: &str = "the request has several Authorization headers; send exactly one";

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

/// A request as the guard sees it, whatever the protocol. Borrowed: the
/// strings the audit needs are built only when something is audited.
pub struct Call<'a> {
    pub credential: Option<&'a str>,
    /// A verified client certificate's common name (mTLS).
    pub certificate: Option<&'a str>,
    pub client: IpAddr,
    /// `PUT`, `gRPC`, …
    pub method: &'a str,
    /// The route (`/api/v1/endpoints/{endpoint}`) or the gRPC method.
    pub route: &'a str,
    pub request_id: &'a str,
}

impl Call<'_> {
    /// For the audit log: `PUT /api/v1/endpoints/{endpoint}`, `gRPC ModelInfer`.
    pub fn action(&self) -> String {
        format!("{} {}", self.method, self.route)
    }

    /// An audit event about this call.
    fn event(&self, principal: &str, target: String, outcome: String) -> NewAuditEvent {
        NewAuditEvent {
            principal: principal.to_owned(),
            action: self.action(),
            target,
            outcome,
            source: self.client.to_string(),
            request_id: self.request_id.to_owned(),
            ..NewAuditEvent::default()
        }
    }
}

/// The target as the audit names it: the endpoint or model, else the path's
/// parameters (`secret:db`).
pub fn audit_target(target: Target<'_>, params: &[(&str, &str)]) -> String {
    match target_text(target) {
        t if t.is_empty() => params.iter().map(|(k, v)| format!("{k}:{v}")).collect::<Vec<_>>().join(" "),
        t => t,
    }
}

impl Guard {
    /// The one place that decides: authenticate, rate-limit, authorize. A
    /// refusal is audited (without waiting). On success, returns the principal.
    pub fn decide(
        &self,
        call: &Call<'_>,
        role: vigil_core::security::Role,
        target: Target<'_>,
        params: &[(&str, &str)],
    ) -> Result<Principal, Stop> {
        let security = &self.security;
        let principal = match security.authenticate(call.credential, call.certificate) {
            Ok(p) => p,
            Err(failure) => {
                // Only a caller that proved the key (a revoked or expired one)
                // is recorded as its principal; anyone can claim an id, so a
                // wrong or unknown key is recorded as unauthenticated, the
                // claimed id a detail of the outcome.
                let (principal, claimed) = match &failure {
                    AuthFailure::Revoked(id) | AuthFailure::Expired(id) => (format!("key:{id}"), None),
                    AuthFailure::UnknownKey(id) | AuthFailure::WrongSecret(id) => {
                        ("-".to_owned(), Some(format!("key:{id}")))
                    }
                    AuthFailure::UnboundCertificate(cn) => (format!("cert:CN={cn}"), None),
                    _ => ("-".to_owned(), None),
                };
                // Past the limit, failures from the address get 429 and are not
                // audited one by one: a flood must not fill the log.
                security.failed(call.client).map_err(Stop::Refused)?;
                let outcome = match claimed {
                    Some(claimed) => format!("unauthenticated: {failure} (claimed {claimed})"),
                    None => format!("unauthenticated: {failure}"),
                };
                security.audit_later(call.event(&principal, audit_target(target, params), outcome));
                return Err(Stop::Refused(Refusal::Unauthenticated(failure)));
            }
        };
        security.admit(&principal).map_err(Stop::Refused)?;
        if !principal.allows(role, target) {
            let outcome = format!("denied: needs {role}");
            security.audit_later(call.event(&principal.id, audit_target(target, params), outcome));
            return Err(Stop::Forbidden(format!(
                "{} may not do this: it needs the {role} role on {}",
                principal.id,
                describe(target)
            )));
        }
        Ok(principal)
    }
}

pub async fn guard(State(guard): State<Arc<Guard>>, request: Request, next: Next) -> Response {
    let (mut parts, body) = request.into_parts();
    let route = parts.extensions.get::<MatchedPath>().cloned();
    let route_str = route.as_ref().map_or("(no route)", MatchedPath::as_str);
    let entry = route.as_ref().and_then(|r| guard.table.get(&(parts.method.clone(), r.as_str()))).copied();
    let (access, audited) = (entry.map(|(a, _)| a), entry.is_some_and(|(_, audited)| audited));
    let (role, on) = match access {
        Some(Access::Public) => return next.run(Request::from_parts(parts, body)).await,
        Some(Access::Needs(role, on)) => (role, on),
        None if route.is_some() && !guard.table.keys().any(|(_, p)| *p == route_str) => {
            // A route missing from the table, which the tests rule out.
            return vigil_error(ErrorCode::Forbidden, "this route has no permission entry").into_response();
        }
        // No such route or method: only a known caller learns that (404/405).
        None => (vigil_core::security::Role::Predictor, On::Any),
    };
    let params = if access.is_some() {
        match RawPathParams::from_request_parts(&mut parts, &()).await {
            Ok(p) => Some(p),
            Err(e) => return ApiError::bad_request(format!("bad path: {}", e.body_text())).into_response(),
        }
    } else {
        None
    };
    let params: Vec<(&str, &str)> = params.iter().flat_map(|p| p.iter()).collect();
    let Some(target) = on.target(|name| params.iter().find(|(k, _)| *k == name).map(|(_, v)| *v)) else {
        return vigil_error(ErrorCode::Internal, "a permission entry names a parameter the route lacks")
            .into_response();
    };
    if parts.headers.get_all(header::AUTHORIZATION).iter().nth(1).is_some() {
        return ApiError::bad_request(SEVERAL_CREDENTIALS).into_response();
    }
    let peer =
        parts.extensions.get::<ConnectInfo<SocketAddr>>().map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |c| c.0.ip());
    let forwarded = parts.headers.get("x-forwarded-for").and_then(|v| v.to_str().ok());
    let call = Call {
        credential: bearer(&parts.headers),
        certificate: parts.extensions.get::<ClientCertificate>().map(|c| c.0.as_str()),
        client: guard.security.client_address(peer, forwarded),
        method: parts.method.as_str(),
        route: route_str,
        request_id: parts.headers.get(REQUEST_ID).and_then(|v| v.to_str().ok()).unwrap_or_default(),
    };
    let principal = match guard.decide(&call, role, target, &params) {
        Ok(p) => p,
        Err(stop) => return stopped(&stop),
    };
    // Every control-plane call is audited. A change the call commits carries
    // the event in its own transaction (vigil_store::audit_scope); the guard
    // writes it for calls that committed nothing, and for failures.
    let audit = audited.then(|| call.event(&principal.id, audit_target(target, &params), String::new()));
    drop(params);
    let mut request = Request::from_parts(parts, body);
    request.extensions_mut().insert(principal);
    // Once the caller is known, its body is watched (deadline, memory budget).
    let answer = crate::request_limits::watched(guard.body_limits.as_deref(), request, |request| next.run(request));
    let Some(mut event) = audit else { return answer.await };
    let (response, committed) = vigil_store::audit_scope::audited(event.clone(), answer).await;
    for chained in &committed {
        guard.security.to_stdout(chained);
    }
    let status = response.status();
    if committed.is_empty() || !status.is_success() {
        event.outcome = match response.extensions().get::<crate::error::Refused>() {
            _ if status.is_success() => "ok".to_owned(),
            Some(why) => format!("error: {}: {}", status.as_u16(), why.0),
            None => format!("error: {}", status.as_u16()),
        };
        guard.security.audit(event).await;
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
