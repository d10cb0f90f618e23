//! Who may call what: every REST route and gRPC method states the role it
//! needs and what it is about, here or in the control plane's operation table
//! ([`crate::api::operations`]). The routers are built from these tables, so
//! a route cannot exist without an entry, and the guard ([`crate::guard`])
//! refuses anything it finds no entry for.

use axum::http::Method;
use vigil_core::security::{Role, Target};

/// What a route needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Open to anyone: liveness and readiness (probes carry no credentials).
    Public,
    /// A principal whose grants cover `role` on the route's target.
    Needs(Role, On),
}

/// What a route is about, for scoped grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum On {
    /// Nothing in particular; any grant of the role will do (server metadata).
    Any,
    /// Everything or a list across names: only a global grant will do.
    Global,
    /// The endpoint named by this path parameter (or gRPC request field).
    Endpoint(&'static str),
    /// The endpoint named by this path parameter before its `:verb`
    /// (KServe V1's `credit:predict`).
    EndpointVerb(&'static str),
    /// The model named by this path parameter.
    Model(&'static str),
}

impl On {
    /// The target, given how to look up a parameter's value.
    pub fn target<'a>(self, param: impl Fn(&str) -> Option<&'a str>) -> Option<Target<'a>> {
        Some(match self {
            On::Any => Target::Any,
            On::Global => Target::Global,
            On::Endpoint(p) => Target::Endpoint(param(p)?),
            // Names cannot hold ':', so what precedes it is the endpoint.
            On::EndpointVerb(p) => Target::Endpoint(param(p)?.split(':').next().unwrap_or_default()),
            On::Model(p) => Target::Model(param(p)?),
        })
    }
}

/// The control plane's access from its table entry: the role it states, on
/// the endpoint or model its path names, else on everything.
pub fn control_access(path: &str, role: Role) -> Access {
    let on = if path.contains("{endpoint}") {
        On::Endpoint("endpoint")
    } else if path.contains("{model}") {
        On::Model("model")
    } else {
        On::Global
    };
    Access::Needs(role, on)
}

/// Every method of `inference.GRPCInferenceService`. The model a request is
/// about is its `name` (`model_name` for ModelInfer): an endpoint.
pub const GRPC: &[(&str, Access)] = &[
    ("ServerLive", Access::Public),
    ("ServerReady", Access::Public),
    ("ServerMetadata", Access::Needs(Role::Predictor, On::Any)),
    ("ModelReady", Access::Needs(Role::Predictor, On::Endpoint("name"))),
    ("ModelMetadata", Access::Needs(Role::Predictor, On::Endpoint("name"))),
    ("ModelConfig", Access::Needs(Role::Predictor, On::Endpoint("name"))),
    ("ModelInfer", Access::Needs(Role::Predictor, On::Endpoint("model_name"))),
];

/// A gRPC method's access; methods without an entry are refused.
pub fn grpc(method: &str) -> Option<Access> {
    GRPC.iter().find(|(m, _)| *m == method).map(|(_, a)| *a)
}

/// A route with its access, for tests that walk every route.
#[derive(Debug, Clone)]
pub struct RouteAccess {
    pub method: Method,
    pub path: &'static str,
    pub access: Access,
    /// Control-plane calls are audited; data-plane calls (predictions) are
    /// counted in metrics instead, never written to the audit log one by one.
    pub audited: bool,
}

/// Every REST route: the data plane's and the control plane's.
pub fn rest_routes() -> Vec<RouteAccess> {
    let data = crate::v2::operations().into_iter().chain(crate::records::operations()).map(|o| RouteAccess {
        method: o.method,
        path: o.path,
        access: o.access,
        audited: false,
    });
    let control = crate::api::operations().into_iter().map(|o| RouteAccess {
        access: control_access(o.path, o.role),
        method: o.method,
        path: o.path,
        audited: true,
    });
    data.chain(control).collect()
}
