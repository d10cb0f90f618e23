//! Vigil monitoring: data drift against a reference profile (`drift`), alert
//! rules, the engine that evaluates them against the server's signals, and
//! notifications to webhooks.
//!
//! Architecture invariant: evaluation and notification never block the
//! inference path. The [`Engine`] is synchronous, does no I/O and is driven
//! by its own timer with values the server has already aggregated; the
//! [`Notifier`] only enqueues (`try_send` on a bounded queue, dropping and
//! counting when full) and delivers from its own tasks. A slow or dead
//! receiver costs dropped notifications, never request latency.
#![forbid(unsafe_code)]

pub mod alerts;
pub mod drift;
pub mod quality;

pub use alerts::anomaly::Detector;
pub use alerts::engine::{Alert, AlertState, Engine, Samples, Transition, fingerprint};
pub use alerts::notify::{Notification, NotificationStatus, Notifier, NotifierConfig, NotifyError, Retry, Webhook};
pub use alerts::rule::{
    AlertRule, AnomalyCondition, AnomalyMethod, Comparison, Condition, Direction, RuleError, Signal,
};
