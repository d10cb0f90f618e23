//! Prediction logging: which requests an endpoint records, what is kept of
//! them, and for how long. Records are sealed by the vault before they reach
//! the store; only the columns a filter needs stay in the clear.

use crate::Error;
use crate::names::quoted;
use serde::{Deserialize, Serialize};

/// An endpoint's prediction logging. Part of its spec, so it changes, and
/// rolls back, with a revision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PredictionLogging {
    /// Share of requests recorded, in [0, 1].
    pub sample_rate: f64,
    /// Inputs dropped or replaced by a keyed hash before a record is stored.
    #[serde(default)]
    pub redact: Vec<Redaction>,
    /// Records older than this are deleted.
    #[serde(default = "default_retention_hours")]
    pub retention_hours: u64,
    /// The newest records are kept up to this many sealed bytes; older ones go.
    #[serde(default = "default_max_bytes")]
    pub max_bytes: u64,
}

fn default_retention_hours() -> u64 {
    7 * 24
}

fn default_max_bytes() -> u64 {
    1 << 30
}

impl Default for PredictionLogging {
    fn default() -> Self {
        PredictionLogging {
            sample_rate: 0.0,
            redact: Vec::new(),
            retention_hours: default_retention_hours(),
            max_bytes: default_max_bytes(),
        }
    }
}

/// What happens to one named input.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Redaction {
    pub input: String,
    pub action: RedactAction,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RedactAction {
    /// The input is left out of the record.
    Drop,
    /// The input's values are replaced by an HMAC-SHA-256 under a key derived
    /// from the master key: equal values still match, but a guessable value
    /// (an age, a postcode) cannot be confirmed without the key.
    Hash,
}

pub const MAX_REDACTIONS: usize = 64;

impl PredictionLogging {
    pub fn validate(&self) -> Result<(), Error> {
        if !(0.0..=1.0).contains(&self.sample_rate) {
            return Err(Error::invalid_input(format!("logging.sample_rate: {} is not in [0, 1]", self.sample_rate)));
        }
        if self.redact.len() > MAX_REDACTIONS {
            return Err(Error::invalid_input(format!("logging.redact: at most {MAX_REDACTIONS} rules")));
        }
        for (i, r) in self.redact.iter().enumerate() {
            if r.input.is_empty() || r.input.len() > 256 {
                return Err(Error::invalid_input(format!("logging.redact[{i}].input: give an input name")));
            }
            if self.redact[..i].iter().any(|o| o.input == r.input) {
                return Err(Error::invalid_input(format!(
                    "logging.redact[{i}].input: {} is listed twice",
                    quoted(&r.input)
                )));
            }
        }
        if self.retention_hours == 0 {
            return Err(Error::invalid_input("logging.retention_hours: must be at least 1"));
        }
        if self.max_bytes == 0 {
            return Err(Error::invalid_input("logging.max_bytes: must be at least 1"));
        }
        Ok(())
    }

    /// Whether this request is recorded; `draw` is uniform in [0, 1).
    pub fn samples(&self, draw: f64) -> bool {
        draw < self.sample_rate
    }

    pub fn redaction(&self, input: &str) -> Option<RedactAction> {
        self.redact.iter().find(|r| r.input == input).map(|r| r.action)
    }
}

/// A stored chunk: consecutive records of one endpoint, written as JSON
/// lines and sealed once (one data key per chunk, not per record, which is
/// what makes recording every request affordable). Only the columns that
/// select chunks (endpoint, time span) stay in the clear.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredChunk {
    /// Unique; with `first_us`, the order of chunks and part of a cursor.
    pub id: String,
    pub endpoint: String,
    /// The first and last records' times, in microseconds since the Unix epoch.
    pub first_us: i64,
    pub last_us: i64,
    pub records: u32,
    pub master_key_id: String,
    pub wrapped_key: Vec<u8>,
    pub ciphertext: Vec<u8>,
}

/// Which chunks to read, ordered by (`first_us`, `id`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChunkFilter {
    pub endpoint: String,
    /// Chunks with a record at or after this time.
    pub since_us: Option<i64>,
    /// Chunks with a record before this time.
    pub until_us: Option<i64>,
    /// Chunks at or after this (`first_us`, `id`): a cursor's chunk and those after it.
    pub from: Option<(i64, String)>,
    pub limit: u32,
}

/// How records are grouped into chunks for a store: a chunk is stored when
/// it holds `records`, reaches `bytes`, or its first record is `flush_after`
/// old (so records can be read that soon after their request).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkPolicy {
    pub records: u32,
    pub bytes: usize,
    pub flush_after: std::time::Duration,
}

impl ChunkPolicy {
    /// Rows of the metadata store: small chunks, readable within a second.
    pub const ROWS: ChunkPolicy =
        ChunkPolicy { records: 256, bytes: 1 << 20, flush_after: std::time::Duration::from_secs(1) };
    /// Objects of an object store, for large volumes: every object is a
    /// request (and, on S3 or Azure, a charge) to write and to list, so each
    /// holds up to 16 times as many records and may wait 10 s.
    pub const OBJECTS: ChunkPolicy =
        ChunkPolicy { records: 4096, bytes: 8 << 20, flush_after: std::time::Duration::from_secs(10) };
}

/// No chunk's records span more than this (the writer starts a new chunk
/// instead), so a reader looking for records after a time need only look
/// at chunks that begin this much earlier.
pub const MAX_CHUNK_SPAN_US: i64 = 10 * 60 * 1_000_000;

/// The vault's name for a chunk's payload: binds the ciphertext to its row.
pub fn sealed_name(chunk_id: &str) -> String {
    format!("prediction chunk:{chunk_id}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validates_each_field_by_name() {
        let ok = PredictionLogging { sample_rate: 0.5, ..Default::default() };
        assert!(ok.validate().is_ok());
        for (bad, field) in [
            (PredictionLogging { sample_rate: 1.5, ..ok.clone() }, "logging.sample_rate"),
            (PredictionLogging { sample_rate: f64::NAN, ..ok.clone() }, "logging.sample_rate"),
            (PredictionLogging { retention_hours: 0, ..ok.clone() }, "logging.retention_hours"),
            (PredictionLogging { max_bytes: 0, ..ok.clone() }, "logging.max_bytes"),
            (
                PredictionLogging {
                    redact: vec![
                        Redaction { input: "a".into(), action: RedactAction::Drop },
                        Redaction { input: "a".into(), action: RedactAction::Hash },
                    ],
                    ..ok.clone()
                },
                "logging.redact[1].input",
            ),
        ] {
            let e = bad.validate().expect_err("invalid");
            assert!(e.message().starts_with(field), "{e}");
        }
    }

    #[test]
    fn samples_by_rate() {
        let half = PredictionLogging { sample_rate: 0.5, ..Default::default() };
        assert!(half.samples(0.2) && !half.samples(0.7));
        assert!(!PredictionLogging::default().samples(0.0));
        assert!(PredictionLogging { sample_rate: 1.0, ..Default::default() }.samples(0.999_999));
    }

    #[test]
    fn reads_json_with_defaults_and_refuses_unknown_fields() {
        let l: PredictionLogging =
            serde_json::from_str(r#"{"sample_rate": 1, "redact": [{"input": "ssn", "action": "hash"}]}"#)
                .expect("valid");
        assert_eq!(l.redaction("ssn"), Some(RedactAction::Hash));
        assert_eq!(l.retention_hours, 168);
        assert!(serde_json::from_str::<PredictionLogging>(r#"{"sample_rate": 1, "rate": 2}"#).is_err());
    }
}
