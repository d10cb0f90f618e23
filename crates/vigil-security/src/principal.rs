//! Who is calling, and what they may do.

use vigil_core::security::{Grant, Role, Target};

/// An authenticated caller: an id for the audit log and the grants it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// `key:<id>`, `oidc:<issuer>#<subject>` or `cert:<subject>`.
    pub id: String,
    pub grants: Vec<Grant>,
}

impl Principal {
    /// Whether any grant allows an operation that needs `role` on `target`.
    pub fn allows(&self, role: Role, target: Target<'_>) -> bool {
        self.grants.iter().any(|g| g.allows(role, target))
    }

    /// Whether the principal holds `role` anywhere: enough to be let in
    /// before the target is known (a gRPC request's model is in its body).
    pub fn holds(&self, role: Role) -> bool {
        self.grants.iter().any(|g| g.role >= role)
    }
}
