//! Regression tests for the defects an outside probe found (issue 26): each
//! reproduces one, exactly as it was found where it can be, against the real
//! server. The crash and kill reproductions need a real process: they are in
//! the `vigil` crate's tests.

use crate::common::*;
use crate::registry::{push, push_file, registry_config, send};
use reqwest::Method;
use serde_json::{Value, json};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const BREAST_CANCER: &str = "demo/breast_cancer/1/model.onnx";

async fn audit_events(s: &TestServer, query: &str) -> Vec<Value> {
    let (status, v) = send(s, Method::GET, &format!("/api/v1/audit?limit=1000{query}"), None).await;
    assert_eq!(status, 200, "{v}");
    v["events"].as_array().unwrap().clone()
}

/// A raw HTTP/1.1 exchange: what a client that is not reqwest sends.
fn raw(base: &str, request: &[u8]) -> String {
    let mut tcp = TcpStream::connect(base.trim_start_matches("http://")).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    tcp.write_all(request).unwrap();
    let mut answer = Vec::new();
    let _ = tcp.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer).into_owned()
}

fn status_of(answer: &str) -> u16 {
    answer.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0)
}

// 1. No package can take the server down.

#[tokio::test]
async fn manifest_numbers_past_their_bounds_are_refused_at_push_naming_the_key() {
    let s = TestServer::start(registry_config()).await;
    for (manifest, key) in [
        ("[scheduling]\nmax_queue_size = 4000000000\n", "scheduling.max_queue_size"),
        ("[scheduling]\ninstances = 100000\n", "scheduling.instances"),
        ("[batching]\nmax_batch_size = 100000000\n", "batching.max_batch_size"),
    ] {
        let (status, v) = push(&s, "q", manifest).await;
        assert_eq!(status, 400, "{manifest}: {v}");
        assert!(v["error"].as_str().unwrap().contains(key), "{v}");
    }
    // Nothing was registered, and the server still answers.
    assert_eq!(send(&s, Method::GET, "/api/v1/models/q/versions", None).await.0, 404);
    // The refusal is audited with its reason.
    let refused = audit_events(&s, "&order=newest&action=POST").await;
    let audited = refused
        .iter()
        .filter_map(|e| e["outcome"].as_str())
        .any(|o| o.starts_with("error: 400: ") && o.contains("scheduling.max_queue_size = 4000000000"));
    assert!(audited, "{refused:?}");
    s.stop().await.unwrap();
}

#[tokio::test]
async fn graphs_past_the_node_limit_are_refused_and_slow_loads_time_out() {
    let mut c = registry_config();
    c.limits.max_model_nodes = 1;
    let s = TestServer::start(c).await;
    let (status, v) = push_file(&s, "big", "demo/credit/1/model.onnx", "").await;
    assert_eq!(status, 400, "{v}");
    assert!(v["error"].as_str().unwrap().contains("max_model_nodes"), "{v}");
    s.stop().await.unwrap();

    // A load that takes longer than the timeout fails that version cleanly;
    // the endpoint, whose only revision did not load, does not show as serving.
    let mut c = registry_config();
    c.limits.load_timeout_ms = 0;
    let s = TestServer::start(c).await;
    assert_eq!(push(&s, "slow", "").await.0, 201);
    let body = json!({"model": "slow", "traffic": [{"version": 1, "weight": 100}]});
    let started = Instant::now();
    let (status, v) = send(&s, Method::PUT, "/api/v1/endpoints/slow", Some(body)).await;
    assert_eq!(status, 200, "{v}");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(v["status"]["error"].as_str().unwrap().contains("load_timeout_ms"), "{v}");
    assert_eq!(v["status"]["serving_revision"], Value::Null, "{v}");
    let (_, shown) = send(&s, Method::GET, "/api/v1/endpoints/slow", None).await;
    assert_eq!(shown["status"]["serving_revision"], Value::Null, "{shown}");
    s.stop().await.unwrap();
}

// 2. Every committed change has its audit event, written with it.

#[tokio::test]
async fn a_change_carries_its_audit_event_and_a_refusal_in_an_outage_is_audited_when_the_store_is_back() {
    let c = registry_config();
    let db = c.data_dir.join("vigil.db");
    let s = TestServer::start(c).await;
    assert_eq!(push(&s, "m", "").await.0, 201);
    let body = json!({"model": "m", "traffic": [{"version": 1, "weight": 100}]});
    assert_eq!(send(&s, Method::PUT, "/api/v1/endpoints/e", Some(body.clone())).await.0, 200);
    // Exactly one event for the one change (written in its transaction, not again after it).
    let events = audit_events(&s, "&action=PUT").await;
    let about_e: Vec<&Value> = events.iter().filter(|e| e["target"] == "endpoint:e").collect();
    assert_eq!(about_e.len(), 1, "{events:?}");
    assert_eq!(about_e[0]["outcome"], "ok");

    // An outage: another connection holds SQLite's write lock.
    use sqlx::Connection;
    let mut holder = sqlx::SqliteConnection::connect(&format!("sqlite://{}", db.display())).await.unwrap();
    sqlx::query("BEGIN EXCLUSIVE").execute(&mut holder).await.unwrap();
    let refused = json!({"model": "m", "traffic": [{"version": 1, "weight": 100}], "comment": "during the outage"});
    let (status, v) = send(&s, Method::PUT, "/api/v1/endpoints/outage", Some(refused)).await;
    assert_eq!(status, 503, "{v}");
    sqlx::query("ROLLBACK").execute(&mut holder).await.unwrap();
    drop(holder);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let events = audit_events(&s, "&order=newest").await;
        if events
            .iter()
            .any(|e| e["target"] == "endpoint:outage" && e["outcome"].as_str().unwrap().starts_with("error: 503"))
        {
            break;
        }
        assert!(Instant::now() < deadline, "the refused call was never audited: {events:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (_, verdict) = send(&s, Method::GET, "/api/v1/audit/verify", None).await;
    assert_eq!(verdict["intact"], true, "{verdict}");
    s.stop().await.unwrap();
}

// 3. Packages as people make them.

fn sh(dir: &Path, script: &str) -> Vec<u8> {
    let out = Command::new("sh").arg("-c").arg(script).current_dir(dir).output().unwrap();
    assert!(out.status.success(), "{script}: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

async fn push_bytes(s: &TestServer, model: &str, bytes: Vec<u8>) -> (u16, Value) {
    let r = s.client.post(s.url(&format!("/api/v1/models/{model}/versions"))).body(bytes).send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

#[tokio::test]
async fn packages_from_tar_and_gzip_are_read_whole_or_refused() {
    let s = TestServer::start(registry_config()).await;
    let dir = std::env::temp_dir().join(vigil_store::testing::unique_prefix("pkg-tools"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("model.onnx"), model_bytes(BREAST_CANCER)).unwrap();
    std::fs::write(dir.join("vigil.toml"), "[labels]\nteam = \"risk\"\n").unwrap();
    let tar = sh(&dir, "tar -C . -cf - model.onnx vigil.toml");

    // `tar -C dir -czf p.tar.gz .`: entries under `./`.
    let dotted = sh(&dir, "tar -C . -czf - .");
    let (status, v) = push_bytes(&s, "dotted", dotted).await;
    assert_eq!((status, &v["version"]["labels"]["team"]), (201, &json!("risk")), "{v}");

    // Two gzip members (`cat a.gz b.gz`): the manifest in the second is not dropped.
    let half = tar.len() / 2;
    std::fs::write(dir.join("a"), &tar[..half]).unwrap();
    std::fs::write(dir.join("b"), &tar[half..]).unwrap();
    let joined = sh(&dir, "gzip -c a; gzip -c b");
    let (status, v) = push_bytes(&s, "joined", joined).await;
    assert_eq!((status, &v["version"]["labels"]["team"]), (201, &json!("risk")), "{v}");

    // A tar stream without its end marker (cut after the model) is refused.
    let model_only = sh(&dir, "tar -C . -cf - model.onnx");
    let entry_end = 512 + model_bytes(BREAST_CANCER).len().div_ceil(512) * 512;
    let (status, v) = push_bytes(&s, "cut", model_only[..entry_end].to_vec()).await;
    assert_eq!(status, 400, "{v}");
    assert!(v["error"].as_str().unwrap().contains("end marker"), "{v}");
    std::fs::remove_dir_all(&dir).unwrap();
    s.stop().await.unwrap();
}

// 4. Scopes hold across references.

async fn make_key(s: &TestServer, role: &str, scope: &str) -> reqwest::Client {
    let (status, v) =
        send(s, Method::POST, "/api/v1/keys", Some(json!({"role": role, "scope": scope, "name": "t"}))).await;
    assert_eq!(status, 201, "{v}");
    authorized_client(v["key"].as_str().unwrap())
}

#[tokio::test]
async fn an_endpoint_grant_cannot_borrow_a_model_it_cannot_read() {
    let s = TestServer::start(registry_config()).await;
    assert_eq!(push(&s, "public", "").await.0, 201);
    assert_eq!(push_file(&s, "public", "demo/credit/1/model.onnx", "").await.0, 201);
    assert_eq!(push(&s, "secret", "").await.0, 201);
    let a = make_key(&s, "contributor", "endpoint:a").await;
    let put = |client: &reqwest::Client, model: &str, version: u64| {
        client
            .put(s.url("/api/v1/endpoints/a"))
            .json(&json!({"model": model, "traffic": [{"version": version, "weight": 100}]}))
            .send()
    };
    // Not onto a model it has no rights on, even to create the endpoint.
    let r = put(&a, "secret", 1).await.unwrap();
    assert_eq!(r.status(), 403);
    assert!(r.text().await.unwrap().contains("model:secret"));
    // The Owner points `a` at `public`; the endpoint's Contributor may move its traffic between versions.
    assert_eq!(put(&s.client, "public", 1).await.unwrap().status(), 200);
    assert_eq!(put(&a, "public", 2).await.unwrap().status(), 200);
    assert_eq!(put(&a, "secret", 1).await.unwrap().status(), 403);
    // The export holds the model's manifests: only for a caller that may read the model.
    assert_eq!(a.get(s.url("/api/v1/endpoints/a/export")).send().await.unwrap().status(), 403);
    let reader = make_key(&s, "reader", "model:public").await;
    let endpoint_reader = make_key(&s, "reader", "endpoint:a").await;
    assert_eq!(endpoint_reader.get(s.url("/api/v1/endpoints/a/export")).send().await.unwrap().status(), 403);
    assert_eq!(reader.get(s.url("/api/v1/endpoints/a/export")).send().await.unwrap().status(), 403, "no grant on a");
    assert_eq!(s.client.get(s.url("/api/v1/endpoints/a/export")).send().await.unwrap().status(), 200);
    s.stop().await.unwrap();
}

// 5. Limits as documented.

// Raw blocking sockets: the server needs threads of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_head_limit_is_exact_and_slow_or_too_many_bodies_are_cut_off() {
    let mut c = registry_config();
    c.limits.body_timeout_ms = 700;
    c.limits.max_inflight_bytes = 1_000_000;
    let s = TestServer::start(c).await;
    let auth = auth_line(&s.key);
    // A 114 KB head against the default 64 KiB limit.
    let big = format!(
        "GET /v2/health/live HTTP/1.1\r\nHost: x\r\nX-Pad: {}\r\nConnection: close\r\n\r\n",
        "a".repeat(114_000)
    );
    assert_eq!(status_of(&raw(&s.base, big.as_bytes())), 431);
    let fits = format!(
        "GET /v2/health/live HTTP/1.1\r\nHost: x\r\nX-Pad: {}\r\nConnection: close\r\n\r\n",
        "a".repeat(60_000)
    );
    assert_eq!(status_of(&raw(&s.base, fits.as_bytes())), 200);

    // An authenticated body at a byte every 100 ms: cut off after the timeout.
    let mut slow = TcpStream::connect(s.base.trim_start_matches("http://")).unwrap();
    slow.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    write!(slow, "PUT /api/v1/endpoints/x HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: 1000\r\n\r\n").unwrap();
    let started = Instant::now();
    let mut answer = Vec::new();
    while started.elapsed() < Duration::from_secs(10) {
        if slow.write_all(b"{").is_err() {
            break;
        }
        let mut buf = [0u8; 4096];
        match slow.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(_) => {}
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let answer = String::from_utf8_lossy(&answer);
    assert_eq!(status_of(&answer), 408, "{answer}");
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());

    // Bodies in flight share the budget: one holding 900 kB leaves no room for another 200 kB.
    let mut holder = TcpStream::connect(s.base.trim_start_matches("http://")).unwrap();
    write!(holder, "PUT /api/v1/endpoints/x HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: 900000\r\n\r\n{{").unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let second = format!(
        "PUT /api/v1/endpoints/x HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: 200000\r\nConnection: close\r\n\r\n"
    );
    let answer = raw(&s.base, second.as_bytes());
    assert_eq!(status_of(&answer), 503, "{answer}");
    assert!(answer.contains("max_inflight_bytes"), "{answer}");
    // A gzip body counts decompressed: 2 kB on the wire, 300 kB once inflated.
    let mut gzip = Command::new("gzip")
        .arg("-c")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    gzip.stdin.take().unwrap().write_all(&vec![b' '; 300_000]).unwrap();
    let compressed = gzip.wait_with_output().unwrap().stdout;
    let mut zipped = format!(
        "PUT /api/v1/endpoints/x HTTP/1.1\r\nHost: x\r\n{auth}Content-Encoding: gzip\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        compressed.len()
    )
    .into_bytes();
    zipped.extend_from_slice(&compressed);
    let answer = raw(&s.base, &zipped);
    assert_eq!(status_of(&answer), 503, "{answer}");
    // A gRPC message takes from the same budget as its frames arrive.
    let mut grpc = grpc_client_with(&s.grpc, Some(&s.key)).await;
    let message = vigil_proto::inference::ModelInferRequest {
        model_name: "x".into(),
        raw_input_contents: vec![vec![0u8; 300_000]],
        ..Default::default()
    };
    let refused = grpc.model_infer(message).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
    assert!(refused.message().contains("max_inflight_bytes"), "{refused:?}");
    drop(holder);
    // Given back once the first request ends (its body timed out or its connection closed).
    let deadline = Instant::now() + Duration::from_secs(5);
    let body = "{}";
    let small = format!(
        "PUT /api/v1/endpoints/x HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    loop {
        let status = status_of(&raw(&s.base, small.as_bytes()));
        if status != 503 {
            assert_eq!(status, 400, "an empty policy");
            break;
        }
        assert!(Instant::now() < deadline, "the budget was never given back");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    s.stop().await.unwrap();
}

// 6. Small holes.

/// CRC-32 (IEEE), as API keys carry it.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

/// A well-formed key for `id` with a secret that is not its own.
fn forged(id: &str) -> String {
    let body = format!("vgl_{id}_{}", "ab".repeat(32));
    format!("{body}{:08x}", crc32(body.as_bytes()))
}

// Raw blocking sockets: the server needs threads of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_holes_are_closed() {
    let mut c = registry_config();
    c.security.auth_failures_per_minute = 10_000;
    let data_dir = c.data_dir.clone();
    let s = TestServer::start(c).await;

    // A secret's version 0 is not its latest.
    let put = s.client.put(s.url("/api/v1/secrets/db")).json(&json!({"value": "v1"})).send().await.unwrap();
    assert_eq!(put.status(), 201);
    let r = s.client.get(s.url("/api/v1/secrets/db/versions/0")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert!(!r.text().await.unwrap().contains("v1\""));

    // Two Authorization headers are refused, whichever comes first.
    let two = format!(
        "GET /api/v1/models HTTP/1.1\r\nHost: x\r\n{}Authorization: Bearer nobody\r\nConnection: close\r\n\r\n",
        auth_line(&s.key)
    );
    let answer = raw(&s.base, two.as_bytes());
    assert_eq!(status_of(&answer), 400, "{answer}");
    assert!(answer.contains("several Authorization headers"), "{answer}");
    let mut grpc = grpc_client_with(&s.grpc, None).await;
    let mut request = tonic::Request::new(vigil_proto::inference::ServerMetadataRequest {});
    request.metadata_mut().append("authorization", format!("Bearer {}", s.key).parse().unwrap());
    request.metadata_mut().append("authorization", "Bearer nobody".parse().unwrap());
    let refused = grpc.server_metadata(request).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused:?}");

    // Unknown key and wrong secret: the same answer.
    let owner_id = s.key.split('_').nth(1).unwrap().to_owned();
    let answer = |key: String| {
        let url = s.url("/api/v1/models");
        async move {
            let r = reqwest::Client::new().get(url).bearer_auth(key).send().await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap()["error"].as_str().unwrap().to_owned())
        }
    };
    let (status_a, wrong) = answer(forged(&owner_id)).await;
    let (status_b, unknown) = answer(forged("0123456789abcdef")).await;
    assert_eq!((status_a, status_b), (401, 401));
    assert_eq!(wrong.replace(&owner_id, "ID"), unknown.replace("0123456789abcdef", "ID"));

    // A forged key's failures are not recorded under the victim's id.
    let deadline = Instant::now() + Duration::from_secs(5);
    let failure = loop {
        let events = audit_events(&s, "&order=newest&principal=-").await;
        if let Some(e) = events.iter().find(|e| e["outcome"].as_str().unwrap().contains(&owner_id)) {
            break e.clone();
        }
        assert!(Instant::now() < deadline, "no unauthenticated event names the claimed key");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(failure["outcome"].as_str().unwrap().contains(&format!("claimed key:{owner_id}")), "{failure}");
    let as_victim = audit_events(&s, &format!("&principal=key:{owner_id}")).await;
    assert!(as_victim.iter().all(|e| !e["outcome"].as_str().unwrap().starts_with("unauthenticated")), "{as_victim:?}");

    // The data directory and its secrets are the server's alone.
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&data_dir), 0o700);
    for file in ["vigil.db", "vigil.db-wal", "master.key"] {
        let path = data_dir.join(file);
        if path.exists() || file != "vigil.db-wal" {
            assert_eq!(mode(&path), 0o600, "{file}");
        }
    }
    s.stop().await.unwrap();
}

// 7. Audit and status readability.

#[tokio::test]
async fn the_audit_lists_newest_first_and_verify_names_what_disagrees() {
    let c = registry_config();
    let db = c.data_dir.join("vigil.db");
    let s = TestServer::start(c).await;
    for model in ["a", "b"] {
        assert_eq!(push(&s, model, "").await.0, 201);
    }
    let newest = audit_events(&s, "&order=newest").await;
    let seqs: Vec<u64> = newest.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] > w[1]), "{seqs:?}");
    assert_eq!(send(&s, Method::GET, "/api/v1/audit?order=sideways", None).await.0, 400);

    use sqlx::Connection;
    let mut db = sqlx::SqliteConnection::connect(&format!("sqlite://{}", db.display())).await.unwrap();
    // The head alone edited.
    sqlx::query("UPDATE audit_head SET seq = seq - 1").execute(&mut db).await.unwrap();
    let (status, v) = send(&s, Method::GET, "/api/v1/audit/verify", None).await;
    assert_eq!((status, &v["intact"]), (200, &json!(false)), "{v}");
    assert!(v["broken"]["reason"].as_str().unwrap().contains("head"), "{v}");
    // The head gone, and then every event too.
    sqlx::query("DELETE FROM audit_head").execute(&mut db).await.unwrap();
    let (status, v) = send(&s, Method::GET, "/api/v1/audit/verify", None).await;
    assert_eq!((status, &v["intact"]), (200, &json!(false)), "{v}");
    sqlx::query("DELETE FROM audit_events").execute(&mut db).await.unwrap();
    let (status, v) = send(&s, Method::GET, "/api/v1/audit/verify", None).await;
    assert_eq!((status, &v["intact"]), (200, &json!(false)), "{v}");
    assert!(v["broken"]["reason"].as_str().unwrap().contains("head"), "{v}");
    s.stop().await.unwrap();
}
