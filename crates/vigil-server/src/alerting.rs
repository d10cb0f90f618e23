//! Vigil's own alerting: every `alerts.interval_seconds`, the signals of each
//! endpoint over the last interval (request rate, 5xx ratio, p99 latency,
//! queue depth) are worked out from the metrics' running totals and given to
//! the rule engine (`vigil-monitor`). Changes of state go to the log and the
//! webhooks, from the one replica that leads (a PostgreSQL advisory lock), so
//! that several replicas do not send the same notification several times.
//! All of it runs on its own timer; the request path only bumps counters.

use crate::metrics::{EndpointTotals, LATENCY_BOUNDS};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use vigil_monitor::{Alert, AlertRule, Engine, Notifier, NotifierConfig, Samples, Signal, Webhook};
use vigil_runtime::{InferenceService, VersionState};
use vigil_store::MetadataStore;

/// `[alerts]` in the configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AlertsConfig {
    /// How often rules are evaluated, in seconds (also the window of each signal).
    pub interval_seconds: u64,
    pub rules: Vec<AlertRule>,
    pub webhooks: Vec<WebhookConfig>,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        AlertsConfig { interval_seconds: 10, rules: Vec::new(), webhooks: Vec::new() }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    pub url: String,
    /// Signs each delivery: `x-vigil-signature: sha256=<HMAC-SHA-256 of the body>`.
    #[serde(default)]
    pub secret: Option<String>,
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
}

fn default_timeout_ms() -> u64 {
    10_000
}

pub struct Alerting {
    engine: Mutex<Engine>,
    notifier: Notifier,
    interval: Duration,
    /// Rules from the configuration; those made through the API are in the store.
    configured: Vec<AlertRule>,
    store: Arc<dyn MetadataStore>,
}

impl Alerting {
    /// Checks the rules and webhooks; starts the notifier on this runtime.
    /// Rules made through the API are added by [`Alerting::reload`].
    pub fn new(config: &AlertsConfig, store: Arc<dyn MetadataStore>) -> Result<Arc<Alerting>, String> {
        let interval = Duration::from_secs(config.interval_seconds.max(1));
        let mut engine = Engine::new(interval);
        engine.set_rules(config.rules.clone(), SystemTime::now()).map_err(|e| format!("alerts.rules: {e}"))?;
        let webhooks = config
            .webhooks
            .iter()
            .map(|w| Webhook {
                url: w.url.clone(),
                secret: w.secret.clone(),
                timeout: Duration::from_millis(w.timeout_ms.max(1)),
            })
            .collect();
        let notifier = Notifier::start(NotifierConfig { webhooks, ..Default::default() }).map_err(|e| e.to_string())?;
        Ok(Arc::new(Alerting {
            engine: Mutex::new(engine),
            notifier,
            interval,
            configured: config.rules.clone(),
            store,
        }))
    }

    /// Whether `name` is a rule of the configuration (which the API cannot change).
    pub fn configured(&self, name: &str) -> bool {
        self.configured.iter().any(|r| r.name == name)
    }

    /// Makes the rule set the configuration's plus the store's. Alerts of
    /// rules that changed or went end now, and are notified as resolved.
    /// A stored rule that no longer reads, or clashes with a configured one,
    /// is left out with a warning (the API refuses both).
    pub async fn reload(&self) -> Result<(), vigil_core::Error> {
        let mut rules = self.configured.clone();
        for stored in self.store.alert_rules().await? {
            match serde_json::from_str::<AlertRule>(&stored.rule) {
                Ok(rule) if !self.configured(&rule.name) => rules.push(rule),
                Ok(_) => {
                    tracing::warn!(rule = stored.name, "a stored alert rule has a configured rule's name: left out")
                }
                Err(e) => tracing::warn!(rule = stored.name, error = %e, "a stored alert rule does not read: left out"),
            }
        }
        let at = SystemTime::now();
        let changed = {
            let mut engine = self.engine.lock().unwrap_or_else(|p| p.into_inner());
            if engine.rules() == rules.as_slice() {
                return Ok(());
            }
            engine.set_rules(rules, at).map_err(|e| vigil_core::Error::invalid_input(e.to_string()))?
        };
        self.notify(&changed, at).await;
        Ok(())
    }

    /// Sends `transitions` from the leading replica only.
    async fn notify(&self, transitions: &[vigil_monitor::Transition], at: SystemTime) {
        if transitions.is_empty() {
            return;
        }
        if self.store.lead().await {
            self.notifier.notify_transitions(transitions, at);
        } else {
            tracing::debug!(changes = transitions.len(), "alerts changed; the leading replica notifies");
        }
    }

    /// Pending and firing alerts.
    pub fn active(&self) -> Vec<Alert> {
        self.engine.lock().unwrap_or_else(|p| p.into_inner()).active()
    }

    pub fn rules(&self) -> Vec<AlertRule> {
        self.engine.lock().unwrap_or_else(|p| p.into_inner()).rules().to_vec()
    }

    /// Evaluates the rules every interval, for as long as the runtime runs,
    /// first picking up rules changed through any replica's API.
    pub async fn run(self: Arc<Self>, telemetry: Arc<crate::telemetry::Telemetry>, service: InferenceService) {
        let totals = || telemetry.metrics.totals();
        let mut every = tokio::time::interval(self.interval);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last = (totals(), Instant::now());
        loop {
            every.tick().await;
            if let Err(e) = self.reload().await {
                tracing::warn!(error = %e, "could not reload the alert rules");
            }
            let now = (totals(), Instant::now());
            let mut samples = signals(&last.0, &now.0, now.1.duration_since(last.1));
            queue_depths(&service, &mut samples);
            drift_shares(&telemetry, &mut samples);
            self.accuracies(&service, &mut samples).await;
            last = now;
            let at = SystemTime::now();
            let transitions = {
                let mut engine = self.engine.lock().unwrap_or_else(|p| p.into_inner());
                // Alerts of endpoints deleted since the last evaluation end now
                // (a firing alert waits for data that would never come).
                let models = service.models();
                let gone: std::collections::BTreeSet<String> =
                    engine.active().into_iter().map(|a| a.endpoint).filter(|e| models.endpoint(e).is_none()).collect();
                let mut transitions: Vec<_> = gone.iter().flat_map(|e| engine.remove_endpoint(e, at)).collect();
                transitions.extend(engine.evaluate(at, &samples));
                transitions
            };
            self.notify(&transitions, at).await;
        }
    }

    /// `accuracy`: for endpoints an accuracy rule watches, the accuracy over
    /// the last hour's predictions with ground truth, of the version with the
    /// most (so a canary's few do not stand for the endpoint). Read from the
    /// store only when such a rule exists.
    async fn accuracies(&self, service: &InferenceService, samples: &mut Samples) {
        let watched: Vec<Option<String>> = {
            let engine = self.engine.lock().unwrap_or_else(|p| p.into_inner());
            engine.rules().iter().filter(|r| r.signal == Signal::Accuracy).map(|r| r.endpoint.clone()).collect()
        };
        if watched.is_empty() {
            return;
        }
        let endpoints: std::collections::BTreeSet<String> = if watched.iter().any(Option::is_none) {
            service.models().endpoints().map(|e| e.name.clone()).collect()
        } else {
            watched.into_iter().flatten().collect()
        };
        let now = crate::predictions::micros(SystemTime::now());
        for endpoint in endpoints {
            match crate::feedback::quality(&*self.store, service, &endpoint, now - 3_600_000_000, now, 3600).await {
                Ok(versions) => {
                    let best = versions.iter().filter_map(|v| v.scores.classification.as_ref()).max_by_key(|c| c.count);
                    if let Some(c) = best {
                        samples.insert(Signal::Accuracy, endpoint.as_str(), c.accuracy);
                    }
                }
                Err(e) => tracing::warn!(%endpoint, error = %e, "could not read ground truth for an accuracy rule"),
            }
        }
    }

    /// Firing alerts by rule, for `vigil_alerts_firing`.
    pub fn firing_by_rule(&self) -> Vec<(String, f64)> {
        let engine = self.engine.lock().unwrap_or_else(|p| p.into_inner());
        let active = engine.active();
        engine
            .rules()
            .iter()
            .map(|r| {
                let firing =
                    active.iter().filter(|a| a.rule == r.name && a.state == vigil_monitor::AlertState::Firing).count();
                (r.name.clone(), firing as f64)
            })
            .collect()
    }
}

/// Request rate, 5xx ratio and p99 latency of each endpoint between two
/// readings of the totals. An endpoint without requests in the window has a
/// rate of 0 and no ratio or latency ("no data", which never fires).
pub fn signals(
    before: &HashMap<String, EndpointTotals>,
    after: &HashMap<String, EndpointTotals>,
    elapsed: Duration,
) -> Samples {
    let mut samples = Samples::new();
    let seconds = elapsed.as_secs_f64().max(1e-3);
    for (endpoint, now) in after.iter().filter(|(e, _)| !e.is_empty()) {
        let was = before.get(endpoint).cloned().unwrap_or_default();
        let requests = now.requests.saturating_sub(was.requests);
        samples.insert(Signal::RequestRate, endpoint.as_str(), requests as f64 / seconds);
        if requests == 0 {
            continue;
        }
        let errors = now.server_errors.saturating_sub(was.server_errors);
        samples.insert(Signal::ErrorRatio, endpoint.as_str(), errors as f64 / requests as f64);
        let buckets: Vec<u64> = now.latency.iter().zip(&was.latency).map(|(n, w)| n.saturating_sub(*w)).collect();
        if let Some(p99) = quantile(0.99, &buckets) {
            samples.insert(Signal::P99LatencySeconds, endpoint.as_str(), p99);
        }
    }
    samples
}

/// `drift_score`: the share of an endpoint's features that drifted in this
/// replica's latest closed window (the largest over its versions), 0..=1.
/// Without a recent window there is no sample ("no data" never fires).
fn drift_shares(telemetry: &crate::telemetry::Telemetry, samples: &mut Samples) {
    let Some(monitoring) = &telemetry.monitoring else { return };
    let mut shares: HashMap<String, f64> = HashMap::new();
    monitoring.latest(|endpoint, _, report| {
        let share = shares.entry(endpoint.to_owned()).or_insert(0.0);
        *share = share.max(report.drift_share);
    });
    for (endpoint, share) in shares {
        samples.insert(Signal::DriftScore, endpoint.as_str(), share);
    }
}

/// Requests waiting, summed over each endpoint's versions.
fn queue_depths(service: &InferenceService, samples: &mut Samples) {
    for endpoint in service.models().endpoints() {
        let queued: usize = endpoint
            .versions
            .iter()
            .map(|v| match &*v.state() {
                VersionState::Ready { scheduler, .. } => scheduler.queued(),
                _ => 0,
            })
            .sum();
        samples.insert(Signal::QueueDepth, endpoint.name.as_str(), queued as f64);
    }
}

/// The `q` quantile of counts per latency bucket (the last is over the last
/// bound), interpolated linearly within the bucket as Prometheus'
/// `histogram_quantile` does, so that the built-in rules and
/// `deploy/prometheus/alerts.yml` agree.
pub fn quantile(q: f64, counts: &[u64]) -> Option<f64> {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = q * total as f64;
    let mut below = 0u64;
    for (i, &n) in counts.iter().enumerate() {
        if n > 0 && (below + n) as f64 >= rank {
            let Some(&upper) = LATENCY_BOUNDS.get(i) else {
                // Over the last bound: the bound is all that is known.
                return LATENCY_BOUNDS.last().copied();
            };
            let lower = if i == 0 { 0.0 } else { LATENCY_BOUNDS[i - 1] };
            return Some(lower + (upper - lower) * (rank - below as f64) / n as f64);
        }
        below += n;
    }
    LATENCY_BOUNDS.last().copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn totals(requests: u64, errors: u64, fast: u64, slow: u64) -> EndpointTotals {
        let mut t = EndpointTotals { requests, server_errors: errors, ..Default::default() };
        t.latency[4] = fast; // (0.0005, 0.001]
        t.latency[10] = slow; // (0.05, 0.1]
        t
    }

    #[test]
    fn signals_are_the_change_over_the_window() {
        let before = HashMap::from([("fraud".to_owned(), totals(100, 1, 100, 0))]);
        let after = HashMap::from([
            ("fraud".to_owned(), totals(300, 21, 298, 2)),
            ("idle".to_owned(), totals(0, 0, 0, 0)),
            (String::new(), totals(5, 0, 5, 0)),
        ]);
        let s = signals(&before, &after, Duration::from_secs(10));
        assert_eq!(s.get(Signal::RequestRate, "fraud"), Some(20.0));
        assert_eq!(s.get(Signal::ErrorRatio, "fraud"), Some(0.1));
        // 198 fast and 2 slow of 200: the 99th percentile is the top of the fast bucket.
        assert_eq!(s.get(Signal::P99LatencySeconds, "fraud"), Some(0.001));
        assert_eq!(s.get(Signal::RequestRate, "idle"), Some(0.0));
        assert_eq!(s.get(Signal::ErrorRatio, "idle"), None, "no traffic is no data, not a ratio of 0");
        assert_eq!(s.get(Signal::RequestRate, ""), None, "requests for no endpoint are not an endpoint");
    }

    #[test]
    fn quantiles_interpolate_like_prometheus() {
        let mut counts = vec![0u64; LATENCY_BOUNDS.len() + 1];
        assert_eq!(quantile(0.99, &counts), None);
        counts[10] = 100; // all in (0.05, 0.1]
        let q = quantile(0.5, &counts).expect("data");
        assert!((q - 0.075).abs() < 1e-12, "{q}");
        counts[LATENCY_BOUNDS.len()] = 100; // half over the last bound
        assert_eq!(quantile(0.99, &counts), Some(10.0));
    }
}
