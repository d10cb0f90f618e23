//! The registry end to end over HTTP: pushing versions, aliases, endpoints with
//! traffic splits, pins, shadows, blue-green, rollback, zero-downtime changes
//! under load, export/apply, restarts, and replicas sharing one PostgreSQL.

use crate::common::*;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use vigil_server::ServerConfig;

/// A server with only the registry (no demo, no repository).
pub(crate) fn registry_config() -> ServerConfig {
    let mut c = config(None, vigil_server::Limits::default());
    c.demo = false;
    c
}

/// A package (tar.gz) of a model file and a manifest.
fn package(model_rel: &str, manifest: &str) -> Vec<u8> {
    let dir = std::env::temp_dir().join(vigil_store::testing::unique_prefix("pkg"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("model.onnx"), model_bytes(model_rel)).unwrap();
    if !manifest.is_empty() {
        std::fs::write(dir.join("vigil.toml"), manifest).unwrap();
    }
    let bytes = vigil_store::package::pack_dir(&dir).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    bytes
}

const BREAST_CANCER: &str = "demo/breast_cancer/1/model.onnx";

pub(crate) async fn push(s: &TestServer, model: &str, manifest: &str) -> (u16, Value) {
    push_file(s, model, BREAST_CANCER, manifest).await
}

/// Pushes a package of `models/<model_rel>` and `manifest` as a version of `model`.
pub(crate) async fn push_file(s: &TestServer, model: &str, model_rel: &str, manifest: &str) -> (u16, Value) {
    let r = s
        .client
        .post(s.url(&format!("/api/v1/models/{model}/versions")))
        .header("content-type", "application/gzip")
        .body(package(model_rel, manifest))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

pub(crate) async fn send(s: &TestServer, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut r = s.client.request(method, s.url(path));
    if let Some(body) = body {
        r = r.json(&body);
    }
    let r = r.send().await.unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (status, if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap() })
}

pub(crate) async fn set_traffic(s: &TestServer, endpoint: &str, traffic: Value, shadows: Value) -> Value {
    let body = json!({"model": "fraud", "traffic": traffic, "shadows": shadows});
    let (status, v) = send(s, reqwest::Method::PUT, &format!("/api/v1/endpoints/{endpoint}"), Some(body)).await;
    assert_eq!(status, 200, "{v}");
    v
}

/// Infers once on the endpoint; returns the answering version (from the header,
/// checked against the body).
async fn predict(s: &TestServer, endpoint: &str, pin: Option<&str>) -> Result<String, String> {
    let mut r =
        s.client.post(s.url(&format!("/v2/models/{endpoint}/infer"))).json(&request_for(&case("breast_cancer")));
    if let Some(pin) = pin {
        r = r.header("x-vigil-version", pin);
    }
    let r = r.send().await.map_err(|e| e.to_string())?;
    let status = r.status();
    let header = r.headers().get("x-vigil-version").map(|v| v.to_str().unwrap().to_owned());
    let body: Value = r.json().await.map_err(|e| e.to_string())?;
    if !status.is_success() {
        return Err(format!("{status}: {body}"));
    }
    let version = body["model_version"].as_str().unwrap().to_owned();
    assert_eq!(header.as_deref(), Some(version.as_str()), "header and body agree");
    assert_eq!(body["model_name"], endpoint);
    Ok(version)
}

/// Counts answers per version over `n` requests.
async fn shares(s: &TestServer, endpoint: &str, n: usize) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for _ in 0..n {
        *counts.entry(predict(s, endpoint, None).await.unwrap()).or_default() += 1;
    }
    counts
}

/// `count` of `n` is within 5 standard deviations of a binomial share `p`
/// (a false failure about once in 3.5 million runs).
fn within_bounds(count: usize, n: usize, p: f64) -> bool {
    let (n, mean) = (n as f64, n as f64 * p);
    let sd = (n * p * (1.0 - p)).sqrt();
    (count as f64 - mean).abs() <= 5.0 * sd + 0.5
}

/// Three versions of `fraud` (same model, different manifests).
async fn three_versions(s: &TestServer) {
    for (i, stage) in ["a", "b", "c"].iter().enumerate() {
        let (status, v) = push(s, "fraud", &format!("[labels]\nstage = '{stage}'\n")).await;
        assert_eq!(status, 201, "{v}");
        assert_eq!(v["version"]["version"], i as u64 + 1);
    }
}

#[tokio::test]
async fn versions_are_registered_immutable_and_described() {
    let s = TestServer::start(registry_config()).await;
    let manifest = "[labels]\nteam = 'risk'\n[metrics]\nauc = 0.99\n\
                    [lineage]\ngit_commit = 'abc123'\ntraining_data_digest = 'sha256:00'\nparams = { C = 1.0, solver = 'lbfgs' }\n";
    let (status, v) = push(&s, "fraud", manifest).await;
    assert_eq!(status, 201, "{v}");
    let record = &v["version"];
    assert_eq!(record["version"], 1);
    assert!(record["digest"].as_str().unwrap().starts_with("sha256:"));
    assert_eq!(record["labels"]["team"], "risk");
    assert_eq!(record["metrics"]["auc"], 0.99);
    assert_eq!(record["lineage"]["git_commit"], "abc123");
    assert_eq!(record["lineage"]["params"]["C"], "1.0");
    assert_eq!(record["lineage"]["params"]["solver"], "lbfgs");
    assert_eq!(record["signature"]["inputs"][0]["name"], "features");
    assert_eq!(record["vigil_version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(record["created_by"], format!("key:{}", &s.key[4..20]), "the principal that pushed it");

    // The same content again is the same version; new content, the next number.
    let (status, again) = push(&s, "fraud", manifest).await;
    assert_eq!((status, &again["created"], &again["version"]["version"]), (200, &json!(false), &json!(1)));
    let (status, _) = push(&s, "fraud", "[labels]\nteam = 'fraud'\n").await;
    assert_eq!(status, 201);

    let (_, list) = send(&s, reqwest::Method::GET, "/api/v1/models", None).await;
    assert_eq!(list["models"][0]["name"], "fraud");
    assert_eq!(list["models"][0]["versions"], 2);
    let (status, alias) =
        send(&s, reqwest::Method::PUT, "/api/v1/models/fraud/aliases/production", Some(json!({"version": 1}))).await;
    assert_eq!(status, 200, "{alias}");
    send(&s, reqwest::Method::PUT, "/api/v1/models/fraud/aliases/production", Some(json!({"version": 2}))).await;
    let (_, shown) = send(&s, reqwest::Method::GET, "/api/v1/models/fraud/versions/production", None).await;
    assert_eq!(shown["version"], 2);
    let (_, history) = send(&s, reqwest::Method::GET, "/api/v1/models/fraud/aliases/production/history", None).await;
    assert_eq!(history["history"].as_array().unwrap().len(), 2);

    // Bad input: clear errors naming what is wrong, nothing stored.
    let hostile = [
        (
            "/api/v1/models/fraud/versions",
            b"not an archive at all, not even close to a tar header".repeat(10),
            "package",
        ),
        ("/api/v1/models/fraud/versions", Vec::new(), "package"),
        ("/api/v1/models/bad%20name/versions", package(BREAST_CANCER, ""), "model"),
        ("/api/v1/models/fraud/versions", package(BREAST_CANCER, "[labels\n"), "vigil.toml"),
        ("/api/v1/models/fraud/versions", package(BREAST_CANCER, "unknown_key = 1\n"), "unknown_key"),
        ("/api/v1/models/fraud/versions", package(BREAST_CANCER, "[inputs.nope]\nshape = [1]\n"), "nope"),
        ("/api/v1/models/fraud/versions", package("make_models.py", ""), "not a valid ONNX model"),
    ];
    for (path, body, needle) in hostile {
        let r = s.client.post(s.url(path)).body(body).send().await.unwrap();
        let status = r.status().as_u16();
        let v: Value = r.json().await.unwrap();
        assert_eq!(status, 400, "{path}: {v}");
        assert!(v["error"].as_str().unwrap().contains(needle), "{needle}: {v}");
        assert_eq!(v["code"], "invalid_input");
    }
    let (status, v) =
        send(&s, reqwest::Method::PUT, "/api/v1/models/fraud/aliases/x", Some(json!({"versio": 1}))).await;
    assert_eq!(status, 400);
    assert!(v["error"].as_str().unwrap().contains("versio"), "{v}");
    let (status, _) = send(&s, reqwest::Method::GET, "/api/v1/models/fraud/versions/9", None).await;
    assert_eq!(status, 404);
    let (_, list) = send(&s, reqwest::Method::GET, "/api/v1/models/fraud/versions", None).await;
    assert_eq!(list["versions"].as_array().unwrap().len(), 2, "refused pushes stored nothing");
    s.stop().await.unwrap();
}

#[tokio::test]
async fn endpoints_split_pin_shadow_and_roll_back() {
    let s = TestServer::start(registry_config()).await;
    three_versions(&s).await;

    let v = set_traffic(&s, "fraud-api", json!([{"version": 1, "weight": 100}]), json!([])).await;
    assert_eq!(v["revision"]["revision"], 1);
    assert_eq!(v["status"]["serving_revision"], 1);
    assert_eq!(predict(&s, "fraud-api", None).await.unwrap(), "1");

    // Canary 70/30 with version 3 shadowing every request.
    let n = 300;
    set_traffic(
        &s,
        "fraud-api",
        json!([{"version": 1, "weight": 70}, {"version": 2, "weight": 30}]),
        json!([{"version": 3, "percent": 100.0}]),
    )
    .await;
    let counts = shares(&s, "fraud-api", n).await;
    assert!(within_bounds(counts["1"], n, 0.7), "{counts:?}");
    assert!(within_bounds(counts["2"], n, 0.3), "{counts:?}");
    assert!(!counts.contains_key("3"), "a shadow never answers");
    // Shadow copies run after the answers: wait for them to be recorded.
    let deadline = Instant::now() + Duration::from_secs(10);
    let stats = loop {
        let (_, e) = send(&s, reqwest::Method::GET, "/api/v1/endpoints/fraud-api", None).await;
        let stats = e["shadow_results"][0]["stats"].clone();
        if stats["mirrored"].as_u64().unwrap_or(0) + stats["dropped"].as_u64().unwrap_or(0) >= n as u64
            || Instant::now() > deadline
        {
            break stats;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(stats["mirrored"].as_u64().unwrap() + stats["dropped"].as_u64().unwrap(), n as u64, "{stats}");
    assert_eq!(stats["agreed"], stats["mirrored"], "the same model agrees with itself: {stats}");
    assert_eq!(stats["failed"], 0);

    // A pin reaches any version the endpoint holds, shadows included.
    assert_eq!(predict(&s, "fraud-api", Some("3")).await.unwrap(), "3");
    let err = predict(&s, "fraud-api", Some("9")).await.unwrap_err();
    assert!(err.starts_with("404"), "{err}");

    // Blue-green: 3 is warmed at 0 %, then takes everything at once.
    set_traffic(&s, "fraud-api", json!([{"version": 2, "weight": 100}, {"version": 3, "weight": 0}]), json!([])).await;
    assert_eq!(predict(&s, "fraud-api", Some("3")).await.unwrap(), "3");
    assert_eq!(shares(&s, "fraud-api", 30).await.keys().collect::<Vec<_>>(), ["2"]);
    set_traffic(&s, "fraud-api", json!([{"version": 2, "weight": 0}, {"version": 3, "weight": 100}]), json!([])).await;
    assert_eq!(shares(&s, "fraud-api", 30).await.keys().collect::<Vec<_>>(), ["3"]);

    // Rollback: one step back restores the previous policy as a new revision.
    let (status, v) = send(&s, reqwest::Method::POST, "/api/v1/endpoints/fraud-api/rollback", None).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["revision"]["revision"], 5);
    assert_eq!(v["revision"]["comment"], "rollback to revision 3");
    assert_eq!(shares(&s, "fraud-api", 30).await.keys().collect::<Vec<_>>(), ["2"]);
    let (_, v) = send(&s, reqwest::Method::POST, "/api/v1/endpoints/fraud-api/rollback", Some(json!({"to": 1}))).await;
    assert_eq!(v["revision"]["revision"], 6);
    assert_eq!(predict(&s, "fraud-api", None).await.unwrap(), "1");
    let (_, history) = send(&s, reqwest::Method::GET, "/api/v1/endpoints/fraud-api/revisions", None).await;
    assert_eq!(history["revisions"].as_array().unwrap().len(), 6);
    assert!(history["revisions"][2]["digests"]["3"].as_str().unwrap().starts_with("sha256:"));

    // Versions an endpoint uses cannot be deleted; others can.
    let (status, v) = send(&s, reqwest::Method::DELETE, "/api/v1/models/fraud/versions/1", None).await;
    assert_eq!(status, 409, "{v}");
    let (status, _) = send(&s, reqwest::Method::DELETE, "/api/v1/models/fraud/versions/3", None).await;
    assert_eq!(status, 204);

    // Bad policies are refused with the field named, and change nothing.
    for (body, needle) in [
        (json!({"model": "fraud", "traffic": [{"version": 1, "weight": 50}]}), "add up to 50"),
        (json!({"model": "fraud", "traffic": [{"version": 3, "weight": 100}]}), "no version 3"),
        (json!({"model": "fraud", "traffic": [{"version": "staging", "weight": 100}]}), "staging"),
        (json!({"model": "fraud", "traffic": "all"}), "traffic"),
        (json!({"model": "fraud"}), "traffic"),
        (json!({"model": "fraud", "traffic": [], "extra": 1}), "extra"),
    ] {
        let (status, v) = send(&s, reqwest::Method::PUT, "/api/v1/endpoints/fraud-api", Some(body)).await;
        assert!(status == 400 || status == 404, "{status} {v}");
        assert!(v["error"].as_str().unwrap().contains(needle), "{needle}: {v}");
    }
    let (_, e) = send(&s, reqwest::Method::GET, "/api/v1/endpoints/fraud-api", None).await;
    assert_eq!(e["revision"]["revision"], 6);
    s.stop().await.unwrap();
}

#[tokio::test]
async fn a_corrupted_artifact_never_replaces_what_serves() {
    let config = registry_config();
    let data_dir = config.data_dir.clone();
    let s = TestServer::start(config).await;
    push(&s, "fraud", "").await;
    let (_, v2) = push(&s, "fraud", "[labels]\nx = 'y'\n").await;
    set_traffic(&s, "e", json!([{"version": 1, "weight": 100}]), json!([])).await;
    // Version 2 shares version 1's artifact; register a third whose artifact we then corrupt.
    let (_, third) = push_file(&s, "fraud", "test/identity/1/model.onnx", "").await;
    let digest = third["version"]["digest"].as_str().unwrap();
    let path = data_dir.join("artifacts/sha256").join(digest.trim_start_matches("sha256:"));
    std::fs::write(&path, b"tampered").unwrap();
    let v = set_traffic(&s, "e", json!([{"version": 3, "weight": 100}]), json!([])).await;
    assert_eq!(v["status"]["serving_revision"], 1, "{v}");
    assert!(v["status"]["error"].as_str().unwrap().contains("corrupted"), "{v}");
    assert_eq!(predict(&s, "e", None).await.unwrap(), "1", "the old revision still serves");
    std::fs::remove_file(&path).unwrap();
    let v = set_traffic(&s, "e", json!([{"version": 3, "weight": 50}, {"version": 1, "weight": 50}]), json!([])).await;
    assert!(v["status"]["error"].as_str().unwrap().contains("missing"), "{v}");
    assert_eq!(predict(&s, "e", None).await.unwrap(), "1");
    // A good change still goes through.
    let v = set_traffic(&s, "e", json!([{"version": 2, "weight": 100}]), json!([])).await;
    assert_eq!(v["status"]["serving_revision"], v["revision"]["revision"], "{v}");
    assert_eq!(predict(&s, "e", None).await.unwrap(), v2["version"]["version"].to_string());
    s.stop().await.unwrap();
}

/// Twenty traffic changes under a steady load: no request fails, and after each
/// change the answers split as the policy says.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_changes_under_load_lose_no_request() {
    let s = Arc::new(TestServer::start(registry_config()).await);
    three_versions(&s).await;
    set_traffic(&s, "live", json!([{"version": 1, "weight": 100}]), json!([])).await;

    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(std::sync::Mutex::new(Vec::new())));
    let load: Vec<_> = (0..4)
        .map(|_| {
            let (s, stop, ok, failed) = (Arc::clone(&s), Arc::clone(&stop), Arc::clone(&ok), Arc::clone(&failed));
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    match predict(&s, "live", None).await {
                        Ok(_) => ok.fetch_add(1, Ordering::Relaxed),
                        Err(e) => {
                            failed.lock().unwrap().push(e);
                            0
                        }
                    };
                }
            })
        })
        .collect();

    let policies: Vec<(Value, Vec<(&str, f64)>)> = vec![
        (json!([{"version": 1, "weight": 90}, {"version": 2, "weight": 10}]), vec![("1", 0.9), ("2", 0.1)]),
        (json!([{"version": 1, "weight": 50}, {"version": 2, "weight": 50}]), vec![("1", 0.5), ("2", 0.5)]),
        (json!([{"version": 2, "weight": 100}, {"version": 3, "weight": 0}]), vec![("2", 1.0)]),
        (json!([{"version": 2, "weight": 0}, {"version": 3, "weight": 100}]), vec![("3", 1.0)]),
        (
            json!([{"version": 1, "weight": 20}, {"version": 2, "weight": 30}, {"version": 3, "weight": 50}]),
            vec![("1", 0.2), ("2", 0.3), ("3", 0.5)],
        ),
    ];
    let mut changes = 0;
    let mut expected: Vec<Vec<(&str, f64)>> = Vec::new();
    while changes < 20 {
        let (traffic, want) = &policies[changes % policies.len()];
        if changes % 4 == 3 {
            let (status, v) = send(&s, reqwest::Method::POST, "/api/v1/endpoints/live/rollback", None).await;
            assert_eq!(status, 200, "{v}");
            expected.pop();
            let want = expected.last().cloned().unwrap_or_else(|| vec![("1", 1.0)]);
            expected.push(want);
        } else {
            let v = set_traffic(&s, "live", traffic.clone(), json!([])).await;
            assert!(v["status"]["error"].is_null(), "{v}");
            expected.push(want.clone());
        }
        changes += 1;
        let want = expected.last().unwrap().clone();
        let n = 200;
        let counts = shares(&s, "live", n).await;
        for (version, p) in &want {
            let got = counts.get(*version).copied().unwrap_or(0);
            assert!(
                within_bounds(got, n, *p),
                "change {changes}: version {version} got {got}/{n}, want {p}: {counts:?}"
            );
        }
        let total: usize = want.iter().map(|(v, _)| counts.get(*v).copied().unwrap_or(0)).sum();
        assert_eq!(total, n, "change {changes}: only the policy's versions answer: {counts:?}");
    }
    stop.store(true, Ordering::Relaxed);
    for l in load {
        l.await.unwrap();
    }
    let failed = failed.lock().unwrap();
    assert!(
        failed.is_empty(),
        "{} of {} requests failed: {:?}",
        failed.len(),
        ok.load(Ordering::Relaxed),
        &failed[..failed.len().min(5)]
    );
    assert!(ok.load(Ordering::Relaxed) > 100, "the load ran");
}

#[tokio::test]
async fn export_then_apply_on_a_fresh_server_and_restart() {
    let first = registry_config();
    let artifacts = first.data_dir.join("artifacts");
    let data_dir = first.data_dir.clone();
    let s = TestServer::start(first).await;
    three_versions(&s).await;
    set_traffic(
        &s,
        "e",
        json!([{"version": 2, "weight": 80}, {"version": 3, "weight": 20}]),
        json!([{"version": 1, "percent": 5.0}]),
    )
    .await;
    let (status, export) = send(&s, reqwest::Method::GET, "/api/v1/endpoints/e/export", None).await;
    assert_eq!(status, 200, "{export}");
    assert_eq!(export["versions"].as_array().unwrap().len(), 3);
    s.stop().await.unwrap();

    // A fresh server (its own database) sharing the artifact store.
    let mut fresh = registry_config();
    fresh.artifact_store = Some(artifacts.display().to_string());
    let b = TestServer::start(fresh).await;
    // Version numbers differ there: a different model registered first.
    push(&b, "fraud", "[labels]\nfirst = 'here'\n").await;
    let (status, v) = send(&b, reqwest::Method::POST, "/api/v1/apply", Some(export.clone())).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["revision"]["revision"], 1);
    assert_eq!(v["revision"]["spec"]["traffic"], json!([{"version": 3, "weight": 80}, {"version": 4, "weight": 20}]));
    let (_, again) = send(&b, reqwest::Method::POST, "/api/v1/apply", Some(export.clone())).await;
    assert_eq!(again["revision"]["revision"], 1, "applying again changes nothing");
    // Refused files register nothing.
    let (_, before) = send(&b, reqwest::Method::GET, "/api/v1/models/fraud/versions", None).await;
    let mut bad = export.clone();
    bad["endpoint"] = json!("other");
    bad["versions"][0]["manifest"] = json!("[labels]\nnew = 'content'\n");
    for (doc, needle) in [
        (
            {
                let mut d = bad.clone();
                d["traffic"] = json!([{"version": 9, "weight": 100}]);
                d
            },
            "do not list",
        ),
        (
            {
                let mut d = bad.clone();
                d["traffic"][0]["weight"] = json!(10);
                d
            },
            "add up to",
        ),
        (
            {
                let mut d = bad.clone();
                d["versions"][1]["version"] = d["versions"][0]["version"].clone();
                d
            },
            "twice",
        ),
        (
            {
                let mut d = bad.clone();
                d["versions"][0]["digest"] = json!(format!("sha256:{}", "0".repeat(64)));
                d
            },
            "not in the artifact store",
        ),
        (
            {
                let mut d = bad.clone();
                d["versions"][0]["manifest"] = json!("nonsense = [");
                d
            },
            "manifest",
        ),
    ] {
        let (status, v) = send(&b, reqwest::Method::POST, "/api/v1/apply", Some(doc)).await;
        assert!(status == 400 || status == 404, "{status} {v}");
        assert!(v["error"].as_str().unwrap().contains(needle), "{needle}: {v}");
    }
    let (_, after) = send(&b, reqwest::Method::GET, "/api/v1/models/fraud/versions", None).await;
    assert_eq!(before, after, "refused applies registered nothing");
    // Control-plane JSON is small; a big body is refused before it is parsed.
    let huge = vec![b' '; 2 << 20];
    let r = b
        .client
        .put(b.url("/api/v1/endpoints/e"))
        .header("content-type", "application/json")
        .body(huge)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    let (_, exported) = send(&b, reqwest::Method::GET, "/api/v1/endpoints/e/export", None).await;
    let digests = |e: &Value| e["versions"].as_array().unwrap().iter().map(|v| v["digest"].clone()).collect::<Vec<_>>();
    assert_eq!(digests(&exported), digests(&export));
    b.stop().await.unwrap();

    // The first server restarted on its data directory serves the endpoint again.
    let mut restarted = registry_config();
    restarted.data_dir = data_dir;
    let s = TestServer::start(restarted).await;
    wait_until(|| async { predict(&s, "e", None).await.is_ok() }, Duration::from_secs(10)).await;
    assert_eq!(s.get("/v2/health/ready").await.0, 200);
    s.stop().await.unwrap();
}

#[tokio::test]
async fn repository_models_are_imported_and_stay_read_only() {
    let s = TestServer::demo().await;
    // Imported into the registry in the background, once, by content.
    wait_until(
        || async {
            let (_, m) = s.get("/api/v1/models").await;
            m["models"].as_array().is_some_and(|m| m.iter().any(|m| m["name"] == "breast_cancer"))
        },
        Duration::from_secs(10),
    )
    .await;
    let (_, v1) = s.get("/api/v1/models/breast_cancer/versions/1").await;
    assert_eq!(v1["created_by"], "model-repository");
    assert!(v1["manifest"].as_str().unwrap().contains("warmup"), "config.toml is the manifest: {v1}");
    // Its versions serve through registry endpoints too.
    let (status, v) = send(
        &s,
        reqwest::Method::PUT,
        "/api/v1/endpoints/bc-canary",
        Some(json!({"model": "breast_cancer", "traffic": [{"version": 1, "weight": 100}]})),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(predict(&s, "bc-canary", None).await.unwrap(), "1");
    // The repository's own names are read-only.
    let (status, v) = send(
        &s,
        reqwest::Method::PUT,
        "/api/v1/endpoints/breast_cancer",
        Some(json!({"model": "breast_cancer", "traffic": [{"version": 1, "weight": 100}]})),
    )
    .await;
    assert_eq!(status, 409, "{v}");
    assert!(v["error"].as_str().unwrap().contains("read-only"), "{v}");
    assert_eq!(predict(&s, "breast_cancer", Some("1")).await.unwrap(), "1");
    let (status, doc) = s.get("/api/v1/openapi.json").await;
    assert_eq!(status, 200);
    assert_eq!(doc["paths"]["/api/v1/endpoints/{endpoint}"]["put"]["x-vigil-role"], "contributor");
    s.stop().await.unwrap();
}

async fn wait_until<F, Fut>(mut check: F, within: Duration)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !check().await {
        assert!(start.elapsed() < within, "not within {within:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Two replicas on one PostgreSQL and one artifact store: a change made through
/// either serves on both within 2 s.
#[tokio::test]
async fn replicas_converge_through_postgres() {
    let Some(url) = vigil_store::testing::fresh_postgres("replicas_converge_through_postgres").await else { return };
    let artifacts = temp_data_dir();
    let replica = |artifacts: &Path| {
        let mut c = registry_config();
        c.database_url = Some(url.clone());
        c.artifact_store = Some(shared_artifact_store(artifacts));
        c
    };
    let a = TestServer::start(replica(&artifacts)).await;
    let b = TestServer::start(replica(&artifacts)).await;
    three_versions(&a).await;
    for (through, traffic, want) in [
        (&a, json!([{"version": 1, "weight": 100}]), "1"),
        (&b, json!([{"version": 2, "weight": 100}]), "2"),
        (&a, json!([{"version": 3, "weight": 100}]), "3"),
    ] {
        set_traffic(through, "shared", traffic, json!([])).await;
        let changed = Instant::now();
        for replica in [&a, &b] {
            wait_until(
                || async { predict(replica, "shared", None).await.as_deref() == Ok(want) },
                Duration::from_secs(2),
            )
            .await;
        }
        eprintln!("replicas serve version {want} {:?} after the change", changed.elapsed());
    }
    let (status, _) = send(&b, reqwest::Method::POST, "/api/v1/endpoints/shared/rollback", None).await;
    assert_eq!(status, 200);
    wait_until(|| async { predict(&a, "shared", None).await.as_deref() == Ok("2") }, Duration::from_secs(2)).await;
    a.stop().await.unwrap();
    b.stop().await.unwrap();
}

/// S3 (`VIGIL_TEST_S3_BUCKET`, as `.ci/services.sh` sets up) when available, else a shared directory.
fn shared_artifact_store(dir: &Path) -> String {
    match std::env::var("VIGIL_TEST_S3_BUCKET") {
        Ok(bucket) => format!("s3://{bucket}/{}", dir.file_name().unwrap().to_string_lossy()),
        Err(_) => dir.display().to_string(),
    }
}

/// After a restart with nothing in memory, an endpoint whose current revision
/// cannot load serves the newest earlier revision that can, and says so.
#[tokio::test]
async fn a_restart_falls_back_to_the_last_revision_that_loads() {
    let config = registry_config();
    let data_dir = config.data_dir.clone();
    let s = TestServer::start(config).await;
    push(&s, "fraud", "").await;
    set_traffic(&s, "e", json!([{"version": 1, "weight": 100}]), json!([])).await;
    let (_, second) = push_file(&s, "fraud", "test/identity/1/model.onnx", "").await;
    let digest = second["version"]["digest"].as_str().unwrap().trim_start_matches("sha256:").to_owned();
    let artifact = data_dir.join("artifacts/sha256").join(&digest);
    std::fs::write(&artifact, b"tampered").unwrap();
    let v = set_traffic(&s, "e", json!([{"version": 2, "weight": 100}]), json!([])).await;
    assert_eq!(v["status"]["serving_revision"], 1, "{v}");
    s.stop().await.unwrap();

    let mut again = registry_config();
    again.data_dir = data_dir;
    let s = TestServer::start(again).await;
    wait_until(|| async { predict(&s, "e", None).await.is_ok() }, Duration::from_secs(10)).await;
    assert_eq!(predict(&s, "e", None).await.unwrap(), "1");
    let (_, e) = send(&s, reqwest::Method::GET, "/api/v1/endpoints/e", None).await;
    assert_eq!(e["status"]["serving_revision"], 1, "{e}");
    assert_eq!(e["status"]["desired_revision"], 2, "{e}");
    assert!(e["status"]["error"].as_str().unwrap().contains("corrupted"), "{e}");
    s.stop().await.unwrap();
}
