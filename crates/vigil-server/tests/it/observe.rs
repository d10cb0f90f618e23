//! Observability with real parts: gRPC answers carry the request id and stage
//! timings; the prediction log records, filters and encrypts; an OTLP receiver
//! on loopback gets spans with the caller's parent; a real Prometheus server
//! scrapes the metrics listener and answers a PromQL query.

use crate::common::*;
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use vigil_proto::inference as pb;

/// The breast-cancer demo request with a first feature no model would see,
/// so that its text can be looked for in the store's files.
fn marked_request() -> Value {
    let mut body = request_for(&case("breast_cancer"));
    body["inputs"][0]["data"][0] = json!(4242.125);
    body
}

/// Posts the marked request to the demo's tabular model with one extra header.
async fn infer_with(s: &TestServer, header: &str, value: String) -> reqwest::Response {
    s.client
        .post(s.url("/v2/models/breast_cancer/infer"))
        .header(header, value)
        .json(&marked_request())
        .send()
        .await
        .unwrap()
}

pub(crate) async fn until<F, Fut, T>(within: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let started = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(started.elapsed() < within, "not within {within:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn grpc_answers_carry_request_id_and_server_timing_and_are_counted() {
    let s = TestServer::demo().await;
    let mut client = s.grpc_client().await;
    let c = case("breast_cancer");
    let input = &c["inputs"]["features"];
    let data: Vec<f32> = input["data"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
    let shape: Vec<i64> = input["shape"].as_array().unwrap().iter().map(|v| v.as_i64().unwrap()).collect();
    let request = || pb::ModelInferRequest {
        model_name: "breast_cancer".into(),
        inputs: vec![pb::model_infer_request::InferInputTensor {
            name: "features".into(),
            datatype: "FP32".into(),
            shape: shape.clone(),
            contents: Some(Box::new(pb::InferTensorContents { fp32_contents: data.clone(), ..Default::default() })),
            ..Default::default()
        }],
        ..Default::default()
    };
    let mut named = tonic::Request::new(request());
    named.metadata_mut().insert("x-request-id", "grpc-req-1".parse().unwrap());
    let answer = client.model_infer(named).await.unwrap();
    assert_eq!(answer.metadata().get("x-request-id").unwrap(), "grpc-req-1");
    let timing = answer.metadata().get("server-timing").unwrap().to_str().unwrap().to_owned();
    for stage in ["preprocess", "queue", "inference", "postprocess", "total"] {
        assert!(timing.contains(&format!("{stage};dur=")), "{timing}");
    }
    // Without one, an id is made; an error carries it too.
    let answer = client.model_infer(request()).await.unwrap();
    assert_eq!(answer.metadata().get("x-request-id").unwrap().len(), 32);
    let mut bad = request();
    bad.inputs[0].shape = vec![1, 29];
    bad.inputs[0].contents = None;
    bad.raw_input_contents = vec![vec![0; 29 * 4]];
    let error = client.model_infer(bad).await.unwrap_err();
    assert_eq!(error.code(), tonic::Code::InvalidArgument);
    assert_eq!(error.metadata().get("x-request-id").unwrap().len(), 32);

    let text = s.client.get(s.url("/metrics")).send().await.unwrap().text().await.unwrap();
    let has = |line: &str| assert!(text.lines().any(|l| l == line), "no line {line:?} in\n{text}");
    has("vigil_requests_total{endpoint=\"breast_cancer\",version=\"1\",status=\"2xx\",code=\"\"} 2");
    has("vigil_requests_total{endpoint=\"breast_cancer\",version=\"\",status=\"4xx\",code=\"invalid_input\"} 1");
    s.stop().await.unwrap();
}

#[tokio::test]
async fn predictions_are_logged_filtered_and_encrypted_at_rest() {
    let mut config = config(None, vigil_server::Limits::default());
    config.prediction_log.default.sample_rate = 1.0;
    let data_dir = config.data_dir.clone();
    let s = TestServer::start(config).await;
    for i in 0..3 {
        assert_eq!(infer_with(&s, "x-request-id", format!("logged-{i}")).await.status(), 200);
    }
    let path = "/api/v1/endpoints/breast_cancer/predictions";
    let records = until(Duration::from_secs(10), || async {
        let (status, v) = s.get(path).await;
        assert_eq!(status, 200, "{v}");
        let records = v["predictions"].as_array().cloned().unwrap_or_default();
        (records.len() == 3).then_some(records)
    })
    .await;
    let ids: Vec<&str> = records.iter().map(|r| r["request_id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["logged-0", "logged-1", "logged-2"], "oldest first");
    let first = &records[0];
    assert_eq!(first["version"], "1");
    assert!(first["principal"].as_str().unwrap().starts_with("key:"), "{first}");
    // The demo has a feature spec: its inputs are logged by feature name.
    assert!(first.get("inputs").is_none(), "{first}");
    assert_eq!(first["features"][0]["mean_radius"], 4242.125);
    assert_eq!(first["features"].as_array().unwrap().len(), 5);
    assert!(!first["outputs"].as_array().unwrap().is_empty(), "{first}");

    // Filters and paging.
    let (_, one) = s.get(&format!("{path}?request_id=logged-1")).await;
    assert_eq!(one["predictions"].as_array().unwrap().len(), 1);
    let (_, page) = s.get(&format!("{path}?limit=2")).await;
    let cursor = page["next"].as_str().unwrap().to_owned();
    let (_, rest) = s.get(&format!("{path}?after={cursor}")).await;
    assert_eq!(rest["predictions"][0]["request_id"], "logged-2");
    let (status, bad) = s.get(&format!("{path}?since=yesterday")).await;
    assert_eq!(status, 400);
    assert!(bad["error"].as_str().unwrap().starts_with("since"), "{bad}");
    // Reading the log takes Contributor: a Predictor key is refused.
    let (_, key) = s.post_json("/api/v1/keys", &json!({"name": "caller", "role": "predictor"})).await;
    let predictor = authorized_client(key["key"].as_str().unwrap());
    assert_eq!(predictor.get(s.url(path)).send().await.unwrap().status(), 403);

    let metrics = s.client.get(s.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l == "vigil_prediction_log_records_total{endpoint=\"breast_cancer\",outcome=\"written\"} 3"),
        "{metrics}"
    );
    s.stop().await.unwrap();

    // The marked value is nowhere in the store's files: the payload is sealed.
    let mut scanned = 0;
    for entry in std::fs::read_dir(&data_dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            let bytes = std::fs::read(&path).unwrap();
            assert!(!bytes.windows(8).any(|w| w == b"4242.125"), "plaintext in {}", path.display());
            scanned += 1;
        }
    }
    assert!(scanned >= 1, "no store files in {}", data_dir.display());
}

/// With `prediction_log.store` set to an object store, records go there as
/// sealed objects: those still open at shutdown are stored by it, read after
/// a restart, and joined by ground truth.
async fn prediction_log_in(location: String, scanned_dir: Option<&std::path::Path>) {
    let mut config = config(None, vigil_server::Limits::default());
    config.prediction_log.default.sample_rate = 1.0;
    config.prediction_log.store = Some(location.clone());
    let s = TestServer::start(config.clone()).await;
    for i in 0..3 {
        assert_eq!(infer_with(&s, "x-request-id", format!("objects-{i}")).await.status(), 200);
    }
    let loan = json!({"instances": [
        {"age": 30, "income": 50.0, "debt_ratio": 0.3, "employment": "salaried", "region": "north"}]});
    let r = s.client.post(s.url("/v1/models/credit:predict")).header("x-request-id", "loan-1").json(&loan);
    let answered: Value = r.send().await.unwrap().json().await.unwrap();
    let label = answered["predictions"][0]["label"].as_str().unwrap().to_owned();
    // Objects wait up to 10 s for more records; stopping stores them now.
    s.stop().await.unwrap();

    let s = TestServer::start(config).await;
    let (status, v) = s.get("/api/v1/endpoints/breast_cancer/predictions").await;
    assert_eq!(status, 200, "{v}");
    let ids: Vec<&str> =
        v["predictions"].as_array().unwrap().iter().map(|r| r["request_id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["objects-0", "objects-1", "objects-2"]);
    assert_eq!(v["predictions"][0]["features"][0]["mean_radius"], 4242.125);
    let (_, page) = s.get("/api/v1/endpoints/breast_cancer/predictions?limit=2").await;
    let cursor = page["next"].as_str().unwrap().to_owned();
    let (_, rest) = s.get(&format!("/api/v1/endpoints/breast_cancer/predictions?after={cursor}")).await;
    assert_eq!(rest["predictions"][0]["request_id"], "objects-2");
    let feedback = json!({"feedback": [{"request_id": "loan-1", "label": label}]});
    let (status, joined) = s.post_json("/api/v1/endpoints/credit/feedback", &feedback).await;
    assert_eq!((status, joined), (200, json!({"joined": 1, "not_found": []})));
    s.stop().await.unwrap();

    // The chunks are in the object store (not in the metadata store).
    let objects = vigil_store::ObjectPredictionStore::open(&location).unwrap();
    for (endpoint, records) in [("breast_cancer", 3), ("credit", 1)] {
        let filter =
            vigil_core::predictions::ChunkFilter { endpoint: endpoint.into(), limit: 10, ..Default::default() };
        let chunks = vigil_store::PredictionStore::list_chunks(&objects, &filter).await.unwrap();
        assert_eq!(chunks.iter().map(|c| c.records).sum::<u32>(), records, "{endpoint}");
    }

    if let Some(dir) = scanned_dir {
        let mut objects = 0;
        let mut pending = vec![dir.to_path_buf()];
        while let Some(path) = pending.pop() {
            if path.is_dir() {
                pending.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
            } else {
                let bytes = std::fs::read(&path).unwrap();
                assert!(!bytes.windows(8).any(|w| w == b"4242.125"), "plaintext in {}", path.display());
                objects += 1;
            }
        }
        assert!(objects >= 2, "one object per endpoint at least, found {objects}");
    }
}

#[tokio::test]
async fn prediction_log_in_a_directory() {
    let dir = temp_data_dir();
    prediction_log_in(dir.display().to_string(), Some(&dir)).await;
}

#[tokio::test]
async fn prediction_log_in_s3() {
    let Ok(bucket) = std::env::var("VIGIL_TEST_S3_BUCKET") else {
        return vigil_store::testing::skipped("prediction_log_in_s3", "VIGIL_TEST_S3_BUCKET is not set").unwrap_or(());
    };
    prediction_log_in(format!("s3://{bucket}/{}", vigil_store::testing::unique_prefix("predictions")), None).await;
}

#[tokio::test]
async fn prediction_log_in_azure_blob() {
    let Ok(container) = std::env::var("VIGIL_TEST_AZURE_CONTAINER") else {
        return vigil_store::testing::skipped("prediction_log_in_azure_blob", "VIGIL_TEST_AZURE_CONTAINER is not set")
            .unwrap_or(());
    };
    prediction_log_in(format!("az://{container}/{}", vigil_store::testing::unique_prefix("predictions")), None).await;
}

/// Spans received by a loopback OTLP/HTTP collector.
pub(crate) type Received = Arc<Mutex<Vec<opentelemetry_proto::tonic::trace::v1::Span>>>;

/// The demo server exporting its spans to a fresh loopback collector.
pub(crate) async fn traced_demo() -> (TestServer, Received) {
    let (collector, received) = otlp_receiver().await;
    let mut config = config(None, vigil_server::Limits::default());
    config.otlp_endpoint = Some(collector);
    (TestServer::start(config).await, received)
}

pub(crate) async fn otlp_receiver() -> (String, Received) {
    use prost::Message;
    let received: Received = Arc::default();
    let store = Arc::clone(&received);
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |body: bytes::Bytes| {
            let store = Arc::clone(&store);
            async move {
                let request =
                    opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest::decode(body).unwrap();
                let spans = request.resource_spans.into_iter().flat_map(|r| r.scope_spans).flat_map(|s| s.spans);
                store.lock().unwrap().extend(spans);
                ([("content-type", "application/x-protobuf")], Vec::<u8>::new())
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, received)
}

#[tokio::test]
async fn spans_reach_an_otlp_receiver_with_the_callers_parent() {
    let (s, received) = traced_demo().await;
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let parent = "00f067aa0ba902b7";
    let r = infer_with(&s, "traceparent", format!("00-{trace_id}-{parent}-01")).await;
    assert_eq!(r.status(), 200);
    let spans = until(Duration::from_secs(15), || async {
        let spans = received.lock().unwrap().clone();
        (spans.len() >= 5).then_some(spans)
    })
    .await;
    let server = spans.iter().find(|s| s.name == "infer").expect("a server span");
    assert_eq!(hex(&server.trace_id), trace_id);
    assert_eq!(hex(&server.parent_span_id), parent, "the caller's span is the parent");
    for stage in ["preprocess", "queue", "inference", "postprocess"] {
        let child = spans.iter().find(|s| s.name == stage).unwrap_or_else(|| panic!("no {stage} span"));
        assert_eq!(child.trace_id, server.trace_id);
        assert_eq!(child.parent_span_id, server.span_id, "{stage} is a child of the server span");
        assert!(child.start_time_unix_nano >= server.start_time_unix_nano);
        assert!(child.end_time_unix_nano <= server.end_time_unix_nano);
    }
    let endpoint = server.attributes.iter().find(|a| a.key == "vigil.endpoint").expect("endpoint attribute");
    assert!(format!("{:?}", endpoint.value).contains("breast_cancer"));
    s.stop().await.unwrap();
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Debian's `prometheus` scrapes the unauthenticated metrics listener; a
/// PromQL query over its HTTP API returns the request counter.
#[tokio::test]
async fn a_real_prometheus_scrapes_and_answers_promql() {
    let Some(prometheus) = which("prometheus") else {
        return vigil_store::testing::skipped::<()>(
            "a_real_prometheus_scrapes_and_answers_promql",
            "prometheus is not installed (Debian's prometheus package)",
        )
        .unwrap_or_default();
    };
    let mut config = config(None, vigil_server::Limits::default());
    config.metrics_addr = Some("127.0.0.1:0".parse().unwrap());
    let s = TestServer::start(config).await;
    let metrics = s.metrics.clone().unwrap();
    // The listener serves /metrics without a key, and nothing else.
    let open = reqwest::Client::new();
    assert_eq!(open.get(format!("{metrics}/metrics")).send().await.unwrap().status(), 200);
    assert_eq!(open.get(format!("{metrics}/api/v1/keys")).send().await.unwrap().status(), 404);
    for _ in 0..4 {
        let r = s.client.post(s.url("/v2/models/breast_cancer/infer")).json(&marked_request()).send().await.unwrap();
        assert_eq!(r.status(), 200);
    }

    let dir = temp_data_dir();
    std::fs::create_dir_all(&dir).unwrap();
    let target = metrics.trim_start_matches("http://");
    std::fs::write(
        dir.join("prometheus.yml"),
        format!(
            "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\n\
             scrape_configs:\n  - job_name: vigil\n    static_configs: [{{targets: ['{target}']}}]\n"
        ),
    )
    .unwrap();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut child = std::process::Command::new(prometheus)
        .arg(format!("--config.file={}", dir.join("prometheus.yml").display()))
        .arg(format!("--storage.tsdb.path={}", dir.join("tsdb").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(dir.join("prometheus.log")).unwrap())
        .spawn()
        .unwrap();
    let query = "sum(vigil_requests_total{job=\"vigil\",endpoint=\"breast_cancer\",status=\"2xx\"})";
    let api = format!("http://127.0.0.1:{port}/api/v1/query");
    let value = until(Duration::from_secs(30), || async {
        let r = open.get(&api).query(&[("query", query)]).send().await.ok()?;
        let v: Value = r.json().await.ok()?;
        let value = v["data"]["result"][0]["value"][1].as_str()?.to_owned();
        (value == "4").then_some(value)
    })
    .await;
    assert_eq!(value, "4");
    let histogram = open
        .get(&api)
        .query(&[("query", "vigil_request_duration_seconds_count{stage=\"inference\",endpoint=\"breast_cancer\"}")])
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    assert_eq!(histogram["data"]["result"][0]["metric"]["version"], "1", "{histogram}");
    let _ = child.kill();
    let _ = child.wait();
    s.stop().await.unwrap();
}

fn which(program: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH")?.to_str()?.split(':').map(|d| std::path::Path::new(d).join(program)).find(|p| p.is_file())
}

/// A rule over the request rate fires while traffic flows and resolves when
/// it stops, each time as a signed POST to a real HTTP receiver.
#[tokio::test]
async fn an_alert_fires_and_resolves_at_a_real_webhook() {
    type Deliveries = Arc<Mutex<Vec<(Value, String)>>>;
    let deliveries: Deliveries = Arc::default();
    let store = Arc::clone(&deliveries);
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: axum::http::HeaderMap, body: bytes::Bytes| {
            let store = Arc::clone(&store);
            async move {
                let signature = headers.get("x-vigil-signature").map(|v| v.to_str().unwrap().to_owned());
                store.lock().unwrap().push((serde_json::from_slice(&body).unwrap(), signature.unwrap_or_default()));
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let mut config = config(None, vigil_server::Limits::default());
    config.alerts = serde_json::from_value(json!({
        "interval_seconds": 1,
        "rules": [{"name": "busy", "signal": "request_rate", "endpoint": "breast_cancer",
                   "condition": {"kind": "threshold", "op": ">", "value": 2.0}, "severity": "ticket",
                   "summary": "breast_cancer is busy"}],
        "webhooks": [{"url": hook, "secret": "s3cret"}],
    }))
    .unwrap();
    let s = TestServer::start(config).await;
    let started = Instant::now();
    let body = marked_request();
    let firing = until(Duration::from_secs(15), || async {
        for _ in 0..5 {
            s.client.post(s.url("/v2/models/breast_cancer/infer")).json(&body).send().await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        deliveries.lock().unwrap().iter().find(|(d, _)| d["status"] == "firing").cloned()
    })
    .await;
    assert_eq!(firing.0["alert"]["rule"], "busy");
    assert_eq!(firing.0["alert"]["endpoint"], "breast_cancer");
    assert!(firing.1.starts_with("sha256="), "signed: {}", firing.1);
    let (_, listed) = s.get("/api/v1/alerts").await;
    assert_eq!(listed["alerts"][0]["state"], "firing", "{listed}");
    let metrics = s.client.get(s.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.lines().any(|l| l == "vigil_alerts_firing{rule=\"busy\"} 1"), "{metrics}");
    // Traffic stops: the rate falls to 0 and the alert resolves.
    let resolved = until(Duration::from_secs(10), || async {
        deliveries.lock().unwrap().iter().find(|(d, _)| d["status"] == "resolved").cloned()
    })
    .await;
    assert_eq!(resolved.0["alert"]["rule"], "busy");
    assert!(started.elapsed() < Duration::from_secs(25));
    let (_, listed) = s.get("/api/v1/alerts").await;
    assert_eq!(listed["alerts"], json!([]));
    s.stop().await.unwrap();
}

/// Rules made through the API join the configuration's, are evaluated, and
/// go away when deleted; the configuration's rules cannot be changed there.
#[tokio::test]
async fn alert_rules_through_the_api() {
    let mut config = config(None, vigil_server::Limits::default());
    config.alerts = serde_json::from_value(json!({
        "interval_seconds": 1,
        "rules": [{"name": "configured", "signal": "request_rate",
                   "condition": {"kind": "threshold", "op": ">", "value": 1000000.0}}],
    }))
    .unwrap();
    let s = TestServer::start(config).await;
    let send = |method, path, body| crate::registry::send(&s, method, path, body);
    let busy = json!({"name": "busy", "signal": "request_rate", "endpoint": "breast_cancer",
                      "condition": {"kind": "threshold", "op": ">", "value": 2.0}});
    let path = "/api/v1/alerts/rules/busy";
    let (status, body) = send(reqwest::Method::PUT, path, Some(busy.clone())).await;
    assert_eq!(status, 200, "{body}");
    let (_, listed) = s.get("/api/v1/alerts").await;
    let sources: Vec<(String, String)> = listed["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["name"].as_str().unwrap().to_owned(), r["source"].as_str().unwrap().to_owned()))
        .collect();
    assert_eq!(sources, [("configured".to_owned(), "config".to_owned()), ("busy".to_owned(), "api".to_owned())]);

    // Refusals name what is wrong.
    let (status, body) = send(reqwest::Method::PUT, "/api/v1/alerts/rules/other", Some(busy.clone())).await;
    assert_eq!((status, body["error"].as_str().unwrap().starts_with("name")), (400, true), "{body}");
    let mut slow = busy.clone();
    slow["for_seconds"] = json!(100_000_000);
    let (status, body) = send(reqwest::Method::PUT, path, Some(slow)).await;
    assert_eq!(status, 400);
    assert!(body["error"].as_str().unwrap().contains("for_seconds"), "{body}");
    let mut unknown = busy.clone();
    unknown["colour"] = json!("red");
    let (status, body) = send(reqwest::Method::PUT, path, Some(unknown)).await;
    assert_eq!(status, 400, "{body}");
    let mut configured = busy.clone();
    configured["name"] = json!("configured");
    let (status, _) = send(reqwest::Method::PUT, "/api/v1/alerts/rules/configured", Some(configured)).await;
    assert_eq!(status, 409);
    assert_eq!(send(reqwest::Method::DELETE, "/api/v1/alerts/rules/configured", None).await.0, 409);
    let (_, key) = s.post_json("/api/v1/keys", &json!({"name": "reader", "role": "reader"})).await;
    let reader = authorized_client(key["key"].as_str().unwrap());
    assert_eq!(reader.put(s.url(path)).json(&busy).send().await.unwrap().status(), 403);

    // The API's rule is evaluated like the configuration's.
    let body = marked_request();
    until(Duration::from_secs(15), || async {
        for _ in 0..5 {
            s.client.post(s.url("/v2/models/breast_cancer/infer")).json(&body).send().await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let (_, listed) = s.get("/api/v1/alerts").await;
        listed["alerts"].as_array().unwrap().iter().any(|a| a["rule"] == "busy" && a["state"] == "firing").then_some(())
    })
    .await;
    assert_eq!(send(reqwest::Method::DELETE, path, None).await.0, 204);
    let (_, listed) = s.get("/api/v1/alerts").await;
    assert_eq!(listed["alerts"], json!([]), "the deleted rule's alert ended");
    assert_eq!(listed["rules"].as_array().unwrap().len(), 1);
    assert_eq!(send(reqwest::Method::DELETE, path, None).await.0, 404);
    s.stop().await.unwrap();
}

/// A shadow copy of a traced request is a span under the request's span,
/// in the caller's trace.
#[tokio::test]
async fn shadow_copies_are_spans_under_the_request() {
    use crate::registry::{push, registry_config, set_traffic};
    let (collector, received) = otlp_receiver().await;
    let mut config = registry_config();
    config.otlp_endpoint = Some(collector);
    let s = TestServer::start(config).await;
    for stage in ["a", "b"] {
        assert_eq!(push(&s, "fraud", &format!("[labels]\nstage = '{stage}'\n")).await.0, 201);
    }
    set_traffic(&s, "fraud", json!([{"version": 1, "weight": 100}]), json!([{"version": 2, "percent": 100}])).await;
    let trace_id = "0af7651916cd43dd8448eb211c80319c";
    let r = s
        .client
        .post(s.url("/v2/models/fraud/infer"))
        .header("traceparent", format!("00-{trace_id}-b7ad6b7169203331-01"))
        .json(&request_for(&case("breast_cancer")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let spans = until(Duration::from_secs(15), || async {
        let spans = received.lock().unwrap().clone();
        spans.iter().any(|s| s.name == "shadow").then_some(spans)
    })
    .await;
    let server = spans.iter().find(|s| s.name == "infer" && hex(&s.trace_id) == trace_id).expect("the request's span");
    let shadow = spans.iter().find(|s| s.name == "shadow").unwrap();
    assert_eq!(shadow.trace_id, server.trace_id);
    assert_eq!(shadow.parent_span_id, server.span_id, "the shadow copy is a child of the request's span");
    let attribute = |key: &str| {
        let a = shadow.attributes.iter().find(|a| a.key == key).unwrap_or_else(|| panic!("no {key}"));
        format!("{:?}", a.value)
    };
    assert!(attribute("vigil.version").contains("\"2\""), "{}", attribute("vigil.version"));
    assert!(attribute("vigil.shadow.outcome").contains("agreed"), "{}", attribute("vigil.shadow.outcome"));
    s.stop().await.unwrap();
}
