//! The prediction log pipeline. A request drawn for the log is handed to a
//! bounded queue with `try_send`: when the queue is full the record is
//! dropped and counted, so logging never blocks or fails a prediction. One
//! writer task takes records off the queue in batches, applies the
//! endpoint's redaction rules, seals each payload with the vault (so the
//! store only ever holds ciphertext), and inserts the batch in one
//! transaction. Retention (age, then size) is enforced by the same task.

use crate::v2::codec::JsonElements;
use hmac::{Hmac, Mac};
use serde::Serialize;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc;
use vigil_core::predictions::{PredictionFilter, PredictionLogging, RedactAction, StoredPrediction, sealed_name};
use vigil_core::security::SealedSecret;
use vigil_core::{Error, ErrorCode, Tensor};
use vigil_runtime::Logged;
use vigil_security::vault::Vault;
use vigil_store::MetadataStore;

/// Records waiting for the writer; more are dropped.
pub const DEFAULT_BUFFER: usize = 10_000;
/// Most records in one insert.
const BATCH: usize = 256;
/// How often retention runs.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// One request drawn for the log, as handed off by the request path.
pub struct Record {
    pub endpoint: String,
    pub version: String,
    pub request_id: String,
    pub principal: String,
    pub time: SystemTime,
    pub logged: Logged,
}

/// Per endpoint: records written and dropped.
#[derive(Default)]
pub struct Counts {
    pub written: AtomicU64,
    pub dropped: AtomicU64,
}

/// Where sealed records go (the metadata store; a test may hold it up).
#[async_trait::async_trait]
pub trait Sink: Send + Sync + 'static {
    async fn write(&self, records: &[StoredPrediction]) -> Result<(), Error>;
    async fn prune(&self, endpoint: &str, before_us: i64, max_bytes: u64) -> Result<u64, Error>;
}

#[async_trait::async_trait]
impl Sink for Arc<dyn MetadataStore> {
    async fn write(&self, records: &[StoredPrediction]) -> Result<(), Error> {
        self.insert_predictions(records).await
    }
    async fn prune(&self, endpoint: &str, before_us: i64, max_bytes: u64) -> Result<u64, Error> {
        self.prune_predictions(endpoint, before_us, max_bytes).await
    }
}

/// The request path's handle on the log.
pub struct PredictionLog {
    queue: mpsc::Sender<Record>,
    counts: Mutex<HashMap<String, Arc<Counts>>>,
}

impl PredictionLog {
    /// Starts the writer on the current runtime.
    pub fn start(sink: impl Sink, vault: Arc<Vault>, buffer: usize) -> Arc<PredictionLog> {
        let (queue, records) = mpsc::channel(buffer.max(1));
        let log = Arc::new(PredictionLog { queue, counts: Mutex::new(HashMap::new()) });
        let writer = Writer { sink, vault, log: Arc::downgrade(&log), retention: HashMap::new() };
        tokio::spawn(writer.run(records));
        log
    }

    /// Hands a record to the writer, or drops and counts it when the queue is full.
    pub fn record(&self, record: Record) {
        let counts = self.counts(&record.endpoint);
        if self.queue.try_send(record).is_err() {
            counts.dropped.fetch_add(1, Ordering::Relaxed);
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
}

struct Writer<S> {
    sink: S,
    vault: Arc<Vault>,
    log: std::sync::Weak<PredictionLog>,
    /// The retention of every endpoint seen, by name.
    retention: HashMap<String, (u64, u64)>,
}

impl<S: Sink> Writer<S> {
    async fn run(mut self, mut records: mpsc::Receiver<Record>) {
        let mut prune = tokio::time::interval(PRUNE_EVERY);
        let mut batch = Vec::with_capacity(BATCH);
        loop {
            tokio::select! {
                n = records.recv_many(&mut batch, BATCH) => {
                    if n == 0 {
                        return;
                    }
                    self.write(std::mem::take(&mut batch)).await;
                }
                _ = prune.tick() => self.prune().await,
            }
        }
    }

    async fn write(&mut self, batch: Vec<Record>) {
        let redaction_key = self.vault.derive("prediction log redaction");
        let mut sealed = Vec::with_capacity(batch.len());
        let mut by_endpoint: HashMap<String, u64> = HashMap::new();
        for record in batch {
            let s = &record.logged.settings;
            self.retention.insert(record.endpoint.clone(), (s.retention_hours, s.max_bytes));
            match seal(&self.vault, &redaction_key, &record) {
                Ok(r) => {
                    *by_endpoint.entry(r.endpoint.clone()).or_default() += 1;
                    sealed.push(r);
                }
                Err(e) => tracing::warn!(endpoint = record.endpoint, error = %e, "could not seal a prediction record"),
            }
        }
        let Some(log) = self.log.upgrade() else { return };
        match self.sink.write(&sealed).await {
            Ok(()) => {
                for (endpoint, n) in by_endpoint {
                    log.counts(&endpoint).written.fetch_add(n, Ordering::Relaxed);
                }
            }
            Err(e) => {
                tracing::warn!(records = sealed.len(), error = %e, "could not store prediction records: dropped");
                for (endpoint, n) in by_endpoint {
                    log.counts(&endpoint).dropped.fetch_add(n, Ordering::Relaxed);
                }
            }
        }
    }

    async fn prune(&self) {
        let now = micros(SystemTime::now());
        for (endpoint, (hours, max_bytes)) in &self.retention {
            let before = now.saturating_sub(i64::try_from(hours.saturating_mul(3_600_000_000)).unwrap_or(i64::MAX));
            match self.sink.prune(endpoint, before, *max_bytes).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(endpoint, records = n, "prediction log retention: deleted old records"),
                Err(e) => tracing::warn!(endpoint, error = %e, "prediction log retention failed"),
            }
        }
    }
}

/// Microseconds since the Unix epoch.
pub fn micros(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

#[derive(Serialize)]
struct TensorJson<'a> {
    name: &'a str,
    datatype: String,
    shape: &'a [usize],
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<JsonElements<'a>>,
    /// For a hashed input: HMAC-SHA-256 of its elements, hex.
    #[serde(skip_serializing_if = "Option::is_none")]
    hmac_sha256: Option<String>,
}

fn tensor_json<'a>(t: &'a Tensor, redaction: Option<RedactAction>, key: &[u8; 32]) -> Option<TensorJson<'a>> {
    let mut json = TensorJson {
        name: &t.name,
        datatype: t.datatype().to_string(),
        shape: &t.shape,
        data: None,
        hmac_sha256: None,
    };
    match redaction {
        Some(RedactAction::Drop) => return None,
        Some(RedactAction::Hash) => {
            let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(key).ok()?;
            mac.update(&serde_json::to_vec(&JsonElements(&t.data)).unwrap_or_default());
            json.hmac_sha256 = Some(hex::encode(mac.finalize().into_bytes()));
        }
        None => json.data = Some(JsonElements(&t.data)),
    }
    Some(json)
}

/// The record's payload, redacted and sealed.
fn seal(vault: &Vault, key: &[u8; 32], r: &Record) -> Result<StoredPrediction, Error> {
    let settings: &PredictionLogging = &r.logged.settings;
    let inputs: Vec<TensorJson<'_>> =
        r.logged.inputs.iter().filter_map(|t| tensor_json(t, settings.redaction(&t.name), key)).collect();
    let outputs: Vec<TensorJson<'_>> = r.logged.outputs.iter().filter_map(|t| tensor_json(t, None, key)).collect();
    let payload = serde_json::to_vec(&json!({ "inputs": inputs, "outputs": outputs }))
        .map_err(|e| Error::new(ErrorCode::Internal, format!("encoding a prediction record: {e}")))?;
    let id = format!("{:032x}", fastrand::u128(..));
    let sealed = vault
        .seal(&sealed_name(&id), 0, &payload, "", "")
        .map_err(|e| Error::new(ErrorCode::Internal, format!("sealing a prediction record: {e}")))?;
    Ok(StoredPrediction {
        id,
        endpoint: r.endpoint.clone(),
        version: r.version.clone(),
        request_id: r.request_id.clone(),
        principal: r.principal.clone(),
        time_us: micros(r.time),
        master_key_id: sealed.master_key_id,
        wrapped_key: sealed.wrapped_key,
        ciphertext: sealed.ciphertext,
    })
}

/// A stored record opened: the clear columns and the payload.
pub fn open(vault: &Vault, r: StoredPrediction) -> Result<Value, Error> {
    let sealed = SealedSecret {
        name: sealed_name(&r.id),
        version: 0,
        master_key_id: r.master_key_id,
        wrapped_key: r.wrapped_key,
        ciphertext: r.ciphertext,
        created_by: String::new(),
        created_at: String::new(),
    };
    let payload =
        vault.open(&sealed).map_err(|e| Error::new(ErrorCode::Internal, format!("prediction record {}: {e}", r.id)))?;
    let payload: Value = serde_json::from_slice(&payload)
        .map_err(|e| Error::new(ErrorCode::Internal, format!("prediction record {}: {e}", r.id)))?;
    let time = humantime::format_rfc3339_micros(UNIX_EPOCH + Duration::from_micros(r.time_us.max(0) as u64));
    Ok(json!({
        "id": r.id,
        "cursor": format!("{}.{}", r.time_us, r.id),
        "time": time.to_string(),
        "endpoint": r.endpoint,
        "version": r.version,
        "request_id": r.request_id,
        "principal": r.principal,
        "inputs": payload.get("inputs").cloned().unwrap_or(Value::Null),
        "outputs": payload.get("outputs").cloned().unwrap_or(Value::Null),
    }))
}

/// Reads a `cursor` (`<time_us>.<id>`, as returned with each record).
pub fn parse_cursor(text: &str) -> Result<(i64, String), Error> {
    let bad = || Error::invalid_input(format!("after: {} is not a cursor from an earlier answer", quote(text)));
    let (time, id) = text.split_once('.').ok_or_else(bad)?;
    let time = time.parse::<i64>().map_err(|_| bad())?;
    if id.is_empty() || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad());
    }
    Ok((time, id.to_owned()))
}

fn quote(text: &str) -> String {
    vigil_core::names::quoted(text.get(..80).unwrap_or(text))
}

/// The filter of `GET /api/v1/endpoints/{name}/predictions`, checked.
pub fn filter(
    endpoint: &str,
    version: Option<String>,
    request_id: Option<String>,
    since: Option<&str>,
    until: Option<&str>,
    after: Option<&str>,
    limit: Option<u32>,
) -> Result<PredictionFilter, Error> {
    let time = |field: &str, text: &str| -> Result<i64, Error> {
        humantime::parse_rfc3339_weak(text)
            .map(micros)
            .map_err(|_| Error::invalid_input(format!("{field}: {} is not an RFC 3339 time", quote(text))))
    };
    vigil_core::names::check_name("endpoint", endpoint)?;
    Ok(PredictionFilter {
        endpoint: endpoint.to_owned(),
        version,
        request_id,
        since_us: since.map(|s| time("since", s)).transpose()?,
        until_us: until.map(|s| time("until", s)).transpose()?,
        after: after.map(parse_cursor).transpose()?,
        limit: limit.unwrap_or(100).clamp(1, 1000),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;
    use vigil_core::TensorData;
    use vigil_core::predictions::Redaction;
    use vigil_security::vault::MasterKey;

    /// A store that never answers while held: the writer stalls on it.
    struct Stalled {
        held: Arc<AtomicBool>,
        stored: Arc<Mutex<Vec<StoredPrediction>>>,
    }

    #[async_trait::async_trait]
    impl Sink for Stalled {
        async fn write(&self, records: &[StoredPrediction]) -> Result<(), Error> {
            while self.held.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            self.stored.lock().unwrap_or_else(|p| p.into_inner()).extend_from_slice(records);
            Ok(())
        }
        async fn prune(&self, _: &str, _: i64, _: u64) -> Result<u64, Error> {
            Ok(0)
        }
    }

    fn vault() -> Arc<Vault> {
        Arc::new(Vault::new(MasterKey::from_bytes([7; 32]), Vec::new()))
    }

    fn record(settings: &Arc<PredictionLogging>) -> Record {
        let tensor =
            |name: &str, v: Vec<f32>| Tensor { name: name.into(), shape: vec![1, v.len()], data: TensorData::Fp32(v) };
        Record {
            endpoint: "fraud".into(),
            version: "1".into(),
            request_id: "r1".into(),
            principal: "key:abc".into(),
            time: SystemTime::now(),
            logged: Logged {
                settings: Arc::clone(settings),
                inputs: vec![tensor("amount", vec![12.5]), tensor("ssn", vec![123.0]), tensor("age", vec![41.0])],
                outputs: vec![tensor("probabilities", vec![0.25, 0.75])],
            },
        }
    }

    #[tokio::test]
    async fn overload_drops_and_counts_without_blocking() {
        let held = Arc::new(AtomicBool::new(true));
        let stored = Arc::new(Mutex::new(Vec::new()));
        let sink = Stalled { held: Arc::clone(&held), stored: Arc::clone(&stored) };
        let log = PredictionLog::start(sink, vault(), 8);
        let settings = Arc::new(PredictionLogging { sample_rate: 1.0, ..Default::default() });
        let started = std::time::Instant::now();
        for _ in 0..1000 {
            log.record(record(&settings));
        }
        // A thousand hand-offs to a stalled store return at once (no waiting on it).
        assert!(started.elapsed() < Duration::from_secs(1), "{:?}", started.elapsed());
        tokio::time::sleep(Duration::from_millis(50)).await;
        let (_, written, dropped) = log.stats()[0].clone();
        assert_eq!(written, 0);
        // The queue holds 8, and the writer holds at most one batch it took.
        assert!(dropped >= 1000 - 8 - BATCH as u64, "dropped {dropped}");
        held.store(false, Ordering::Relaxed);
        for _ in 0..200 {
            let (_, written, dropped) = log.stats()[0].clone();
            if written + dropped == 1000 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let (_, written, dropped) = log.stats()[0].clone();
        assert_eq!(written + dropped, 1000, "every record is either written or counted as dropped");
        assert_eq!(stored.lock().unwrap_or_else(|p| p.into_inner()).len() as u64, written);
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
        let stored = seal(&vault, &key, &record(&settings)).expect("sealed");
        let text = String::from_utf8_lossy(&stored.ciphertext);
        assert!(!text.contains("amount") && !text.contains("12.5"), "the payload is not in the clear");
        let opened = open(&vault, stored.clone()).expect("opens");
        let inputs = opened["inputs"].as_array().expect("inputs");
        let names: Vec<&str> = inputs.iter().filter_map(|t| t["name"].as_str()).collect();
        assert_eq!(names, ["amount", "age"], "ssn is dropped");
        assert_eq!(inputs[0]["data"], json!([12.5]));
        assert!(inputs[1].get("data").is_none(), "age is hashed, not kept");
        let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(&key).expect("key");
        mac.update(b"[41.0]");
        assert_eq!(inputs[1]["hmac_sha256"], json!(hex::encode(mac.finalize().into_bytes())));
        assert_eq!(opened["outputs"][0]["data"], json!([0.25, 0.75]));
        // Moved to another row (another id), the payload does not open.
        let moved = StoredPrediction { id: format!("{:032x}", 1), ..stored };
        assert!(open(&vault, moved).is_err());
    }

    #[test]
    fn hostile_filters_are_refused_by_field() {
        for (since, until, after, field) in [
            (Some("yesterday"), None, None, "since"),
            (None, Some("2026-13-01T00:00:00Z"), None, "until"),
            (None, None, Some("12"), "after"),
            (None, None, Some("x.abc"), "after"),
            (None, None, Some("1.zz"), "after"),
            (None, None, Some(&*"9".repeat(400)), "after"),
        ] {
            let e = filter("fraud", None, None, since, until, after, None).expect_err("refused");
            assert!(e.message().starts_with(field), "{e}");
        }
        let f = filter("fraud", None, None, Some("2026-01-01T00:00:00Z"), None, Some("5.ab"), Some(1_000_000))
            .expect("valid");
        assert_eq!(f.limit, 1000);
        assert_eq!(f.after, Some((5, "ab".into())));
    }
}
