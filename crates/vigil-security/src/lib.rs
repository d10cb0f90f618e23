//! Vigil's security mechanisms, free of HTTP and SQL: API keys (format,
//! hashing, constant-time checks), principals and their grants, the secrets
//! vault's envelope encryption, and OIDC bearer tokens. The server decides
//! when to call them; the stores keep what they produce.
#![forbid(unsafe_code)]

pub mod keys;
pub mod oidc;
pub mod principal;
pub mod vault;

pub use keys::{AuthFailure, KeyRing, NewKey};
pub use oidc::{OidcConfig, OidcVerifier, RoleMapping};
pub use principal::Principal;
pub use vault::{MasterKey, Vault, VaultError};

/// `n` bytes from the operating system's generator.
pub(crate) fn random<const N: usize>() -> Result<[u8; N], getrandom::Error> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes)?;
    Ok(bytes)
}

/// `N` bytes from `2N` hex digits (either case), or `None`.
pub(crate) fn unhex<const N: usize>(text: &str) -> Option<[u8; N]> {
    let mut out = [0u8; N];
    hex::decode_to_slice(text, &mut out).ok()?;
    Some(out)
}

/// Parses an RFC 3339 time as the stores write it.
pub fn parse_time(text: &str) -> Option<std::time::SystemTime> {
    humantime::parse_rfc3339_weak(text.trim_end_matches('Z')).ok()
}

/// A time as the stores write it: RFC 3339, UTC, seconds.
pub fn format_time(time: std::time::SystemTime) -> String {
    humantime::format_rfc3339_seconds(time).to_string()
}
