//! The records API on a real server: named features in, labelled predictions
//! out, checked against what scikit-learn and onnxruntime computed for the same
//! records (`models/features_expected.json`); errors listed by record, field
//! and rule; the stages timed apart; shadows and the prediction log by name.

use crate::common::*;
use crate::observe::until;
use crate::registry::{push_file, send, set_traffic};
use serde_json::{Value, json};
use std::time::Duration;

fn expected(model: &str) -> Value {
    let text = std::fs::read_to_string(repo_root().join("models/features_expected.json")).unwrap();
    let all: Vec<Value> = serde_json::from_str(&text).unwrap();
    all.into_iter().find(|c| c["model"] == model).unwrap()
}

fn assert_predictions(got: &Value, want: &Value) {
    let (got, want) = (got.as_array().unwrap(), want.as_array().unwrap());
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(want) {
        assert_eq!(g["label"], w["label"], "{g} vs {w}");
        for (label, p) in w["probabilities"].as_object().unwrap() {
            let q = g["probabilities"][label].as_f64().unwrap();
            assert!((q - p.as_f64().unwrap()).abs() < 1e-5, "{label}: {q} vs {p}");
        }
    }
}

#[tokio::test]
async fn records_in_labelled_predictions_out() {
    let mut config = config(None, vigil_server::Limits::default());
    config.prediction_log.default.sample_rate = 1.0;
    let s = TestServer::start(config).await;
    let credit = expected("credit");

    // Rows, KServe V1 style.
    let r = s
        .client
        .post(s.url("/v1/models/credit:predict"))
        .json(&json!({"instances": credit["records"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-vigil-version"], "1");
    let timing = r.headers()["server-timing"].to_str().unwrap().to_owned();
    for stage in ["preprocess;dur=", "inference;dur=", "postprocess;dur="] {
        assert!(timing.contains(stage), "{timing}");
    }
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["model_name"], "credit");
    assert_eq!(body["model_version"], "1");
    assert_predictions(&body["predictions"], &credit["predictions"]);

    // Columns, through the control plane's path: the same answers.
    let mut columns = serde_json::Map::new();
    for record in credit["records"].as_array().unwrap() {
        for (k, v) in record.as_object().unwrap() {
            columns.entry(k.clone()).or_insert_with(|| json!([])).as_array_mut().unwrap().push(v.clone());
        }
    }
    let (status, body) = s.post_json("/api/v1/endpoints/credit/predict", &json!({"inputs": columns})).await;
    assert_eq!(status, 200, "{body}");
    assert_predictions(&body["predictions"], &credit["predictions"]);

    // The breast-cancer demo by its 30 feature names.
    let cancer = expected("breast_cancer");
    let (status, body) =
        s.post_json("/v1/models/breast_cancer:predict", &json!({"instances": cancer["records"]})).await;
    assert_eq!(status, 200, "{body}");
    assert_predictions(&body["predictions"], &cancer["predictions"]);

    // Every problem in one answer, by record, field and rule.
    let bad = json!({"instances": [
        {"age": 40, "income": 50.0, "debt_ratio": 0.2, "employment": "salaried", "region": "north"},
        {"age": 12, "income": "high", "debt_ratio": 0.2, "employment": "salaried", "region": "north", "shoe_size": 44},
        {"income": 50.0, "debt_ratio": 99, "employment": "salaried", "region": "north"},
    ]});
    let (status, body) = s.post_json("/v1/models/credit:predict", &bad).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["code"], "invalid_input");
    let details: Vec<(u64, &str, &str)> = body["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d["record"].as_u64().unwrap(), d["field"].as_str().unwrap(), d["rule"].as_str().unwrap()))
        .collect();
    assert_eq!(
        details,
        [
            (1, "age", "range"),
            (1, "income", "type"),
            (1, "shoe_size", "unknown_field"),
            (2, "age", "required"),
            (2, "debt_ratio", "range")
        ]
    );

    // A model without a spec, an unknown model, an unknown verb, a hostile body.
    let (status, body) = s.post_json("/v1/models/digits_cnn:predict", &json!({"instances": [{"a": 1}]})).await;
    assert_eq!(status, 400);
    assert!(body["error"].as_str().unwrap().contains("declares no features"), "{body}");
    let (status, _) = s.post_json("/v1/models/nope:predict", &json!({"instances": [{}]})).await;
    assert_eq!(status, 404);
    let (status, _) = s.post_json("/v1/models/credit:explain", &json!({"instances": [{}]})).await;
    assert_eq!(status, 404);
    let r = s.client.post(s.url("/v1/models/credit:predict")).body("{\"instances\": [NaN]}").send().await.unwrap();
    assert_eq!(r.status(), 400);
    // No key, no prediction.
    let r = reqwest::Client::new()
        .post(s.url("/v1/models/credit:predict"))
        .json(&json!({"instances": [{}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    // KServe V1 model status.
    let (status, body) = s.get("/v1/models/credit").await;
    assert_eq!((status, body), (200, json!({"name": "credit", "ready": true})));

    // The stages are histograms per endpoint; refused records are counted by rule.
    let metrics = s.client.get(s.url("/metrics")).send().await.unwrap().text().await.unwrap();
    for (rule, n) in [("range", 2), ("type", 1), ("unknown_field", 1), ("required", 1)] {
        let line = format!("vigil_record_problems_total{{endpoint=\"credit\",rule=\"{rule}\"}} {n}");
        assert!(metrics.lines().any(|l| l == line), "no {line} in\n{metrics}");
    }
    for stage in ["preprocess", "postprocess"] {
        let line =
            format!("vigil_request_duration_seconds_count{{endpoint=\"credit\",version=\"1\",stage=\"{stage}\"}} 2");
        assert!(metrics.lines().any(|l| l == line), "no {line} in\n{metrics}");
    }

    // A V2 tensor request to the same model is logged by feature name too.
    let case = case("credit");
    let (status, body) = s.post_json("/v2/models/credit/infer", &request_for(&case)).await;
    assert_eq!(status, 200, "{body}");
    let records = until(Duration::from_secs(10), || async {
        let (_, v) = s.get("/api/v1/endpoints/credit/predictions").await;
        let records = v["predictions"].as_array().cloned().unwrap_or_default();
        (records.len() == 3).then_some(records)
    })
    .await;
    let first = &records[0];
    for name in ["age", "employment", "region", "has_mortgage"] {
        assert_eq!(first["features"][0][name], credit["records"][0][name], "records come back by name: {first}");
    }
    assert_eq!(first["predictions"][0]["label"], credit["predictions"][0]["label"]);
    let tensors = &records[2];
    assert_eq!(tensors["features"][0]["employment"], credit["records"][0]["employment"], "{tensors}");
    assert!(tensors["predictions"][0]["label"].is_string(), "{tensors}");
    s.stop().await.unwrap();
}

#[tokio::test]
async fn records_follow_traffic_policies_and_reach_shadows() {
    let s = TestServer::start(crate::registry::registry_config()).await;
    let manifest = std::fs::read_to_string(repo_root().join("models/demo/credit/config.toml")).unwrap();
    // Two versions: the same model and spec (content-addressed, so told apart by a description).
    for i in 1..=2 {
        let manifest = format!("description = \"copy {i}\"\n{manifest}");
        let (status, v) = push_file(&s, "fraud", "demo/credit/1/model.onnx", &manifest).await;
        assert!(status == 201 || status == 200, "{v}");
    }
    set_traffic(&s, "loans", json!([{"version": 1, "weight": 100}]), json!([{"version": 2, "percent": 100.0}])).await;
    let credit = expected("credit");
    for _ in 0..5 {
        let (status, body) = s.post_json("/v1/models/loans:predict", &json!({"instances": credit["records"]})).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["model_version"], "1");
    }
    let stats = until(Duration::from_secs(10), || async {
        let (_, e) = send(&s, reqwest::Method::GET, "/api/v1/endpoints/loans", None).await;
        let stats = e["shadow_results"][0]["stats"].clone();
        (stats["mirrored"].as_u64().unwrap_or(0) + stats["dropped"].as_u64().unwrap_or(0) == 5).then_some(stats)
    })
    .await;
    assert_eq!(stats["agreed"], stats["mirrored"], "the shadow encodes the records itself and agrees: {stats}");
    assert_eq!(stats["failed"], 0, "{stats}");
    // A version pinned by header answers.
    let r = s
        .client
        .post(s.url("/v1/models/loans:predict"))
        .header("x-vigil-version", "2")
        .json(&json!({"instances": credit["records"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-vigil-version"], "2");
    s.stop().await.unwrap();
}

/// A redaction rule on a feature also covers the input tensor its columns are
/// in: the scaled value in the tensor would give the feature away.
#[tokio::test]
async fn feature_redaction_covers_its_tensor() {
    let mut config = config(None, vigil_server::Limits::default());
    config.prediction_log.default.sample_rate = 1.0;
    config.prediction_log.default.redact = vec![vigil_core::predictions::Redaction {
        input: "age".into(),
        action: vigil_core::predictions::RedactAction::Drop,
    }];
    let s = TestServer::start(config).await;
    let credit = expected("credit");
    let (status, _) = s.post_json("/v1/models/credit:predict", &json!({"instances": [credit["records"][0]]})).await;
    assert_eq!(status, 200);
    let records = until(Duration::from_secs(10), || async {
        let (_, v) = s.get("/api/v1/endpoints/credit/predictions").await;
        v["predictions"].as_array().filter(|p| !p.is_empty()).cloned()
    })
    .await;
    let r = &records[0];
    assert!(r["features"][0].get("age").is_none(), "{r}");
    assert_eq!(r["features"][0]["employment"], credit["records"][0]["employment"]);
    assert!(r.get("inputs").is_none(), "with a spec, tensors are not logged beside the features: {r}");
    s.stop().await.unwrap();
}

/// With invalid_records = "report", the log maps rows back to the request's
/// record indices, so ground truth joins the right prediction.
#[tokio::test]
async fn ground_truth_joins_the_right_row_when_records_were_set_aside() {
    let mut config = crate::registry::registry_config();
    config.prediction_log.default.sample_rate = 1.0;
    let s = TestServer::start(config).await;
    let manifest = std::fs::read_to_string(repo_root().join("models/demo/credit/config.toml")).unwrap();
    let manifest = format!("{manifest}\n[records]\ninvalid_records = \"report\"\n");
    let (status, v) = push_file(&s, "fraud", "demo/credit/1/model.onnx", &manifest).await;
    assert!(status == 201 || status == 200, "{v}");
    set_traffic(&s, "loans", json!([{"version": 1, "weight": 100}]), json!([])).await;
    let credit = expected("credit");
    let mut records = credit["records"].as_array().unwrap()[..3].to_vec();
    records[0]["age"] = json!(5); // below min: set aside
    let r = s
        .client
        .post(s.url("/v1/models/loans:predict"))
        .header("x-request-id", "mixed-1")
        .json(&json!({"instances": records}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert!(body["predictions"][0]["errors"].is_array(), "{body}");
    let label_2 = body["predictions"][2]["label"].as_str().unwrap().to_owned();
    until(Duration::from_secs(10), || async {
        let (_, v) = s.get("/api/v1/endpoints/loans/predictions?request_id=mixed-1").await;
        v["predictions"].as_array().filter(|p| !p.is_empty()).cloned()
    })
    .await;
    // Record 0 has no prediction; record 2's truth joins record 2's prediction.
    let (status, v) = s
        .post_json(
            "/api/v1/endpoints/loans/feedback",
            &json!({"feedback": [{"request_id": "mixed-1", "index": 0, "label": "approve"}]}),
        )
        .await;
    assert_eq!(status, 400, "{v}");
    let (status, v) = s
        .post_json(
            "/api/v1/endpoints/loans/feedback",
            &json!({"feedback": [{"request_id": "mixed-1", "index": 2, "label": label_2}]}),
        )
        .await;
    assert_eq!((status, v["joined"].clone()), (200, json!(1)), "{v}");
    let (_, m) = s.get("/api/v1/endpoints/loans/monitor").await;
    assert_eq!(m["quality"][0]["classification"]["accuracy"], 1.0, "{m}");
    // Labels the model does not have are refused.
    let (status, v) = s
        .post_json(
            "/api/v1/endpoints/loans/feedback",
            &json!({"feedback": [{"request_id": "mixed-1", "index": 1, "label": "Approve"}]}),
        )
        .await;
    assert_eq!(status, 400);
    assert!(v["error"].as_str().unwrap().contains("not one of the model's labels"), "{v}");
    s.stop().await.unwrap();
}

/// The records API's stages are spans too, under the caller's trace.
#[tokio::test]
async fn records_stages_are_spans() {
    use crate::observe::{hex, traced_demo};
    let (s, received) = traced_demo().await;
    let trace_id = "0af7651916cd43dd8448eb211c80319c";
    let r = s
        .client
        .post(s.url("/v1/models/credit:predict"))
        .header("traceparent", format!("00-{trace_id}-b7ad6b7169203331-01"))
        .json(&json!({"instances": expected("credit")["records"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let spans = until(Duration::from_secs(15), || async {
        let spans = received.lock().unwrap().clone();
        (spans.iter().filter(|s| hex(&s.trace_id) == trace_id).count() >= 5).then_some(spans)
    })
    .await;
    let server = spans
        .iter()
        .find(|s| {
            hex(&s.trace_id) == trace_id && s.parent_span_id.len() == 8 && hex(&s.parent_span_id) == "b7ad6b7169203331"
        })
        .expect("the request's span");
    for stage in ["preprocess", "queue", "inference", "postprocess"] {
        let child = spans
            .iter()
            .find(|c| c.name == stage && c.parent_span_id == server.span_id)
            .unwrap_or_else(|| panic!("no {stage} span"));
        assert!(child.end_time_unix_nano >= child.start_time_unix_nano);
    }
    let endpoint = server.attributes.iter().find(|a| a.key == "vigil.endpoint").expect("endpoint attribute");
    assert!(format!("{:?}", endpoint.value).contains("credit"));
    s.stop().await.unwrap();
}

/// The data plane's limits hold on the records routes as on V2; ground truth
/// older than the horizon does not join.
#[tokio::test]
async fn limits_and_the_feedback_horizon_apply() {
    let limits = vigil_server::Limits { max_body_bytes: 2048, ..vigil_server::Limits::default() };
    let mut config = config(None, limits);
    config.prediction_log.default.sample_rate = 1.0;
    config.monitoring.feedback_horizon_hours = 0;
    let s = TestServer::start(config).await;
    let big: Vec<Value> = (0..100).map(|_| expected("credit")["records"][0].clone()).collect();
    let (status, body) = s.post_json("/v1/models/credit:predict", &json!({"instances": big})).await;
    assert_eq!((status, body["code"].as_str()), (413, Some("payload_too_large")), "{body}");
    let r = s
        .client
        .post(s.url("/api/v1/endpoints/credit/predict"))
        .header("x-request-id", "late-1")
        .json(&json!({"instances": [expected("credit")["records"][0]]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    until(Duration::from_secs(10), || async {
        let (_, v) = s.get("/api/v1/endpoints/credit/predictions?request_id=late-1").await;
        v["predictions"].as_array().filter(|p| !p.is_empty()).cloned()
    })
    .await;
    let feedback = json!({"feedback": [{"request_id": "late-1", "label": "approve"}]});
    let (status, v) = s.post_json("/api/v1/endpoints/credit/feedback", &feedback).await;
    assert_eq!((status, v), (200, json!({"joined": 0, "not_found": ["late-1"]})), "past the horizon");
    s.stop().await.unwrap();
}
