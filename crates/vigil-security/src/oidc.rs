//! OIDC bearer tokens (Microsoft Entra ID, Keycloak, any issuer with a JWKS).
//!
//! - The signing keys come from the issuer's JWKS (found by discovery, or a
//!   configured URL), fetched with a timeout and a size limit, cached, and
//!   fetched again in the background: periodically, and when a token names a
//!   key id the cache lacks (at most once per [`REFETCH_EVERY`]). A request
//!   never waits on the issuer: a token signed with a key not yet fetched is
//!   refused, and works once the refetch lands.
//! - The algorithm is never taken from the token: each key's algorithm comes
//!   from its JWK, it must be on the allow-list (RS256 and ES256 by default),
//!   and the token's header must name that same algorithm. So `none` and HMAC
//!   (say HS256 "signed" with the public key) are refused before any check.
//! - `iss`, `aud`, `exp` and `nbf` are checked, with a small clock skew.
//! - Roles come from a configurable claim (`roles` for Entra app roles,
//!   `realm_access.roles` or `groups` for Keycloak), mapped to grants by a table.

use crate::keys::AuthFailure;
use crate::principal::Principal;
use arc_swap::ArcSwap;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use vigil_core::security::{Grant, Role, Scope};

/// The least time between two fetches caused by unknown key ids.
pub const REFETCH_EVERY: Duration = Duration::from_secs(30);
/// Keys are fetched again this often anyway (issuers publish new keys ahead of using them).
pub const REFRESH_EVERY: Duration = Duration::from_secs(600);
/// The largest JWKS or discovery document accepted.
pub const MAX_DOCUMENT_BYTES: usize = 1 << 20;
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// `[security.oidc]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcConfig {
    /// The `iss` tokens must carry, e.g. `https://login.microsoftonline.com/<tenant>/v2.0`.
    pub issuer: String,
    /// The `aud` tokens must carry (one of).
    pub audiences: Vec<String>,
    /// The JWKS; default: discovered from `<issuer>/.well-known/openid-configuration`.
    #[serde(default)]
    pub jwks_url: Option<String>,
    /// Accepted algorithms; `none` and HMAC are never accepted.
    #[serde(default = "default_algorithms")]
    pub algorithms: Vec<String>,
    /// Tolerated clock difference for `exp` and `nbf`, in seconds.
    #[serde(default = "default_skew")]
    pub clock_skew_seconds: u64,
    /// The claim holding roles or groups: `roles`, `realm_access.roles`, `groups`.
    #[serde(default = "default_roles_claim")]
    pub roles_claim: String,
    /// What each value of that claim grants.
    #[serde(default)]
    pub role_mappings: Vec<RoleMapping>,
}

/// A claim value granting a role on a scope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleMapping {
    pub value: String,
    pub role: Role,
    #[serde(default = "global")]
    pub scope: Scope,
}

fn default_algorithms() -> Vec<String> {
    vec!["RS256".into(), "ES256".into()]
}
fn default_skew() -> u64 {
    60
}
fn default_roles_claim() -> String {
    "roles".into()
}
fn global() -> Scope {
    Scope::Global
}

/// A signing key with the one algorithm it may verify.
struct Key {
    algorithm: Algorithm,
    decoding: DecodingKey,
}

/// Verifies tokens from one issuer.
pub struct OidcVerifier {
    config: OidcConfig,
    allowed: Vec<Algorithm>,
    keys: ArcSwap<HashMap<String, Key>>,
    http: reqwest::Client,
    /// When an unknown key id last caused a fetch.
    last_refetch: Mutex<Option<Instant>>,
    fetching: tokio::sync::Mutex<()>,
}

impl OidcVerifier {
    pub fn new(config: OidcConfig) -> Result<OidcVerifier, String> {
        let mut allowed = Vec::new();
        for name in &config.algorithms {
            let alg: Algorithm = name.parse().map_err(|_| format!("security.oidc.algorithms: unknown '{name}'"))?;
            if matches!(alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512) {
                return Err(format!("security.oidc.algorithms: {name} (HMAC) cannot verify tokens from an issuer"));
            }
            allowed.push(alg);
        }
        if config.audiences.is_empty() {
            return Err("security.oidc.audiences: give at least one".into());
        }
        let http = reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| e.to_string())?;
        Ok(OidcVerifier {
            config,
            allowed,
            keys: ArcSwap::from_pointee(HashMap::new()),
            http,
            last_refetch: Mutex::new(None),
            fetching: tokio::sync::Mutex::new(()),
        })
    }

    pub fn issuer(&self) -> &str {
        &self.config.issuer
    }

    /// Fetches the JWKS (after discovery if needed) and replaces the cache.
    pub async fn refresh(&self) -> Result<usize, String> {
        let _one_at_a_time = self.fetching.lock().await;
        let url = match &self.config.jwks_url {
            Some(url) => url.clone(),
            None => {
                let discovery =
                    format!("{}/.well-known/openid-configuration", self.config.issuer.trim_end_matches('/'));
                let doc: Value = serde_json::from_slice(&self.fetch(&discovery).await?)
                    .map_err(|e| format!("{discovery}: not JSON: {e}"))?;
                if doc["issuer"].as_str() != Some(self.config.issuer.as_str()) {
                    return Err(format!("{discovery}: names issuer {}, not {}", doc["issuer"], self.config.issuer));
                }
                doc["jwks_uri"].as_str().ok_or_else(|| format!("{discovery}: no jwks_uri"))?.to_owned()
            }
        };
        let set: JwkSet =
            serde_json::from_slice(&self.fetch(&url).await?).map_err(|e| format!("{url}: not a JWKS: {e}"))?;
        let mut keys = HashMap::new();
        for jwk in &set.keys {
            let Some(kid) = &jwk.common.key_id else { continue };
            // The key's own algorithm, from its parameters; a stated `alg` must agree.
            let algorithm = match (&jwk.algorithm, jwk.common.key_algorithm) {
                (AlgorithmParameters::RSA(_), None | Some(KeyAlgorithm::RS256)) => Algorithm::RS256,
                (AlgorithmParameters::RSA(_), Some(KeyAlgorithm::RS384)) => Algorithm::RS384,
                (AlgorithmParameters::RSA(_), Some(KeyAlgorithm::RS512)) => Algorithm::RS512,
                (AlgorithmParameters::RSA(_), Some(KeyAlgorithm::PS256)) => Algorithm::PS256,
                (AlgorithmParameters::EllipticCurve(p), None | Some(KeyAlgorithm::ES256))
                    if p.curve == EllipticCurve::P256 =>
                {
                    Algorithm::ES256
                }
                (AlgorithmParameters::EllipticCurve(p), None | Some(KeyAlgorithm::ES384))
                    if p.curve == EllipticCurve::P384 =>
                {
                    Algorithm::ES384
                }
                _ => continue, // symmetric, unknown or inconsistent: never used
            };
            if !self.allowed.contains(&algorithm) {
                continue;
            }
            if let Ok(decoding) = DecodingKey::from_jwk(jwk) {
                keys.insert(kid.clone(), Key { algorithm, decoding });
            }
        }
        let n = keys.len();
        self.keys.store(std::sync::Arc::new(keys));
        Ok(n)
    }

    async fn fetch(&self, url: &str) -> Result<Vec<u8>, String> {
        let mut response = self.http.get(url).send().await.map_err(|e| format!("{url}: {e}"))?;
        if !response.status().is_success() {
            return Err(format!("{url}: {}", response.status()));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| format!("{url}: {e}"))? {
            if body.len() + chunk.len() > MAX_DOCUMENT_BYTES {
                return Err(format!("{url}: larger than {MAX_DOCUMENT_BYTES} bytes"));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }

    /// Whether an unknown key id may cause a fetch now (and notes that it does).
    fn may_refetch(&self) -> bool {
        let Ok(mut last) = self.last_refetch.lock() else { return false };
        if last.is_some_and(|t| t.elapsed() < REFETCH_EVERY) {
            return false;
        }
        *last = Some(Instant::now());
        true
    }

    /// Refreshes the keys in the background forever.
    pub fn watch(self: std::sync::Arc<Self>) {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(REFRESH_EVERY);
            loop {
                tick.tick().await;
                if let Err(e) = self.refresh().await {
                    tracing::warn!(issuer = %self.config.issuer, error = %e, "could not fetch the OIDC signing keys");
                }
            }
        });
    }

    /// The principal a token proves. An unknown key id schedules a refetch
    /// (bounded) and is refused now.
    pub fn verify(self: &std::sync::Arc<Self>, token: &str) -> Result<Principal, AuthFailure> {
        let refuse = |why: String| AuthFailure::Token(why);
        let header = jsonwebtoken::decode_header(token).map_err(|e| refuse(format!("malformed: {e}")))?;
        if !self.allowed.contains(&header.alg) {
            return Err(refuse(format!("algorithm {:?} is not accepted", header.alg)));
        }
        let kid = header.kid.ok_or_else(|| refuse("no key id (kid)".into()))?;
        let keys = self.keys.load();
        let Some(key) = keys.get(&kid) else {
            if self.may_refetch() {
                let me = std::sync::Arc::clone(self);
                tokio::spawn(async move {
                    if let Err(e) = me.refresh().await {
                        tracing::warn!(issuer = %me.config.issuer, error = %e, "could not fetch the OIDC signing keys");
                    }
                });
            }
            return Err(refuse(format!("unknown key id {}", kid.chars().take(64).collect::<String>())));
        };
        if header.alg != key.algorithm {
            return Err(refuse(format!("the token says {:?} but key {kid} is {:?}", header.alg, key.algorithm)));
        }
        let mut validation = Validation::new(key.algorithm);
        validation.set_issuer(&[&self.config.issuer]);
        validation.set_audience(&self.config.audiences);
        validation.leeway = self.config.clock_skew_seconds;
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        let data = jsonwebtoken::decode::<Value>(token, &key.decoding, &validation)
            .map_err(|e| refuse(format!("{:?}", e.kind()).to_lowercase()))?;
        let claims = data.claims;
        let subject = claims["sub"].as_str().unwrap_or_default();
        let values = claim_values(&claims, &self.config.roles_claim);
        let grants = self
            .config
            .role_mappings
            .iter()
            .filter(|m| values.iter().any(|v| *v == m.value))
            .map(|m| Grant { role: m.role, scope: m.scope.clone() })
            .collect();
        Ok(Principal { id: format!("oidc:{}#{subject}", self.config.issuer), grants })
    }
}

/// The strings at a dotted claim path (`realm_access.roles`): an array of
/// strings or one string.
fn claim_values<'a>(claims: &'a Value, path: &str) -> Vec<&'a str> {
    let found = path.split('.').try_fold(claims, |v, key| v.get(key));
    match found {
        Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).collect(),
        Some(Value::String(s)) => vec![s.as_str()],
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn roles_come_from_the_configured_claim() {
        let entra = json!({"roles": ["Vigil.Reader", "Other"]});
        assert_eq!(claim_values(&entra, "roles"), vec!["Vigil.Reader", "Other"]);
        let keycloak = json!({"realm_access": {"roles": ["vigil-owner"]}, "groups": "ops"});
        assert_eq!(claim_values(&keycloak, "realm_access.roles"), vec!["vigil-owner"]);
        assert_eq!(claim_values(&keycloak, "groups"), vec!["ops"]);
        assert!(claim_values(&keycloak, "roles").is_empty());
        assert!(claim_values(&json!({"roles": [1, {"x": 2}]}), "roles").is_empty());
    }

    #[test]
    fn hmac_and_unknown_algorithms_are_refused_in_configuration() {
        let config = |algs: &[&str]| OidcConfig {
            issuer: "https://issuer".into(),
            audiences: vec!["vigil".into()],
            jwks_url: None,
            algorithms: algs.iter().map(|s| (*s).to_owned()).collect(),
            clock_skew_seconds: 60,
            roles_claim: "roles".into(),
            role_mappings: Vec::new(),
        };
        assert!(OidcVerifier::new(config(&["RS256", "ES256"])).is_ok());
        assert!(OidcVerifier::new(config(&["HS256"])).is_err());
        assert!(OidcVerifier::new(config(&["none"])).is_err());
        let mut no_audience = config(&["RS256"]);
        no_audience.audiences.clear();
        assert!(OidcVerifier::new(no_audience).is_err());
    }
}
