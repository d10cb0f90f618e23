//! What every answered inference leaves behind, whichever protocol it came on:
//! its metrics, one log line, its trace and, when sampled, its prediction log
//! record. The adapters describe the request once ([`Answered`]); this module
//! is the one place that turns it into all of those.

use crate::metrics::Metrics;
use crate::predictions::{PredictionLog, Record};
use crate::traces::{RequestSpan, RequestTrace, TraceParent, Traces};
use opentelemetry::KeyValue;
use std::sync::Arc;
use std::time::Duration;
use std::time::SystemTime;
use vigil_runtime::{InferenceService, Logged, TraceIds};

/// The protocol a request came on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Rest,
    Grpc,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Rest => "rest",
            Protocol::Grpc => "grpc",
        }
    }
}

/// One answered inference request.
pub struct Answered<'a> {
    pub protocol: Protocol,
    pub request_id: &'a str,
    /// The caller's `traceparent`, if any.
    pub trace: Option<TraceParent>,
    /// The request's ids when it is traced (see [`Telemetry::start_trace`]).
    pub ids: Option<TraceIds>,
    /// The principal the guard let through (empty on an unguarded router).
    pub principal: &'a str,
    /// The endpoint called, or empty when it does not exist.
    pub endpoint: &'a str,
    /// The version that answered, or empty when none was chosen.
    pub version: &'a str,
    /// The HTTP status (gRPC answers are counted by the status REST would give).
    pub status: u16,
    /// The error code, empty on success.
    pub code: &'static str,
    /// Preprocess, queue, inference, postprocess, total (as in `Server-Timing`).
    pub stages: [Duration; 5],
    /// Rows of the model run, on one request per run.
    pub batch: Option<usize>,
}

impl<'a> Answered<'a> {
    /// A request not yet answered.
    pub fn start(
        protocol: Protocol,
        request_id: &'a str,
        trace: Option<TraceParent>,
        ids: Option<TraceIds>,
        principal: &'a str,
    ) -> Self {
        Answered {
            protocol,
            request_id,
            trace,
            ids,
            principal,
            endpoint: "",
            version: "",
            status: 200,
            code: "",
            stages: [Duration::ZERO; 5],
            batch: None,
        }
    }

    /// Answered by `endpoint` as `served` says (its prediction log copy taken out first).
    pub fn served(&mut self, endpoint: &'a str, served: &'a Served, status: u16) {
        self.endpoint = endpoint;
        self.version = &served.version;
        self.stages = served.stages;
        self.batch = served.batch;
        self.status = status;
    }

    /// Refused or failed with `status` and `code`; `endpoint` is empty when
    /// the request named none that exists.
    pub fn failed(&mut self, endpoint: &'a str, status: u16, code: &'static str, elapsed: Duration) {
        self.endpoint = endpoint;
        self.status = status;
        self.code = code;
        self.stages[4] = elapsed;
    }
}

/// What an answered request leaves for telemetry, from the adapters.
pub struct Served {
    pub version: String,
    pub stages: [Duration; 5],
    pub batch: Option<usize>,
    pub logged: Option<Logged>,
}

pub struct Telemetry {
    /// Records nothing at all when false: the overhead benchmark's baseline.
    pub enabled: bool,
    pub metrics: Metrics,
    pub traces: Option<Arc<Traces>>,
    pub predictions: Option<Arc<PredictionLog>>,
    pub alerts: Option<Arc<crate::alerting::Alerting>>,
    /// Drift verdicts of the latest windows, for `/metrics`.
    pub monitoring: Option<Arc<crate::monitoring::Monitoring>>,
}

impl Telemetry {
    /// Metrics only: no exporter, no prediction log.
    pub fn metrics_only() -> Telemetry {
        Telemetry {
            enabled: true,
            metrics: Metrics::default(),
            traces: None,
            predictions: None,
            alerts: None,
            monitoring: None,
        }
    }

    /// Opens a request's trace (none without an exporter, or when sampling
    /// leaves it out); its shadow copies go under its ids.
    pub fn start_trace(&self, parent: Option<TraceParent>) -> Option<RequestTrace> {
        self.traces.as_ref().and_then(|t| t.start(parent))
    }

    /// `/metrics`: the recorder's series, with the state the other parts keep
    /// (models, shadows, the prediction log) read now.
    pub fn render(&self, service: &InferenceService) -> String {
        if let Some(log) = &self.predictions {
            for (endpoint, written, dropped) in log.stats() {
                for (outcome, n) in [("written", written), ("dropped", dropped)] {
                    let labels = [("endpoint", endpoint.clone()), ("outcome", outcome.to_owned())];
                    self.metrics.counter("vigil_prediction_log_records_total", &labels, n);
                }
            }
        }
        if let Some(alerts) = &self.alerts {
            for (rule, firing) in alerts.firing_by_rule() {
                self.metrics.gauge("vigil_alerts_firing", &[("rule", rule)], firing);
            }
        }
        if let Some(monitoring) = &self.monitoring {
            monitoring.latest(|endpoint, version, report| {
                let labels = [("endpoint", endpoint.to_owned()), ("version", version.to_owned())];
                self.metrics.gauge("vigil_drift_share", &labels, report.drift_share);
                for f in report.features.iter().filter(|f| f.score.is_some()) {
                    let labels = [
                        ("endpoint", endpoint.to_owned()),
                        ("version", version.to_owned()),
                        ("feature", f.feature.clone()),
                        ("method", f.method.as_str().to_owned()),
                    ];
                    self.metrics.gauge("vigil_feature_drift_score", &labels, f.score.unwrap_or(f64::NAN));
                    self.metrics.gauge("vigil_feature_drifted", &labels[..3], f64::from(u8::from(f.drifted)));
                }
            });
        }
        self.metrics.render(service)
    }

    /// Records an answered request; `logged` is the copy the prediction log
    /// drew, `trace` the request's open trace.
    pub fn answered(&self, a: &Answered<'_>, logged: Option<Logged>, trace: Option<RequestTrace>) {
        if !self.enabled {
            return;
        }
        if let (Some(log), Some(logged)) = (&self.predictions, logged) {
            log.record(Record {
                endpoint: a.endpoint,
                version: a.version,
                request_id: a.request_id,
                principal: a.principal,
                time: SystemTime::now(),
                logged,
            });
        }
        self.metrics.record(a.endpoint, a.version, a.status, a.code, &a.stages, a.batch);
        let micros = |d: Duration| u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        let trace_id = a.ids.map(|i| hex::encode(i.trace_id)).or_else(|| a.trace.map(|t| t.trace_id_hex()));
        tracing::info!(
            target: "vigil::request",
            request_id = a.request_id,
            trace_id = trace_id.as_deref().unwrap_or(""),
            protocol = a.protocol.as_str(),
            principal = a.principal,
            endpoint = a.endpoint,
            version = a.version,
            status = a.status,
            code = a.code,
            preprocess_us = micros(a.stages[0]),
            queue_us = micros(a.stages[1]),
            inference_us = micros(a.stages[2]),
            postprocess_us = micros(a.stages[3]),
            total_us = micros(a.stages[4]),
            "inference"
        );
        if let (Some(traces), Some(trace)) = (&self.traces, trace) {
            traces.record(RequestSpan {
                trace,
                attributes: vec![
                    KeyValue::new("vigil.endpoint", a.endpoint.to_owned()),
                    KeyValue::new("vigil.version", a.version.to_owned()),
                    KeyValue::new("vigil.request_id", a.request_id.to_owned()),
                    KeyValue::new("rpc.system", a.protocol.as_str()),
                    KeyValue::new("http.response.status_code", i64::from(a.status)),
                ],
                stages: a.stages,
                error: (!a.code.is_empty()).then(|| a.code.to_owned()),
            });
        }
    }
}
