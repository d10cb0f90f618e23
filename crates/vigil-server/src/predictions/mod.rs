//! The prediction log pipeline. A request drawn for the log is redacted as
//! its endpoint's rules say and appended, in a compact binary form
//! ([`encoding`]), to its endpoint's open chunk, on the request path and
//! under a short lock: no copy of the request, no queue, and no wake-up of
//! another task per record. When the records waiting to be stored reach the
//! buffer, more are dropped and counted, so logging never blocks or fails a
//! prediction. A chunk is sealed by the vault once (one data key for many
//! records, so the store only ever holds ciphertext, at a cost per record
//! far below sealing each) and stored by one writer task when it is full
//! (which wakes the writer) or old, as the store's [`ChunkPolicy`] says:
//! rows of the metadata store, or objects of an object store for large
//! volumes. Retention (age, then size) is enforced by the same task.

mod encoding;

use encoding::ChunkBody;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::{Notify, mpsc, oneshot};
use vigil_core::predictions::{ChunkFilter, ChunkPolicy, MAX_CHUNK_SPAN_US, StoredChunk, sealed_name};
use vigil_core::security::SealedSecret;
use vigil_core::{Error, ErrorCode};
use vigil_runtime::Logged;
use vigil_security::vault::Vault;
use vigil_store::PredictionStore;

/// Records waiting to be stored; more are dropped.
pub const DEFAULT_BUFFER: usize = 10_000;
/// Bytes of records waiting to be stored; more are dropped.
pub const DEFAULT_BUFFER_BYTES: usize = 256 << 20;

/// How much may wait to be stored (open chunks, full ones, and those being
/// stored), in records and in encoded bytes: past either, records are
/// dropped and counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Buffer {
    pub records: usize,
    pub bytes: usize,
}

impl Default for Buffer {
    fn default() -> Self {
        Buffer { records: DEFAULT_BUFFER, bytes: DEFAULT_BUFFER_BYTES }
    }
}
/// How often retention runs.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// One request drawn for the log, as the request path hands it over.
pub struct Record<'a> {
    pub endpoint: &'a str,
    pub version: &'a str,
    pub request_id: &'a str,
    pub principal: &'a str,
    pub time: SystemTime,
    pub logged: Logged,
}

/// Per endpoint: records written and dropped.
#[derive(Default)]
pub struct Counts {
    pub written: AtomicU64,
    pub dropped: AtomicU64,
}

/// The request path's handle on the log.
pub struct PredictionLog {
    staged: Mutex<Staged>,
    policy: ChunkPolicy,
    buffer: Buffer,
    redaction_key: [u8; 32],
    /// Wakes the writer: a chunk is full.
    full: Arc<Notify>,
    /// Asks the writer to store everything staged, and says when it has.
    flushes: mpsc::Sender<oneshot::Sender<()>>,
    counts: Mutex<HashMap<String, Arc<Counts>>>,
}

/// Records not stored yet.
#[derive(Default)]
struct Staged {
    /// Each endpoint's chunk being filled.
    open: HashMap<String, OpenChunk>,
    /// Chunks ready to be stored, in the order they were closed.
    ready: Vec<(String, OpenChunk)>,
    /// Records in open and ready chunks and in chunks being stored.
    records: usize,
    /// Their encoded bytes.
    bytes: usize,
    /// The retention of every endpoint seen, by name: hours and bytes.
    retention: HashMap<String, (u64, u64)>,
}

/// Records of one endpoint waiting to be sealed together.
struct OpenChunk {
    body: ChunkBody,
    records: u32,
    first_us: i64,
    last_us: i64,
    opened: Instant,
}

impl OpenChunk {
    fn new(time_us: i64) -> OpenChunk {
        OpenChunk { body: ChunkBody::new(), records: 0, first_us: time_us, last_us: time_us, opened: Instant::now() }
    }

    /// Whether a record at `time_us` would stretch the chunk past the span
    /// readers rely on (a clock step, a stalled request).
    fn too_far(&self, time_us: i64) -> bool {
        time_us.saturating_sub(self.first_us) > MAX_CHUNK_SPAN_US
            || self.last_us.saturating_sub(time_us) > MAX_CHUNK_SPAN_US
    }
}

impl PredictionLog {
    /// Starts the writer, storing into `store`, on the current runtime.
    pub fn start(store: Arc<dyn PredictionStore>, vault: Arc<Vault>, buffer: Buffer) -> Arc<PredictionLog> {
        let (flushes, flush_requests) = mpsc::channel(4);
        let policy = store.chunk_policy();
        let log = Arc::new(PredictionLog {
            staged: Mutex::new(Staged::default()),
            policy,
            buffer: Buffer { records: buffer.records.max(1), bytes: buffer.bytes.max(1) },
            redaction_key: vault.derive("prediction log redaction"),
            full: Arc::new(Notify::new()),
            flushes,
            counts: Mutex::new(HashMap::new()),
        });
        let writer = Writer { store, vault, policy, full: Arc::clone(&log.full), log: Arc::downgrade(&log) };
        tokio::spawn(writer.run(flush_requests));
        log
    }

    fn staged(&self) -> MutexGuard<'_, Staged> {
        self.staged.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends a record to its endpoint's open chunk, or drops and counts it
    /// when the buffer is full.
    pub fn record(&self, record: Record<'_>) {
        let time_us = micros(record.time);
        let mut staged = self.staged();
        if staged.records >= self.buffer.records || staged.bytes >= self.buffer.bytes {
            drop(staged);
            self.counts(record.endpoint).dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let Staged { open, ready, records, bytes, retention } = &mut *staged;
        let fits = open.get(record.endpoint).map(|c| !c.too_far(time_us));
        if fits != Some(true) {
            if let Some(old) = open.remove(record.endpoint) {
                ready.push((record.endpoint.to_owned(), old));
            }
            // Retention is noted when a chunk opens: a change of the
            // endpoint's settings is picked up by its next chunk.
            let s = &record.logged.settings;
            retention.insert(record.endpoint.to_owned(), (s.retention_hours, s.max_bytes));
            open.insert(record.endpoint.to_owned(), OpenChunk::new(time_us));
        }
        let Some(chunk) = open.get_mut(record.endpoint) else { return };
        let before = chunk.body.len();
        chunk.body.push(&record, time_us, &self.redaction_key);
        *bytes += chunk.body.len() - before;
        chunk.records += 1;
        chunk.first_us = chunk.first_us.min(time_us);
        chunk.last_us = chunk.last_us.max(time_us);
        *records += 1;
        // Half the buffer staged closes the chunk early, so that open chunks
        // (up to 4096 records each in an object store) cannot fill the
        // buffer while the store keeps up.
        let full = chunk.records >= self.policy.records
            || chunk.body.len() >= self.policy.bytes
            || *records >= self.buffer.records.div_ceil(2)
            || *bytes >= self.buffer.bytes.div_ceil(2);
        if full && let Some(chunk) = open.remove(record.endpoint) {
            ready.push((record.endpoint.to_owned(), chunk));
        }
        drop(staged);
        if full {
            self.full.notify_one();
        }
    }

    /// Stores every record handed over so far, open chunks included (at
    /// shutdown, so that the last records are not lost).
    pub async fn flush(&self) {
        let (done, flushed) = oneshot::channel();
        if self.flushes.send(done).await.is_ok() {
            let _ = flushed.await;
        }
    }

    fn counts(&self, endpoint: &str) -> Arc<Counts> {
        let mut all = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        match all.get(endpoint) {
            Some(c) => Arc::clone(c),
            None => Arc::clone(all.entry(endpoint.to_owned()).or_default()),
        }
    }

    /// Written and dropped records by endpoint.
    pub fn stats(&self) -> Vec<(String, u64, u64)> {
        let all = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        all.iter()
            .map(|(e, c)| (e.clone(), c.written.load(Ordering::Relaxed), c.dropped.load(Ordering::Relaxed)))
            .collect()
    }

    /// Takes the ready chunks, and the open ones that are old (all of them
    /// when `everything`).
    fn take_ready(&self, everything: bool) -> Vec<(String, OpenChunk)> {
        let mut staged = self.staged();
        let Staged { open, ready, .. } = &mut *staged;
        let old: Vec<String> = open
            .iter()
            .filter(|(_, c)| everything || c.opened.elapsed() >= self.policy.flush_after)
            .map(|(e, _)| e.clone())
            .collect();
        for endpoint in old {
            if let Some(chunk) = open.remove(&endpoint) {
                ready.push((endpoint, chunk));
            }
        }
        std::mem::take(ready)
    }
}

struct Writer {
    store: Arc<dyn PredictionStore>,
    vault: Arc<Vault>,
    policy: ChunkPolicy,
    full: Arc<Notify>,
    /// Weak: the writer ends when the log is dropped.
    log: std::sync::Weak<PredictionLog>,
}

impl Writer {
    async fn run(self, mut flushes: mpsc::Receiver<oneshot::Sender<()>>) {
        let mut prune = tokio::time::interval(PRUNE_EVERY);
        let mut due = tokio::time::interval((self.policy.flush_after / 4).max(Duration::from_millis(10)));
        loop {
            // Not `biased`: under a steady stream of full chunks, the timers
            // (storing old chunks, retention) must still get their turn.
            tokio::select! {
                () = self.full.notified() => self.store(false).await,
                _ = due.tick() => self.store(false).await,
                _ = prune.tick() => self.prune().await,
                done = flushes.recv() => match done {
                    Some(done) => {
                        self.store(true).await;
                        let _ = done.send(());
                    }
                    None => return, // the log is gone
                },
            }
        }
    }

    /// Seals and stores the ready chunks (and the old open ones, or all).
    async fn store(&self, everything: bool) {
        let Some(log) = self.log.upgrade() else { return };
        for (endpoint, chunk) in log.take_ready(everything) {
            let (records, bytes) = (chunk.records, chunk.body.len());
            let result = match seal_chunk(&self.vault, &endpoint, chunk) {
                Ok(stored) => self.store.insert_chunk(&stored).await,
                Err(e) => Err(e),
            };
            let counts = log.counts(&endpoint);
            match result {
                Ok(()) => counts.written.fetch_add(u64::from(records), Ordering::Relaxed),
                Err(e) => {
                    tracing::warn!(endpoint, records, error = %e, "could not store prediction records: dropped");
                    counts.dropped.fetch_add(u64::from(records), Ordering::Relaxed)
                }
            };
            let mut staged = log.staged();
            staged.records = staged.records.saturating_sub(records as usize);
            staged.bytes = staged.bytes.saturating_sub(bytes);
        }
    }

    async fn prune(&self) {
        let Some(retention) = self.log.upgrade().map(|log| log.staged().retention.clone()) else { return };
        let now = micros(SystemTime::now());
        for (endpoint, (hours, max_bytes)) in retention {
            let before = now.saturating_sub(i64::try_from(hours.saturating_mul(3_600_000_000)).unwrap_or(i64::MAX));
            match self.store.prune_chunks(&endpoint, before, max_bytes).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(endpoint, chunks = n, "prediction log retention: deleted old records"),
                Err(e) => tracing::warn!(endpoint, error = %e, "prediction log retention failed"),
            }
        }
    }
}

/// Microseconds since the Unix epoch.
pub fn micros(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

fn seal_chunk(vault: &Vault, endpoint: &str, chunk: OpenChunk) -> Result<StoredChunk, Error> {
    let id = format!("{:032x}", fastrand::u128(..));
    let (first_us, last_us, records) = (chunk.first_us, chunk.last_us, chunk.records);
    let sealed = vault
        .seal(&sealed_name(&id), 0, &chunk.body.finish(), "", "")
        .map_err(|e| Error::new(ErrorCode::Internal, format!("sealing prediction records: {e}")))?;
    Ok(StoredChunk {
        id,
        endpoint: endpoint.to_owned(),
        first_us,
        last_us,
        records,
        master_key_id: sealed.master_key_id,
        wrapped_key: sealed.wrapped_key,
        ciphertext: sealed.ciphertext,
    })
}

/// A stored chunk opened: its records, each with the endpoint, an RFC 3339
/// time and an id (chunks from before the binary form carry their own).
fn open_chunk(vault: &Vault, c: &StoredChunk) -> Result<Vec<Value>, Error> {
    let sealed = SealedSecret {
        name: sealed_name(&c.id),
        version: 0,
        master_key_id: c.master_key_id.clone(),
        wrapped_key: c.wrapped_key.clone(),
        ciphertext: c.ciphertext.clone(),
        created_by: String::new(),
        created_at: String::new(),
    };
    let bad = |e: String| Error::new(ErrorCode::Internal, format!("prediction chunk {}: {e}", c.id));
    let payload = vault.open(&sealed).map_err(|e| bad(e.to_string()))?;
    let mut records = if payload.starts_with(encoding::MAGIC) {
        encoding::read(&payload).map_err(bad)?
    } else {
        payload
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|line| serde_json::from_slice(line).map_err(|e| bad(e.to_string())))
            .collect::<Result<Vec<Value>, Error>>()?
    };
    for (index, record) in records.iter_mut().enumerate() {
        let time_us = record["time_us"].as_i64().unwrap_or_default();
        let time = humantime::format_rfc3339_micros(UNIX_EPOCH + Duration::from_micros(time_us.max(0) as u64));
        record["time"] = json!(time.to_string());
        record["endpoint"] = json!(c.endpoint);
        if record.get("id").is_none() {
            record["id"] = json!(format!("{}-{index}", c.id));
        }
    }
    Ok(records)
}

/// Where a page ended: a chunk and the index of the last record returned in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    pub first_us: i64,
    pub chunk: String,
    pub index: usize,
}

impl Cursor {
    /// Reads `<first_us>.<chunk id>.<index>`, as returned with each record.
    pub fn parse(text: &str) -> Result<Cursor, Error> {
        let bad = || Error::invalid_input(format!("after: {} is not a cursor from an earlier answer", quote(text)));
        let mut parts = text.splitn(3, '.');
        let (first, chunk, index) = (parts.next(), parts.next(), parts.next());
        let first_us = first.and_then(|t| t.parse::<i64>().ok()).ok_or_else(bad)?;
        let chunk = chunk.filter(|c| !c.is_empty() && c.len() <= 64 && c.bytes().all(|b| b.is_ascii_hexdigit()));
        let chunk = chunk.ok_or_else(bad)?.to_owned();
        let index = index.and_then(|i| i.parse::<usize>().ok()).ok_or_else(bad)?;
        Ok(Cursor { first_us, chunk, index })
    }

    fn text(&self) -> String {
        format!("{}.{}.{}", self.first_us, self.chunk, self.index)
    }
}

fn quote(text: &str) -> String {
    vigil_core::names::quoted(text.get(..80).unwrap_or(text))
}

/// `GET /api/v1/endpoints/{name}/predictions`, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    pub endpoint: String,
    pub version: Option<String>,
    pub request_id: Option<String>,
    /// Inclusive, microseconds since the epoch.
    pub since_us: Option<i64>,
    /// Exclusive.
    pub until_us: Option<i64>,
    pub after: Option<Cursor>,
    pub limit: usize,
}

impl Query {
    pub fn new(
        endpoint: &str,
        version: Option<String>,
        request_id: Option<String>,
        since: Option<&str>,
        until: Option<&str>,
        after: Option<&str>,
        limit: Option<u32>,
    ) -> Result<Query, Error> {
        let time = |field: &str, text: &str| -> Result<i64, Error> {
            humantime::parse_rfc3339_weak(text)
                .map(micros)
                .map_err(|_| Error::invalid_input(format!("{field}: {} is not an RFC 3339 time", quote(text))))
        };
        vigil_core::names::check_name("endpoint", endpoint)?;
        Ok(Query {
            endpoint: endpoint.to_owned(),
            version,
            request_id,
            since_us: since.map(|s| time("since", s)).transpose()?,
            until_us: until.map(|s| time("until", s)).transpose()?,
            after: after.map(Cursor::parse).transpose()?,
            limit: limit.unwrap_or(100).clamp(1, 1000) as usize,
        })
    }

    fn matches(&self, record: &Value) -> bool {
        let time = record["time_us"].as_i64().unwrap_or_default();
        self.version.as_ref().is_none_or(|v| record["version"] == *v.as_str())
            && self.request_id.as_ref().is_none_or(|r| record["request_id"] == *r.as_str())
            && self.since_us.is_none_or(|t| time >= t)
            && self.until_us.is_none_or(|t| time < t)
    }
}

/// Records matching `q`, in chunk order (by the chunk's first record; within
/// a chunk, as written), and the cursor of the last one.
pub async fn read(
    store: &dyn PredictionStore,
    vault: &Vault,
    q: &Query,
) -> Result<(Vec<Value>, Option<String>), Error> {
    const CHUNKS_PER_READ: u32 = 16;
    let mut found = Vec::new();
    let mut at = q.after.clone();
    loop {
        let filter = ChunkFilter {
            endpoint: q.endpoint.clone(),
            since_us: q.since_us,
            until_us: q.until_us,
            from: at.as_ref().map(|c| (c.first_us, c.chunk.clone())),
            limit: CHUNKS_PER_READ,
        };
        let chunks = store.list_chunks(&filter).await?;
        let more = chunks.len() == CHUNKS_PER_READ as usize;
        for chunk in &chunks {
            // The cursor's chunk comes back first: continue after its record.
            let start = at.as_ref().filter(|c| c.chunk == chunk.id).map_or(0, |c| c.index + 1);
            let records = open_chunk(vault, chunk)?;
            let last = records.len().saturating_sub(1);
            for (index, mut record) in records.into_iter().enumerate().skip(start) {
                if !q.matches(&record) {
                    continue;
                }
                let cursor = Cursor { first_us: chunk.first_us, chunk: chunk.id.clone(), index };
                record["cursor"] = json!(cursor.text());
                found.push(record);
                if found.len() == q.limit {
                    return Ok((found, Some(cursor.text())));
                }
            }
            at = Some(Cursor { first_us: chunk.first_us, chunk: chunk.id.clone(), index: last.max(start) });
        }
        if !more {
            let next = found.last().and_then(|r| r["cursor"].as_str().map(str::to_owned));
            return Ok((found, next));
        }
    }
}

/// Most chunks one [`find`] opens (256 records each): a call that names an id
/// never logged stops here instead of decrypting the whole horizon.
pub const MAX_FIND_CHUNKS: usize = 4096;

/// The records of `endpoint` logged since `since_us` whose request id is in
/// `ids`, by request id (the newest record of an id wins). Reads chunks
/// oldest first and stops once every id is found, or after [`MAX_FIND_CHUNKS`].
pub async fn find(
    store: &dyn PredictionStore,
    vault: &Vault,
    endpoint: &str,
    since_us: i64,
    ids: &std::collections::HashSet<&str>,
) -> Result<HashMap<String, Value>, Error> {
    const CHUNKS_PER_READ: u32 = 16;
    let mut found = HashMap::new();
    let mut from = None;
    let mut opened = 0;
    loop {
        let filter = ChunkFilter {
            endpoint: endpoint.to_owned(),
            since_us: Some(since_us),
            until_us: None,
            from: from.take(),
            limit: CHUNKS_PER_READ,
        };
        let chunks = store.list_chunks(&filter).await?;
        for chunk in &chunks {
            for record in open_chunk(vault, chunk)? {
                if let Some(id) = record["request_id"].as_str().filter(|id| ids.contains(id)) {
                    found.insert(id.to_owned(), record);
                }
            }
        }
        opened += chunks.len();
        if chunks.len() < CHUNKS_PER_READ as usize || found.len() == ids.len() || opened >= MAX_FIND_CHUNKS {
            return Ok(found);
        }
        // `from` is inclusive: start just after the last chunk's id (ids are
        // of one length, so appending a character sorts right after it).
        let last = &chunks[chunks.len() - 1];
        from = Some((last.first_us, format!("{}0", last.id)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hmac::{Hmac, Mac};
    use std::sync::atomic::AtomicBool;
    use vigil_core::predictions::{PredictionLogging, RedactAction, Redaction};
    use vigil_core::{Tensor, TensorData};
    use vigil_security::vault::MasterKey;

    /// A store that never answers while held: the writer stalls on it.
    struct Stalled {
        held: Arc<AtomicBool>,
        stored: Arc<Mutex<Vec<StoredChunk>>>,
    }

    #[async_trait::async_trait]
    impl PredictionStore for Stalled {
        async fn insert_chunk(&self, chunk: &StoredChunk) -> Result<(), Error> {
            while self.held.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            self.stored.lock().unwrap_or_else(|p| p.into_inner()).push(chunk.clone());
            Ok(())
        }
        async fn list_chunks(&self, _: &ChunkFilter) -> Result<Vec<StoredChunk>, Error> {
            Ok(Vec::new())
        }
        async fn prune_chunks(&self, _: &str, _: i64, _: u64) -> Result<u64, Error> {
            Ok(0)
        }
    }

    fn vault() -> Arc<Vault> {
        Arc::new(Vault::new(MasterKey::from_bytes([7; 32]), Vec::new()))
    }

    fn record(settings: &Arc<PredictionLogging>) -> Record<'static> {
        let tensor =
            |name: &str, v: Vec<f32>| Tensor { name: name.into(), shape: vec![1, v.len()], data: TensorData::Fp32(v) };
        Record {
            endpoint: "fraud",
            version: "1",
            request_id: "r1",
            principal: "key:abc",
            time: SystemTime::now(),
            logged: Logged {
                settings: Arc::clone(settings),
                inputs: vec![tensor("amount", vec![12.5]), tensor("ssn", vec![123.0]), tensor("age", vec![41.0])],
                outputs: vec![tensor("probabilities", vec![0.25, 0.75])],
                features: None,
                rows: None,
            },
        }
    }

    /// A log over a [`Stalled`] store (held while `held` is true), the
    /// switch, and what the store received.
    fn started(held: bool, buffer: Buffer) -> (Arc<PredictionLog>, Arc<AtomicBool>, Arc<Mutex<Vec<StoredChunk>>>) {
        let (held, stored) = (Arc::new(AtomicBool::new(held)), Arc::new(Mutex::new(Vec::new())));
        let store = Arc::new(Stalled { held: Arc::clone(&held), stored: Arc::clone(&stored) });
        (PredictionLog::start(store, vault(), buffer), held, stored)
    }

    #[tokio::test]
    async fn overload_drops_and_counts_without_blocking() {
        let (log, held, stored) = started(true, Buffer { records: 8, ..Buffer::default() });
        let settings = Arc::new(PredictionLogging { sample_rate: 1.0, ..Default::default() });
        let started = std::time::Instant::now();
        for _ in 0..1000 {
            log.record(record(&settings));
            // Let the writer take what it can, as a busy server's would.
            tokio::task::yield_now().await;
        }
        // A thousand hand-offs to a stalled store return at once (no waiting on it).
        assert!(started.elapsed() < Duration::from_secs(1), "{:?}", started.elapsed());
        tokio::time::sleep(Duration::from_millis(50)).await;
        let (_, written, dropped) = log.stats()[0].clone();
        assert_eq!(written, 0);
        // Staged at most: the buffer's 8 records; every other one is dropped.
        assert!(dropped >= 1000 - 8, "dropped {dropped}");
        held.store(false, Ordering::Relaxed);
        for _ in 0..300 {
            let (_, written, dropped) = log.stats()[0].clone();
            if written + dropped == 1000 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let (_, written, dropped) = log.stats()[0].clone();
        assert_eq!(written + dropped, 1000, "every record is either written or counted as dropped");
        let chunks = stored.lock().unwrap_or_else(|p| p.into_inner()).clone();
        assert_eq!(chunks.iter().map(|c| u64::from(c.records)).sum::<u64>(), written);
        assert!(chunks.iter().all(|c| c.records <= ChunkPolicy::ROWS.records));
    }

    fn open(records: u32) -> OpenChunk {
        OpenChunk { body: ChunkBody::new(), records, first_us: 1, last_us: 2, opened: Instant::now() }
    }

    #[tokio::test]
    async fn redacts_then_seals_so_only_the_vault_opens_it() {
        let vault = vault();
        let settings = Arc::new(PredictionLogging {
            sample_rate: 1.0,
            redact: vec![
                Redaction { input: "ssn".into(), action: RedactAction::Drop },
                Redaction { input: "age".into(), action: RedactAction::Hash },
            ],
            ..Default::default()
        });
        let key = vault.derive("prediction log redaction");
        let mut chunk = open(2);
        for _ in 0..2 {
            chunk.body.push(&record(&settings), 1, &key);
        }
        let stored = seal_chunk(&vault, "fraud", chunk).expect("sealed");
        let text = String::from_utf8_lossy(&stored.ciphertext);
        assert!(!text.contains("amount") && !text.contains("12.5"), "the payload is not in the clear");
        let opened = open_chunk(&vault, &stored).expect("opens");
        assert_eq!(opened.len(), 2);
        let inputs = opened[0]["inputs"].as_array().expect("inputs");
        let names: Vec<&str> = inputs.iter().filter_map(|t| t["name"].as_str()).collect();
        assert_eq!(names, ["amount", "age"], "ssn is dropped");
        assert_eq!(inputs[0]["data"], json!([12.5]));
        assert!(inputs[1].get("data").is_none(), "age is hashed, not kept");
        let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(&key).expect("key");
        mac.update(b"[41.0]");
        assert_eq!(inputs[1]["hmac_sha256"], json!(hex::encode(mac.finalize().into_bytes())));
        assert_eq!(opened[0]["outputs"][0]["data"], json!([0.25, 0.75]));
        assert_eq!(opened[0]["endpoint"], "fraud");
        assert_eq!(opened[1]["id"], json!(format!("{}-1", stored.id)), "ids are the chunk's and the index");
        // Moved to another row (another id), the payload does not open.
        let moved = StoredChunk { id: format!("{:032x}", 1), ..stored };
        assert!(open_chunk(&vault, &moved).is_err());
    }

    /// Chunks stored before the binary form (JSON lines) still open.
    #[test]
    fn json_lines_chunks_still_open() {
        let vault = vault();
        let id = format!("{:032x}", 5);
        let line = br#"{"id":"abc","time_us":7,"version":"1","request_id":"r1","principal":"p","outputs":[]}"#;
        let payload = [line.as_slice(), b"\n", line, b"\n"].concat();
        let sealed = vault.seal(&sealed_name(&id), 0, &payload, "", "").expect("sealed");
        let stored = StoredChunk {
            id,
            endpoint: "fraud".into(),
            first_us: 7,
            last_us: 7,
            records: 2,
            master_key_id: sealed.master_key_id,
            wrapped_key: sealed.wrapped_key,
            ciphertext: sealed.ciphertext,
        };
        let opened = open_chunk(&vault, &stored).expect("opens");
        assert_eq!(opened.len(), 2);
        assert_eq!((&opened[1]["id"], &opened[1]["request_id"]), (&json!("abc"), &json!("r1")));
        assert_eq!(opened[0]["time"], "1970-01-01T00:00:00.000007Z");
    }

    /// Pages run across chunks and resume inside one; filters apply per
    /// record. The same in the metadata store and in an object store.
    #[tokio::test]
    async fn reads_page_through_chunks_from_a_cursor() {
        pages_through(&vigil_store::SqliteStore::connect("sqlite::memory:").await.expect("store")).await;
        let dir = std::env::temp_dir().join(vigil_store::testing::unique_prefix("pages_through"));
        pages_through(&vigil_store::ObjectPredictionStore::open(&dir.display().to_string()).expect("store")).await;
        let _ = std::fs::remove_dir_all(dir);
    }

    async fn pages_through(store: &dyn PredictionStore) {
        let vault = vault();
        let settings = Arc::new(PredictionLogging { sample_rate: 1.0, ..Default::default() });
        let key = vault.derive("prediction log redaction");
        for c in 0..3i64 {
            let mut chunk = OpenChunk { first_us: 10 * c, last_us: 10 * c + 2, ..open(3) };
            for i in 0..3 {
                let id = format!("r{}", 3 * c + i);
                let r = Record { request_id: &id, ..record(&settings) };
                chunk.body.push(&r, 10 * c + i, &key);
            }
            store.insert_chunk(&seal_chunk(&vault, "fraud", chunk).expect("sealed")).await.expect("stored");
        }
        let ids = |records: &[Value]| -> Vec<String> {
            records.iter().map(|r| r["request_id"].as_str().unwrap_or_default().to_owned()).collect()
        };
        let page = |after: Option<&str>, limit| Query::new("fraud", None, None, None, None, after, Some(limit));
        let (first, next) = read(store, &vault, &page(None, 4).expect("q")).await.expect("read");
        assert_eq!(ids(&first), ["r0", "r1", "r2", "r3"]);
        let (rest, last) = read(store, &vault, &page(next.as_deref(), 100).expect("q")).await.expect("read");
        assert_eq!(ids(&rest), ["r4", "r5", "r6", "r7", "r8"]);
        let (none, _) = read(store, &vault, &page(last.as_deref(), 100).expect("q")).await.expect("read");
        assert!(none.is_empty());
        let one = Query::new("fraud", None, Some("r7".into()), None, None, None, None).expect("q");
        assert_eq!(ids(&read(store, &vault, &one).await.expect("read").0), ["r7"]);
        let window = Query { since_us: Some(11), until_us: Some(21), ..page(None, 100).expect("q") };
        assert_eq!(ids(&read(store, &vault, &window).await.expect("read").0), ["r4", "r5", "r6"]);
    }

    /// A full chunk wakes the writer: it is stored at once, not a second later.
    #[tokio::test]
    async fn a_full_chunk_is_stored_at_once() {
        let (log, _, stored) = started(false, Buffer::default());
        let settings = Arc::new(PredictionLogging { sample_rate: 1.0, ..Default::default() });
        // Past the first tick of the writer's timer.
        tokio::time::sleep(Duration::from_millis(20)).await;
        let started = Instant::now();
        for _ in 0..ChunkPolicy::ROWS.records + 1 {
            log.record(record(&settings));
        }
        while stored.lock().unwrap_or_else(|p| p.into_inner()).is_empty() {
            assert!(started.elapsed() < Duration::from_millis(200), "the full chunk waited for the timer");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let chunks = stored.lock().unwrap_or_else(|p| p.into_inner()).clone();
        assert_eq!(chunks.iter().map(|c| c.records).collect::<Vec<_>>(), [ChunkPolicy::ROWS.records]);
        log.flush().await;
        assert_eq!(log.stats()[0], ("fraud".to_owned(), 257, 0), "the open one is stored by the flush");
    }

    /// Staged records past half the buffer close their chunk early, so the
    /// buffer drops records only when the store falls behind.
    #[tokio::test]
    async fn half_the_buffer_closes_a_chunk() {
        let (log, _, stored) = started(false, Buffer { records: 100, ..Buffer::default() });
        let settings = Arc::new(PredictionLogging { sample_rate: 1.0, ..Default::default() });
        for _ in 0..1000 {
            log.record(record(&settings));
            tokio::task::yield_now().await;
        }
        log.flush().await;
        let (_, written, dropped) = log.stats()[0].clone();
        assert_eq!((written, dropped), (1000, 0), "a store that keeps up loses nothing");
        let chunks = stored.lock().unwrap_or_else(|p| p.into_inner()).clone();
        assert!(chunks.iter().all(|c| c.records <= 50), "{:?}", chunks.iter().map(|c| c.records).collect::<Vec<_>>());
    }

    /// The byte bound holds as the record bound does: big records fill it
    /// first, and a store that keeps up still loses nothing.
    #[tokio::test]
    async fn big_records_are_bounded_by_bytes() {
        let (log, held, _) = started(true, Buffer { records: 10_000, bytes: 64 * 1024 });
        let settings = Arc::new(PredictionLogging { sample_rate: 1.0, ..Default::default() });
        let image = Tensor { name: "image".into(), shape: vec![1, 4096], data: TensorData::Fp32(vec![0.5; 4096]) };
        let big = || {
            let mut r = record(&settings);
            r.logged.inputs = vec![image.clone()];
            r
        };
        for _ in 0..100 {
            log.record(big());
            tokio::task::yield_now().await;
        }
        let (_, _, dropped) = log.stats()[0].clone();
        // 16 KiB a record: 64 KiB holds 4, whatever the record bound says.
        assert!(dropped >= 100 - 4, "dropped {dropped}");
        held.store(false, Ordering::Relaxed);
        log.flush().await;
        let (_, written, dropped_before) = log.stats()[0].clone();
        assert_eq!(written + dropped_before, 100);
        for _ in 0..100 {
            log.record(big());
            tokio::task::yield_now().await;
        }
        log.flush().await;
        let (_, written_after, dropped_after) = log.stats()[0].clone();
        assert_eq!((written_after - written, dropped_after - dropped_before), (100, 0), "a store that keeps up");
    }

    /// A record far in time from its chunk's others starts a new chunk, so
    /// no chunk spans more than `MAX_CHUNK_SPAN_US`.
    #[tokio::test]
    async fn a_clock_step_starts_a_new_chunk() {
        let (log, _, stored) = started(false, Buffer { records: 8, ..Buffer::default() });
        let settings = Arc::new(PredictionLogging { sample_rate: 1.0, ..Default::default() });
        let now = SystemTime::now();
        let span = Duration::from_micros(MAX_CHUNK_SPAN_US as u64);
        for time in [now, now + Duration::from_secs(1), now + span * 2, now] {
            log.record(Record { time, ..record(&settings) });
        }
        log.flush().await;
        let chunks = stored.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let records: Vec<u32> = chunks.iter().map(|c| c.records).collect();
        assert_eq!(records, [2, 1, 1], "the step forward and the step back each start a chunk");
        assert!(chunks.iter().all(|c| c.last_us - c.first_us <= MAX_CHUNK_SPAN_US));
    }

    #[test]
    fn hostile_queries_are_refused_by_field() {
        for (since, until, after, field) in [
            (Some("yesterday"), None, None, "since"),
            (None, Some("2026-13-01T00:00:00Z"), None, "until"),
            (None, None, Some("12"), "after"),
            (None, None, Some("x.abc.1"), "after"),
            (None, None, Some("1.zz.1"), "after"),
            (None, None, Some("1.ab.-1"), "after"),
            (None, None, Some("1.ab."), "after"),
            (None, None, Some(&*"9".repeat(400)), "after"),
        ] {
            let e = Query::new("fraud", None, None, since, until, after, None).expect_err("refused");
            assert!(e.message().starts_with(field), "{e}");
        }
        let e = Query::new("../etc", None, None, None, None, None, None).expect_err("refused");
        assert!(e.message().starts_with("endpoint"), "{e}");
        let q = Query::new("fraud", None, None, Some("2026-01-01T00:00:00Z"), None, Some("5.ab.3"), Some(1_000_000))
            .expect("valid");
        assert_eq!(q.limit, 1000);
        assert_eq!(q.after, Some(Cursor { first_us: 5, chunk: "ab".into(), index: 3 }));
    }
}
