//! Alert rules as operators write them: in the TOML configuration
//! (`[[alerts.rules]]`) and as JSON in the API. Parsing refuses unknown
//! fields so that a misspelt option fails loudly instead of being ignored;
//! [`AlertRule::validate`] then checks what the types cannot.

use serde::{Deserialize, Serialize};

/// Longest rule name, in bytes. Names end up in URLs, labels and log lines.
pub const MAX_RULE_NAME_LEN: usize = 64;
/// Longest `for_seconds`: one week. Longer holds are more likely a unit
/// mistake (milliseconds) than an intent, and keep time arithmetic far from
/// overflow.
pub const MAX_FOR_SECONDS: u64 = 7 * 24 * 3600;
/// Shortest anomaly baseline. Below a minute there are too few evaluations
/// to tell noise from signal.
pub const MIN_BASELINE_SECONDS: u64 = 60;
/// Longest anomaly baseline: thirty days.
pub const MAX_BASELINE_SECONDS: u64 = 30 * 24 * 3600;
/// Most samples a robust z-score detector keeps; bounds its memory and the
/// cost of a median per evaluation.
pub const MAX_BASELINE_SAMPLES: usize = 4096;
/// Longest summary, in bytes; it is copied into every notification.
pub const MAX_SUMMARY_LEN: usize = 1024;

/// One alert rule: when `signal` meets `condition` for `for_seconds`, fire.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertRule {
    /// 1–64 ASCII letters, digits, `_` or `-`; unique within a rule set.
    pub name: String,
    /// What is measured.
    pub signal: Signal,
    /// `None`: evaluated for every endpoint, one alert instance per endpoint.
    /// `Some`: only that endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// When the signal is considered bad.
    pub condition: Condition,
    /// How long the condition must hold before the alert fires; 0 fires at once.
    #[serde(default)]
    pub for_seconds: u64,
    /// Free-form label passed to receivers ("warning", "critical", ...).
    #[serde(default = "default_severity")]
    pub severity: String,
    /// Human text passed to receivers.
    #[serde(default)]
    pub summary: String,
}

fn default_severity() -> String {
    "warning".to_owned()
}

/// The signals an alert can watch, one value per endpoint and evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Signal {
    /// Share of requests answered with a 5xx status, 0..=1.
    ErrorRatio,
    /// 99th percentile of request latency, in seconds.
    P99LatencySeconds,
    /// Requests per second.
    RequestRate,
    /// Requests waiting for a worker.
    QueueDepth,
    /// Distance between live inputs and the reference profile (monitoring).
    DriftScore,
    /// Accuracy measured from feedback (monitoring).
    Accuracy,
}

impl Signal {
    /// The name used in configuration, JSON and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Signal::ErrorRatio => "error_ratio",
            Signal::P99LatencySeconds => "p99_latency_seconds",
            Signal::RequestRate => "request_rate",
            Signal::QueueDepth => "queue_depth",
            Signal::DriftScore => "drift_score",
            Signal::Accuracy => "accuracy",
        }
    }
}

/// When a signal's value is bad.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Condition {
    /// A fixed limit: `value <op> limit`.
    Threshold {
        /// The comparison.
        op: Comparison,
        /// The limit; must be finite.
        value: f64,
    },
    /// A departure from the signal's own recent history.
    Anomaly(AnomalyCondition),
}

/// A comparison operator, written as its symbol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Comparison {
    #[serde(rename = ">")]
    Greater,
    #[serde(rename = ">=")]
    GreaterOrEqual,
    #[serde(rename = "<")]
    Less,
    #[serde(rename = "<=")]
    LessOrEqual,
}

impl Comparison {
    /// Whether `value <self> limit` holds.
    pub fn holds(self, value: f64, limit: f64) -> bool {
        match self {
            Comparison::Greater => value > limit,
            Comparison::GreaterOrEqual => value >= limit,
            Comparison::Less => value < limit,
            Comparison::LessOrEqual => value <= limit,
        }
    }
}

/// Anomaly detection settings; see [`crate::alerts::anomaly`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnomalyCondition {
    /// How the baseline is summarised.
    pub method: AnomalyMethod,
    /// How much history the baseline represents.
    #[serde(default = "default_baseline_seconds")]
    pub baseline_seconds: u64,
    /// The z-score beyond which a sample is anomalous; must be > 0.
    #[serde(default = "default_z_threshold")]
    pub threshold: f64,
    /// Which departures count.
    #[serde(default)]
    pub direction: Direction,
    /// Samples needed before the detector may fire at all.
    #[serde(default = "default_min_samples")]
    pub min_samples: usize,
}

fn default_baseline_seconds() -> u64 {
    3600
}

fn default_z_threshold() -> f64 {
    4.0
}

fn default_min_samples() -> usize {
    30
}

/// How an anomaly baseline is summarised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AnomalyMethod {
    /// Exponentially weighted mean and variance: cheap, follows slow trends.
    Ewma,
    /// Median and median absolute deviation of a window: resists outliers.
    RobustZ,
}

/// Which side of the baseline is anomalous.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Only values above the baseline (latency, errors).
    #[default]
    Up,
    /// Only values below the baseline (traffic, accuracy).
    Down,
    /// Either side.
    Both,
}

/// An alert rule that is not acceptable, naming the offending field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("alert rule {rule:?}: {field}: {problem}")]
pub struct RuleError {
    /// The rule's name as given (possibly the invalid name itself).
    pub rule: String,
    /// The field, as written in the configuration (`condition.value`).
    pub field: &'static str,
    /// What is wrong with it.
    pub problem: String,
}

impl RuleError {
    /// Stable error code for API responses.
    pub const CODE: &'static str = "invalid_alert_rule";

    pub(crate) fn new(rule: &str, field: &'static str, problem: impl Into<String>) -> RuleError {
        RuleError { rule: rule.chars().take(MAX_RULE_NAME_LEN).collect(), field, problem: problem.into() }
    }
}

impl AlertRule {
    /// Checks what the types cannot express. Called by the engine before a
    /// rule is accepted, so an invalid rule never reaches evaluation.
    pub fn validate(&self) -> Result<(), RuleError> {
        let fail = |field, problem: String| Err(RuleError::new(&self.name, field, problem));
        if !is_valid_rule_name(&self.name) {
            return fail("name", format!("must be 1-{MAX_RULE_NAME_LEN} ASCII letters, digits, '_' or '-'"));
        }
        if let Some(endpoint) = &self.endpoint
            && !is_valid_endpoint_name(endpoint)
        {
            return fail("endpoint", "is not a valid endpoint name (letters, digits, '_', '-', '.')".into());
        }
        if self.for_seconds > MAX_FOR_SECONDS {
            return fail("for_seconds", format!("must be at most {MAX_FOR_SECONDS} (one week)"));
        }
        if !is_valid_rule_name(&self.severity) {
            return fail("severity", format!("must be 1-{MAX_RULE_NAME_LEN} ASCII letters, digits, '_' or '-'"));
        }
        if self.summary.len() > MAX_SUMMARY_LEN {
            return fail("summary", format!("must be at most {MAX_SUMMARY_LEN} bytes"));
        }
        match &self.condition {
            Condition::Threshold { value, .. } if !value.is_finite() => {
                fail("condition.value", "must be a finite number".into())
            }
            Condition::Threshold { .. } => Ok(()),
            Condition::Anomaly(anomaly) => anomaly.validate(&self.name),
        }
    }
}

impl AnomalyCondition {
    fn validate(&self, rule: &str) -> Result<(), RuleError> {
        let fail = |field, problem: String| Err(RuleError::new(rule, field, problem));
        if !(self.threshold.is_finite() && self.threshold > 0.0) {
            return fail("condition.threshold", "must be a finite number > 0 (a z-score)".into());
        }
        if !(MIN_BASELINE_SECONDS..=MAX_BASELINE_SECONDS).contains(&self.baseline_seconds) {
            return fail(
                "condition.baseline_seconds",
                format!("must be between {MIN_BASELINE_SECONDS} and {MAX_BASELINE_SECONDS}"),
            );
        }
        if !(2..=MAX_BASELINE_SAMPLES).contains(&self.min_samples) {
            return fail("condition.min_samples", format!("must be between 2 and {MAX_BASELINE_SAMPLES}"));
        }
        Ok(())
    }
}

fn is_valid_rule_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_RULE_NAME_LEN
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'))
}

/// The registry's rule for endpoint names (vigil-core `names`), repeated here
/// so that this crate does not depend on the core for one function.
fn is_valid_endpoint_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<AlertRule, serde_json::Error> {
        serde_json::from_str(json)
    }

    #[test]
    fn threshold_rule_with_defaults() {
        let rule =
            parse(r#"{"name":"errors","signal":"error_ratio","condition":{"kind":"threshold","op":">","value":0.05}}"#)
                .unwrap();
        assert_eq!(rule.signal, Signal::ErrorRatio);
        assert_eq!(rule.endpoint, None);
        assert_eq!(rule.condition, Condition::Threshold { op: Comparison::Greater, value: 0.05 });
        assert_eq!(rule.for_seconds, 0);
        assert_eq!(rule.severity, "warning");
        assert_eq!(rule.summary, "");
        rule.validate().unwrap();
    }

    #[test]
    fn anomaly_rule_with_defaults() {
        let rule = parse(
            r#"{"name":"latency","signal":"p99_latency_seconds","endpoint":"fraud",
                "condition":{"kind":"anomaly","method":"robust_z"}}"#,
        )
        .unwrap();
        let Condition::Anomaly(anomaly) = &rule.condition else { panic!("not an anomaly: {rule:?}") };
        assert_eq!(anomaly.method, AnomalyMethod::RobustZ);
        assert_eq!(anomaly.baseline_seconds, 3600);
        assert_eq!(anomaly.threshold, 4.0);
        assert_eq!(anomaly.direction, Direction::Up);
        assert_eq!(anomaly.min_samples, 30);
        rule.validate().unwrap();
    }

    #[test]
    fn every_operator_and_signal_parses() {
        for (op, expected) in [
            (">", Comparison::Greater),
            (">=", Comparison::GreaterOrEqual),
            ("<", Comparison::Less),
            ("<=", Comparison::LessOrEqual),
        ] {
            let json = format!(r#"{{"kind":"threshold","op":"{op}","value":1}}"#);
            let condition: Condition = serde_json::from_str(&json).unwrap();
            assert_eq!(condition, Condition::Threshold { op: expected, value: 1.0 });
        }
        for signal in ["error_ratio", "p99_latency_seconds", "request_rate", "queue_depth", "drift_score", "accuracy"] {
            let parsed: Signal = serde_json::from_str(&format!("\"{signal}\"")).unwrap();
            assert_eq!(parsed.as_str(), signal);
        }
    }

    #[test]
    fn unknown_fields_are_refused() {
        let top = r#"{"name":"a","signal":"queue_depth","condition":{"kind":"threshold","op":">","value":1},"for":5}"#;
        assert!(parse(top).is_err());
        let nested = r#"{"name":"a","signal":"queue_depth","condition":{"kind":"threshold","op":">","value":1,"x":1}}"#;
        assert!(parse(nested).is_err());
        let anomaly =
            r#"{"name":"a","signal":"queue_depth","condition":{"kind":"anomaly","method":"ewma","window":1}}"#;
        assert!(parse(anomaly).is_err());
        let op = r#"{"name":"a","signal":"queue_depth","condition":{"kind":"threshold","op":"=>","value":1}}"#;
        assert!(parse(op).is_err());
    }

    #[test]
    fn round_trips_through_json() {
        let rule = parse(
            r#"{"name":"drift","signal":"drift_score","condition":{"kind":"anomaly","method":"ewma",
                "baseline_seconds":600,"threshold":3,"direction":"both","min_samples":10},
                "for_seconds":60,"severity":"critical","summary":"inputs moved"}"#,
        )
        .unwrap();
        let again = parse(&serde_json::to_string(&rule).unwrap()).unwrap();
        assert_eq!(rule, again);
    }

    fn valid() -> AlertRule {
        AlertRule {
            name: "rule_1-a".into(),
            signal: Signal::QueueDepth,
            endpoint: Some("fraud.v2".into()),
            condition: Condition::Threshold { op: Comparison::Greater, value: 10.0 },
            for_seconds: 0,
            severity: "warning".into(),
            summary: String::new(),
        }
    }

    fn anomaly() -> AnomalyCondition {
        AnomalyCondition {
            method: AnomalyMethod::Ewma,
            baseline_seconds: 3600,
            threshold: 4.0,
            direction: Direction::Up,
            min_samples: 30,
        }
    }

    fn field_of(rule: AlertRule) -> &'static str {
        rule.validate().unwrap_err().field
    }

    #[test]
    fn validation_names_the_field() {
        valid().validate().unwrap();
        for name in ["", "a b", "é", "dot.ted", &"x".repeat(65)] {
            assert_eq!(field_of(AlertRule { name: name.into(), ..valid() }), "name", "{name:?}");
        }
        assert_eq!(field_of(AlertRule { endpoint: Some(String::new()), ..valid() }), "endpoint");
        assert_eq!(field_of(AlertRule { endpoint: Some("../x".into()), ..valid() }), "endpoint");
        assert_eq!(field_of(AlertRule { for_seconds: MAX_FOR_SECONDS + 1, ..valid() }), "for_seconds");
        assert_eq!(field_of(AlertRule { severity: String::new(), ..valid() }), "severity");
        assert_eq!(field_of(AlertRule { summary: "s".repeat(MAX_SUMMARY_LEN + 1), ..valid() }), "summary");
        for value in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            let condition = Condition::Threshold { op: Comparison::Less, value };
            assert_eq!(field_of(AlertRule { condition, ..valid() }), "condition.value");
        }
        let with = |a: AnomalyCondition| AlertRule { condition: Condition::Anomaly(a), ..valid() };
        valid_anomaly_ok(with(anomaly()));
        for threshold in [0.0, -1.0, f64::NAN] {
            assert_eq!(field_of(with(AnomalyCondition { threshold, ..anomaly() })), "condition.threshold");
        }
        for baseline_seconds in [0, 59, MAX_BASELINE_SECONDS + 1] {
            let rule = with(AnomalyCondition { baseline_seconds, ..anomaly() });
            assert_eq!(field_of(rule), "condition.baseline_seconds");
        }
        for min_samples in [0, 1, MAX_BASELINE_SAMPLES + 1] {
            let rule = with(AnomalyCondition { min_samples, ..anomaly() });
            assert_eq!(field_of(rule), "condition.min_samples");
        }
    }

    fn valid_anomaly_ok(rule: AlertRule) {
        rule.validate().unwrap();
    }

    #[test]
    fn error_message_is_readable() {
        let err = AlertRule { for_seconds: u64::MAX, ..valid() }.validate().unwrap_err();
        assert_eq!(err.to_string(), "alert rule \"rule_1-a\": for_seconds: must be at most 604800 (one week)");
    }
}
