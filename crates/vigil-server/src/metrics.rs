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
    /// By endpoint, then version: looked up by `&str`, so a request allocates nothing.
    stages: Mutex<HashMap<String, HashMap<String, VersionHistograms>>>,
    /// By endpoint, then version, status class and error code.
    requests: Mutex<HashMap<String, HashMap<RequestKey, Counter>>>,
    /// Requests being served; copied into its gauge when scraped, so that the
    /// gauge may be dropped while idle like every other series.
    in_flight: Arc<AtomicI64>,
    /// Cumulative counts the alert engine reads (Prometheus' own are write-only).
    pub totals: Totals,
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
            "Prediction log records by outcome: written, dropped (buffer full), sampled_out".into(),
        );
        recorder.describe_gauge("vigil_alerts_firing".into(), None, "1 while Vigil's alert rule fires".into());
        recorder.describe_gauge("vigil_build_info".into(), None, "Always 1; the labels say which build".into());
        Metrics {
            recorder,
            handle,
            stages: Mutex::new(HashMap::new()),
            requests: Mutex::new(HashMap::new()),
            in_flight: Arc::new(AtomicI64::new(0)),
            totals: Totals::default(),
        }
    }

    /// Drains the histograms' recent samples into their buckets (needed at
    /// least every few seconds: until then samples are kept one by one), and
    /// forgets the cached handles, so that a series the recorder dropped as
    /// idle is registered again on its next use.
    pub fn upkeep(&self) {
        self.handle.run_upkeep();
        self.stages.lock().unwrap_or_else(|p| p.into_inner()).clear();
        self.requests.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    /// A request started; the guard counts it out when dropped.
    pub fn in_flight(&self) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(Arc::clone(&self.in_flight))
    }

    /// Records one answered request's stage durations, and the rows of the
    /// model run when it is the request that counts the run.
    pub fn observe(&self, endpoint: &str, version: &str, stages: &[Duration; 5], batch: Option<usize>) {
        let mut all = self.stages.lock().unwrap_or_else(|p| p.into_inner());
        if !all.get(endpoint).is_some_and(|v| v.contains_key(version)) {
            let labels = |stage: Option<&str>| {
                let mut l = vec![("endpoint", endpoint.to_owned()), ("version", version.to_owned())];
                l.extend(stage.map(|s| ("stage", s.to_owned())));
                l
            };
            let made = VersionHistograms {
                stages: STAGES.map(|stage| {
                    self.recorder
                        .register_histogram(&key("vigil_request_duration_seconds", &labels(Some(stage))), &METADATA)
                }),
                batch: self.recorder.register_histogram(&key("vigil_batch_size", &labels(None)), &METADATA),
            };
            all.entry(endpoint.to_owned()).or_default().insert(version.to_owned(), made);
        }
        let Some(h) = all.get(endpoint).and_then(|v| v.get(version)) else { return };
        for (h, d) in h.stages.iter().zip(stages) {
            h.record(d.as_secs_f64());
        }
        if let Some(rows) = batch {
            h.batch.record(rows as f64);
        }
        drop(all);
        self.totals.latency(endpoint, stages[4]);
    }

    /// Counts a request by endpoint (empty when it named none that exists),
    /// version (empty when none was chosen), status class (`2xx`…) and error
    /// code (empty on success).
    pub fn count(&self, endpoint: &str, version: &str, status: u16, code: &'static str) {
        let class = match status {
            200..=299 => "2xx",
            400..=499 => "4xx",
            500..=599 => "5xx",
            _ => "other",
        };
        self.totals.request(endpoint, class == "5xx");
        let mut all = self.requests.lock().unwrap_or_else(|p| p.into_inner());
        let by_endpoint = match all.get_mut(endpoint) {
            Some(m) => m,
            None => all.entry(endpoint.to_owned()).or_default(),
        };
        if let Some(counter) = by_endpoint.iter().find(|((v, c, k), _)| v == version && *c == class && *k == code) {
            counter.1.increment(1);
            return;
        }
        let labels = [
            ("endpoint", endpoint.to_owned()),
            ("version", version.to_owned()),
            ("status", class.into()),
            ("code", code.into()),
        ];
        let counter = self.recorder.register_counter(&key("vigil_requests_total", &labels), &METADATA);
        counter.increment(1);
        by_endpoint.insert((version.to_owned(), class, code), counter);
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

    /// Sets a counter to a total that another part keeps.
    pub fn counter(&self, name: &'static str, labels: &[(&'static str, String)], total: u64) {
        self.recorder.register_counter(&key(name, labels), &METADATA).absolute(total);
    }
}

/// Per endpoint, cumulative request, 5xx and latency-bucket counts, which the
/// alert engine turns into rates, error ratios and quantiles over the time
/// between two readings.
#[derive(Default)]
pub struct Totals(Mutex<HashMap<String, EndpointTotals>>);

#[derive(Debug, Clone, Default, PartialEq)]
pub struct EndpointTotals {
    pub requests: u64,
    pub server_errors: u64,
    /// Counts of total latency at or under each of [`LATENCY_BOUNDS`], then over the last.
    pub latency: [u64; BUCKETS.len() + 1],
}

/// The upper bounds of [`EndpointTotals::latency`], in seconds.
pub const LATENCY_BOUNDS: [f64; BUCKETS.len()] = BUCKETS;

impl Totals {
    fn request(&self, endpoint: &str, server_error: bool) {
        self.with(endpoint, |t| {
            t.requests += 1;
            t.server_errors += u64::from(server_error);
        });
    }

    fn latency(&self, endpoint: &str, total: Duration) {
        let seconds = total.as_secs_f64();
        let bucket = BUCKETS.iter().position(|b| seconds <= *b).unwrap_or(BUCKETS.len());
        self.with(endpoint, |t| t.latency[bucket] += 1);
    }

    fn with(&self, endpoint: &str, change: impl FnOnce(&mut EndpointTotals)) {
        let mut all = self.0.lock().unwrap_or_else(|p| p.into_inner());
        match all.get_mut(endpoint) {
            Some(t) => change(t),
            None => change(all.entry(endpoint.to_owned()).or_default()),
        }
    }

    /// Every endpoint's totals now.
    pub fn read(&self) -> HashMap<String, EndpointTotals> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

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
