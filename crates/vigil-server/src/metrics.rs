//! Prometheus metrics at `/metrics`. Each server owns its recorder (no global
//! state: several servers in one process, as in tests or an embedder, stay
//! apart). A request only updates handles registered once per endpoint and
//! version; gauges that describe state (queue depth, readiness, shadows,
//! the process) are read when Prometheus scrapes. Labels are endpoint and
//! version names that exist, stages, status classes and error codes: never
//! request ids or other free input.

use metrics::{Counter, Gauge, Histogram, Key, Label, Level, Metadata, Recorder, Unit};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use vigil_runtime::{InferenceService, VersionState};

/// The stages of an inference, as in `Server-Timing`.
pub const STAGES: [&str; 5] = ["preprocess", "queue", "inference", "postprocess", "total"];

/// Latency buckets in seconds: 50 µs to 10 s.
const BUCKETS: [f64; 16] =
    [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0];

/// One histogram per stage of [`STAGES`].
type StageHistograms = Arc<[Histogram; 5]>;
type StatusAndCode = (&'static str, &'static str);

const METADATA: Metadata<'static> = Metadata::new("vigil", Level::INFO, Some(module_path!()));

pub struct Metrics {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
    /// By endpoint, then version: looked up by `&str`, so a request allocates nothing.
    stages: Mutex<HashMap<String, HashMap<String, StageHistograms>>>,
    /// By endpoint, then (status class, error code).
    requests: Mutex<HashMap<String, HashMap<StatusAndCode, Counter>>>,
    in_flight: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

fn key(name: &'static str, labels: &[(&'static str, String)]) -> Key {
    Key::from_parts(name, labels.iter().map(|(k, v)| Label::new(*k, v.clone())).collect::<Vec<_>>())
}

impl Metrics {
    pub fn new() -> Self {
        let builder = PrometheusBuilder::new();
        let builder = builder.set_buckets(&BUCKETS).unwrap_or_else(|_| PrometheusBuilder::new());
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        let describe = |name: &'static str, unit: Option<Unit>, text: &'static str| {
            recorder.describe_histogram(name.into(), unit, text.into());
        };
        describe(
            "vigil_request_duration_seconds",
            Some(Unit::Seconds),
            "Inference latency by stage (preprocess, queue, inference, postprocess, total)",
        );
        recorder.describe_counter(
            "vigil_requests_total".into(),
            None,
            "Inference requests by endpoint, status class and error code".into(),
        );
        recorder.describe_gauge("vigil_requests_in_flight".into(), None, "Inference requests being served".into());
        recorder.describe_gauge("vigil_queue_depth".into(), None, "Requests waiting for a model's workers".into());
        recorder.describe_gauge("vigil_model_ready".into(), None, "1 when the version is loaded and warm".into());
        recorder.describe_counter(
            "vigil_shadow_requests_total".into(),
            None,
            "Shadow copies by outcome: agreed, disagreed, failed, dropped".into(),
        );
        recorder.describe_gauge("vigil_build_info".into(), None, "Always 1; the labels say which build".into());
        recorder
            .register_gauge(&key("vigil_build_info", &[("version", env!("CARGO_PKG_VERSION").into())]), &METADATA)
            .set(1.0);
        let in_flight = recorder.register_gauge(&Key::from_name("vigil_requests_in_flight"), &METADATA);
        Metrics {
            recorder,
            handle,
            stages: Mutex::new(HashMap::new()),
            requests: Mutex::new(HashMap::new()),
            in_flight,
        }
    }

    /// Drains the histograms' recent samples into their buckets. Needed at
    /// least every few seconds: until then samples are kept one by one.
    pub fn upkeep(&self) {
        self.handle.run_upkeep();
    }

    /// A request started; the guard counts it out when dropped.
    pub fn in_flight(&self) -> InFlight {
        self.in_flight.increment(1.0);
        InFlight(self.in_flight.clone())
    }

    /// Records one answered request's stage durations.
    pub fn observe(&self, endpoint: &str, version: &str, stages: &[Duration; 5]) {
        let histograms = {
            let mut all = self.stages.lock().unwrap_or_else(|p| p.into_inner());
            let known = all.get(endpoint).and_then(|v| v.get(version)).cloned();
            known.unwrap_or_else(|| {
                let made = Arc::new(STAGES.map(|stage| {
                    let labels =
                        [("endpoint", endpoint.to_owned()), ("version", version.to_owned()), ("stage", stage.into())];
                    self.recorder.register_histogram(&key("vigil_request_duration_seconds", &labels), &METADATA)
                }));
                all.entry(endpoint.to_owned()).or_default().insert(version.to_owned(), Arc::clone(&made));
                made
            })
        };
        for (h, d) in histograms.iter().zip(stages) {
            h.record(d.as_secs_f64());
        }
    }

    /// Counts a request by endpoint (empty when it named none that exists),
    /// status class (`2xx`…) and error code (empty on success).
    pub fn count(&self, endpoint: &str, status: u16, code: &'static str) {
        let class = match status {
            200..=299 => "2xx",
            400..=499 => "4xx",
            500..=599 => "5xx",
            _ => "other",
        };
        let mut all = self.requests.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(counter) = all.get(endpoint).and_then(|m| m.get(&(class, code))) {
            counter.increment(1);
            return;
        }
        let labels = [("endpoint", endpoint.to_owned()), ("status", class.into()), ("code", code.into())];
        let counter = self.recorder.register_counter(&key("vigil_requests_total", &labels), &METADATA);
        counter.increment(1);
        all.entry(endpoint.to_owned()).or_default().insert((class, code), counter);
    }

    /// The Prometheus text format, with the state gauges read now.
    pub fn render(&self, service: &InferenceService) -> String {
        let set = |name: &'static str, labels: &[(&'static str, String)], value: f64| {
            self.recorder.register_gauge(&key(name, labels), &METADATA).set(value);
        };
        for endpoint in service.models().endpoints() {
            for v in &endpoint.versions {
                let labels = [("endpoint", endpoint.name.clone()), ("version", v.version.clone())];
                let state = v.state();
                let (ready, queued) = match &*state {
                    VersionState::Ready { scheduler, .. } => (1.0, scheduler.queued() as f64),
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
                    self.recorder.register_counter(&key("vigil_shadow_requests_total", &labels), &METADATA).absolute(n);
                }
            }
        }
        let mut text = self.handle.render();
        text.push_str(&process_metrics());
        text
    }
}

/// Counts a request out of `vigil_requests_in_flight` when dropped.
pub struct InFlight(Gauge);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.decrement(1.0);
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
