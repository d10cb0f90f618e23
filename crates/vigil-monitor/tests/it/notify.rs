//! The notifier against a real HTTP receiver: an axum server on 127.0.0.1:0
//! that records every request and answers from a script.
#![allow(clippy::unwrap_used)]

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use vigil_monitor::{
    Alert, AlertState, Notification, Notifier, NotifierConfig, Retry, Transition, Webhook, fingerprint,
};

/// One request as the receiver saw it.
#[derive(Debug, Clone)]
struct Received {
    headers: HeaderMap,
    body: Bytes,
}

#[derive(Default)]
struct Receiver {
    /// Statuses to answer, in order; 200 once exhausted.
    script: Mutex<VecDeque<u16>>,
    received: Mutex<Vec<Received>>,
}

impl Receiver {
    fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }
}

async fn answer(State(receiver): State<Arc<Receiver>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    receiver.received.lock().unwrap().push(Received { headers, body });
    let status = receiver.script.lock().unwrap().pop_front().unwrap_or(200);
    StatusCode::from_u16(status).unwrap()
}

async fn never_answer(State(receiver): State<Arc<Receiver>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    receiver.received.lock().unwrap().push(Received { headers, body });
    std::future::pending().await
}

/// Starts a receiver answering `script` on `/hook` and never answering on
/// `/hang`; returns its base URL.
async fn start_receiver(script: &[u16]) -> (String, Arc<Receiver>) {
    let receiver = Arc::new(Receiver { script: Mutex::new(script.iter().copied().collect()), ..Receiver::default() });
    let app = axum::Router::new()
        .route("/hook", post(answer))
        .route("/hang", post(never_answer))
        .with_state(Arc::clone(&receiver));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{address}"), receiver)
}

const FAST_RETRY: Retry = Retry { initial_backoff: Duration::from_millis(10), factor: 2, max_attempts: 5 };

fn notifier(url: String, secret: Option<&str>, timeout: Duration, queue_capacity: usize) -> Notifier {
    let webhook = Webhook { url, secret: secret.map(str::to_owned), timeout };
    Notifier::start(NotifierConfig { webhooks: vec![webhook], queue_capacity, retry: FAST_RETRY }).unwrap()
}

fn firing() -> Notification {
    let alert = Alert {
        rule: "errors".into(),
        endpoint: "fraud".into(),
        state: AlertState::Firing,
        severity: "critical".into(),
        summary: "too many errors".into(),
        value: 0.25,
        since: "2026-11-01T10:00:00Z".into(),
        fingerprint: fingerprint("errors", "fraud"),
    };
    Notification::from_transition(&Transition::Firing(alert), SystemTime::now()).unwrap()
}

fn header<'a>(request: &'a Received, name: &str) -> Option<&'a str> {
    request.headers.get(name).map(|value| value.to_str().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivers_signed_json() {
    let (base, receiver) = start_receiver(&[]).await;
    let notifier = notifier(format!("{base}/hook"), Some("webhook-secret"), Duration::from_secs(5), 8);
    let notification = firing();
    notifier.notify(&notification);
    notifier.notify(&notification);
    wait_until(|| notifier.sent() == 2).await;
    assert_eq!((notifier.failed(), notifier.dropped()), (0, 0));
    notifier.close().await;

    let received = receiver.received();
    assert_eq!(received.len(), 2);
    let request = &received[0];
    assert_eq!(header(request, "content-type"), Some("application/json"));
    let body: serde_json::Value = serde_json::from_slice(&request.body).unwrap();
    assert_eq!(body, serde_json::to_value(&notification).unwrap());
    assert_eq!(body["status"], "firing");
    assert_eq!(body["alert"]["rule"], "errors");

    // Verified here with hmac directly, not through the notifier's code.
    let mut mac = Hmac::<Sha256>::new_from_slice(b"webhook-secret").unwrap();
    mac.update(&request.body);
    let expected = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    assert_eq!(header(request, "x-vigil-signature"), Some(expected.as_str()));

    let first_id = header(&received[0], "x-vigil-delivery").unwrap();
    let second_id = header(&received[1], "x-vigil-delivery").unwrap();
    assert_eq!(first_id.len(), 32);
    assert_ne!(first_id, second_id, "each notification has its own delivery id");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_secret_there_is_no_signature() {
    let (base, receiver) = start_receiver(&[]).await;
    let notifier = notifier(format!("{base}/hook"), None, Duration::from_secs(5), 8);
    notifier.notify(&firing());
    notifier.close().await;
    let received = receiver.received();
    assert_eq!(received.len(), 1);
    assert_eq!(header(&received[0], "x-vigil-signature"), None);
    assert!(header(&received[0], "x-vigil-delivery").is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_are_retried_with_the_same_delivery_id() {
    let (base, receiver) = start_receiver(&[500, 500, 200]).await;
    let notifier = notifier(format!("{base}/hook"), Some("k"), Duration::from_secs(5), 8);
    let started = Instant::now();
    notifier.notify(&firing());
    wait_until(|| notifier.sent() + notifier.failed() == 1).await;
    assert_eq!((notifier.sent(), notifier.failed()), (1, 0));
    assert!(started.elapsed() >= Duration::from_millis(30), "backoff 10 ms then 20 ms");
    notifier.close().await;

    let received = receiver.received();
    assert_eq!(received.len(), 3);
    let ids: Vec<_> = received.iter().map(|request| header(request, "x-vigil-delivery").unwrap()).collect();
    assert!(ids.iter().all(|id| *id == ids[0]), "{ids:?}");
    let bodies: Vec<_> = received.iter().map(|request| request.body.clone()).collect();
    assert!(bodies.iter().all(|body| *body == bodies[0]), "the signed body does not change on retries");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limiting_is_retried_and_gives_up_after_max_attempts() {
    let (base, receiver) = start_receiver(&[429, 503, 503, 503, 503, 503]).await;
    let notifier = notifier(format!("{base}/hook"), None, Duration::from_secs(5), 8);
    notifier.notify(&firing());
    wait_until(|| notifier.sent() + notifier.failed() == 1).await;
    assert_eq!((notifier.sent(), notifier.failed()), (0, 1));
    notifier.close().await;
    assert_eq!(receiver.received().len(), 5, "max_attempts");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_errors_are_not_retried() {
    let (base, receiver) = start_receiver(&[400, 200]).await;
    let notifier = notifier(format!("{base}/hook"), None, Duration::from_secs(5), 8);
    notifier.notify(&firing());
    wait_until(|| notifier.sent() + notifier.failed() == 1).await;
    assert_eq!((notifier.sent(), notifier.failed()), (0, 1));
    notifier.close().await;
    assert_eq!(receiver.received().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_errors_are_retried() {
    // Bind then drop a listener: nothing listens on that port any more.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    drop(listener);
    let notifier = notifier(format!("http://{address}/hook"), None, Duration::from_secs(5), 8);
    let started = Instant::now();
    notifier.notify(&firing());
    wait_until(|| notifier.failed() == 1).await;
    // Four waits: 10 + 20 + 40 + 80 ms.
    assert!(started.elapsed() >= Duration::from_millis(150), "{:?}", started.elapsed());
    notifier.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_queue_drops_and_counts_without_blocking() {
    let (base, receiver) = start_receiver(&[]).await;
    let notifier = notifier(format!("{base}/hang"), None, Duration::from_secs(60), 1);
    let notification = firing();
    let started = Instant::now();
    for _ in 0..20 {
        notifier.notify(&notification);
    }
    assert!(started.elapsed() < Duration::from_secs(1), "notify waited: {:?}", started.elapsed());
    // One delivery may be in flight and one queued; every other was dropped.
    let dropped = notifier.dropped();
    assert!((18..=19).contains(&dropped), "dropped {dropped}");
    wait_until(|| !receiver.received().is_empty()).await;
    assert_eq!((notifier.sent(), notifier.failed()), (0, 0));
    // Not closed: close() would wait for the hanging receiver. The runtime's
    // shutdown at the end of the test stops the delivery task.
}

/// Polls `done` every 5 ms for up to 10 s.
async fn wait_until(done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
