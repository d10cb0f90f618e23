//! Security end to end: the permission table walked for every role, scoped
//! grants, refusals with the right status and an audit event, brute force,
//! privilege escalation, path tricks in every parameter, secrets encrypted at
//! rest, and a tampered audit chain found.

use crate::common::*;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use tonic::Code;
use vigil_core::security::Role;
use vigil_server::permissions::{Access, GRPC, rest_routes};
use vigil_server::{ServerConfig, permissions};

fn roomy_config() -> ServerConfig {
    let mut c = config(None, vigil_server::Limits::default());
    // This suite sends hundreds of bad credentials on purpose.
    c.security.auth_failures_per_minute = 100_000;
    c
}

/// Creates a key through the API (as the Owner) and returns it.
async fn make_key(s: &TestServer, role: &str, scope: &str) -> String {
    let r = s
        .client
        .post(s.url("/api/v1/keys"))
        .json(&json!({"role": role, "scope": scope, "name": "t"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    r.json::<Value>().await.unwrap()["key"].as_str().unwrap().to_owned()
}

/// A concrete path for a route: every parameter filled in.
fn concrete(path: &str) -> String {
    let values = BTreeMap::from([
        ("{model}", "breast_cancer"),
        ("{endpoint}", "breast_cancer"),
        ("{version}", "1"),
        ("{alias}", "prod"),
        ("{key}", "0000000000000000"),
        ("{secret}", "s"),
    ]);
    values.iter().fold(path.to_owned(), |p, (k, v)| p.replace(k, v))
}

async fn call(s: &TestServer, key: Option<&str>, method: &Method, path: &str) -> StatusCode {
    let mut r = reqwest::Client::new().request(method.clone(), s.url(path));
    if let Some(key) = key {
        r = r.bearer_auth(key);
    }
    if *method != Method::GET && *method != Method::DELETE {
        r = r.header("content-type", "application/json").body("{}");
    }
    r.send().await.unwrap().status()
}

#[tokio::test]
async fn every_route_answers_each_role_as_the_table_says() {
    let s = TestServer::start(roomy_config()).await;
    let mut keys = BTreeMap::new();
    for role in Role::ALL {
        keys.insert(role, make_key(&s, role.as_str(), "*").await);
    }
    let elsewhere = make_key(&s, "owner", "endpoint:elsewhere").await;
    let forged = "vgl_0123456789abcdef_".to_owned() + &"0".repeat(72);
    let routes = rest_routes();
    assert!(routes.len() > 30, "the table covers data and control planes: {}", routes.len());
    for route in &routes {
        let path = concrete(route.path);
        let m = &route.method;
        let (needed, on) = match route.access {
            Access::Public => {
                assert_ne!(call(&s, None, m, &path).await, StatusCode::UNAUTHORIZED, "{m} {path} is public");
                continue;
            }
            Access::Needs(role, on) => (role, on),
        };
        assert_eq!(call(&s, None, m, &path).await, StatusCode::UNAUTHORIZED, "{m} {path} without a key");
        assert_eq!(call(&s, Some("nonsense"), m, &path).await, StatusCode::UNAUTHORIZED, "{m} {path} with junk");
        assert_eq!(call(&s, Some(&forged), m, &path).await, StatusCode::UNAUTHORIZED, "{m} {path} forged");
        for (role, key) in &keys {
            let status = call(&s, Some(key), m, &path).await;
            if *role < needed {
                assert_eq!(status, StatusCode::FORBIDDEN, "{m} {path} as {role} (needs {needed})");
            } else {
                assert!(
                    status != StatusCode::FORBIDDEN && status != StatusCode::UNAUTHORIZED,
                    "{m} {path} as {role}: {status}"
                );
            }
        }
        // An Owner of another endpoint is nobody here, except where any grant will do.
        let status = call(&s, Some(&elsewhere), m, &path).await;
        if on == permissions::On::Any {
            assert_ne!(status, StatusCode::FORBIDDEN, "{m} {path}");
        } else {
            assert_eq!(status, StatusCode::FORBIDDEN, "{m} {path} with a key scoped elsewhere");
        }
    }
    // Refusals are audited.
    let audit: Value = s.client.get(s.url("/api/v1/audit?limit=1000")).send().await.unwrap().json().await.unwrap();
    let outcomes: Vec<&str> =
        audit["events"].as_array().unwrap().iter().map(|e| e["outcome"].as_str().unwrap()).collect();
    assert!(outcomes.iter().any(|o| o.starts_with("unauthenticated")), "{outcomes:?}");
    assert!(outcomes.iter().any(|o| o.starts_with("denied")), "{outcomes:?}");
    s.stop().await.unwrap();
}

#[test]
fn every_grpc_method_of_the_proto_has_an_entry() {
    let proto = std::fs::read_to_string(repo_root().join("crates/vigil-proto/proto/inference.proto")).unwrap();
    let methods: Vec<&str> = proto
        .lines()
        .filter_map(|l| l.trim().strip_prefix("rpc "))
        .map(|l| l.split('(').next().unwrap().trim())
        .collect();
    assert!(methods.len() >= 7, "{methods:?}");
    for m in &methods {
        assert!(permissions::grpc(m).is_some(), "gRPC method {m} has no permission entry");
    }
    assert_eq!(GRPC.len(), methods.len(), "no entries for methods that do not exist");
}

#[tokio::test]
async fn grpc_methods_need_the_right_key() {
    let s = TestServer::start(roomy_config()).await;
    let bc = make_key(&s, "predictor", "endpoint:breast_cancer").await;
    let mut anonymous = grpc_client_with(&s.grpc, None).await;
    let mut scoped = grpc_client_with(&s.grpc, Some(&bc)).await;
    let mut owner = s.grpc_client().await;
    use vigil_proto::inference as pb;
    assert!(anonymous.server_live(pb::ServerLiveRequest {}).await.is_ok(), "liveness is public");
    assert!(anonymous.server_ready(pb::ServerReadyRequest {}).await.is_ok(), "readiness is public");
    let err = anonymous.server_metadata(pb::ServerMetadataRequest {}).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err}");
    let ready = |name: &str| pb::ModelReadyRequest { name: name.into(), version: String::new() };
    assert_eq!(anonymous.model_ready(ready("breast_cancer")).await.unwrap_err().code(), Code::Unauthenticated);
    assert!(scoped.model_ready(ready("breast_cancer")).await.is_ok());
    assert!(scoped.server_metadata(pb::ServerMetadataRequest {}).await.is_ok(), "any grant reads server metadata");
    let err = scoped.model_ready(ready("digits_cnn")).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err}");
    let infer = pb::ModelInferRequest { model_name: "digits_cnn".into(), ..Default::default() };
    assert_eq!(scoped.model_infer(infer.clone()).await.unwrap_err().code(), Code::PermissionDenied);
    assert_eq!(owner.model_infer(infer).await.unwrap_err().code(), Code::InvalidArgument, "let in, then validated");
    s.stop().await.unwrap();
}

#[tokio::test]
async fn the_guard_refuses_a_route_missing_from_the_table() {
    let s = TestServer::start(roomy_config()).await;
    let store = vigil_store::SqliteStore::connect("sqlite::memory:").await.unwrap();
    let dir = temp_data_dir();
    let config = vigil_server::SecurityConfig { bootstrap_key_file: Some(dir.join("owner.key")), ..Default::default() };
    std::fs::create_dir_all(&dir).unwrap();
    let security = vigil_server::security::Security::open(&config, std::sync::Arc::new(store), &dir).await.unwrap();
    let key = std::fs::read_to_string(dir.join("owner.key")).unwrap();
    let guard = std::sync::Arc::new(vigil_server::guard::Guard::new(security));
    let app = axum::Router::new()
        .route("/not-in-the-table", axum::routing::get(|| async { "leaked" }))
        .layer(axum::middleware::from_fn_with_state(guard, vigil_server::guard::guard));
    use tower::ServiceExt;
    let request = axum::http::Request::get("/not-in-the-table")
        .header("authorization", format!("Bearer {}", key.trim()))
        .body(axum::body::Body::empty())
        .unwrap();
    let response = app.oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN, "fail closed, even for the Owner");
    std::fs::remove_dir_all(&dir).unwrap();
    s.stop().await.unwrap();
}

#[tokio::test]
async fn keys_are_refused_when_revoked_expired_or_guessed() {
    let mut c = config(None, vigil_server::Limits::default());
    c.security.auth_failures_per_minute = 5;
    let s = TestServer::start(c).await;
    let r = s
        .client
        .post(s.url("/api/v1/keys"))
        .json(&json!({"role": "reader", "expires_in_seconds": 1}))
        .send()
        .await
        .unwrap();
    let short = r.json::<Value>().await.unwrap()["key"].as_str().unwrap().to_owned();
    let reader = make_key(&s, "reader", "*").await;
    let id = &reader[4..20];
    let get = |key: String| {
        let url = s.url("/api/v1/models");
        async move { reqwest::Client::new().get(url).bearer_auth(key).send().await.unwrap() }
    };
    assert_eq!(get(reader.clone()).await.status(), 200);
    let r = s.client.delete(s.url(&format!("/api/v1/keys/{id}"))).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let refused = get(reader.clone()).await;
    assert_eq!(refused.status(), 401);
    assert!(refused.text().await.unwrap().contains("revoked"));
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    let refused = get(short).await;
    assert_eq!(refused.status(), 401);
    assert!(refused.text().await.unwrap().contains("expired"));

    // Guessing: after the limit, every further failure from the address is 429
    // with Retry-After, while good keys from it keep working (a guesser behind
    // a shared address cannot lock its neighbours out).
    for _ in 0..3 {
        assert_eq!(get("vgl_guess".into()).await.status(), 401);
    }
    let limited = get("vgl_guess".into()).await;
    assert_eq!(limited.status(), 429);
    let wait: u64 = limited.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&wait), "{wait}");
    assert_eq!(s.client.get(s.url("/api/v1/models")).send().await.unwrap().status(), 200, "good keys still work");

    let audit: Value = s.client.get(s.url("/api/v1/audit?limit=1000")).send().await.unwrap().json().await.unwrap();
    let text = audit.to_string();
    assert!(text.contains("is revoked") && text.contains("has expired"), "{text}");
    assert!(text.contains(&format!("key:{id}")), "a refused key is named by its id");
    s.stop().await.unwrap();
}

#[tokio::test]
async fn no_privilege_escalation() {
    let s = TestServer::start(roomy_config()).await;
    let contributor = authorized_client(&make_key(&s, "contributor", "*").await);
    let r = contributor.post(s.url("/api/v1/keys")).json(&json!({"role": "owner"})).send().await.unwrap();
    assert_eq!(r.status(), 403, "a Contributor cannot make keys");
    assert_eq!(contributor.get(s.url("/api/v1/secrets")).send().await.unwrap().status(), 403);
    assert_eq!(contributor.get(s.url("/api/v1/secrets/x")).send().await.unwrap().status(), 403);
    assert_eq!(contributor.get(s.url("/api/v1/audit")).send().await.unwrap().status(), 403);
    let id = "0000000000000000";
    assert_eq!(contributor.post(s.url(&format!("/api/v1/keys/{id}/rotate"))).send().await.unwrap().status(), 403);

    // A model-scoped Contributor changes that model only.
    let scoped = authorized_client(&make_key(&s, "contributor", "model:fraud").await);
    let r = scoped.put(s.url("/api/v1/models/other/aliases/prod")).json(&json!({"version": 1})).send().await.unwrap();
    assert_eq!(r.status(), 403);
    let r = scoped.put(s.url("/api/v1/models/fraud/aliases/prod")).json(&json!({"version": 1})).send().await.unwrap();
    assert_eq!(r.status(), 404, "allowed, and then there is no such model");
    // An endpoint-scoped Predictor cannot predict elsewhere, nor read lists.
    let predictor = authorized_client(&make_key(&s, "predictor", "endpoint:breast_cancer").await);
    let body = request_for(&case("breast_cancer"));
    let ok = predictor.post(s.url("/v2/models/breast_cancer/infer")).json(&body).send().await.unwrap();
    assert_eq!(ok.status(), 200);
    let r = predictor.post(s.url("/v2/models/digits_cnn/infer")).json(&body).send().await.unwrap();
    assert_eq!(r.status(), 403);
    assert!(r.text().await.unwrap().contains("needs the predictor role on endpoint:digits_cnn"));
    assert_eq!(predictor.post(s.url("/v2/repository/index")).send().await.unwrap().status(), 403);
    assert_eq!(predictor.get(s.url("/metrics")).send().await.unwrap().status(), 403);
    // Bad key requests name the field.
    let r = s.client.post(s.url("/api/v1/keys")).json(&json!({"role": "root"})).send().await.unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("body.role"));
    let r = s
        .client
        .post(s.url("/api/v1/keys"))
        .json(&json!({"role": "reader", "scope": "endpoint:../x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    s.stop().await.unwrap();
}

#[tokio::test]
async fn path_tricks_in_every_parameter_are_refused_cleanly() {
    let s = TestServer::start(roomy_config()).await;
    let tricks = ["..", "..%2F..%2Fetc%2Fpasswd", "%2e%2e", "a%00b", "%ff%fe", ".hidden", "a%20", "%252e%252e"];
    for route in rest_routes() {
        if !route.path.contains('{') || route.access == Access::Public {
            continue;
        }
        for trick in tricks {
            let path: String = route
                .path
                .split('/')
                .map(|seg| if seg.starts_with('{') { trick.to_owned() } else { seg.to_owned() })
                .collect::<Vec<_>>()
                .join("/");
            let status = call(&s, Some(&s.key), &route.method, &path).await;
            assert!(matches!(status.as_u16(), 400 | 404 | 405 | 413 | 409), "{} {path}: {status}", route.method);
        }
    }
    s.stop().await.unwrap();
}

#[tokio::test]
async fn model_sources_are_never_fetched_from_urls_or_paths() {
    let s = TestServer::start(roomy_config()).await;
    for digest in
        ["http://169.254.169.254/latest/meta-data", "file:///etc/passwd", "/etc/passwd", "../../x", "s3://b/k"]
    {
        let r = s
            .client
            .post(s.url("/api/v1/models/fraud/versions"))
            .json(&json!({"digest": digest}))
            .send()
            .await
            .unwrap();
        let status = r.status();
        let text = r.text().await.unwrap();
        assert_eq!(status, 400, "{digest}: {text}");
        assert!(text.contains("digest"), "{text}");
    }
    s.stop().await.unwrap();
}

#[tokio::test]
async fn security_headers_and_no_cors_by_default() {
    let s = TestServer::start(roomy_config()).await;
    for path in ["/v2/health/live", "/api/v1/models", "/no/such/route"] {
        let r = s.client.get(s.url(path)).header("origin", "https://evil.example").send().await.unwrap();
        let h = r.headers();
        assert_eq!(h["x-content-type-options"], "nosniff", "{path}");
        assert_eq!(h["x-frame-options"], "DENY");
        assert!(h["content-security-policy"].to_str().unwrap().contains("default-src 'none'"));
        assert!(h.get("x-request-id").is_some());
        assert!(h.get("access-control-allow-origin").is_none(), "no CORS unless configured");
    }
    let unauthorized = reqwest::get(s.url("/api/v1/models")).await.unwrap();
    assert_eq!(unauthorized.headers()["www-authenticate"], "Bearer");
    s.stop().await.unwrap();

    let mut c = roomy_config();
    c.security.cors_origins = vec!["https://app.example".into()];
    let s = TestServer::start(c).await;
    let r = s.client.get(s.url("/api/v1/models")).header("origin", "https://app.example").send().await.unwrap();
    assert_eq!(r.headers()["access-control-allow-origin"], "https://app.example");
    let r = s.client.get(s.url("/api/v1/models")).header("origin", "https://evil.example").send().await.unwrap();
    assert!(r.headers().get("access-control-allow-origin").is_none());
    s.stop().await.unwrap();
}

#[tokio::test]
async fn rate_limits_are_per_principal_with_retry_after() {
    let mut c = roomy_config();
    c.security.requests_per_second = 1;
    c.security.burst = 5;
    let s = TestServer::start(c).await;
    let other = authorized_client(&make_key(&s, "reader", "*").await);
    let mut statuses = Vec::new();
    for _ in 0..8 {
        statuses.push(other.get(s.url("/api/v1/models")).send().await.unwrap().status().as_u16());
    }
    assert!(statuses.contains(&429), "{statuses:?}");
    let r = other.get(s.url("/api/v1/models")).send().await.unwrap();
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));
    assert_ne!(
        s.client.get(s.url("/api/v1/models")).send().await.unwrap().status(),
        429,
        "another principal is not slowed"
    );
    s.stop().await.unwrap();
}

/// Known plaintext through the API; then the SQLite file (with its WAL) and
/// the artifact directory hold no trace of it.
#[tokio::test]
async fn secrets_are_encrypted_at_rest_in_sqlite() {
    let c = roomy_config();
    let dir = c.data_dir.clone();
    let s = TestServer::start(c).await;
    let plaintext = "correct-horse-battery-staple-7f3a";
    let r = s.client.put(s.url("/api/v1/secrets/db")).json(&json!({"value": plaintext})).send().await.unwrap();
    assert_eq!(r.status(), 201);
    let listed = s.client.get(s.url("/api/v1/secrets")).send().await.unwrap().text().await.unwrap();
    assert!(listed.contains("\"db\"") && !listed.contains(plaintext), "{listed}");
    let got: Value = s.client.get(s.url("/api/v1/secrets/db")).send().await.unwrap().json().await.unwrap();
    assert_eq!(got["value"], plaintext);
    for entry in walk(&dir) {
        if entry.file_name().is_some_and(|n| n == "master.key") {
            continue;
        }
        let bytes = std::fs::read(&entry).unwrap();
        assert!(!contains(&bytes, plaintext.as_bytes()), "{} holds the plaintext", entry.display());
        assert!(!contains(&bytes, hex(plaintext).as_bytes()), "{} holds it in hex", entry.display());
    }
    s.stop().await.unwrap();
}

/// The same against PostgreSQL: every row of every table, as text.
#[tokio::test]
async fn secrets_are_encrypted_at_rest_in_postgres() {
    let Some(url) = vigil_store::testing::fresh_postgres("secrets_are_encrypted_at_rest_in_postgres").await else {
        return;
    };
    let mut c = roomy_config();
    c.database_url = Some(url.clone());
    let s = TestServer::start(c).await;
    let plaintext = "pg-plaintext-canary-91b2";
    let r = s.client.put(s.url("/api/v1/secrets/api-token")).json(&json!({"value": plaintext})).send().await.unwrap();
    assert_eq!(r.status(), 201);
    use sqlx::{Connection, Row};
    let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
    let tables: Vec<String> =
        sqlx::query("SELECT table_name::text FROM information_schema.tables WHERE table_schema = 'public'")
            .fetch_all(&mut conn)
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
    assert!(tables.contains(&"secrets".to_owned()), "{tables:?}");
    let mut dump = String::new();
    for table in tables {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT t::text FROM \"{table}\" t")))
            .fetch_all(&mut conn)
            .await
            .unwrap();
        for row in rows {
            dump.push_str(&row.get::<String, _>(0));
        }
    }
    assert!(dump.contains("api-token"), "the dump has the secret's row");
    assert!(!dump.contains(plaintext) && !dump.contains(&hex(plaintext)), "but not its value");
    s.stop().await.unwrap();
}

#[tokio::test]
async fn a_tampered_audit_log_is_found() {
    let c = roomy_config();
    let db = c.data_dir.join("vigil.db");
    let s = TestServer::start(c).await;
    for _ in 0..5 {
        s.client.get(s.url("/api/v1/models")).send().await.unwrap();
    }
    let verify =
        || async { s.client.get(s.url("/api/v1/audit/verify")).send().await.unwrap().json::<Value>().await.unwrap() };
    let v = verify().await;
    assert_eq!(v["intact"], true, "{v}");
    use sqlx::Connection;
    let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", db.display())).await.unwrap();
    sqlx::query("UPDATE audit_events SET principal = 'key:someone-else' WHERE seq = 3")
        .execute(&mut conn)
        .await
        .unwrap();
    let v = verify().await;
    assert_eq!((v["intact"].clone(), v["broken"]["seq"].clone()), (json!(false), json!(3)), "{v}");
    assert!(v["broken"]["reason"].as_str().unwrap().contains("edited"));
    sqlx::query("DELETE FROM audit_events WHERE seq = 3").execute(&mut conn).await.unwrap();
    let v = verify().await;
    assert_eq!(v["broken"]["seq"], 3, "{v}");
    assert!(v["broken"]["reason"].as_str().unwrap().contains("deleted"));
    s.stop().await.unwrap();
}

fn hex(text: &str) -> String {
    text.bytes().map(|b| format!("{b:02x}")).collect()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() { out.extend(walk(&path)) } else { out.push(path) }
    }
    out
}

/// Behind a trusted proxy, the client is the address the proxy names; from
/// anyone else, `X-Forwarded-For` is ignored (it cannot dodge a limit).
#[tokio::test]
async fn forwarded_addresses_count_only_behind_trusted_proxies() {
    let guess = |s: &TestServer, from: &str| {
        let r = reqwest::Client::new()
            .get(s.url("/api/v1/models"))
            .bearer_auth("vgl_guess")
            .header("x-forwarded-for", from);
        async move { r.send().await.unwrap().status().as_u16() }
    };
    let mut c = config(None, vigil_server::Limits::default());
    c.security.auth_failures_per_minute = 2;
    c.security.trusted_proxies = vec!["127.0.0.0/8".into()];
    let s = TestServer::start(c).await;
    assert_eq!(guess(&s, "203.0.113.7").await, 401);
    assert_eq!(guess(&s, "203.0.113.7").await, 401);
    assert_eq!(guess(&s, "203.0.113.7").await, 429, "that client is cut off");
    assert_eq!(guess(&s, "198.51.100.1, 127.0.0.2").await, 401, "another client behind the same proxies is not");
    let mut events = Value::Null;
    for _ in 0..50 {
        events = s.client.get(s.url("/api/v1/audit?limit=1000")).send().await.unwrap().json().await.unwrap();
        if events.to_string().contains("198.51.100.1") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(events.to_string().contains("\"source\":\"203.0.113.7\""), "{events}");
    s.stop().await.unwrap();

    let mut c = config(None, vigil_server::Limits::default());
    c.security.auth_failures_per_minute = 2;
    let s = TestServer::start(c).await;
    assert_eq!(guess(&s, "203.0.113.1").await, 401);
    assert_eq!(guess(&s, "203.0.113.2").await, 401);
    assert_eq!(guess(&s, "203.0.113.3").await, 429, "untrusted X-Forwarded-For changes nothing");
    s.stop().await.unwrap();
}

/// `${secret:NAME}` in configuration values: resolved at start, audited;
/// a missing secret or a value read before the vault opens stops the start.
#[tokio::test]
async fn configuration_values_may_reference_secrets() {
    let first = roomy_config();
    let data_dir = first.data_dir.clone();
    let s = TestServer::start(first).await;
    let r = s
        .client
        .put(s.url("/api/v1/secrets/origin"))
        .json(&json!({"value": "https://app.example"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    s.stop().await.unwrap();

    let mut again = roomy_config();
    again.data_dir = data_dir.clone();
    again.security.cors_origins = vec!["${secret:origin}".into()];
    let s = TestServer::start(again.clone()).await;
    let r = s.client.get(s.url("/api/v1/models")).header("origin", "https://app.example").send().await.unwrap();
    assert_eq!(r.headers()["access-control-allow-origin"], "https://app.example");
    let audit = s.client.get(s.url("/api/v1/audit?principal=vigil")).send().await.unwrap().text().await.unwrap();
    assert!(audit.contains("secret:origin") && !audit.contains("app.example"), "{audit}");
    s.stop().await.unwrap();

    let mut missing = again.clone();
    missing.security.cors_origins = vec!["${secret:nope}".into()];
    let err = vigil_server::run(missing, http_only().await, async {}).await.unwrap_err().to_string();
    assert!(err.contains("security.cors_origins.0") && err.contains("nope"), "{err}");
    let mut early = again.clone();
    early.artifact_store = Some("${secret:origin}".into());
    let err = vigil_server::run(early, http_only().await, async {}).await.unwrap_err().to_string();
    assert!(err.contains("artifact_store") && !err.contains("app.example"), "{err}");
    let mut misfit = again;
    misfit.security.cors_origins = vec!["${secret:origin".into()];
    let err = vigil_server::run(misfit, http_only().await, async {}).await.unwrap_err().to_string();
    assert!(err.contains("closing"), "{err}");
}

/// Master-key rotation: the new key seals, the old one still opens, rewrap
/// moves every data key, and then the old key can go.
#[tokio::test]
async fn the_master_key_rotates_without_losing_a_secret() {
    let first = roomy_config();
    let data_dir = first.data_dir.clone();
    let s = TestServer::start(first.clone()).await;
    let put = |s: &TestServer, value: &str| {
        let r = s.client.put(s.url("/api/v1/secrets/token")).json(&json!({"value": value}));
        async move { r.send().await.unwrap().status().as_u16() }
    };
    let get = |s: &TestServer, version: u32| {
        let r = s.client.get(s.url(&format!("/api/v1/secrets/token/versions/{version}")));
        async move {
            let r = r.send().await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap()["value"].clone())
        }
    };
    assert_eq!(put(&s, "old-one").await, 201);
    s.stop().await.unwrap();

    let old_key = data_dir.join("master.key");
    let new_key = data_dir.join("master-2.key");
    std::fs::write(&new_key, vigil_security::MasterKey::generate().unwrap().to_hex()).unwrap();
    let mut rotating = first.clone();
    rotating.security.master_key_file = Some(new_key.clone());
    rotating.security.previous_master_key_files = vec![old_key];
    let s = TestServer::start(rotating).await;
    assert_eq!(get(&s, 1).await, (200, json!("old-one")), "the old key still opens");
    assert_eq!(put(&s, "new-one").await, 201);
    let r: Value = s.client.post(s.url("/api/v1/vault/rewrap")).send().await.unwrap().json().await.unwrap();
    assert_eq!(r["rewrapped"], 1, "{r}");
    let r: Value = s.client.post(s.url("/api/v1/vault/rewrap")).send().await.unwrap().json().await.unwrap();
    assert_eq!(r["rewrapped"], 0, "nothing left to move: {r}");
    s.stop().await.unwrap();

    let mut rotated = first;
    rotated.security.master_key_file = Some(new_key);
    let s = TestServer::start(rotated).await;
    assert_eq!(get(&s, 1).await, (200, json!("old-one")));
    assert_eq!(get(&s, 2).await, (200, json!("new-one")));
    s.stop().await.unwrap();
}

/// Every gRPC method of the table, for no key, a key scoped elsewhere and
/// every role: the status the table calls for.
#[tokio::test]
async fn every_grpc_method_answers_each_role_as_the_table_says() {
    use vigil_proto::inference as pb;
    let s = TestServer::start(roomy_config()).await;
    let mut callers: Vec<(String, Option<String>)> = vec![("nobody".into(), None)];
    for role in Role::ALL {
        callers.push((role.to_string(), Some(make_key(&s, role.as_str(), "*").await)));
    }
    callers.push(("elsewhere".into(), Some(make_key(&s, "owner", "endpoint:elsewhere").await)));
    for (method, access) in GRPC {
        for (who, key) in &callers {
            let mut c = grpc_client_with(&s.grpc, key.as_deref()).await;
            let name = || "breast_cancer".to_owned();
            let result = match *method {
                "ServerLive" => c.server_live(pb::ServerLiveRequest {}).await.map(|_| ()),
                "ServerReady" => c.server_ready(pb::ServerReadyRequest {}).await.map(|_| ()),
                "ServerMetadata" => c.server_metadata(pb::ServerMetadataRequest {}).await.map(|_| ()),
                "ModelReady" => {
                    c.model_ready(pb::ModelReadyRequest { name: name(), version: String::new() }).await.map(|_| ())
                }
                "ModelMetadata" => c
                    .model_metadata(pb::ModelMetadataRequest { name: name(), version: String::new() })
                    .await
                    .map(|_| ()),
                "ModelConfig" => {
                    c.model_config(pb::ModelConfigRequest { name: name(), version: String::new() }).await.map(|_| ())
                }
                "ModelInfer" => {
                    c.model_infer(pb::ModelInferRequest { model_name: name(), ..Default::default() }).await.map(|_| ())
                }
                other => panic!("no call written for {other}"),
            };
            let code = result.err().map(|e| e.code());
            match (access, key) {
                (Access::Public, _) => assert_eq!(code, None, "{method} as {who}"),
                (Access::Needs(..), None) => assert_eq!(code, Some(Code::Unauthenticated), "{method} as {who}"),
                (Access::Needs(_, permissions::On::Any), Some(_)) => assert_eq!(code, None, "{method} as {who}"),
                (Access::Needs(..), Some(_)) if who == "elsewhere" => {
                    assert_eq!(code, Some(Code::PermissionDenied), "{method} as {who}")
                }
                (Access::Needs(..), Some(_)) => assert!(
                    !matches!(code, Some(Code::Unauthenticated | Code::PermissionDenied)),
                    "{method} as {who}: {code:?}"
                ),
            }
        }
    }
    s.stop().await.unwrap();
}
