//! The alert engine: rules plus the state of every alert instance (one per
//! rule and endpoint), advanced by [`Engine::evaluate`] once per evaluation
//! interval with the latest signal values.
//!
//! An instance moves inactive → pending (condition true, `for_seconds` not yet
//! elapsed) → firing (true for `for_seconds`; 0 fires at once) → inactive
//! again when the condition is false ([`Transition::Resolved`]). A transition
//! is reported only when the state changes, so a firing alert evaluated again
//! reports nothing.
//!
//! **No data.** A signal without a value for an endpoint in an evaluation
//! (no traffic, hence no error ratio; a non-finite value counts the same) is
//! neither true nor false:
//! - it never makes an alert pending or firing, and never feeds an anomaly
//!   baseline;
//! - a *pending* alert goes back to inactive ([`Transition::Cancelled`]): the
//!   condition was not seen to hold for the whole `for_seconds`, so the
//!   clock restarts when data returns;
//! - a *firing* alert stays firing, unchanged: silence is not recovery (when
//!   every request fails, clients may stop sending, and "resolved" would be a
//!   false all-clear). It resolves when a value shows the condition false,
//!   when its rule is removed or changed ([`Engine::set_rules`]) or when its
//!   endpoint is removed ([`Engine::remove_endpoint`]).
//!
//! The engine is plain synchronous code with no I/O; the caller owns the
//! clock and the schedule, which keeps it testable with explicit times.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime};

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::alerts::anomaly::Detector;
use crate::alerts::rule::{AlertRule, Condition, RuleError, Signal};

/// Signal values for one evaluation: at most one per (signal, endpoint).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Samples {
    values: BTreeMap<Signal, BTreeMap<String, f64>>,
}

impl Samples {
    /// No values.
    pub fn new() -> Samples {
        Samples::default()
    }

    /// Sets `signal` for `endpoint`, replacing an earlier value.
    pub fn insert(&mut self, signal: Signal, endpoint: impl Into<String>, value: f64) {
        self.values.entry(signal).or_default().insert(endpoint.into(), value);
    }

    /// The value of `signal` for `endpoint`, if one was given.
    pub fn get(&self, signal: Signal, endpoint: &str) -> Option<f64> {
        self.values.get(&signal)?.get(endpoint).copied()
    }

    /// The endpoints that have a value for `signal`.
    pub fn endpoints(&self, signal: Signal) -> impl Iterator<Item = &str> {
        self.values.get(&signal).into_iter().flat_map(|by_endpoint| by_endpoint.keys().map(String::as_str))
    }
}

impl<E: Into<String>> FromIterator<(Signal, E, f64)> for Samples {
    fn from_iter<I: IntoIterator<Item = (Signal, E, f64)>>(iter: I) -> Samples {
        let mut samples = Samples::new();
        for (signal, endpoint, value) in iter {
            samples.insert(signal, endpoint, value);
        }
        samples
    }
}

/// Where an alert stands, as the API and receivers see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertState {
    /// The condition holds but not yet for `for_seconds`.
    Pending,
    /// The condition has held for `for_seconds`.
    Firing,
    /// The alert has ended (only in [`Transition::Resolved`] and
    /// [`Transition::Cancelled`]; never listed by [`Engine::active`]).
    Resolved,
}

/// One alert instance as reported to the API and to receivers.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Alert {
    /// The rule's name.
    pub rule: String,
    /// The endpoint the instance is about.
    pub endpoint: String,
    /// See [`AlertState`].
    pub state: AlertState,
    /// From the rule.
    pub severity: String,
    /// From the rule.
    pub summary: String,
    /// The last value of the rule's signal seen for this endpoint.
    pub value: f64,
    /// When the alert entered `state` (RFC 3339, UTC, seconds).
    pub since: String,
    /// Stable id of (rule, endpoint): the same across evaluations, restarts
    /// and releases, so receivers can group notifications.
    pub fingerprint: String,
}

/// A change of state of one alert instance.
#[derive(Debug, Clone, PartialEq)]
pub enum Transition {
    /// Inactive → pending.
    Pending(Alert),
    /// Pending or inactive → firing. Notified.
    Firing(Alert),
    /// Firing → inactive. Notified.
    Resolved(Alert),
    /// Pending → inactive before it fired. Not notified: receivers never
    /// heard of it.
    Cancelled(Alert),
}

impl Transition {
    /// The alert as it stands after the transition.
    pub fn alert(&self) -> &Alert {
        match self {
            Transition::Pending(alert)
            | Transition::Firing(alert)
            | Transition::Resolved(alert)
            | Transition::Cancelled(alert) => alert,
        }
    }
}

/// The state of one (rule, endpoint) instance.
#[derive(Debug, Clone)]
struct Instance {
    phase: Phase,
    /// Last value seen; reported in alerts.
    value: f64,
    /// The anomaly baseline, for anomaly rules.
    detector: Option<Detector>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    Inactive,
    Pending { since: SystemTime },
    Firing { since: SystemTime },
}

/// Instances are keyed by (rule name, endpoint); rule names are unique.
type Key = (String, String);

/// Alert rules and the state of their instances.
#[derive(Debug, Clone)]
pub struct Engine {
    rules: Vec<AlertRule>,
    interval: Duration,
    instances: BTreeMap<Key, Instance>,
}

impl Engine {
    /// An engine without rules, to be evaluated every `interval` (which
    /// turns anomaly baselines given in seconds into sample counts).
    pub fn new(interval: Duration) -> Engine {
        Engine { rules: Vec::new(), interval, instances: BTreeMap::new() }
    }

    /// The current rules.
    pub fn rules(&self) -> &[AlertRule] {
        &self.rules
    }

    /// Replaces the rule set after validating every rule and checking that
    /// names are unique; on error nothing changes. Rules whose definition
    /// did not change keep their state (alerts and anomaly baselines); alerts
    /// of rules removed or changed end now, reported as `Resolved` (was
    /// firing) or `Cancelled` (was pending), so no receiver is left with an
    /// alert that never resolves.
    pub fn set_rules(&mut self, rules: Vec<AlertRule>, now: SystemTime) -> Result<Vec<Transition>, RuleError> {
        let mut names = BTreeSet::new();
        for rule in &rules {
            rule.validate()?;
            if !names.insert(rule.name.as_str()) {
                return Err(RuleError::new(&rule.name, "name", "is used by more than one rule"));
            }
        }
        let kept: BTreeSet<&str> =
            rules.iter().filter(|rule| self.rules.contains(rule)).map(|rule| rule.name.as_str()).collect();
        let mut transitions = Vec::new();
        for rule in self.rules.iter().filter(|rule| !kept.contains(rule.name.as_str())) {
            end_instances(&mut self.instances, rule, now, |_| true, &mut transitions);
        }
        self.instances.retain(|(rule, _), _| kept.contains(rule.as_str()));
        self.rules = rules;
        Ok(transitions)
    }

    /// Forgets every alert instance of `endpoint` (the endpoint was deleted):
    /// its alerts end now, reported as in [`Engine::set_rules`].
    pub fn remove_endpoint(&mut self, endpoint: &str, now: SystemTime) -> Vec<Transition> {
        let mut transitions = Vec::new();
        for rule in &self.rules {
            end_instances(&mut self.instances, rule, now, |name| name == endpoint, &mut transitions);
        }
        self.instances.retain(|(_, name), _| name != endpoint);
        transitions
    }

    /// Advances every alert instance with this evaluation's values and
    /// returns the changes of state, in rule order then endpoint order.
    pub fn evaluate(&mut self, now: SystemTime, samples: &Samples) -> Vec<Transition> {
        let mut transitions = Vec::new();
        for rule in &self.rules {
            for endpoint in instance_endpoints(rule, samples, &self.instances) {
                let value = samples.get(rule.signal, &endpoint).filter(|value| value.is_finite());
                let key = (rule.name.clone(), endpoint);
                let instance = self.instances.entry(key.clone()).or_insert_with(|| Instance::new(rule, self.interval));
                transitions.extend(instance.step(rule, &key.1, value, now));
            }
        }
        // Inactive threshold instances carry nothing worth keeping; dropping
        // them keeps memory bounded by the endpoints that have alerts.
        self.instances.retain(|_, instance| instance.phase != Phase::Inactive || instance.detector.is_some());
        transitions
    }

    /// Pending and firing alerts, sorted by rule name, then endpoint.
    pub fn active(&self) -> Vec<Alert> {
        let rules: BTreeMap<&str, &AlertRule> = self.rules.iter().map(|rule| (rule.name.as_str(), rule)).collect();
        self.instances
            .iter()
            .filter_map(|((rule_name, endpoint), instance)| {
                let rule = rules.get(rule_name.as_str())?;
                let (state, since) = match instance.phase {
                    Phase::Inactive => return None,
                    Phase::Pending { since } => (AlertState::Pending, since),
                    Phase::Firing { since } => (AlertState::Firing, since),
                };
                Some(alert(rule, endpoint, state, instance.value, since))
            })
            .collect()
    }
}

/// Ends the pending and firing instances of `rule` whose endpoint matches.
fn end_instances(
    instances: &mut BTreeMap<Key, Instance>,
    rule: &AlertRule,
    now: SystemTime,
    matches: impl Fn(&str) -> bool,
    transitions: &mut Vec<Transition>,
) {
    for ((rule_name, endpoint), instance) in instances.iter_mut() {
        if rule_name == &rule.name && matches(endpoint) {
            transitions.extend(instance.end(rule, endpoint, now));
        }
    }
}

/// The endpoints `rule` is evaluated for: its own endpoint, or every endpoint
/// with a value for its signal plus every endpoint it already has state for
/// (so that a pending alert without data is cancelled).
fn instance_endpoints(rule: &AlertRule, samples: &Samples, instances: &BTreeMap<Key, Instance>) -> Vec<String> {
    if let Some(endpoint) = &rule.endpoint {
        return vec![endpoint.clone()];
    }
    let with_data = samples.endpoints(rule.signal);
    let with_state = instances
        .range((rule.name.clone(), String::new())..)
        .take_while(|((name, _), _)| name == &rule.name)
        .map(|((_, endpoint), _)| endpoint.as_str());
    let all: BTreeSet<&str> = with_data.chain(with_state).collect();
    all.into_iter().map(str::to_owned).collect()
}

impl Instance {
    fn new(rule: &AlertRule, interval: Duration) -> Instance {
        let detector = match &rule.condition {
            Condition::Anomaly(anomaly) => Some(Detector::new(anomaly, interval)),
            Condition::Threshold { .. } => None,
        };
        Instance { phase: Phase::Inactive, value: f64::NAN, detector }
    }

    /// One evaluation; `value` is `None` for no data (see the module docs).
    fn step(&mut self, rule: &AlertRule, endpoint: &str, value: Option<f64>, now: SystemTime) -> Option<Transition> {
        let Some(value) = value else {
            return match self.phase {
                Phase::Pending { .. } => self.end(rule, endpoint, now),
                Phase::Inactive | Phase::Firing { .. } => None,
            };
        };
        self.value = value;
        let holds = match (&rule.condition, &mut self.detector) {
            (Condition::Threshold { op, value: limit }, _) => op.holds(value, *limit),
            (Condition::Anomaly(_), Some(detector)) => detector.observe(value),
            (Condition::Anomaly(_), None) => false,
        };
        let hold_for = Duration::from_secs(rule.for_seconds);
        match (self.phase, holds) {
            (Phase::Inactive, true) if hold_for.is_zero() => Some(self.fire(rule, endpoint, now)),
            (Phase::Inactive, true) => {
                self.phase = Phase::Pending { since: now };
                Some(Transition::Pending(alert(rule, endpoint, AlertState::Pending, value, now)))
            }
            (Phase::Pending { since }, true) => {
                // A clock that went backwards counts as no time elapsed.
                let held = now.duration_since(since).unwrap_or(Duration::ZERO);
                (held >= hold_for).then(|| self.fire(rule, endpoint, now))
            }
            (Phase::Pending { .. } | Phase::Firing { .. }, false) => self.end(rule, endpoint, now),
            (Phase::Inactive, false) | (Phase::Firing { .. }, true) => None,
        }
    }

    fn fire(&mut self, rule: &AlertRule, endpoint: &str, now: SystemTime) -> Transition {
        self.phase = Phase::Firing { since: now };
        Transition::Firing(alert(rule, endpoint, AlertState::Firing, self.value, now))
    }

    /// Back to inactive: `Resolved` from firing, `Cancelled` from pending.
    fn end(&mut self, rule: &AlertRule, endpoint: &str, now: SystemTime) -> Option<Transition> {
        let was = std::mem::replace(&mut self.phase, Phase::Inactive);
        let ended = alert(rule, endpoint, AlertState::Resolved, self.value, now);
        match was {
            Phase::Inactive => None,
            Phase::Pending { .. } => Some(Transition::Cancelled(ended)),
            Phase::Firing { .. } => Some(Transition::Resolved(ended)),
        }
    }
}

fn alert(rule: &AlertRule, endpoint: &str, state: AlertState, value: f64, since: SystemTime) -> Alert {
    Alert {
        rule: rule.name.clone(),
        endpoint: endpoint.to_owned(),
        state,
        severity: rule.severity.clone(),
        summary: rule.summary.clone(),
        value,
        since: humantime::format_rfc3339_seconds(since).to_string(),
        fingerprint: fingerprint(&rule.name, endpoint),
    }
}

/// The first 8 bytes of SHA-256 over `rule`, a NUL and `endpoint`, in hex.
/// Neither name can contain a NUL, so distinct pairs never collide by
/// concatenation; a fixed hash (not std's randomised one) keeps it stable.
pub fn fingerprint(rule: &str, endpoint: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(rule.as_bytes());
    hasher.update([0]);
    hasher.update(endpoint.as_bytes());
    hex::encode(&hasher.finalize()[..8])
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::alerts::rule::{AnomalyCondition, AnomalyMethod, Comparison, Direction};

    const INTERVAL: Duration = Duration::from_secs(15);

    fn t(seconds: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000 + seconds)
    }

    fn rule(name: &str, endpoint: Option<&str>, limit: f64, for_seconds: u64) -> AlertRule {
        AlertRule {
            name: name.into(),
            signal: Signal::ErrorRatio,
            endpoint: endpoint.map(str::to_owned),
            condition: Condition::Threshold { op: Comparison::Greater, value: limit },
            for_seconds,
            severity: "critical".into(),
            summary: "too many errors".into(),
        }
    }

    fn engine(rules: Vec<AlertRule>) -> Engine {
        let mut engine = Engine::new(INTERVAL);
        assert!(engine.set_rules(rules, t(0)).unwrap().is_empty());
        engine
    }

    fn errors(pairs: &[(&str, f64)]) -> Samples {
        pairs.iter().map(|&(endpoint, value)| (Signal::ErrorRatio, endpoint, value)).collect()
    }

    /// Transitions as (kind, endpoint, state) for compact assertions.
    fn summary(transitions: &[Transition]) -> Vec<(&'static str, String, AlertState)> {
        transitions
            .iter()
            .map(|transition| {
                let kind = match transition {
                    Transition::Pending(_) => "pending",
                    Transition::Firing(_) => "firing",
                    Transition::Resolved(_) => "resolved",
                    Transition::Cancelled(_) => "cancelled",
                };
                (kind, transition.alert().endpoint.clone(), transition.alert().state)
            })
            .collect()
    }

    fn one(kind: &'static str, endpoint: &str, state: AlertState) -> Vec<(&'static str, String, AlertState)> {
        vec![(kind, endpoint.to_owned(), state)]
    }

    #[test]
    fn for_zero_fires_at_once_dedups_then_resolves() {
        let mut engine = engine(vec![rule("errors", Some("fraud"), 0.1, 0)]);
        let fired = engine.evaluate(t(0), &errors(&[("fraud", 0.5)]));
        assert_eq!(summary(&fired), one("firing", "fraud", AlertState::Firing));
        let alert = fired[0].alert();
        assert_eq!(alert.value, 0.5);
        assert_eq!(alert.since, "2027-01-15T08:00:00Z");
        assert_eq!(alert.severity, "critical");
        assert_eq!(alert.summary, "too many errors");
        assert_eq!(alert.fingerprint, fingerprint("errors", "fraud"));

        assert!(engine.evaluate(t(15), &errors(&[("fraud", 0.6)])).is_empty(), "still firing: nothing new");
        assert_eq!(engine.active()[0].value, 0.6, "value follows the signal");
        assert_eq!(engine.active()[0].since, alert.since, "since stays at the start");

        let resolved = engine.evaluate(t(30), &errors(&[("fraud", 0.01)]));
        assert_eq!(summary(&resolved), one("resolved", "fraud", AlertState::Resolved));
        assert_eq!(resolved[0].alert().value, 0.01);
        assert_eq!(resolved[0].alert().since, "2027-01-15T08:00:30Z");
        assert!(engine.active().is_empty());
        assert!(engine.evaluate(t(45), &errors(&[("fraud", 0.01)])).is_empty(), "inactive stays quiet");
    }

    #[test]
    fn for_seconds_holds_pending_until_elapsed() {
        let mut engine = engine(vec![rule("errors", None, 0.1, 60)]);
        let bad = errors(&[("fraud", 0.5)]);
        assert_eq!(summary(&engine.evaluate(t(0), &bad)), one("pending", "fraud", AlertState::Pending));
        assert_eq!(engine.active()[0].state, AlertState::Pending);
        assert!(engine.evaluate(t(30), &bad).is_empty());
        assert!(engine.evaluate(t(59), &bad).is_empty(), "59 s < 60 s");
        let fired = engine.evaluate(t(60), &bad);
        assert_eq!(summary(&fired), one("firing", "fraud", AlertState::Firing));
        assert_eq!(fired[0].alert().since, humantime::format_rfc3339_seconds(t(60)).to_string());
        assert!(engine.evaluate(t(75), &bad).is_empty());
        let resolved = engine.evaluate(t(90), &errors(&[("fraud", 0.0)]));
        assert_eq!(summary(&resolved), one("resolved", "fraud", AlertState::Resolved));
    }

    #[test]
    fn pending_that_clears_is_cancelled_and_restarts_the_clock() {
        let mut engine = engine(vec![rule("errors", None, 0.1, 60)]);
        engine.evaluate(t(0), &errors(&[("fraud", 0.5)]));
        let cleared = engine.evaluate(t(30), &errors(&[("fraud", 0.05)]));
        assert_eq!(summary(&cleared), one("cancelled", "fraud", AlertState::Resolved));
        assert!(engine.active().is_empty());
        assert_eq!(
            summary(&engine.evaluate(t(45), &errors(&[("fraud", 0.5)]))),
            one("pending", "fraud", AlertState::Pending)
        );
        assert!(engine.evaluate(t(90), &errors(&[("fraud", 0.5)])).is_empty(), "45 s since the restart");
        assert_eq!(
            summary(&engine.evaluate(t(105), &errors(&[("fraud", 0.5)]))),
            one("firing", "fraud", AlertState::Firing)
        );
    }

    #[test]
    fn clock_going_backwards_does_not_fire() {
        let mut engine = engine(vec![rule("errors", None, 0.1, 60)]);
        engine.evaluate(t(100), &errors(&[("fraud", 0.5)]));
        assert!(engine.evaluate(t(50), &errors(&[("fraud", 0.5)])).is_empty());
        assert_eq!(engine.active()[0].state, AlertState::Pending);
    }

    #[test]
    fn one_instance_per_endpoint_without_an_endpoint() {
        let mut engine = engine(vec![rule("errors", None, 0.1, 0)]);
        let fired = engine.evaluate(t(0), &errors(&[("fraud", 0.5), ("churn", 0.0), ("spam", 0.2)]));
        assert_eq!(
            summary(&fired),
            vec![("firing", "fraud".into(), AlertState::Firing), ("firing", "spam".into(), AlertState::Firing)]
        );
        let active = engine.active();
        assert_eq!(active.len(), 2);
        assert_ne!(active[0].fingerprint, active[1].fingerprint);
        let resolved = engine.evaluate(t(15), &errors(&[("fraud", 0.0), ("spam", 0.2)]));
        assert_eq!(summary(&resolved), one("resolved", "fraud", AlertState::Resolved));
    }

    #[test]
    fn endpoint_rule_watches_only_its_endpoint() {
        let mut engine = engine(vec![rule("errors", Some("fraud"), 0.1, 0)]);
        assert!(engine.evaluate(t(0), &errors(&[("churn", 0.9)])).is_empty());
        let other_signal: Samples = [(Signal::QueueDepth, "fraud", 99.0)].into_iter().collect();
        assert!(engine.evaluate(t(15), &other_signal).is_empty());
        assert!(engine.active().is_empty());
    }

    #[test]
    fn no_data_cancels_pending() {
        let mut engine = engine(vec![rule("errors", None, 0.1, 60), rule("fixed", Some("fraud"), 0.1, 60)]);
        let pending = engine.evaluate(t(0), &errors(&[("fraud", 0.5)]));
        assert_eq!(pending.len(), 2);
        let cancelled = engine.evaluate(t(15), &Samples::new());
        assert_eq!(
            summary(&cancelled),
            vec![
                ("cancelled", "fraud".into(), AlertState::Resolved),
                ("cancelled", "fraud".into(), AlertState::Resolved)
            ]
        );
        assert!(engine.active().is_empty());
    }

    #[test]
    fn no_data_keeps_firing_without_repeating() {
        let mut engine = engine(vec![rule("errors", None, 0.1, 0)]);
        engine.evaluate(t(0), &errors(&[("fraud", 0.5)]));
        for step in 1..10 {
            assert!(engine.evaluate(t(step * 15), &Samples::new()).is_empty());
        }
        assert!(engine.evaluate(t(150), &errors(&[("fraud", f64::NAN)])).is_empty(), "NaN is no data");
        let active = engine.active();
        assert_eq!((active[0].state, active[0].value), (AlertState::Firing, 0.5));
        let resolved = engine.evaluate(t(165), &errors(&[("fraud", 0.0)]));
        assert_eq!(summary(&resolved), one("resolved", "fraud", AlertState::Resolved));
    }

    #[test]
    fn no_data_never_starts_an_alert() {
        let below = AlertRule {
            condition: Condition::Threshold { op: Comparison::Less, value: 1.0 },
            ..rule("rate", Some("fraud"), 0.0, 0)
        };
        let mut engine = engine(vec![below]);
        // "Below 1 request/s" must not read missing data as 0.
        assert!(engine.evaluate(t(0), &Samples::new()).is_empty());
        assert!(engine.evaluate(t(15), &errors(&[("fraud", f64::INFINITY)])).is_empty());
        assert!(engine.active().is_empty());
    }

    fn anomaly_rule() -> AlertRule {
        AlertRule {
            condition: Condition::Anomaly(AnomalyCondition {
                method: AnomalyMethod::RobustZ,
                baseline_seconds: 3600,
                threshold: 4.0,
                direction: Direction::Up,
                min_samples: 30,
            }),
            ..rule("latency", None, 0.0, 0)
        }
    }

    #[test]
    fn anomaly_rule_fires_on_a_spike_and_resolves() {
        let mut engine = engine(vec![anomaly_rule()]);
        let mut rng = fastrand::Rng::with_seed(5);
        let mut now = 0;
        let mut step = |engine: &mut Engine, value: Option<f64>| {
            now += 15;
            let samples = value.map(|value| errors(&[("fraud", value)])).unwrap_or_default();
            engine.evaluate(t(now), &samples)
        };
        for _ in 0..29 {
            assert!(step(&mut engine, Some(1.0 + rng.f64() * 0.1)).is_empty());
        }
        // No data does not count towards min_samples.
        for _ in 0..10 {
            assert!(step(&mut engine, None).is_empty());
        }
        assert!(step(&mut engine, Some(1.05)).is_empty(), "30th sample: still warming up");
        assert_eq!(summary(&step(&mut engine, Some(10.0))), one("firing", "fraud", AlertState::Firing));
        assert!(step(&mut engine, Some(10.0)).is_empty(), "sustained spike: still firing, not repeated");
        assert_eq!(summary(&step(&mut engine, Some(1.02))), one("resolved", "fraud", AlertState::Resolved));
    }

    #[test]
    fn set_rules_keeps_unchanged_and_ends_changed_or_removed() {
        let mut engine =
            engine(vec![rule("kept", None, 0.1, 0), rule("changed", None, 0.1, 0), rule("gone", None, 0.1, 60)]);
        let fired = engine.evaluate(t(0), &errors(&[("fraud", 0.5)]));
        assert_eq!(fired.len(), 3);

        let replaced =
            engine.set_rules(vec![rule("kept", None, 0.1, 0), rule("changed", None, 0.2, 0)], t(10)).unwrap();
        let ended: Vec<_> = replaced
            .iter()
            .map(|transition| (transition.alert().rule.as_str(), summary(std::slice::from_ref(transition))[0].0))
            .collect();
        assert_eq!(ended, vec![("changed", "resolved"), ("gone", "cancelled")]);
        assert_eq!(replaced[0].alert().since, humantime::format_rfc3339_seconds(t(10)).to_string());

        let active = engine.active();
        assert_eq!(active.len(), 1);
        assert_eq!((active[0].rule.as_str(), active[0].state), ("kept", AlertState::Firing));
        assert_eq!(active[0].since, humantime::format_rfc3339_seconds(t(0)).to_string(), "state kept");

        // The kept alert is not re-announced; the changed rule starts afresh.
        let next = engine.evaluate(t(15), &errors(&[("fraud", 0.5)]));
        assert_eq!(next.len(), 1);
        assert_eq!((next[0].alert().rule.as_str(), next[0].alert().state), ("changed", AlertState::Firing));
    }

    #[test]
    fn set_rules_refuses_invalid_or_duplicate_rules_without_changing_anything() {
        let mut engine = engine(vec![rule("errors", None, 0.1, 0)]);
        engine.evaluate(t(0), &errors(&[("fraud", 0.5)]));
        let duplicate = engine.set_rules(vec![rule("a", None, 0.1, 0), rule("a", None, 0.2, 0)], t(5)).unwrap_err();
        assert_eq!((duplicate.rule.as_str(), duplicate.field), ("a", "name"));
        let invalid = engine.set_rules(vec![rule("b", None, f64::NAN, 0)], t(5)).unwrap_err();
        assert_eq!(invalid.field, "condition.value");
        assert_eq!(engine.rules().len(), 1);
        assert_eq!(engine.active().len(), 1);
    }

    #[test]
    fn removing_an_endpoint_resolves_its_alerts() {
        let mut engine = engine(vec![rule("errors", None, 0.1, 0)]);
        engine.evaluate(t(0), &errors(&[("fraud", 0.5), ("spam", 0.5)]));
        let removed = engine.remove_endpoint("fraud", t(20));
        assert_eq!(summary(&removed), one("resolved", "fraud", AlertState::Resolved));
        let active = engine.active();
        assert_eq!(active.len(), 1);
        assert_eq!(active[0].endpoint, "spam");
        assert!(engine.evaluate(t(30), &Samples::new()).is_empty());
    }

    #[test]
    fn fingerprint_is_stable_and_unambiguous() {
        assert_eq!(fingerprint("errors", "fraud"), fingerprint("errors", "fraud"));
        assert_eq!(fingerprint("errors", "fraud").len(), 16);
        assert_ne!(fingerprint("ab", "c"), fingerprint("a", "bc"));
        // Pinned: receivers group by it across releases.
        assert_eq!(fingerprint("errors", "fraud"), FRAUD_ERRORS_FINGERPRINT);
    }

    const FRAUD_ERRORS_FINGERPRINT: &str = "4e285e411e8bc247";

    #[test]
    fn samples_map() {
        let mut samples = Samples::new();
        samples.insert(Signal::QueueDepth, "b", 1.0);
        samples.insert(Signal::QueueDepth, "a", 2.0);
        samples.insert(Signal::QueueDepth, "a", 3.0);
        assert_eq!(samples.get(Signal::QueueDepth, "a"), Some(3.0));
        assert_eq!(samples.get(Signal::RequestRate, "a"), None);
        assert_eq!(samples.endpoints(Signal::QueueDepth).collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(samples.endpoints(Signal::Accuracy).count(), 0);
    }

    #[test]
    fn alert_serialises_for_the_api() {
        let mut engine = engine(vec![rule("errors", None, 0.1, 30)]);
        engine.evaluate(t(0), &errors(&[("fraud", 0.5)]));
        let json = serde_json::to_value(engine.active()).unwrap();
        assert_eq!(json[0]["state"], "pending");
        assert_eq!(json[0]["since"], "2027-01-15T08:00:00Z");
        assert_eq!(json[0]["value"], 0.5);
    }
}
