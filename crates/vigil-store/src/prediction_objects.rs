//! The prediction log in an object store (a directory, S3, Azure Blob), for
//! volumes a database should not hold. A chunk is one object,
//! `PREFIX/predictions/<endpoint>/<first_us>-<id>.<last_us>.<records>`: its
//! name holds every column a filter needs, so listing selects chunks without
//! reading them, and names sort as chunks do (by first record, then id). The
//! object holds the sealed payload behind a short header naming the key it
//! is sealed under.

use crate::PredictionStore;
use async_trait::async_trait;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path as StorePath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use std::sync::Arc;
use vigil_core::Error;
use vigil_core::predictions::{ChunkFilter, ChunkPolicy, MAX_CHUNK_SPAN_US, StoredChunk};

const MAGIC: &[u8; 4] = b"VPO\x01";
/// One request (a chunk is at most a few MiB).
const TIMEOUT: &str = "60s";
/// Requests in flight at once when reading or deleting several chunks.
const CONCURRENCY: usize = 8;
/// Chunks listed beyond a page, so that a page stays full when retention
/// deletes some between the listing and the reading.
const SLACK: usize = 16;

pub struct ObjectPredictionStore {
    store: Arc<dyn ObjectStore>,
    root: StorePath,
    /// S3 and Azure list in name order, so a listing can stop once it has
    /// enough; a local directory lists in no order and is read whole.
    sorted_listing: bool,
    location: String,
}

/// A chunk as its name describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Listed {
    first_us: i64,
    id: String,
    last_us: i64,
    records: u32,
}

impl ObjectPredictionStore {
    /// The store at `location` (as for the artifact store); chunks go under
    /// its `predictions/`.
    pub fn open(location: &str) -> Result<Self, Error> {
        let (store, prefix) = crate::location::open(location, "prediction_log.store", TIMEOUT)?;
        let sorted_listing = location.starts_with("s3://") || location.starts_with("az://");
        Ok(ObjectPredictionStore {
            store,
            root: prefix.clone().join("predictions"),
            sorted_listing,
            location: location.to_owned(),
        })
    }

    pub fn location(&self) -> &str {
        &self.location
    }

    fn dir(&self, endpoint: &str) -> Result<StorePath, Error> {
        vigil_core::names::check_name("endpoint", endpoint)?;
        Ok(self.root.clone().join(endpoint))
    }

    fn failed(&self, what: &str, e: object_store::Error) -> Error {
        Error::storage(format!("prediction log in {}: cannot {what}: {e}", self.location))
    }

    /// `endpoint`'s chunks whose names sort after `offset`, in name order
    /// where the store lists so, each with its object's path and size.
    fn list(
        &self,
        dir: &StorePath,
        offset: Option<&str>,
    ) -> futures::stream::BoxStream<'static, Result<(Listed, StorePath, u64), Error>> {
        let listing = match offset {
            Some(o) => self.store.list_with_offset(Some(dir), &dir.clone().join(o)),
            None => self.store.list(Some(dir)),
        };
        let location = self.location.clone();
        listing
            .filter_map(move |meta| {
                let item = match meta {
                    // Anything else under the prefix is not ours to read.
                    Ok(m) => m.location.filename().and_then(parse_name).map(|l| Ok((l, m.location.clone(), m.size))),
                    Err(e) => Some(Err(Error::storage(format!("prediction log in {location}: cannot list: {e}")))),
                };
                std::future::ready(item)
            })
            .boxed()
    }

    async fn fetch(&self, endpoint: &str, listed: Listed, path: StorePath) -> Result<Option<StoredChunk>, Error> {
        let bytes = match self.store.get(&path).await {
            Ok(r) => r.bytes().await,
            Err(e) => Err(e),
        };
        let bytes = match bytes {
            Ok(b) => b,
            // Pruned (by another replica) since it was listed.
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(self.failed("read a chunk", e)),
        };
        let (master_key_id, wrapped_key, ciphertext) = decode_object(&bytes)
            .map_err(|e| Error::storage(format!("prediction log in {}: chunk {path}: {e}", self.location)))?;
        Ok(Some(StoredChunk {
            id: listed.id,
            endpoint: endpoint.to_owned(),
            first_us: listed.first_us,
            last_us: listed.last_us,
            records: listed.records,
            master_key_id,
            wrapped_key,
            ciphertext,
        }))
    }
}

#[async_trait]
impl PredictionStore for ObjectPredictionStore {
    async fn insert_chunk(&self, c: &StoredChunk) -> Result<(), Error> {
        let dir = self.dir(&c.endpoint)?;
        if !valid_id(&c.id) || c.first_us < 0 || c.last_us < c.first_us {
            return Err(Error::invalid_input(format!("prediction chunk {}: bad id or times", c.id)));
        }
        if c.master_key_id.len() > usize::from(u16::MAX) || u32::try_from(c.wrapped_key.len()).is_err() {
            return Err(Error::invalid_input(format!("prediction chunk {}: key id or wrapped key too long", c.id)));
        }
        let name =
            object_name(&Listed { first_us: c.first_us, id: c.id.clone(), last_us: c.last_us, records: c.records });
        let body = encode_object(c);
        self.store.put(&dir.join(name), PutPayload::from(body)).await.map_err(|e| self.failed("write a chunk", e))?;
        Ok(())
    }

    async fn list_chunks(&self, f: &ChunkFilter) -> Result<Vec<StoredChunk>, Error> {
        let dir = self.dir(&f.endpoint)?;
        // Names start with the first record's time: a chunk with a record at
        // or after `since` starts at most a chunk's span before it.
        // (A cursor before 0 starts nowhere in particular: no offset.)
        let from = f.from.as_ref().filter(|(t, _)| *t >= 0).map(|(t, id)| format!("{t:020}-{id}"));
        let since = f.since_us.map(|t| format!("{:020}", t.saturating_sub(MAX_CHUNK_SPAN_US).max(0)));
        let offset = from.into_iter().chain(since).max();
        let limit = f.limit as usize;
        let mut listing = self.list(&dir, offset.as_deref());
        let mut selected = Vec::new();
        let until = f.until_us.unwrap_or(i64::MAX);
        while let Some(item) = listing.next().await {
            let (l, path, _) = item?;
            if self.sorted_listing && (l.first_us >= until || selected.len() >= limit + SLACK) {
                break; // in name order, nothing later can be selected
            }
            let after_from = f.from.as_ref().is_none_or(|(t, id)| (l.first_us, &l.id) >= (*t, id));
            if after_from && l.last_us >= f.since_us.unwrap_or(i64::MIN) && l.first_us < until {
                selected.push((l, path));
            }
        }
        selected.sort_by(|a, b| (a.0.first_us, &a.0.id).cmp(&(b.0.first_us, &b.0.id)));
        // Read in order until the page is full: a chunk deleted since the
        // listing is skipped, and the next one takes its place.
        let mut chunks = Vec::with_capacity(limit.min(selected.len()));
        let mut reads =
            futures::stream::iter(selected).map(|(l, path)| self.fetch(&f.endpoint, l, path)).buffered(CONCURRENCY);
        while chunks.len() < limit {
            match reads.next().await {
                Some(chunk) => chunks.extend(chunk?),
                None => break,
            }
        }
        Ok(chunks)
    }

    async fn prune_chunks(&self, endpoint: &str, before_us: i64, max_bytes: u64) -> Result<u64, Error> {
        let dir = self.dir(endpoint)?;
        let mut all: Vec<(Listed, StorePath, u64)> = self.list(&dir, None).try_collect().await?;
        // Newest first; everything past the age limit or the size limit goes.
        all.sort_by(|a, b| (b.0.first_us, &b.0.id).cmp(&(a.0.first_us, &a.0.id)));
        let mut kept_bytes = 0u64;
        let mut doomed = Vec::new();
        for (l, path, size) in all {
            // Age first; the size limit counts only what age leaves.
            if l.last_us < before_us {
                doomed.push(path);
                continue;
            }
            kept_bytes = kept_bytes.saturating_add(size);
            if kept_bytes > max_bytes {
                doomed.push(path);
            }
        }
        let deleted = futures::stream::iter(doomed)
            .map(|path| async move {
                match self.store.delete(&path).await {
                    Ok(()) => Ok(1u64),
                    Err(object_store::Error::NotFound { .. }) => Ok(0),
                    Err(e) => Err(self.failed("delete a chunk", e)),
                }
            })
            .buffer_unordered(CONCURRENCY)
            .try_fold(0u64, |n, d| std::future::ready(Ok(n + d)))
            .await?;
        Ok(deleted)
    }

    fn chunk_policy(&self) -> ChunkPolicy {
        ChunkPolicy::OBJECTS
    }
}

/// Chunk ids go into object names: letters and digits only.
fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// `<first_us>-<id>.<last_us>.<records>`, the times zero-padded so that
/// names sort by time ('.' sorts before every letter and digit, so a shorter
/// id sorts before a longer one it begins).
fn object_name(l: &Listed) -> String {
    format!("{:020}-{}.{:020}.{}", l.first_us, l.id, l.last_us, l.records)
}

fn parse_name(name: &str) -> Option<Listed> {
    let (first, rest) = name.split_once('-')?;
    let mut parts = rest.split('.');
    let (id, last, records) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || first.len() != 20 || last.len() != 20 || !valid_id(id) {
        return None;
    }
    if ![first, last, records].iter().all(|s| s.bytes().all(|b| b.is_ascii_digit())) {
        return None;
    }
    Some(Listed {
        first_us: first.parse().ok()?,
        id: id.to_owned(),
        last_us: last.parse().ok()?,
        records: records.parse().ok()?,
    })
}

/// MAGIC, the master key id (u16 LE length, bytes), the wrapped data key
/// (u32 LE length, bytes), then the ciphertext to the end.
fn encode_object(c: &StoredChunk) -> Vec<u8> {
    // Lengths are checked by `insert_chunk`.
    let key_id = c.master_key_id.as_bytes();
    let mut out = Vec::with_capacity(4 + 2 + key_id.len() + 4 + c.wrapped_key.len() + c.ciphertext.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(key_id.len() as u16).to_le_bytes());
    out.extend_from_slice(key_id);
    out.extend_from_slice(&u32::try_from(c.wrapped_key.len()).unwrap_or(u32::MAX).to_le_bytes());
    out.extend_from_slice(&c.wrapped_key);
    out.extend_from_slice(&c.ciphertext);
    out
}

fn decode_object(bytes: &[u8]) -> Result<(String, Vec<u8>, Vec<u8>), String> {
    let rest = bytes.strip_prefix(MAGIC).ok_or("not a Vigil prediction chunk")?;
    let take = |rest: &[u8], n: usize| -> Result<(Vec<u8>, usize), String> {
        rest.get(..n).map(|b| (b.to_vec(), n)).ok_or_else(|| "truncated".to_owned())
    };
    let key_len =
        usize::from(u16::from_le_bytes(rest.get(..2).ok_or("truncated")?.try_into().map_err(|_| "truncated")?));
    let rest = &rest[2..];
    let (key_id, n) = take(rest, key_len)?;
    let key_id = String::from_utf8(key_id).map_err(|_| "the key id is not UTF-8")?;
    let rest = &rest[n..];
    let wrapped_len = u32::from_le_bytes(rest.get(..4).ok_or("truncated")?.try_into().map_err(|_| "truncated")?);
    let rest = &rest[4..];
    let (wrapped, n) = take(rest, usize::try_from(wrapped_len).map_err(|_| "truncated")?)?;
    Ok((key_id, wrapped, rest[n..].to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk() -> StoredChunk {
        StoredChunk {
            id: "0af3".into(),
            endpoint: "fraud".into(),
            first_us: 1_700_000_000_000_000,
            last_us: 1_700_000_000_500_000,
            records: 12,
            master_key_id: "k1".into(),
            wrapped_key: vec![1, 2, 3],
            ciphertext: vec![9; 40],
        }
    }

    #[test]
    fn names_round_trip_and_sort_as_chunks_do() {
        let l = Listed { first_us: 5, id: "ab".into(), last_us: 9, records: 3 };
        assert_eq!(parse_name(&object_name(&l)), Some(l.clone()));
        let later_id = object_name(&Listed { id: "abc".into(), ..l.clone() });
        let later_time = object_name(&Listed { first_us: 6, id: "a".into(), ..l.clone() });
        assert!(object_name(&l) < later_id && later_id < later_time);
    }

    #[test]
    fn foreign_names_are_not_chunks() {
        for name in [
            "",
            "README",
            "00000000000000000005-ab.00000000000000000009",
            "00000000000000000005-ab.00000000000000000009.3.4",
            "00000000000000000005-a/b.00000000000000000009.3",
            "0000000000000000000x-ab.00000000000000000009.3",
            "5-ab.00000000000000000009.3",
            "00000000000000000005-.00000000000000000009.3",
            "99999999999999999999-ab.00000000000000000009.3",
            "00000000000000000005-ab.00000000000000000009.99999999999",
            "00000000000000000005-ab.0000000000000000000+.3",
        ] {
            assert_eq!(parse_name(name), None, "{name}");
        }
    }

    #[test]
    fn objects_round_trip() {
        let c = chunk();
        let (key, wrapped, ciphertext) = decode_object(&encode_object(&c)).expect("reads");
        assert_eq!((key, wrapped, ciphertext), (c.master_key_id, c.wrapped_key, c.ciphertext));
    }

    #[test]
    fn hostile_objects_are_refused_without_a_panic() {
        let good = encode_object(&chunk());
        // Every truncation inside the header.
        for n in 0..4 + 2 + 2 + 4 + 3 {
            assert!(decode_object(&good[..n]).is_err(), "truncated at {n}");
        }
        let mut huge = good.clone();
        huge[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode_object(&huge).is_err());
        let mut bad_key = good.clone();
        bad_key[6] = 0xff;
        assert!(decode_object(&bad_key).is_err());
        assert!(decode_object(b"VPL\x02rest").is_err());
        let mut seed = 7u64;
        for _ in 0..2000 {
            let len = (seed % 64) as usize;
            let bytes: Vec<u8> = (0..len)
                .map(|i| {
                    seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
                    if i < 4 { MAGIC[i] } else { (seed >> 33) as u8 }
                })
                .collect();
            let _ = decode_object(&bytes);
        }
    }

    #[test]
    fn refuses_names_that_would_escape_or_not_sort() {
        let dir = std::env::temp_dir().join(crate::testing::unique_prefix("prediction_objects_unit"));
        let store = ObjectPredictionStore::open(&dir.display().to_string()).expect("opens");
        let rt = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
        for bad in [
            StoredChunk { endpoint: "../x".into(), ..chunk() },
            StoredChunk { id: "../x".into(), ..chunk() },
            StoredChunk { id: "a.b".into(), ..chunk() },
            StoredChunk { first_us: -1, ..chunk() },
            StoredChunk { last_us: 0, ..chunk() },
        ] {
            let e = rt.block_on(store.insert_chunk(&bad)).expect_err("refused");
            assert_eq!(e.code(), vigil_core::ErrorCode::InvalidInput, "{e}");
        }
        let _ = std::fs::remove_dir_all(dir);
    }
}
