//! Model artifacts, content-addressed: an artifact lives at `PREFIX/sha256/<hex>`
//! in a local directory, S3 or Azure Blob (through `object_store`), and every
//! read is checked against its digest, so a corrupted or swapped object fails
//! its load instead of serving.

use bytes::Bytes;
use object_store::path::Path as StorePath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use sha2::{Digest, Sha256};
use std::path::Path;
use std::sync::Arc;
use vigil_core::Error;

pub const DIGEST_PREFIX: &str = "sha256:";

/// A whole request may take this long: the client's 30 s default would cut a
/// multi-gigabyte model mid-transfer.
const LARGE_OBJECT_TIMEOUT: &str = "30m";

#[derive(Clone)]
pub struct ArtifactStore {
    store: Arc<dyn ObjectStore>,
    prefix: StorePath,
    /// Where it is, for messages (`s3://bucket/prefix`, a directory).
    location: String,
}

/// `sha256:<hex>` of `bytes`.
pub fn digest_of(bytes: &[u8]) -> String {
    format!("{DIGEST_PREFIX}{}", hex::encode(Sha256::digest(bytes)))
}

/// The hex part of a well-formed digest; anything else is refused before it
/// becomes part of an object path.
fn digest_hex(digest: &str) -> Result<&str, Error> {
    digest
        .strip_prefix(DIGEST_PREFIX)
        .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()))
        .ok_or_else(|| Error::invalid_input("digest: expected sha256: followed by 64 lowercase hex digits"))
}

impl ArtifactStore {
    /// Opens the store at `location` (see [`crate::location`]: S3, Azure
    /// Blob or a local directory).
    pub fn open(location: &str) -> Result<Self, Error> {
        let (store, prefix) = crate::location::open(location, "artifact_store", LARGE_OBJECT_TIMEOUT)?;
        Ok(ArtifactStore { store, prefix, location: location.to_owned() })
    }

    /// A local directory.
    pub fn local(dir: &Path) -> Result<Self, Error> {
        Self::open(&dir.display().to_string())
    }

    pub fn location(&self) -> &str {
        &self.location
    }

    fn path(&self, hex: &str) -> StorePath {
        self.prefix.clone().join("sha256").join(hex)
    }

    /// Stores `bytes` and returns their digest. The object is written even when
    /// one is there already: the content is the same by construction, and a
    /// corrupted copy is repaired by pushing again.
    pub async fn put(&self, bytes: Bytes) -> Result<String, Error> {
        let hashed = bytes.clone();
        let digest = tokio::task::spawn_blocking(move || digest_of(&hashed))
            .await
            .map_err(|e| Error::storage(format!("hashing the artifact: {e}")))?;
        let path = self.path(digest_hex(&digest)?);
        self.store
            .put(&path, PutPayload::from_bytes(bytes))
            .await
            .map_err(|e| Error::storage(format!("cannot write {digest} to {}: {e}", self.location)))?;
        Ok(digest)
    }

    pub async fn contains(&self, digest: &str) -> Result<bool, Error> {
        let path = self.path(digest_hex(digest)?);
        match self.store.head(&path).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(Error::storage(format!("cannot look up {digest} in {}: {e}", self.location))),
        }
    }

    /// The artifact's bytes, verified against `digest`.
    pub async fn get(&self, digest: &str) -> Result<Bytes, Error> {
        let path = self.path(digest_hex(digest)?);
        let bytes = match self.store.get(&path).await {
            Ok(r) => r.bytes().await,
            Err(e) => Err(e),
        }
        .map_err(|e| match e {
            object_store::Error::NotFound { .. } => {
                Error::storage(format!("artifact {digest} is missing from the artifact store {}", self.location))
            }
            e => Error::storage(format!("cannot read artifact {digest} from {}: {e}", self.location)),
        })?;
        let hashed = bytes.clone();
        let actual = tokio::task::spawn_blocking(move || digest_of(&hashed))
            .await
            .map_err(|e| Error::storage(format!("hashing the artifact: {e}")))?;
        if actual != digest {
            return Err(Error::storage(format!(
                "artifact {digest} in {} is corrupted: its content hashes to {actual}",
                self.location
            )));
        }
        Ok(bytes)
    }

    /// Replaces an artifact's stored bytes without any check. Only for tests
    /// that prove corruption is caught.
    #[doc(hidden)]
    pub async fn overwrite_unchecked(&self, digest: &str, bytes: Bytes) -> Result<(), Error> {
        let path = self.path(digest_hex(digest)?);
        self.store.put(&path, PutPayload::from_bytes(bytes)).await.map_err(|e| Error::storage(e.to_string()))?;
        Ok(())
    }

    /// Deletes an artifact. Only for tests that prove a missing one is caught.
    #[doc(hidden)]
    pub async fn delete_unchecked(&self, digest: &str) -> Result<(), Error> {
        let path = self.path(digest_hex(digest)?);
        self.store.delete(&path).await.map_err(|e| Error::storage(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_are_checked_before_they_become_paths() {
        let good = digest_of(b"x");
        assert!(digest_hex(&good).is_ok());
        for bad in ["", "sha256:", "sha256:../../etc/passwd", "md5:abc", &good.to_uppercase(), &format!("{good}/x")] {
            assert!(digest_hex(bad).is_err(), "{bad}");
        }
    }
}
