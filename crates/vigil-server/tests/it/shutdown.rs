//! Graceful shutdown: a request in flight when the signal comes still gets its
//! answer, new connections are refused, and `run` returns Ok.

use crate::common::*;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn in_flight_requests_finish_after_the_signal() {
    let mut s = TestServer::demo().await;
    let body = serde_json::to_vec(&request_for(&case("digits_cnn"))).unwrap();
    let addr = s.base.trim_start_matches("http://").to_owned();
    let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "POST /v2/models/digits_cnn/infer HTTP/1.1\r\nHost: x\r\n{}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        auth_line(&s.key),
        body.len()
    );
    // Send the head and half the body: the request is now in flight.
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&body[..body.len() / 2]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;

    s.signal_stop();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let refused = tokio::time::timeout(Duration::from_secs(2), async {
        match tokio::net::TcpStream::connect(&addr).await {
            Err(_) => true,
            // Accepted by the kernel backlog at most; the server never answers it.
            Ok(mut c) => {
                let _ = c.write_all(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n").await;
                let mut buf = [0u8; 16];
                matches!(c.read(&mut buf).await, Ok(0) | Err(_))
            }
        }
    })
    .await
    .unwrap_or(true);
    assert!(refused, "new connections are not served after the signal");

    stream.write_all(&body[body.len() / 2..]).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let text = String::from_utf8_lossy(&response);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains("\"model_name\":\"digits_cnn\""), "{text}");

    let result = tokio::time::timeout(Duration::from_secs(10), s.task.take().unwrap()).await.unwrap().unwrap();
    assert!(result.is_ok(), "{result:?}");
}

/// A client that never finishes its body cannot hold the process past the grace period.
#[tokio::test]
async fn a_stalled_request_is_cut_after_the_grace_period() {
    let mut config = config(None, vigil_server::Limits::default());
    config.shutdown_grace_seconds = 1;
    let mut s = TestServer::start(config).await;
    let addr = s.base.trim_start_matches("http://").to_owned();
    let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "POST /v2/models/digits_cnn/infer HTTP/1.1\r\nHost: x\r\n{}Content-Length: 1000\r\n\r\n{{",
        auth_line(&s.key)
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    s.signal_stop();
    let started = std::time::Instant::now();
    let result = tokio::time::timeout(Duration::from_secs(10), s.task.take().unwrap()).await.unwrap().unwrap();
    assert!(result.is_ok(), "{result:?}");
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
}
