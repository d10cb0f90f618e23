//! Notifications: firing and resolved alerts delivered to webhooks.
//!
//! [`Notifier::notify`] is a plain function that logs the notification and
//! puts it on one bounded queue per webhook with `try_send`; when a queue is
//! full the notification is dropped for that webhook and counted. One task
//! per webhook delivers its queue in order (so a receiver sees `firing`
//! before `resolved`), retrying connection errors, timeouts, 5xx and 429
//! with exponential backoff. A slow webhook therefore delays only itself, and
//! the caller (the evaluation loop) never waits on the network.
//!
//! Each request is a JSON [`Notification`] with `x-vigil-delivery` (a random
//! id, the same on every retry so receivers can deduplicate) and, when the
//! webhook has a secret, `x-vigil-signature: sha256=<hex HMAC-SHA256 of the
//! body>`. Redirects are not followed: a redirect would carry the signed body
//! somewhere the operator did not configure.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use hmac::{Hmac, Mac};
use reqwest::header::CONTENT_TYPE;
use reqwest::{StatusCode, Url};
use serde::Serialize;
use sha2::Sha256;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::alerts::engine::{Alert, Transition};

/// The tracing target of alert notifications and delivery problems.
pub const LOG_TARGET: &str = "vigil::alerts";
/// Header carrying the delivery id.
pub const DELIVERY_HEADER: &str = "x-vigil-delivery";
/// Header carrying the body's signature.
pub const SIGNATURE_HEADER: &str = "x-vigil-signature";

type HmacSha256 = Hmac<Sha256>;

/// What receivers are told.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NotificationStatus {
    /// The alert started firing.
    Firing,
    /// The alert stopped firing.
    Resolved,
}

impl NotificationStatus {
    /// The name used in JSON and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            NotificationStatus::Firing => "firing",
            NotificationStatus::Resolved => "resolved",
        }
    }
}

/// The JSON body of a webhook request.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Notification {
    /// Firing or resolved.
    pub status: NotificationStatus,
    /// The alert as it stands after the transition.
    pub alert: Alert,
    /// When the notification was made (RFC 3339, UTC, seconds); the same
    /// on retries, so the signed body does not change.
    pub sent_at: String,
}

impl Notification {
    /// The notification for `transition`, or `None` for the transitions that
    /// receivers are not told about (pending, cancelled).
    pub fn from_transition(transition: &Transition, now: SystemTime) -> Option<Notification> {
        let (status, alert) = match transition {
            Transition::Firing(alert) => (NotificationStatus::Firing, alert),
            Transition::Resolved(alert) => (NotificationStatus::Resolved, alert),
            Transition::Pending(_) | Transition::Cancelled(_) => return None,
        };
        Some(Notification { status, alert: alert.clone(), sent_at: humantime::format_rfc3339_seconds(now).to_string() })
    }
}

/// A receiver of notifications.
#[derive(Clone)]
pub struct Webhook {
    /// An `http` or `https` URL.
    pub url: String,
    /// Key for `x-vigil-signature`; `None` sends no signature.
    pub secret: Option<String>,
    /// Limit for one request, connection included.
    pub timeout: Duration,
}

impl Webhook {
    /// Request timeout when the configuration gives none.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
}

/// Shows the URL's origin only: webhook URLs often embed a token in the path
/// (chat integrations), and the secret never appears.
impl std::fmt::Debug for Webhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let origin = Url::parse(&self.url).map(|url| url.origin().ascii_serialization());
        f.debug_struct("Webhook")
            .field("origin", &origin.as_deref().unwrap_or("<invalid URL>"))
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// How failed deliveries are retried: after attempt `n` (1-based) the
/// notifier waits `initial_backoff * factor^(n-1)`, up to `max_attempts`
/// attempts in all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retry {
    /// Wait after the first failed attempt.
    pub initial_backoff: Duration,
    /// Growth of the wait per attempt.
    pub factor: u32,
    /// Attempts in all, the first included; 0 counts as 1.
    pub max_attempts: u32,
}

impl Default for Retry {
    /// 200 ms, ×2, 5 attempts: about 3 s of retrying, enough to ride out a
    /// receiver's restart without holding a queue for long.
    fn default() -> Retry {
        Retry { initial_backoff: Duration::from_millis(200), factor: 2, max_attempts: 5 }
    }
}

/// Settings of a [`Notifier`].
#[derive(Debug, Clone)]
pub struct NotifierConfig {
    /// Every notification goes to each of these.
    pub webhooks: Vec<Webhook>,
    /// Notifications waiting per webhook before new ones are dropped.
    pub queue_capacity: usize,
    /// Retry policy for every webhook.
    pub retry: Retry,
}

impl Default for NotifierConfig {
    fn default() -> NotifierConfig {
        NotifierConfig { webhooks: Vec::new(), queue_capacity: 1024, retry: Retry::default() }
    }
}

/// A configuration the notifier cannot start with.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// The URL does not parse or is not http(s).
    #[error("alerts.webhooks[{index}].url: not an http(s) URL")]
    InvalidUrl {
        /// Position of the webhook in the configuration.
        index: usize,
    },
    /// An empty secret would sign with an empty key, which proves nothing.
    #[error("alerts.webhooks[{index}].secret: must not be empty (omit it to send no signature)")]
    EmptySecret {
        /// Position of the webhook in the configuration.
        index: usize,
    },
    /// `queue_capacity` is 0.
    #[error("alerts.queue_capacity: must be at least 1")]
    ZeroCapacity,
    /// The HTTP client could not be built (TLS setup).
    #[error("alerts: cannot build the HTTP client: {0}")]
    Client(#[from] reqwest::Error),
    /// [`Notifier::start`] was called outside a Tokio runtime.
    #[error("alerts: the notifier must be started inside a Tokio runtime")]
    NoRuntime,
}

impl NotifyError {
    /// Stable error code.
    pub fn code(&self) -> &'static str {
        match self {
            NotifyError::InvalidUrl { .. } | NotifyError::EmptySecret { .. } | NotifyError::ZeroCapacity => {
                "invalid_alert_config"
            }
            NotifyError::Client(_) | NotifyError::NoRuntime => "notifier_unavailable",
        }
    }
}

/// Delivery counters, shared with the delivery tasks. Each counts
/// deliveries: one notification to one webhook.
#[derive(Debug, Default)]
struct Counters {
    sent: AtomicU64,
    failed: AtomicU64,
    dropped: AtomicU64,
}

/// One notification on its way to one webhook.
#[derive(Debug)]
struct Delivery {
    id: Arc<str>,
    body: Arc<[u8]>,
    rule: String,
    endpoint: String,
    status: NotificationStatus,
}

/// Everything a delivery task needs for its webhook.
struct Target {
    index: usize,
    url: Url,
    timeout: Duration,
    /// Keyed once at start; cloned per body.
    signer: Option<HmacSha256>,
}

/// Sends notifications to webhooks without ever making the caller wait.
#[derive(Debug)]
pub struct Notifier {
    queues: Vec<mpsc::Sender<Delivery>>,
    workers: Vec<JoinHandle<()>>,
    counters: Arc<Counters>,
}

impl Notifier {
    /// Checks the configuration and starts one delivery task per webhook on
    /// the current Tokio runtime.
    pub fn start(config: NotifierConfig) -> Result<Notifier, NotifyError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| NotifyError::NoRuntime)?;
        if config.queue_capacity == 0 {
            return Err(NotifyError::ZeroCapacity);
        }
        let targets = config.webhooks.iter().enumerate().map(target).collect::<Result<Vec<_>, _>>()?;
        let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build()?;
        let counters = Arc::new(Counters::default());
        let mut queues = Vec::with_capacity(targets.len());
        let mut workers = Vec::with_capacity(targets.len());
        for target in targets {
            let (sender, receiver) = mpsc::channel(config.queue_capacity);
            let worker = deliver_queue(client.clone(), target, config.retry, receiver, Arc::clone(&counters));
            workers.push(runtime.spawn(worker));
            queues.push(sender);
        }
        Ok(Notifier { queues, workers, counters })
    }

    /// Logs `notification` and queues it for every webhook; never waits.
    pub fn notify(&self, notification: &Notification) {
        let alert = &notification.alert;
        let status = notification.status.as_str();
        match notification.status {
            NotificationStatus::Firing => tracing::warn!(
                target: LOG_TARGET,
                rule = %alert.rule, endpoint = %alert.endpoint, status, value = alert.value,
                severity = %alert.severity, "alert firing"
            ),
            NotificationStatus::Resolved => tracing::info!(
                target: LOG_TARGET,
                rule = %alert.rule, endpoint = %alert.endpoint, status, value = alert.value,
                severity = %alert.severity, "alert resolved"
            ),
        }
        if self.queues.is_empty() {
            return;
        }
        let body: Arc<[u8]> = match serde_json::to_vec(notification) {
            Ok(body) => body.into(),
            Err(error) => {
                // Not expected for these types; counted so it is not silent.
                tracing::error!(target: LOG_TARGET, %error, rule = %alert.rule, "cannot encode notification");
                self.counters.failed.fetch_add(self.queues.len() as u64, Ordering::Relaxed);
                return;
            }
        };
        let id: Arc<str> = format!("{:032x}", fastrand::u128(..)).into();
        for (index, queue) in self.queues.iter().enumerate() {
            let delivery = Delivery {
                id: Arc::clone(&id),
                body: Arc::clone(&body),
                rule: alert.rule.clone(),
                endpoint: alert.endpoint.clone(),
                status: notification.status,
            };
            if queue.try_send(delivery).is_err() {
                self.counters.dropped.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    target: LOG_TARGET,
                    webhook = index, rule = %alert.rule, endpoint = %alert.endpoint, status,
                    "notification queue full (or closed): notification dropped"
                );
            }
        }
    }

    /// Notifies the transitions receivers are told about (firing, resolved).
    pub fn notify_transitions(&self, transitions: &[Transition], now: SystemTime) {
        for notification in transitions.iter().filter_map(|transition| Notification::from_transition(transition, now)) {
            self.notify(&notification);
        }
    }

    /// Deliveries that a webhook accepted (2xx).
    pub fn sent(&self) -> u64 {
        self.counters.sent.load(Ordering::Relaxed)
    }

    /// Deliveries given up: a 4xx other than 429, a redirect, or every
    /// attempt failed.
    pub fn failed(&self) -> u64 {
        self.counters.failed.load(Ordering::Relaxed)
    }

    /// Deliveries dropped because a webhook's queue was full.
    pub fn dropped(&self) -> u64 {
        self.counters.dropped.load(Ordering::Relaxed)
    }

    /// Stops taking notifications and waits until every queued one has been
    /// delivered or given up (graceful shutdown).
    pub async fn close(self) {
        let Notifier { queues, workers, counters: _ } = self;
        drop(queues);
        for worker in workers {
            if let Err(error) = worker.await {
                tracing::error!(target: LOG_TARGET, %error, "notification task ended abnormally");
            }
        }
    }
}

fn target((index, webhook): (usize, &Webhook)) -> Result<Target, NotifyError> {
    let url = Url::parse(&webhook.url)
        .ok()
        .filter(|url| matches!(url.scheme(), "http" | "https") && url.has_host())
        .ok_or(NotifyError::InvalidUrl { index })?;
    let signer = match &webhook.secret {
        None => None,
        Some(secret) if secret.is_empty() => return Err(NotifyError::EmptySecret { index }),
        // HMAC takes keys of any length; the error case cannot happen.
        Some(secret) => {
            Some(HmacSha256::new_from_slice(secret.as_bytes()).map_err(|_| NotifyError::EmptySecret { index })?)
        }
    };
    Ok(Target { index, url, timeout: webhook.timeout, signer })
}

/// The task of one webhook: delivers its queue in order until it closes.
async fn deliver_queue(
    client: reqwest::Client,
    target: Target,
    retry: Retry,
    mut queue: mpsc::Receiver<Delivery>,
    counters: Arc<Counters>,
) {
    while let Some(delivery) = queue.recv().await {
        match deliver(&client, &target, retry, &delivery).await {
            Ok(()) => {
                counters.sent.fetch_add(1, Ordering::Relaxed);
            }
            Err(reason) => {
                counters.failed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    target: LOG_TARGET,
                    webhook = target.index, delivery = %delivery.id, rule = %delivery.rule,
                    endpoint = %delivery.endpoint, status = delivery.status.as_str(), %reason,
                    "notification not delivered"
                );
            }
        }
    }
}

/// One delivery with its retries; `Err` says why it was given up.
async fn deliver(client: &reqwest::Client, target: &Target, retry: Retry, delivery: &Delivery) -> Result<(), String> {
    let signature = target.signer.clone().map(|mut signer| {
        signer.update(&delivery.body);
        format!("sha256={}", hex::encode(signer.finalize().into_bytes()))
    });
    let attempts = retry.max_attempts.max(1);
    let mut backoff = retry.initial_backoff;
    for attempt in 1..=attempts {
        let mut request = client
            .post(target.url.clone())
            .timeout(target.timeout)
            .header(CONTENT_TYPE, "application/json")
            .header(DELIVERY_HEADER, &*delivery.id)
            .body(delivery.body.to_vec());
        if let Some(signature) = &signature {
            request = request.header(SIGNATURE_HEADER, signature);
        }
        let problem = match request.send().await {
            Ok(response) if response.status().is_success() => return Ok(()),
            Ok(response) if is_retryable(response.status()) => format!("HTTP {}", response.status()),
            Ok(response) => return Err(format!("HTTP {} (not retried)", response.status())),
            Err(error) if error.is_builder() => return Err(format!("bad request: {error}")),
            Err(error) => error_chain(&error),
        };
        if attempt == attempts {
            return Err(format!("{problem}; gave up after {attempts} attempts"));
        }
        tracing::debug!(
            target: LOG_TARGET,
            webhook = target.index, delivery = %delivery.id, attempt, %problem, ?backoff, "retrying notification"
        );
        tokio::time::sleep(backoff).await;
        backoff = backoff.saturating_mul(retry.factor);
    }
    Err("no attempt made".to_owned())
}

/// Server errors and rate limiting may pass; other answers will not change.
fn is_retryable(status: StatusCode) -> bool {
    status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS
}

/// An error and its sources on one line ("error sending request: connection refused").
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::alerts::engine::AlertState;

    fn alert(state: AlertState) -> Alert {
        Alert {
            rule: "errors".into(),
            endpoint: "fraud".into(),
            state,
            severity: "critical".into(),
            summary: "too many errors".into(),
            value: 0.25,
            since: "2026-11-01T10:00:00Z".into(),
            fingerprint: "0011223344556677".into(),
        }
    }

    #[test]
    fn only_firing_and_resolved_are_notified() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let firing = Notification::from_transition(&Transition::Firing(alert(AlertState::Firing)), now).unwrap();
        assert_eq!(firing.status, NotificationStatus::Firing);
        assert_eq!(firing.sent_at, "2023-11-14T22:13:20Z");
        let resolved = Transition::Resolved(alert(AlertState::Resolved));
        assert_eq!(Notification::from_transition(&resolved, now).unwrap().status, NotificationStatus::Resolved);
        assert!(Notification::from_transition(&Transition::Pending(alert(AlertState::Pending)), now).is_none());
        assert!(Notification::from_transition(&Transition::Cancelled(alert(AlertState::Resolved)), now).is_none());
    }

    #[test]
    fn notification_json_shape() {
        let now = SystemTime::UNIX_EPOCH;
        let notification = Notification::from_transition(&Transition::Firing(alert(AlertState::Firing)), now).unwrap();
        let json = serde_json::to_value(&notification).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "status": "firing",
                "alert": {
                    "rule": "errors", "endpoint": "fraud", "state": "firing", "severity": "critical",
                    "summary": "too many errors", "value": 0.25, "since": "2026-11-01T10:00:00Z",
                    "fingerprint": "0011223344556677"
                },
                "sent_at": "1970-01-01T00:00:00Z"
            })
        );
    }

    #[test]
    fn debug_hides_secret_and_path() {
        let webhook = Webhook {
            url: "https://hooks.example.com/services/T0/B0/token".into(),
            secret: Some("s3cret".into()),
            timeout: Webhook::DEFAULT_TIMEOUT,
        };
        let shown = format!("{webhook:?}");
        assert!(shown.contains("https://hooks.example.com"), "{shown}");
        assert!(!shown.contains("token") && !shown.contains("s3cret"), "{shown}");
    }

    #[test]
    fn retryable_statuses() {
        assert!(is_retryable(StatusCode::INTERNAL_SERVER_ERROR));
        assert!(is_retryable(StatusCode::SERVICE_UNAVAILABLE));
        assert!(is_retryable(StatusCode::TOO_MANY_REQUESTS));
        assert!(!is_retryable(StatusCode::BAD_REQUEST));
        assert!(!is_retryable(StatusCode::NOT_FOUND));
    }

    #[test]
    fn start_needs_a_runtime() {
        assert!(matches!(Notifier::start(NotifierConfig::default()), Err(NotifyError::NoRuntime)));
    }

    #[tokio::test]
    async fn bad_configurations_are_refused() {
        let webhook = |url: &str, secret: Option<&str>| Webhook {
            url: url.into(),
            secret: secret.map(str::to_owned),
            timeout: Webhook::DEFAULT_TIMEOUT,
        };
        let start = |webhooks, queue_capacity| {
            Notifier::start(NotifierConfig { webhooks, queue_capacity, retry: Retry::default() })
        };
        for url in ["not a url", "ftp://example.com/x", "file:///etc/passwd", "http://"] {
            let result = start(vec![webhook("http://ok.example/", None), webhook(url, None)], 8);
            assert!(matches!(result, Err(NotifyError::InvalidUrl { index: 1 })), "{url}: {result:?}");
        }
        let result = start(vec![webhook("http://ok.example/", Some(""))], 8);
        assert!(matches!(result, Err(NotifyError::EmptySecret { index: 0 })), "{result:?}");
        let result = start(vec![webhook("http://ok.example/", None)], 0);
        assert!(matches!(result, Err(NotifyError::ZeroCapacity)), "{result:?}");
        assert_eq!(NotifyError::ZeroCapacity.code(), "invalid_alert_config");
    }

    #[tokio::test]
    async fn without_webhooks_notifications_are_only_logged() {
        let notifier = Notifier::start(NotifierConfig::default()).unwrap();
        let notification =
            Notification::from_transition(&Transition::Firing(alert(AlertState::Firing)), SystemTime::now()).unwrap();
        notifier.notify(&notification);
        assert_eq!((notifier.sent(), notifier.failed(), notifier.dropped()), (0, 0, 0));
        notifier.close().await;
    }
}
