//! The security nouns: roles and the scopes they are granted on, API key
//! records, audit events and their hash chain, and sealed secrets. Plain data
//! and the rules that hold whichever store keeps them; the cryptography that
//! makes and checks them is in `vigil-security`.

use crate::error::Error;
use crate::names::{is_valid_name, quoted};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fmt;
use std::str::FromStr;

/// What an operation needs, from least to most. Every REST route and gRPC
/// method names one; a principal holds grants of these roles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Inference only.
    Predictor,
    /// Metadata, metrics, monitoring.
    Reader,
    /// Register, deploy, change traffic.
    Contributor,
    /// Keys, role bindings, secrets, audit.
    Owner,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Predictor, Role::Reader, Role::Contributor, Role::Owner];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Predictor => "predictor",
            Role::Reader => "reader",
            Role::Contributor => "contributor",
            Role::Owner => "owner",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        Role::ALL.into_iter().find(|r| r.as_str().eq_ignore_ascii_case(s)).ok_or_else(|| {
            Error::invalid_input(format!("role: {} is not one of predictor, reader, contributor, owner", quoted(s)))
        })
    }
}

/// Where a grant applies: everywhere, or one endpoint (its inference, metadata
/// and traffic), or one model (its versions and aliases).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Scope {
    Global,
    Endpoint(String),
    Model(String),
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scope::Global => f.write_str("*"),
            Scope::Endpoint(n) => write!(f, "endpoint:{n}"),
            Scope::Model(n) => write!(f, "model:{n}"),
        }
    }
}

impl FromStr for Scope {
    type Err = Error;

    /// `*` (or empty), `endpoint:NAME` or `model:NAME`.
    fn from_str(s: &str) -> Result<Self, Error> {
        let scope = match s.split_once(':') {
            None if s.is_empty() || s == "*" => Scope::Global,
            Some(("endpoint", name)) if is_valid_name(name) => Scope::Endpoint(name.to_owned()),
            Some(("model", name)) if is_valid_name(name) => Scope::Model(name.to_owned()),
            _ => {
                return Err(Error::invalid_input(format!(
                    "scope: {} is not '*', 'endpoint:NAME' or 'model:NAME'",
                    quoted(s)
                )));
            }
        };
        Ok(scope)
    }
}

impl Serialize for Scope {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Scope {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// What an operation is about, for matching scoped grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target<'a> {
    /// Something every principal may see at this role whatever its scope
    /// (the server's own metadata).
    Any,
    /// Everything, or a list across endpoints and models: needs a global grant.
    Global,
    Endpoint(&'a str),
    Model(&'a str),
}

/// A role on a scope.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Grant {
    pub role: Role,
    /// `*`, `endpoint:NAME` or `model:NAME`.
    #[schema(value_type = String)]
    pub scope: Scope,
}

impl Grant {
    /// Whether this grant allows an operation that needs `role` on `target`.
    pub fn allows(&self, role: Role, target: Target<'_>) -> bool {
        self.role >= role
            && match (&self.scope, target) {
                (Scope::Global, _) | (_, Target::Any) => true,
                (Scope::Endpoint(mine), Target::Endpoint(it)) | (Scope::Model(mine), Target::Model(it)) => mine == it,
                _ => false,
            }
    }
}

/// An API key as stored: never the key itself, only its SHA-256.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct KeyRecord {
    /// The public key id, part of the key: `vgl_<id>_…`.
    pub id: String,
    /// What the key is for, for people.
    pub name: String,
    pub role: Role,
    /// `*`, `endpoint:NAME` or `model:NAME`.
    #[schema(value_type = String)]
    pub scope: Scope,
    /// SHA-256 of the whole key, hex. Not sent out by the API.
    #[serde(skip_serializing, default)]
    pub hash: String,
    pub created_by: String,
    pub created_at: String,
    /// RFC 3339; the key stops working then.
    pub expires_at: Option<String>,
    pub revoked_at: Option<String>,
    /// The key this one replaced by rotation, if any.
    pub rotated_from: Option<String>,
}

/// An audit event before it is chained.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct NewAuditEvent {
    /// RFC 3339, UTC.
    pub time: String,
    /// Who: `key:<id>`, `oidc:<issuer>#<subject>`, `cert:<subject>`, or `-` when unknown.
    pub principal: String,
    /// What: the operation, e.g. `PUT /api/v1/endpoints/{endpoint}`.
    pub action: String,
    /// On what: `endpoint:fraud`, `model:fraud`, `secret:db`, …
    pub target: String,
    /// `ok`, `denied: …`, `unauthenticated: …`, `error: <status>`.
    pub outcome: String,
    /// The client's address.
    pub source: String,
    pub request_id: String,
}

/// An audit event in the chain: each one's hash covers its fields and the hash
/// of the one before, so an edit, deletion, insertion or reordering breaks
/// the chain at that point.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuditEvent {
    /// 1, 2, 3, … with no gaps.
    pub seq: u64,
    pub time: String,
    pub principal: String,
    pub action: String,
    pub target: String,
    pub outcome: String,
    pub source: String,
    pub request_id: String,
    /// The hash of the event before (64 zeros for the first).
    pub prev_hash: String,
    /// SHA-256 over `seq`, the fields and `prev_hash`, hex.
    pub hash: String,
}

/// The hash before the first event.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

impl AuditEvent {
    /// Chains `new` after an event with number `seq - 1` and hash `prev_hash`.
    pub fn chain(seq: u64, new: NewAuditEvent, prev_hash: &str) -> AuditEvent {
        let mut event = AuditEvent {
            seq,
            time: new.time,
            principal: new.principal,
            action: new.action,
            target: new.target,
            outcome: new.outcome,
            source: new.source,
            request_id: new.request_id,
            prev_hash: prev_hash.to_owned(),
            hash: String::new(),
        };
        event.hash = event.expected_hash();
        event
    }

    /// The hash this event's content calls for. The fields go in as a JSON
    /// array, so that no two different events can encode to the same bytes.
    pub fn expected_hash(&self) -> String {
        let fields = (
            self.seq,
            &self.time,
            &self.principal,
            &self.action,
            &self.target,
            &self.outcome,
            &self.source,
            &self.request_id,
            &self.prev_hash,
        );
        let encoded = serde_json::to_vec(&fields).unwrap_or_default();
        hex::encode(Sha256::digest(&encoded))
    }
}

/// Where a chain stops holding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BrokenLink {
    /// The first event that does not fit (or the number expected there).
    pub seq: u64,
    pub reason: String,
}

/// Checks a chain event by event, in order from event 1, so that a long
/// chain is verified in constant memory.
#[derive(Debug, Clone)]
pub struct ChainCheck {
    expected_seq: u64,
    prev: String,
}

impl Default for ChainCheck {
    fn default() -> Self {
        ChainCheck { expected_seq: 1, prev: GENESIS_HASH.to_owned() }
    }
}

impl ChainCheck {
    /// Checks the next event.
    pub fn next(&mut self, event: &AuditEvent) -> Result<(), BrokenLink> {
        let broken = |reason: String| Err(BrokenLink { seq: self.expected_seq, reason });
        if event.seq != self.expected_seq {
            return broken(format!(
                "event {} found where event {} belongs: deleted, inserted or reordered",
                event.seq, self.expected_seq
            ));
        }
        if event.prev_hash != self.prev {
            return broken("does not link to the event before it: an event was deleted, inserted or reordered".into());
        }
        if event.hash != event.expected_hash() {
            return broken("its content does not match its hash: the event was edited".into());
        }
        self.prev.clone_from(&event.hash);
        self.expected_seq += 1;
        Ok(())
    }

    /// Checks the end of the chain against the head the store records (the
    /// last event appended), which catches events cut from the end. Returns
    /// how many events were checked.
    pub fn finish(self, head_seq: u64, head_hash: &str) -> Result<u64, BrokenLink> {
        let last = self.expected_seq - 1;
        let reason = if last < head_seq {
            format!(
                "the chain ends at event {last} but the store's head says {head_seq}: \
                 events were cut from the end (or the head was edited)"
            )
        } else if last > head_seq {
            format!("the chain holds {last} events but the store's head says {head_seq}: the head was edited")
        } else if self.prev != head_hash {
            format!("the store's head names a hash that is not event {last}'s: the head was edited")
        } else {
            return Ok(last);
        };
        Err(BrokenLink { seq: last.min(head_seq) + 1, reason })
    }
}

/// Checks a whole chain (see [`ChainCheck`]).
pub fn verify_chain(
    events: impl IntoIterator<Item = AuditEvent>,
    head_seq: u64,
    head_hash: &str,
) -> Result<u64, BrokenLink> {
    let mut check = ChainCheck::default();
    for event in events {
        check.next(&event)?;
    }
    check.finish(head_seq, head_hash)
}

/// A secret's value, sealed: encrypted under its own data key, which is
/// wrapped by a master key. The store never sees the value or the data key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedSecret {
    pub name: String,
    pub version: u64,
    /// Which master key wrapped the data key.
    pub master_key_id: String,
    /// Nonce ‖ AES-256-GCM(master key, data key).
    pub wrapped_key: Vec<u8>,
    /// Nonce ‖ AES-256-GCM(data key, value).
    pub ciphertext: Vec<u8>,
    pub created_by: String,
    pub created_at: String,
}

/// What may be shown about a secret: never its value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SecretInfo {
    pub name: String,
    /// The latest version.
    pub version: u64,
    pub created_by: String,
    pub created_at: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(role: Role, scope: &str) -> Grant {
        Grant { role, scope: scope.parse().unwrap() }
    }

    #[test]
    fn grants_cover_lower_roles_on_their_scope_only() {
        let g = grant(Role::Contributor, "endpoint:fraud");
        assert!(g.allows(Role::Predictor, Target::Endpoint("fraud")));
        assert!(g.allows(Role::Contributor, Target::Endpoint("fraud")));
        assert!(!g.allows(Role::Owner, Target::Endpoint("fraud")));
        assert!(!g.allows(Role::Predictor, Target::Endpoint("churn")));
        assert!(!g.allows(Role::Reader, Target::Model("fraud")), "an endpoint scope is not a model scope");
        assert!(!g.allows(Role::Reader, Target::Global), "lists need a global grant");
        assert!(g.allows(Role::Predictor, Target::Any));
        let global = grant(Role::Reader, "*");
        assert!(global.allows(Role::Reader, Target::Global));
        assert!(global.allows(Role::Predictor, Target::Model("x")));
        assert!(!global.allows(Role::Contributor, Target::Model("x")));
    }

    #[test]
    fn scopes_and_roles_parse_strictly() {
        for ok in ["*", "", "endpoint:a", "model:b.c"] {
            let s: Scope = ok.parse().unwrap();
            assert_eq!(s.to_string().parse::<Scope>().unwrap(), s);
        }
        for bad in ["endpoint:", "endpoint:../x", "model:a/b", "x:y", "**", "endpoint:a:b", "Endpoint:a"] {
            assert!(bad.parse::<Scope>().is_err(), "{bad}");
        }
        assert_eq!("Owner".parse::<Role>().unwrap(), Role::Owner);
        assert!("root".parse::<Role>().is_err());
        assert!(Role::Predictor < Role::Reader && Role::Reader < Role::Contributor && Role::Contributor < Role::Owner);
    }

    fn chain(n: u64) -> Vec<AuditEvent> {
        let mut prev = GENESIS_HASH.to_owned();
        (1..=n)
            .map(|seq| {
                let e = AuditEvent::chain(
                    seq,
                    NewAuditEvent { action: format!("a{seq}"), principal: "key:x".into(), ..Default::default() },
                    &prev,
                );
                prev = e.hash.clone();
                e
            })
            .collect()
    }

    #[test]
    fn the_chain_names_the_first_broken_link() {
        let events = chain(5);
        let head = events[4].hash.clone();
        assert_eq!(verify_chain(events.clone(), 5, &head), Ok(5));
        assert_eq!(verify_chain(Vec::new(), 0, GENESIS_HASH), Ok(0));

        let mut edited = events.clone();
        edited[2].outcome = "ok".into();
        edited[2].principal = "key:y".into();
        assert_eq!(verify_chain(edited, 5, &head).unwrap_err().seq, 3);

        let mut rehashed = events.clone();
        rehashed[2].principal = "key:y".into();
        rehashed[2].hash = rehashed[2].expected_hash();
        assert_eq!(verify_chain(rehashed, 5, &head).unwrap_err().seq, 4, "the next link no longer fits");

        let mut deleted = events.clone();
        deleted.remove(1);
        assert_eq!(verify_chain(deleted, 5, &head).unwrap_err().seq, 2);

        let mut swapped = events.clone();
        swapped.swap(1, 2);
        assert_eq!(verify_chain(swapped, 5, &head).unwrap_err().seq, 2);

        let mut renumbered = events.clone();
        renumbered.remove(1);
        for (i, e) in renumbered.iter_mut().enumerate() {
            e.seq = i as u64 + 1;
        }
        assert_eq!(verify_chain(renumbered, 4, &head).unwrap_err().seq, 2);

        let cut = events[..4].to_vec();
        assert_eq!(verify_chain(cut, 5, &head).unwrap_err().seq, 5, "the tail was cut");
    }
}
