//! Drift on a real server: a reference profile attached through the API,
//! records served, windows closed and stored, the monitor route's verdicts.

use crate::common::*;
use crate::observe::until;
use serde_json::{Value, json};
use std::time::Duration;
use vigil_monitor::drift::{Column, ReferenceProfile};

/// Training data shaped like the credit demo's: ages 20-70, mostly salaried,
/// the four regions.
fn reference() -> ReferenceProfile {
    let n = 2000;
    let ages = (0..n).map(|i| Some(f64::from(20 + i % 51))).collect();
    let incomes = (0..n).map(|i| Some(20.0 + f64::from(i % 97))).collect();
    let employment =
        (0..n).map(|i| Some(["salaried", "salaried", "self_employed", "retired"][i as usize % 4].to_owned())).collect();
    let region = (0..n).map(|i| Some(["north", "south", "east", "west"][i as usize % 4].to_owned())).collect();
    // The model's outputs on the training data: prediction drift.
    let label = (0..n).map(|i| Some(["approve", "approve", "decline"][i as usize % 3].to_owned())).collect();
    let approve = (0..n).map(|i| Some(0.3 + f64::from(i % 70) / 100.0)).collect();
    ReferenceProfile::build(vec![
        ("age".into(), Column::Numbers(ages)),
        ("income".into(), Column::Numbers(incomes)),
        ("employment".into(), Column::Categories(employment)),
        ("region".into(), Column::Categories(region)),
        ("prediction.label".into(), Column::Categories(label)),
        ("prediction.approve".into(), Column::Numbers(approve)),
    ])
    .unwrap()
}

fn record(age: u32, employment: &str, region: &str) -> Value {
    json!({"age": age, "income": 50.0, "debt_ratio": 0.3, "employment": employment, "region": region})
}

#[tokio::test]
async fn drift_is_counted_per_window_and_reported_by_feature() {
    let mut config = config(None, vigil_server::Limits::default());
    config.monitoring.window_seconds = 1;
    config.alerts.interval_seconds = 1;
    let s = TestServer::start(config).await;
    // The demo is imported into the registry in the background.
    until(Duration::from_secs(10), || async {
        (s.get("/api/v1/models/credit/versions/1").await.0 == 200).then_some(())
    })
    .await;

    let (status, body) = s
        .client
        .put(s.url("/api/v1/models/credit/versions/1/profile"))
        .json(&reference())
        .send()
        .await
        .map(|r| (r.status().as_u16(), r))
        .unwrap();
    assert_eq!(status, 200, "{:?}", body.text().await);
    let (status, profile) = s.get("/api/v1/models/credit/versions/1/profile").await;
    assert_eq!(status, 200);
    assert_eq!(profile["features"][0]["name"], "age");

    // An alert on the share of drifted features.
    let rule = json!({"name": "inputs-drift", "signal": "drift_score", "endpoint": "credit",
        "condition": {"kind": "threshold", "op": ">=", "value": 0.5}});
    let r = s.client.put(s.url("/api/v1/alerts/rules/inputs-drift")).json(&rule).send().await.unwrap();
    assert_eq!(r.status(), 200, "{:?}", r.text().await);

    // Old applicants from nowhere the model knows: age and region drift.
    let drifted: Vec<Value> =
        (0..200).map(|i| record(80 + i % 20, "salaried", if i % 2 == 0 { "mars" } else { "north" })).collect();
    let (status, body) = s.post_json("/v1/models/credit:predict", &json!({"instances": drifted})).await;
    assert_eq!(status, 200, "{body}");
    // And one refused record: data quality counts it by rule.
    let (status, _) =
        s.post_json("/v1/models/credit:predict", &json!({"instances": [record(7, "salaried", "north")]})).await;
    assert_eq!(status, 400);

    let report = until(Duration::from_secs(15), || async {
        let (status, v) = s.get("/api/v1/endpoints/credit/monitor").await;
        assert_eq!(status, 200, "{v}");
        // Both requests' windows closed (they may fall in two windows).
        let first = v["versions"].as_array().filter(|v| !v.is_empty()).map(|v| v[0].clone())?;
        (first["drift"]["rejected"]["range"] == 1 && first["drift"]["features"][0]["count"] == 200).then_some(first)
    })
    .await;
    assert_eq!(report["version"], "1");
    let features = report["drift"]["features"].as_array().unwrap();
    let by_name = |n: &str| features.iter().find(|f| f["feature"] == n).unwrap().clone();
    let age = by_name("age");
    assert_eq!(age["count"], 200);
    assert_eq!(age["method"], "wasserstein_normed");
    assert_eq!(age["drifted"], true, "{age}");
    assert_eq!(age["out_of_range_share"], 1.0, "every age is above the reference's maximum: {age}");
    let region = by_name("region");
    assert_eq!(region["unseen_share"], 0.5, "'mars' went to the unknown slot: {region}");
    assert_eq!(region["drifted"], true);
    let employment = by_name("employment");
    assert_eq!(employment["method"], "jensen_shannon");
    assert_eq!(report["drift"]["dataset_drift"], true, "{report}");
    assert_eq!(report["drift"]["rejected"], json!({"range": 1}), "{report}");
    // The outputs are counted too (prediction drift), apart from dataset drift.
    let label = by_name("prediction.label");
    assert_eq!(label["count"], 200, "{label}");
    assert_eq!(by_name("prediction.approve")["count"], 200);
    let inputs_drifted =
        ["age", "income", "employment", "region"].iter().filter(|n| by_name(n)["drifted"] == true).count();
    assert_eq!(report["drift"]["drifted_features"], inputs_drifted, "outputs are not in the dataset's count");

    // The latest window's verdicts are metrics, and the alert fires on them.
    let metrics = s.client.get(s.url("/metrics")).send().await.unwrap().text().await.unwrap();
    let has = |prefix: &str| metrics.lines().any(|l| l.starts_with(prefix));
    assert!(has("vigil_drift_share{endpoint=\"credit\",version=\"1\"} "), "{metrics}");
    assert!(has("vigil_feature_drifted{endpoint=\"credit\",version=\"1\",feature=\"age\"} 1"), "{metrics}");
    assert!(
        has(
            "vigil_feature_drift_score{endpoint=\"credit\",version=\"1\",feature=\"age\",method=\"wasserstein_normed\"} "
        ),
        "{metrics}"
    );
    until(Duration::from_secs(10), || async {
        let (_, v) = s.get("/api/v1/alerts").await;
        v["alerts"].as_array().and_then(|a| a.iter().find(|a| a["rule"] == "inputs-drift").cloned())
    })
    .await;

    // A new profile (other bins): the windows counted on the old one are left
    // out rather than compared bin by bin with it.
    let rebased = ReferenceProfile::build(vec![(
        "age".into(),
        Column::Numbers((0..500).map(|i| Some(f64::from(i % 7))).collect()),
    )])
    .unwrap();
    let r = s.client.put(s.url("/api/v1/models/credit/versions/1/profile")).json(&rebased).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let (status, v) = s.get("/api/v1/endpoints/credit/monitor").await;
    assert_eq!(status, 200, "{v}");
    assert!(v["versions"].as_array().unwrap().is_empty(), "old windows are not merged with the new profile: {v}");

    // Hostile and unknown inputs get clear errors.
    let (status, v) = s.get("/api/v1/endpoints/credit/monitor?since=yesterday").await;
    assert_eq!(status, 400);
    assert!(v["error"].as_str().unwrap().starts_with("since"), "{v}");
    let mut bad = serde_json::to_value(reference()).unwrap();
    bad["features"][0]["histogram"] = json!([1, 2]);
    let r = s.client.put(s.url("/api/v1/models/credit/versions/1/profile")).json(&bad).send().await.unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("histogram"));
    let r = s.client.put(s.url("/api/v1/models/credit/versions/9/profile")).json(&reference()).send().await.unwrap();
    assert_eq!(r.status(), 404);
    s.stop().await.unwrap();
}

#[tokio::test]
async fn ground_truth_joins_logged_predictions_and_is_scored_per_version() {
    let mut config = config(None, vigil_server::Limits::default());
    config.prediction_log.default.sample_rate = 1.0;
    config.alerts.interval_seconds = 1;
    let s = TestServer::start(config).await;
    let rule = json!({"name": "accuracy-low", "signal": "accuracy", "endpoint": "credit",
        "condition": {"kind": "threshold", "op": "<", "value": 0.9}});
    let r = s.client.put(s.url("/api/v1/alerts/rules/accuracy-low")).json(&rule).send().await.unwrap();
    assert_eq!(r.status(), 200, "{:?}", r.text().await);
    let records = json!({"instances": [
        record(30, "salaried", "north"),
        record(70, "unemployed", "west"),
        record(45, "self_employed", "south"),
    ]});
    let r = s
        .client
        .post(s.url("/v1/models/credit:predict"))
        .header("x-request-id", "loan-17")
        .json(&records)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let answered: Value = r.json().await.unwrap();
    let predicted: Vec<String> =
        answered["predictions"].as_array().unwrap().iter().map(|p| p["label"].as_str().unwrap().to_owned()).collect();
    // Once logged, the truth arrives: the first two as predicted, the third not.
    until(Duration::from_secs(10), || async {
        let (_, v) = s.get("/api/v1/endpoints/credit/predictions?request_id=loan-17").await;
        (v["predictions"].as_array().is_some_and(|p| p.len() == 1)).then_some(())
    })
    .await;
    let flipped = if predicted[2] == "approve" { "decline" } else { "approve" };
    let feedback = json!({"feedback": [
        {"request_id": "loan-17", "index": 0, "label": predicted[0]},
        {"request_id": "loan-17", "index": 1, "label": predicted[1]},
        {"request_id": "loan-17", "index": 2, "label": flipped},
        {"request_id": "never-seen", "label": "approve"},
    ]});
    let (status, joined) = s.post_json("/api/v1/endpoints/credit/feedback", &feedback).await;
    assert_eq!(status, 200, "{joined}");
    assert_eq!(joined, json!({"joined": 3, "not_found": ["never-seen"]}));

    let (status, v) = s.get("/api/v1/endpoints/credit/monitor").await;
    assert_eq!(status, 200, "{v}");
    let q = &v["quality"][0];
    assert_eq!(q["version"], "1");
    assert_eq!(q["classification"]["count"], 3);
    let accuracy = q["classification"]["accuracy"].as_f64().unwrap();
    assert!((accuracy - 2.0 / 3.0).abs() < 1e-12, "{q}");
    assert!(q["classification"]["log_loss"].as_f64().unwrap() > 0.0);
    let per_window: u64 =
        q["series"].as_array().unwrap().iter().map(|w| w["classification"]["count"].as_u64().unwrap()).sum();
    assert_eq!(per_window, 3, "the same rows, window by window: {q}");
    // 2/3 is under the rule's 0.9: the accuracy alert comes up.
    until(Duration::from_secs(10), || async {
        let (_, v) = s.get("/api/v1/alerts").await;
        v["alerts"].as_array().and_then(|a| a.iter().find(|a| a["rule"] == "accuracy-low").cloned())
    })
    .await;

    // Wrong kinds and shapes are refused, naming the item.
    for (body, expected) in [
        (json!({"feedback": [{"request_id": "loan-17", "value": 3.0}]}), "need a label"),
        (json!({"feedback": []}), "1 to 1000"),
        (json!({"feedback": [{"request_id": "loan-17", "label": "a", "value": 1.0}]}), "feedback[0]"),
        (json!({"feedback": [{"request_id": "loan-17", "index": 9, "label": "approve"}]}), "no record 9"),
        (json!({"feedback": [{"request_id": "", "label": "a"}]}), "feedback[0].request_id"),
        (json!({"feedback": [{"request_id": "x", "label": "a", "extra": 1}]}), "extra"),
    ] {
        let (status, v) = s.post_json("/api/v1/endpoints/credit/feedback", &body).await;
        assert_eq!(status, 400, "{body}: {v}");
        assert!(v["error"].as_str().unwrap().contains(expected), "{body}: {v}");
    }
    s.stop().await.unwrap();
}

#[tokio::test]
async fn a_package_can_bring_its_reference_profile() {
    let s = TestServer::start(crate::registry::registry_config()).await;
    let dir = std::env::temp_dir().join(vigil_store::testing::unique_prefix("profiled"));
    std::fs::create_dir_all(&dir).unwrap();
    let demo = repo_root().join("models/demo/credit");
    std::fs::copy(demo.join("1/model.onnx"), dir.join("model.onnx")).unwrap();
    std::fs::copy(demo.join("config.toml"), dir.join("vigil.toml")).unwrap();
    let push = |bytes: Vec<u8>| {
        s.client
            .post(s.url("/api/v1/models/loans/versions"))
            .header("content-type", "application/gzip")
            .body(bytes)
            .send()
    };
    // A broken profile refuses the whole package: nothing is registered.
    std::fs::write(dir.join("profile.json"), r#"{"rows": 1, "features": []}"#).unwrap();
    let r = push(vigil_store::package::pack_dir(&dir).unwrap()).await.unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("profile.json"));
    assert_eq!(s.get("/api/v1/models/loans/versions/1").await.0, 404);
    // A good one is attached to the version it came with.
    std::fs::write(dir.join("profile.json"), serde_json::to_vec(&reference()).unwrap()).unwrap();
    let r = push(vigil_store::package::pack_dir(&dir).unwrap()).await.unwrap();
    assert_eq!(r.status(), 201, "{:?}", r.text().await);
    let (status, profile) = s.get("/api/v1/models/loans/versions/1/profile").await;
    assert_eq!(status, 200, "{profile}");
    assert_eq!(profile["rows"], 2000);
    std::fs::remove_dir_all(&dir).unwrap();
    s.stop().await.unwrap();
}
