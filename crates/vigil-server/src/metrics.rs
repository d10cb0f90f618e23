//! Prometheus metrics at `/metrics`. Each server owns its recorder (no global
//! state: several servers in one process, as in tests or an embedder, stay
//! apart). A request only updates handles registered once per endpoint and
//! version; gauges that describe state (queue depth, readiness, shadows,
//! the process) are read when Prometheus scrapes. Labels are endpoint and
//! version names that exist, stages, status classes and error codes: never
//! request ids or other free input.

use metrics::{Counter, Histogram, Key, Label, Level, Metadata, Recorder, Unit};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder};
use metrics_util::MetricKindMask;
use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use vigil_runtime::{InferenceService, VersionState};

/// The stages of an inference, as in `Server-Timing`.
pub const STAGES: [&str; 5] = ["preprocess", "queue", "inference", "postprocess", "total"];

/// Latency buckets in seconds: 50 µs to 10 s.
const BUCKETS: [f64; 16] =
    [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0];

/// Rows per model run: 1 to 1024.
const BATCH_BUCKETS: [f64; 11] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0];

const METADATA: Metadata<'static> = Metadata::new("vigil", Level::INFO, Some(module_path!()));

pub struct Metrics {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
    /// Per endpoint (empty: a request that named none that exists): one map
    /// under one lock, so a request takes one lock and allocates nothing.
    endpoints: Mutex<HashMap<String, ByEndpoint>>,
    /// Requests being served; copied into its gauge when scraped, so that the
    /// gauge may be dropped while idle like every other series.
    in_flight: Arc<AtomicI64>,
}

#[derive(Default)]
struct ByEndpoint {
    /// Handles by version, registered on first use and forgotten at upkeep.
    versions: HashMap<String, VersionHistograms>,
    /// Request counters by version, status class and error code (few: a list).
    requests: Vec<(RequestKey, Counter)>,
    /// Running counts the alert engine reads (Prometheus' own are write-only); kept at upkeep.
    totals: EndpointTotals,
}

/// The stage histograms and the batch-size histogram of one version.
struct VersionHistograms {
    stages: [Histogram; 5],
    batch: Histogram,
}

type RequestKey = (String, &'static str, &'static str);

impl Default for Metrics {
    fn default() -> Self {
        Self::new(IDLE_TIMEOUT)
    }
}

/// A series not updated for this long is dropped from `/metrics`: endpoints
/// and versions that are gone stop being reported. An idle endpoint's counters
/// start again from zero when traffic comes back, which `rate()` takes as a
/// counter reset.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(15 * 60);

fn key(name: &'static str, labels: &[(&'static str, String)]) -> Key {
    Key::from_parts(name, labels.iter().map(|(k, v)| Label::new(*k, v.clone())).collect::<Vec<_>>())
}

impl Metrics {
    pub fn new(idle_timeout: Duration) -> Self {
        let builder = PrometheusBuilder::new()
            .idle_timeout(MetricKindMask::ALL, Some(idle_timeout))
            .set_buckets(&BUCKETS)
            .and_then(|b| b.set_buckets_for_metric(Matcher::Full("vigil_batch_size".into()), &BATCH_BUCKETS));
        let recorder = builder.unwrap_or_else(|_| PrometheusBuilder::new()).build_recorder();
        let handle = recorder.handle();
        recorder.describe_histogram(
            "vigil_request_duration_seconds".into(),
            Some(Unit::Seconds),
            "Inference latency by stage (preprocess, queue, inference, postprocess, total)".into(),
        );
        recorder.describe_histogram("vigil_batch_size".into(), None, "Rows per model run".into());
        recorder.describe_counter(
            "vigil_requests_total".into(),
            None,
            "Inference requests by endpoint, version, status class and error code".into(),
        );
        recorder.describe_gauge("vigil_requests_in_flight".into(), None, "Inference requests being served".into());
        recorder.describe_gauge("vigil_queue_depth".into(), None, "Requests waiting for a model's workers".into());
        recorder.describe_gauge("vigil_model_ready".into(), None, "1 when the version is loaded and warm".into());
        recorder.describe_gauge(
            "vigil_model_load_seconds".into(),
            Some(Unit::Seconds),
            "How long the version took to read, load and warm".into(),
        );
        recorder.describe_counter(
            "vigil_shadow_requests_total".into(),
            None,
            "Shadow copies by outcome: agreed, disagreed, failed, dropped".into(),
        );
        recorder.describe_counter(
            "vigil_prediction_log_records_total".into(),
            None,
            "Prediction log records by outcome: written, dropped (buffer full or store failed)".into(),
        );
        recorder.describe_gauge("vigil_alerts_firing".into(), None, "1 while Vigil's alert rule fires".into());
        recorder.describe_counter(
            "vigil_record_problems_total".into(),
            None,
            "Problems found in records the records API refused, by the rule broken (at most 100 listed per request)"
                .into(),
        );
        recorder.describe_gauge(
            "vigil_drift_share".into(),
            None,
            "Share of an endpoint version's input features that drifted in this replica's latest window".into(),
        );
        recorder.describe_gauge(
            "vigil_feature_drift_score".into(),
            None,
            "A feature's drift test score in this replica's latest window (p-value or distance, see method)".into(),
        );
        recorder.describe_gauge(
            "vigil_feature_drifted".into(),
            None,
            "1 when the feature drifted in this replica's latest window".into(),
        );
        recorder.describe_gauge("vigil_build_info".into(), None, "Always 1; the labels say which build".into());
        Metrics { recorder, handle, endpoints: Mutex::new(HashMap::new()), in_flight: Arc::new(AtomicI64::new(0)) }
    }

    /// Drains the histograms' recent samples into their buckets (needed at
    /// least every few seconds: until then samples are kept one by one), and
    /// forgets the cached handles, so that a series the recorder dropped as
    /// idle is registered again on its next use.
    pub fn upkeep(&self) {
        self.handle.run_upkeep();
        for e in self.endpoints.lock().unwrap_or_else(|p| p.into_inner()).values_mut() {
            e.versions.clear();
            e.requests.clear();
        }
    }

    /// A request started; the guard counts it out when dropped.
    pub fn in_flight(&self) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(Arc::clone(&self.in_flight))
    }

    /// Records one answered request: counted by endpoint (empty when it named
    /// none that exists), version (empty when none was chosen), status class
    /// (`2xx`…) and error code (empty on success); with a version, its stage
    /// durations, and the rows of the model run when it is the request that
    /// counts the run.
    pub fn record(
        &self,
        endpoint: &str,
        version: &str,
        status: u16,
        code: &'static str,
        stages: &[Duration; 5],
        batch: Option<usize>,
    ) {
        let class = match status {
            200..=299 => "2xx",
            400..=499 => "4xx",
            500..=599 => "5xx",
            _ => "other",
        };
        let mut all = self.endpoints.lock().unwrap_or_else(|p| p.into_inner());
        let e = match all.get_mut(endpoint) {
            Some(e) => e,
            None => all.entry(endpoint.to_owned()).or_default(),
        };
        e.totals.requests += 1;
        e.totals.server_errors += u64::from(class == "5xx");
        match e.requests.iter().find(|((v, c, k), _)| v == version && *c == class && *k == code) {
            Some((_, counter)) => counter.increment(1),
            None => {
                let labels = [
                    ("endpoint", endpoint.to_owned()),
                    ("version", version.to_owned()),
                    ("status", class.into()),
                    ("code", code.into()),
                ];
                let counter = self.recorder.register_counter(&key("vigil_requests_total", &labels), &METADATA);
                counter.increment(1);
                e.requests.push(((version.to_owned(), class, code), counter));
            }
        }
        if version.is_empty() {
            return;
        }
        let seconds = stages[4].as_secs_f64();
        e.totals.latency[BUCKETS.iter().position(|b| seconds <= *b).unwrap_or(BUCKETS.len())] += 1;
        if !e.versions.contains_key(version) {
            let made = self.version_histograms(endpoint, version);
            e.versions.insert(version.to_owned(), made);
        }
        let Some(h) = e.versions.get(version) else { return };
        for (h, d) in h.stages.iter().zip(stages) {
            h.record(d.as_secs_f64());
        }
        if let Some(rows) = batch {
            h.batch.record(rows as f64);
        }
    }

    fn version_histograms(&self, endpoint: &str, version: &str) -> VersionHistograms {
        let labels = |stage: Option<&str>| {
            let mut l = vec![("endpoint", endpoint.to_owned()), ("version", version.to_owned())];
            l.extend(stage.map(|s| ("stage", s.to_owned())));
            l
        };
        VersionHistograms {
            stages: STAGES.map(|stage| {
                self.recorder
                    .register_histogram(&key("vigil_request_duration_seconds", &labels(Some(stage))), &METADATA)
            }),
            batch: self.recorder.register_histogram(&key("vigil_batch_size", &labels(None)), &METADATA),
        }
    }

    /// Every endpoint's running totals now.
    pub fn totals(&self) -> HashMap<String, EndpointTotals> {
        let all = self.endpoints.lock().unwrap_or_else(|p| p.into_inner());
        all.iter().map(|(name, e)| (name.clone(), e.totals.clone())).collect()
    }

    /// The Prometheus text format, with the state gauges read now.
    pub fn render(&self, service: &InferenceService) -> String {
        let set = |name: &'static str, labels: &[(&'static str, String)], value: f64| self.gauge(name, labels, value);
        set("vigil_build_info", &[("version", env!("CARGO_PKG_VERSION").into())], 1.0);
        set("vigil_requests_in_flight", &[], self.in_flight.load(Ordering::Relaxed) as f64);
        for endpoint in service.models().endpoints() {
            for v in &endpoint.versions {
                let labels = [("endpoint", endpoint.name.clone()), ("version", v.version.clone())];
                let state = v.state();
                let (ready, queued) = match &*state {
                    VersionState::Ready { scheduler, load_time, .. } => {
                        set("vigil_model_load_seconds", &labels, load_time.as_secs_f64());
                        (1.0, scheduler.queued() as f64)
                    }
                    _ => (0.0, 0.0),
                };
                set("vigil_model_ready", &labels, ready);
                set("vigil_queue_depth", &labels, queued);
            }
            for (version, s) in service.shadows().stats(&endpoint.name) {
                for (outcome, n) in
                    [("agreed", s.agreed), ("disagreed", s.disagreed), ("failed", s.failed), ("dropped", s.dropped)]
                {
                    let labels = [
                        ("endpoint", endpoint.name.clone()),
                        ("version", version.clone()),
                        ("outcome", outcome.into()),
                    ];
                    self.counter("vigil_shadow_requests_total", &labels, n);
                }
            }
        }
        let mut text = self.handle.render();
        text.push_str(&process_metrics());
        text
    }

    /// Sets a gauge: for state that other parts report when scraped.
    pub fn gauge(&self, name: &'static str, labels: &[(&'static str, String)], value: f64) {
        self.recorder.register_gauge(&key(name, labels), &METADATA).set(value);
    }

    /// Adds `n` to a counter.
    pub fn add(&self, name: &'static str, labels: &[(&'static str, String)], n: u64) {
        self.recorder.register_counter(&key(name, labels), &METADATA).increment(n);
    }

    /// Sets a counter to a total that another part keeps.
    pub fn counter(&self, name: &'static str, labels: &[(&'static str, String)], total: u64) {
        self.recorder.register_counter(&key(name, labels), &METADATA).absolute(total);
    }
}

/// One endpoint's cumulative request, 5xx and latency-bucket counts, which the
/// alert engine turns into rates, error ratios and quantiles over the time
/// between two readings.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EndpointTotals {
    pub requests: u64,
    pub server_errors: u64,
    /// Counts of total latency at or under each of [`LATENCY_BOUNDS`], then over the last.
    pub latency: [u64; BUCKETS.len() + 1],
}

/// The upper bounds of [`EndpointTotals::latency`], in seconds.
pub const LATENCY_BOUNDS: [f64; BUCKETS.len()] = BUCKETS;

/// Counts a request out of `vigil_requests_in_flight` when dropped.
pub struct InFlight(Arc<AtomicI64>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The standard process metrics, from `/proc/self` (Linux; empty elsewhere).
fn process_metrics() -> String {
    let mut text = String::new();
    // utime and stime are fields 14 and 15, after the parenthesised command name.
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit_once(')').map_or(Vec::new(), |(_, rest)| rest.split_whitespace().collect());
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok());
    if let (Some(user), Some(system)) = (ticks(11), ticks(12)) {
        // USER_HZ is 100 on every Linux architecture Vigil builds for.
        let seconds = (user + system) / 100.0;
        text.push_str(&format!(
            "# HELP process_cpu_seconds_total Total user and system CPU time spent in seconds.\n\
             # TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total {seconds}\n"
        ));
    }
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next().and_then(|n| n.parse::<u64>().ok()));
    if let Some(kib) = rss_kib {
        text.push_str(&format!(
            "# HELP process_resident_memory_bytes Resident memory size in bytes.\n\
             # TYPE process_resident_memory_bytes gauge\nprocess_resident_memory_bytes {}\n",
            kib * 1024
        ));
    }
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        text.push_str(&format!(
            "# HELP process_open_fds Number of open file descriptors.\n\
             # TYPE process_open_fds gauge\nprocess_open_fds {}\n",
            fds.count()
        ));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use vigil_runtime::ModelSet;

    /// A series not updated for the idle timeout leaves `/metrics` (a deleted
    /// endpoint stops being reported), and comes back, from zero, when used.
    #[test]
    fn idle_series_are_dropped_and_come_back_on_use() {
        let metrics = Metrics::new(Duration::from_millis(200));
        let service = InferenceService::new(Arc::new(ModelSet::default()));
        let stages = [Duration::from_micros(5); 5];
        metrics.record("fraud", "1", 200, "", &stages, Some(1));
        metrics.record("fraud", "1", 200, "", &stages, Some(1));
        let line = "vigil_requests_total{endpoint=\"fraud\",version=\"1\",status=\"2xx\",code=\"\"}";
        let has = |text: &str, count: &str| text.lines().any(|l| l == format!("{line} {count}"));
        assert!(has(&metrics.render(&service), "2"));
        std::thread::sleep(Duration::from_millis(300));
        let text = metrics.render(&service);
        assert!(!text.contains("endpoint=\"fraud\""), "idle series are dropped:\n{text}");
        // The cached handles are forgotten at upkeep, so the next use registers anew.
        metrics.upkeep();
        metrics.record("fraud", "1", 200, "", &stages, None);
        assert!(has(&metrics.render(&service), "1"));
        assert_eq!(metrics.totals()["fraud"].requests, 3, "the alert engine's totals are kept");
    }
}
