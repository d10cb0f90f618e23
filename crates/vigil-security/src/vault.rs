//! Envelope encryption for secrets. Each secret version gets its own random
//! 256-bit data key; the value is sealed with AES-256-GCM under that key, and
//! the data key is sealed under the master key. The master key never reaches
//! the store, so a copy of the database (or the SQLite file) holds no
//! plaintext. Each data key encrypts exactly one message, and master-key wraps
//! use random 96-bit nonces, so no nonce is ever reused under a key. The
//! secret's name and version are the associated data: a sealed value moved to
//! another name or version does not open.
//!
//! Rotation: the vault holds the current master key and any previous ones;
//! [`Vault::rewrap`] re-seals a data key under the current key without touching
//! the value, so secrets stay readable throughout.

use crate::{random, unhex};
use aes_gcm::aead::{Aead, AeadInPlace, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use hex::encode as hex;
use sha2::{Digest, Sha256};
use vigil_core::security::SealedSecret;

const NONCE: usize = 12;

/// A 256-bit master key and its public id (a hash of it, for finding which
/// key wrapped what; it reveals nothing of the key).
#[derive(Clone)]
pub struct MasterKey {
    id: String,
    key: [u8; 32],
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MasterKey").field("id", &self.id).finish_non_exhaustive()
    }
}

impl MasterKey {
    pub fn from_bytes(key: [u8; 32]) -> MasterKey {
        let mut h = Sha256::new();
        h.update(b"vigil master key id\0");
        h.update(key);
        MasterKey { id: hex(&h.finalize()[..8]), key }
    }

    /// 64 hex digits (surrounding whitespace ignored, as in a file).
    pub fn parse(text: &str) -> Result<MasterKey, VaultError> {
        unhex::<32>(text.trim()).map(MasterKey::from_bytes).ok_or(VaultError::BadMasterKey)
    }

    pub fn generate() -> Result<MasterKey, VaultError> {
        Ok(MasterKey::from_bytes(random().map_err(|_| VaultError::Random)?))
    }

    /// The key as 64 hex digits, for writing a new key file.
    pub fn to_hex(&self) -> String {
        hex(self.key)
    }

    pub fn id(&self) -> &str {
        &self.id
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VaultError {
    #[error("a master key must be 32 bytes written as 64 hex digits")]
    BadMasterKey,
    #[error("secret sealed under master key {0}, which this server does not have")]
    UnknownMasterKey(String),
    #[error("the sealed secret does not open: it was altered or moved")]
    Tampered,
    #[error("the operating system's random generator failed")]
    Random,
}

/// Seals and opens secrets.
pub struct Vault {
    current: MasterKey,
    previous: Vec<MasterKey>,
}

impl Vault {
    /// `current` seals everything new; `previous` keys only open (and rewrap)
    /// what they sealed before a rotation.
    pub fn new(current: MasterKey, previous: Vec<MasterKey>) -> Vault {
        Vault { current, previous }
    }

    pub fn current_key_id(&self) -> &str {
        &self.current.id
    }

    /// A key for `purpose`, derived from the current master key
    /// (HMAC-SHA-256): the same on every replica, never stored, and changed
    /// by a rotation of the master key.
    pub fn derive(&self, purpose: &str) -> [u8; 32] {
        use hmac::{Hmac, Mac};
        let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(&self.current.key)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        mac.update(b"vigil derived key\0");
        mac.update(purpose.as_bytes());
        mac.finalize().into_bytes().into()
    }

    /// Seals `value` as version `version` of secret `name`.
    pub fn seal(
        &self,
        name: &str,
        version: u64,
        value: &[u8],
        created_by: &str,
        created_at: &str,
    ) -> Result<SealedSecret, VaultError> {
        let data_key: [u8; 32] = random().map_err(|_| VaultError::Random)?;
        let ciphertext = encrypt(&data_key, value, &value_aad(name, version))?;
        let wrapped_key = encrypt(&self.current.key, &data_key, &key_aad(name, version))?;
        Ok(SealedSecret {
            name: name.to_owned(),
            version,
            master_key_id: self.current.id.clone(),
            wrapped_key,
            ciphertext,
            created_by: created_by.to_owned(),
            created_at: created_at.to_owned(),
        })
    }

    /// The value of a sealed secret.
    pub fn open(&self, sealed: &SealedSecret) -> Result<Vec<u8>, VaultError> {
        let data_key = self.data_key(sealed)?;
        decrypt(&data_key, &sealed.ciphertext, &value_aad(&sealed.name, sealed.version))
    }

    /// The same secret with its data key wrapped by the current master key, or
    /// `None` when it already is. The value is not re-encrypted.
    pub fn rewrap(&self, sealed: &SealedSecret) -> Result<Option<SealedSecret>, VaultError> {
        if sealed.master_key_id == self.current.id {
            return Ok(None);
        }
        let data_key = self.data_key(sealed)?;
        let wrapped_key = encrypt(&self.current.key, &data_key, &key_aad(&sealed.name, sealed.version))?;
        Ok(Some(SealedSecret { master_key_id: self.current.id.clone(), wrapped_key, ..sealed.clone() }))
    }

    fn data_key(&self, sealed: &SealedSecret) -> Result<[u8; 32], VaultError> {
        let master = std::iter::once(&self.current)
            .chain(&self.previous)
            .find(|k| k.id == sealed.master_key_id)
            .ok_or_else(|| VaultError::UnknownMasterKey(sealed.master_key_id.clone()))?;
        let key = decrypt(&master.key, &sealed.wrapped_key, &key_aad(&sealed.name, sealed.version))?;
        key.try_into().map_err(|_| VaultError::Tampered)
    }
}

fn value_aad(name: &str, version: u64) -> Vec<u8> {
    format!("vigil secret value\0{name}\0{version}").into_bytes()
}

fn key_aad(name: &str, version: u64) -> Vec<u8> {
    format!("vigil secret data key\0{name}\0{version}").into_bytes()
}

/// `nonce ‖ ciphertext ‖ tag`, encrypted in place in the one buffer returned:
/// prediction chunks of up to a megabyte go through here, and each extra copy
/// of them showed in the prediction log's cost.
fn encrypt(key: &[u8; 32], plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>, VaultError> {
    const TAG: usize = 16;
    let nonce: [u8; NONCE] = random().map_err(|_| VaultError::Random)?;
    let cipher = Aes256Gcm::new(&Key::<Aes256Gcm>::from(*key));
    let mut out = Vec::with_capacity(NONCE + plaintext.len() + TAG);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(plaintext);
    let tag = cipher
        .encrypt_in_place_detached(&Nonce::from(nonce), aad, &mut out[NONCE..])
        .map_err(|_| VaultError::Tampered)?;
    out.extend_from_slice(&tag);
    Ok(out)
}

fn decrypt(key: &[u8; 32], sealed: &[u8], aad: &[u8]) -> Result<Vec<u8>, VaultError> {
    if sealed.len() < NONCE {
        return Err(VaultError::Tampered);
    }
    let (nonce, body) = sealed.split_at(NONCE);
    let nonce: [u8; NONCE] = nonce.try_into().map_err(|_| VaultError::Tampered)?;
    let cipher = Aes256Gcm::new(&Key::<Aes256Gcm>::from(*key));
    cipher.decrypt(&Nonce::from(nonce), Payload { msg: body, aad }).map_err(|_| VaultError::Tampered)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vault() -> Vault {
        Vault::new(MasterKey::generate().unwrap(), Vec::new())
    }

    #[test]
    fn a_sealed_secret_opens_and_hides_its_value() {
        let v = vault();
        let value = b"postgres://user:hunter2@db/prod";
        let sealed = v.seal("db", 1, value, "key:x", "t").unwrap();
        assert_eq!(v.open(&sealed).unwrap(), value);
        let haystack = [sealed.wrapped_key.as_slice(), sealed.ciphertext.as_slice()].concat();
        assert!(!haystack.windows(7).any(|w| w == b"hunter2"));
        // Two seals of the same value differ (fresh data key and nonces).
        let again = v.seal("db", 1, value, "key:x", "t").unwrap();
        assert_ne!(again.ciphertext, sealed.ciphertext);
        assert_ne!(again.wrapped_key, sealed.wrapped_key);
    }

    #[test]
    fn tampering_moving_or_the_wrong_master_key_is_refused() {
        let v = vault();
        let sealed = v.seal("db", 1, b"value", "k", "t").unwrap();
        for i in 0..sealed.ciphertext.len() {
            let mut bad = sealed.clone();
            bad.ciphertext[i] ^= 1;
            assert_eq!(v.open(&bad), Err(VaultError::Tampered), "byte {i}");
        }
        let mut bad = sealed.clone();
        bad.wrapped_key[20] ^= 1;
        assert_eq!(v.open(&bad), Err(VaultError::Tampered));
        let moved = SealedSecret { name: "other".into(), ..sealed.clone() };
        assert_eq!(v.open(&moved), Err(VaultError::Tampered));
        let renumbered = SealedSecret { version: 2, ..sealed.clone() };
        assert_eq!(v.open(&renumbered), Err(VaultError::Tampered));
        let truncated = SealedSecret { ciphertext: vec![1, 2, 3], ..sealed.clone() };
        assert_eq!(v.open(&truncated), Err(VaultError::Tampered));
        let other = vault();
        assert!(matches!(other.open(&sealed), Err(VaultError::UnknownMasterKey(_))));
        // A forged id does not help: the other key does not open the wrap.
        let forged = SealedSecret { master_key_id: other.current_key_id().into(), ..sealed };
        assert_eq!(other.open(&forged), Err(VaultError::Tampered));
    }

    #[test]
    fn rotation_rewraps_without_touching_the_value() {
        let old = MasterKey::generate().unwrap();
        let before = Vault::new(old.clone(), Vec::new());
        let sealed = before.seal("api", 3, b"s3cr3t", "k", "t").unwrap();
        let new = MasterKey::generate().unwrap();
        let after = Vault::new(new.clone(), vec![old]);
        assert_eq!(after.open(&sealed).unwrap(), b"s3cr3t", "old secrets open during rotation");
        let rewrapped = after.rewrap(&sealed).unwrap().unwrap();
        assert_eq!(rewrapped.master_key_id, new.id());
        assert_eq!(rewrapped.ciphertext, sealed.ciphertext);
        assert_eq!(after.rewrap(&rewrapped).unwrap(), None);
        let only_new = Vault::new(new, Vec::new());
        assert_eq!(only_new.open(&rewrapped).unwrap(), b"s3cr3t", "the old key can go once everything is rewrapped");
    }

    #[test]
    fn master_keys_parse_strictly() {
        let k = MasterKey::generate().unwrap();
        assert_eq!(MasterKey::parse(&format!("{}\n", k.to_hex())).unwrap().id(), k.id());
        for bad in ["", "00", &"g".repeat(64), &"0".repeat(63), &"0".repeat(65)] {
            assert_eq!(MasterKey::parse(bad).unwrap_err(), VaultError::BadMasterKey);
        }
        assert!(!format!("{k:?}").contains(&k.to_hex()));
    }
}
