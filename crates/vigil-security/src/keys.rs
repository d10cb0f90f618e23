//! API keys: `vgl_<id>_<secret><checksum>`: a recognisable prefix (secret
//! scanners and people spot it), a public id (to find the record and name the
//! key in logs), 256 random bits, and a CRC-32 that catches typos before any
//! lookup. Only the SHA-256 of the whole key is stored, and it is compared in
//! constant time. A plain hash is enough: the key has 256 bits of entropy, so
//! there is nothing for a slow hash to protect against.

use crate::principal::Principal;
use crate::{parse_time, random, unhex};
use hex::encode as hex;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::time::SystemTime;
use subtle::ConstantTimeEq;
use vigil_core::security::{Grant, KeyRecord};

pub const PREFIX: &str = "vgl_";
const ID_HEX: usize = 16;
const SECRET_HEX: usize = 64;
const CHECKSUM_HEX: usize = 8;
/// The length of every key.
pub const KEY_LEN: usize = PREFIX.len() + ID_HEX + 1 + SECRET_HEX + CHECKSUM_HEX;

/// A key just made: the key itself (shown once), its id and its hash (stored).
pub struct NewKey {
    pub token: String,
    pub id: String,
    pub hash: String,
}

impl std::fmt::Debug for NewKey {
    /// Never prints the key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewKey").field("id", &self.id).finish_non_exhaustive()
    }
}

/// A new random key.
pub fn generate() -> Result<NewKey, getrandom::Error> {
    let id = hex(random::<8>()?);
    let body = format!("{PREFIX}{id}_{}", hex(random::<32>()?));
    let token = format!("{body}{:08x}", crc32fast::hash(body.as_bytes()));
    Ok(NewKey { hash: hash(&token), id, token })
}

/// SHA-256 of a key, hex.
pub fn hash(token: &str) -> String {
    hex(Sha256::digest(token.as_bytes()))
}

/// The public id of a well-formed key, or `None` for anything else (wrong
/// length, prefix, characters or checksum).
pub fn key_id(token: &str) -> Option<&str> {
    if token.len() != KEY_LEN || !token.is_ascii() {
        return None;
    }
    let rest = token.strip_prefix(PREFIX)?;
    let (id, rest) = rest.split_at(ID_HEX);
    let secret = rest.strip_prefix('_')?;
    let is_hex = |s: &str| s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    if !is_hex(id) || !is_hex(secret) {
        return None;
    }
    let (body, checksum) = token.split_at(KEY_LEN - CHECKSUM_HEX);
    let expected = unhex::<4>(checksum)?;
    (crc32fast::hash(body.as_bytes()).to_be_bytes() == expected).then_some(id)
}

/// Why a bearer credential was refused. The id is public (it is part of the
/// key and safe to log); the secret part never appears anywhere.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthFailure {
    #[error("no credentials: send 'Authorization: Bearer <key or token>'")]
    Missing,
    #[error("the credentials are not a well-formed API key or token")]
    Malformed,
    /// The same words as [`AuthFailure::WrongSecret`]: a caller must not learn
    /// which key ids exist.
    #[error("API key {0} is not valid")]
    UnknownKey(String),
    #[error("API key {0} is not valid")]
    WrongSecret(String),
    #[error("API key {0} is revoked")]
    Revoked(String),
    #[error("API key {0} has expired")]
    Expired(String),
    #[error("token refused: {0}")]
    Token(String),
    #[error("the client certificate CN={0} is not bound to a role")]
    UnboundCertificate(String),
}

struct Entry {
    hash: [u8; 32],
    expires: Option<SystemTime>,
    revoked: bool,
    principal: Principal,
}

/// Every key, in memory, so that checking one never waits on the store. The
/// server rebuilds it when the store's generation moves.
#[derive(Default)]
pub struct KeyRing {
    keys: HashMap<String, Entry>,
}

impl KeyRing {
    pub fn new(records: Vec<KeyRecord>) -> KeyRing {
        let keys = records
            .into_iter()
            .filter_map(|r| {
                // A stored hash that is not 64 hex digits matches nothing: leave the key out.
                let hash = unhex::<32>(&r.hash)?;
                let expires = r.expires_at.as_deref().map(|t| parse_time(t).unwrap_or(SystemTime::UNIX_EPOCH));
                let principal =
                    Principal { id: format!("key:{}", r.id), grants: vec![Grant { role: r.role, scope: r.scope }] };
                Some((r.id, Entry { hash, expires, revoked: r.revoked_at.is_some(), principal }))
            })
            .collect();
        KeyRing { keys }
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The principal a key proves, at time `now`.
    pub fn authenticate(&self, token: &str, now: SystemTime) -> Result<Principal, AuthFailure> {
        let id = key_id(token).ok_or(AuthFailure::Malformed)?;
        // Hashed before the lookup, so that an unknown id takes as long as a wrong secret.
        let presented: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let entry = self.keys.get(id).ok_or_else(|| AuthFailure::UnknownKey(id.to_owned()))?;
        if !bool::from(presented.ct_eq(&entry.hash)) {
            return Err(AuthFailure::WrongSecret(id.to_owned()));
        }
        if entry.revoked {
            return Err(AuthFailure::Revoked(id.to_owned()));
        }
        if entry.expires.is_some_and(|e| e <= now) {
            return Err(AuthFailure::Expired(id.to_owned()));
        }
        Ok(entry.principal.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use vigil_core::security::{Role, Scope};

    fn record(key: &NewKey, role: Role) -> KeyRecord {
        KeyRecord {
            id: key.id.clone(),
            name: "test".into(),
            role,
            scope: Scope::Global,
            hash: key.hash.clone(),
            created_by: "test".into(),
            created_at: "2026-01-01T00:00:00Z".into(),
            expires_at: None,
            revoked_at: None,
            rotated_from: None,
        }
    }

    #[test]
    fn keys_have_the_documented_shape_and_differ() {
        let a = generate().unwrap();
        let b = generate().unwrap();
        assert_ne!(a.token, b.token);
        assert_ne!(a.id, b.id);
        assert_eq!(a.token.len(), KEY_LEN);
        assert!(a.token.starts_with("vgl_"));
        assert_eq!(key_id(&a.token), Some(a.id.as_str()));
        assert!(!format!("{a:?}").contains(&a.token[20..]), "Debug must not print the key");
    }

    #[test]
    fn a_typo_fails_the_checksum() {
        let key = generate().unwrap();
        for i in PREFIX.len()..KEY_LEN {
            let mut bytes = key.token.clone().into_bytes();
            bytes[i] = if bytes[i] == b'0' { b'1' } else { b'0' };
            let typo = String::from_utf8(bytes).unwrap();
            assert_eq!(key_id(&typo), None, "position {i}");
        }
        for junk in
            ["", "vgl_", "Bearer x", &key.token[..KEY_LEN - 1], &format!("{}0", key.token), &key.token.to_uppercase()]
        {
            assert_eq!(key_id(junk), None, "{junk}");
        }
        let multibyte = format!("{}é", &key.token[..KEY_LEN - 2]);
        assert_eq!(key_id(&multibyte), None);
    }

    #[test]
    fn the_ring_checks_secret_revocation_and_expiry() {
        let now = SystemTime::now();
        let good = generate().unwrap();
        let revoked = generate().unwrap();
        let expired = generate().unwrap();
        let later = generate().unwrap();
        let mut r = record(&revoked, Role::Owner);
        r.revoked_at = Some("2026-01-01T00:00:00Z".into());
        let mut e = record(&expired, Role::Owner);
        e.expires_at = Some(crate::format_time(now - Duration::from_secs(1)));
        let mut l = record(&later, Role::Reader);
        l.expires_at = Some(crate::format_time(now + Duration::from_secs(3600)));
        let ring = KeyRing::new(vec![record(&good, Role::Contributor), r, e, l]);

        let p = ring.authenticate(&good.token, now).unwrap();
        assert_eq!(p.id, format!("key:{}", good.id));
        assert!(p.holds(Role::Contributor) && !p.holds(Role::Owner));
        assert_eq!(ring.authenticate(&revoked.token, now), Err(AuthFailure::Revoked(revoked.id.clone())));
        assert_eq!(ring.authenticate(&expired.token, now), Err(AuthFailure::Expired(expired.id.clone())));
        assert!(ring.authenticate(&later.token, now).is_ok());
        assert!(ring.authenticate(&later.token, now + Duration::from_secs(7200)).is_err());

        // Same id, different secret: a forged key with a valid checksum.
        let body = format!("{PREFIX}{}_{}", good.id, "0".repeat(SECRET_HEX));
        let forged = format!("{body}{:08x}", crc32fast::hash(body.as_bytes()));
        assert_eq!(ring.authenticate(&forged, now), Err(AuthFailure::WrongSecret(good.id.clone())));
        let unknown = generate().unwrap();
        assert_eq!(ring.authenticate(&unknown.token, now), Err(AuthFailure::UnknownKey(unknown.id.clone())));
        assert_eq!(ring.authenticate("nonsense", now), Err(AuthFailure::Malformed));
    }
}
