//! `MetadataStore` conformance: the same tests on SQLite and on PostgreSQL
//! (`VIGIL_TEST_DATABASE_URL`, a fresh database per test).

use std::collections::BTreeMap;
use std::sync::Arc;
use vigil_core::Error;
use vigil_core::registry::{EndpointSpec, Lineage, NewVersion, Route, Shadow};
use vigil_core::security::{GENESIS_HASH, KeyRecord, NewAuditEvent, Role, verify_chain};
use vigil_core::{DataType, ErrorCode, Signature, TensorSpec};
use vigil_security::{MasterKey, Vault};
use vigil_store::{AuditFilter, MetadataStore, PostgresStore, SqliteStore};

async fn sqlite() -> Arc<dyn MetadataStore> {
    Arc::new(SqliteStore::connect("sqlite::memory:").await.unwrap())
}

async fn postgres(test: &str) -> Option<Arc<dyn MetadataStore>> {
    let url = vigil_store::testing::fresh_postgres(test).await?;
    Some(Arc::new(PostgresStore::connect(&url).await.unwrap()))
}

/// Runs each test on both stores.
macro_rules! conformance {
    ($($test:ident),* $(,)?) => {
        mod on_sqlite {
            $(#[tokio::test] async fn $test() { super::$test(super::sqlite().await).await })*
        }
        mod on_postgres {
            $(#[tokio::test] async fn $test() {
                if let Some(store) = super::postgres(stringify!($test)).await { super::$test(store).await }
            })*
        }
    };
}

conformance!(
    versions_are_numbered_and_idempotent,
    versions_are_listed_and_shown,
    aliases_move_with_history,
    endpoints_make_revisions,
    versions_in_use_cannot_be_deleted,
    refused_changes_leave_nothing_behind,
    concurrent_pushes_get_distinct_numbers,
    a_file_database_survives_reopening,
    keys_are_created_revoked_and_rotated,
    the_first_key_is_created_once,
    audit_events_form_a_verifiable_chain,
    secrets_are_versioned_and_sealed,
    alert_rules_are_put_replaced_and_deleted,
    profiles_and_windows_are_kept,
    changes_in_an_audited_call_commit_with_their_event,
    audit_lists_newest_first,
);

fn new_version(model: &str, content: &str) -> NewVersion {
    NewVersion {
        model: model.into(),
        digest: vigil_store::artifacts::digest_of(content.as_bytes()),
        size_bytes: content.len() as u64,
        manifest: String::new(),
        signature: Signature {
            inputs: vec![TensorSpec::new("x", DataType::Fp32, vec![-1, 3])],
            outputs: vec![TensorSpec::new("y", DataType::Int64, vec![-1])],
        },
        labels: BTreeMap::from([("team".into(), "risk".into())]),
        metrics: BTreeMap::from([("auc".into(), 0.97)]),
        lineage: Lineage {
            git_commit: Some("abc123".into()),
            training_data_digest: Some("sha256:00".into()),
            params: BTreeMap::from([("C".into(), "1.0".into())]),
        },
        created_by: "alice".into(),
    }
}

fn spec(model: &str, traffic: &[(u64, u32)]) -> EndpointSpec {
    EndpointSpec {
        model: model.into(),
        traffic: traffic.iter().map(|&(version, weight)| Route { version, weight }).collect(),
        shadows: Vec::new(),
        logging: None,
    }
}

async fn versions_are_numbered_and_idempotent(s: Arc<dyn MetadataStore>) {
    let (v1, created) = s.register_version(new_version("fraud", "one")).await.unwrap();
    assert!(created);
    assert_eq!(v1.version, 1);
    let (again, created) = s.register_version(new_version("fraud", "one")).await.unwrap();
    assert!(!created, "identical content is not a new version");
    assert_eq!(again, v1);
    let (v2, _) = s.register_version(new_version("fraud", "two")).await.unwrap();
    assert_eq!(v2.version, 2);
    let mut with_manifest = new_version("fraud", "one");
    with_manifest.manifest = "[labels]\nstage = 'b'\n".into();
    assert_eq!(s.register_version(with_manifest).await.unwrap().0.version, 3, "a new manifest is new content");
    let mut by_bob = new_version("fraud", "one");
    by_bob.created_by = "bob".into();
    assert_eq!(s.register_version(by_bob).await.unwrap().0.created_by, "alice", "who pushes is not content");
    let (other, _) = s.register_version(new_version("churn", "one")).await.unwrap();
    assert_eq!(other.version, 1, "numbers are per model");
    let g = s.generation().await.unwrap();
    assert!(g > 0);
}

async fn versions_are_listed_and_shown(s: Arc<dyn MetadataStore>) {
    for c in ["a", "b", "c"] {
        s.register_version(new_version("fraud", c)).await.unwrap();
    }
    let v2 = s.get_version("fraud", 2).await.unwrap();
    assert_eq!(v2.digest, vigil_store::artifacts::digest_of(b"b"));
    assert_eq!(v2.signature.inputs[0].shape, vec![-1, 3]);
    assert_eq!(v2.labels["team"], "risk");
    assert_eq!(v2.metrics["auc"], 0.97);
    assert_eq!(v2.lineage.git_commit.as_deref(), Some("abc123"));
    assert_eq!(v2.lineage.params["C"], "1.0");
    assert_eq!(v2.vigil_version, env!("CARGO_PKG_VERSION"));
    assert!(v2.created_at.ends_with('Z'), "{}", v2.created_at);
    let all = s.list_versions("fraud").await.unwrap();
    assert_eq!(all.iter().map(|v| v.version).collect::<Vec<_>>(), [1, 2, 3]);
    let models = s.list_models().await.unwrap();
    assert_eq!(models.len(), 1);
    assert_eq!((models[0].versions, models[0].latest_version), (3, Some(3)));
    assert_eq!(s.get_version("fraud", 9).await.unwrap_err().code(), ErrorCode::NotFound);
    assert_eq!(s.list_versions("nope").await.unwrap_err().code(), ErrorCode::NotFound);
}

async fn aliases_move_with_history(s: Arc<dyn MetadataStore>) {
    for c in ["a", "b"] {
        s.register_version(new_version("fraud", c)).await.unwrap();
    }
    s.set_alias("fraud", "production", 1, "alice").await.unwrap();
    s.set_alias("fraud", "staging", 2, "alice").await.unwrap();
    let moved = s.set_alias("fraud", "production", 2, "bob").await.unwrap();
    assert_eq!((moved.version, moved.updated_by.as_str()), (2, "bob"));
    let aliases = s.list_aliases("fraud").await.unwrap();
    assert_eq!(
        aliases.iter().map(|a| (a.alias.as_str(), a.version)).collect::<Vec<_>>(),
        [("production", 2), ("staging", 2)]
    );
    s.delete_alias("fraud", "production", "carol").await.unwrap();
    let history = s.alias_history("fraud", "production").await.unwrap();
    assert_eq!(history.iter().map(|e| e.version).collect::<Vec<_>>(), [Some(1), Some(2), None]);
    assert_eq!(history[2].changed_by, "carol");
    assert_eq!(s.set_alias("fraud", "x", 9, "a").await.unwrap_err().code(), ErrorCode::NotFound);
    assert_eq!(s.set_alias("fraud", "42", 1, "a").await.unwrap_err().code(), ErrorCode::InvalidInput);
    assert_eq!(s.set_alias("fraud", "../x", 1, "a").await.unwrap_err().code(), ErrorCode::InvalidInput);
    assert_eq!(s.delete_alias("fraud", "production", "a").await.unwrap_err().code(), ErrorCode::NotFound);
}

async fn endpoints_make_revisions(s: Arc<dyn MetadataStore>) {
    for c in ["a", "b", "c"] {
        s.register_version(new_version("fraud", c)).await.unwrap();
    }
    let r1 = s.put_endpoint("fraud-api", &spec("fraud", &[(1, 100)]), "first", "alice", None).await.unwrap();
    assert_eq!(r1.revision, 1);
    assert_eq!(r1.digests[&1], vigil_store::artifacts::digest_of(b"a"));
    let same = s.put_endpoint("fraud-api", &spec("fraud", &[(1, 100)]), "again", "bob", None).await.unwrap();
    let stale = s.put_endpoint("fraud-api", &spec("fraud", &[(1, 100)]), "x", "bob", Some(7)).await.unwrap_err();
    assert_eq!(stale.code(), ErrorCode::Conflict, "a change computed from another revision is refused");
    assert_eq!(same, r1, "the same policy makes no revision");
    let mut canary = spec("fraud", &[(1, 90), (2, 10)]);
    canary.shadows.push(Shadow { version: 3, percent: 50.0 });
    let r2 = s.put_endpoint("fraud-api", &canary, "canary", "bob", None).await.unwrap();
    assert_eq!(r2.revision, 2);
    assert_eq!(r2.digests.len(), 3);
    assert_eq!(s.endpoint("fraud-api").await.unwrap(), r2);
    let history = s.revisions("fraud-api").await.unwrap();
    assert_eq!(history.iter().map(|r| r.comment.as_str()).collect::<Vec<_>>(), ["first", "canary"]);
    s.put_endpoint("other", &spec("fraud", &[(3, 100)]), "", "a", None).await.unwrap();
    let names: Vec<String> = s.list_endpoints().await.unwrap().into_iter().map(|r| r.endpoint).collect();
    assert_eq!(names, ["fraud-api", "other"]);
    s.delete_endpoint("other").await.unwrap();
    assert_eq!(s.endpoint("other").await.unwrap_err().code(), ErrorCode::NotFound);
    assert_eq!(s.revisions("other").await.unwrap_err().code(), ErrorCode::NotFound);
    assert_eq!(s.delete_endpoint("other").await.unwrap_err().code(), ErrorCode::NotFound);
}

async fn versions_in_use_cannot_be_deleted(s: Arc<dyn MetadataStore>) {
    for c in ["a", "b", "c", "d"] {
        s.register_version(new_version("fraud", c)).await.unwrap();
    }
    let mut p = spec("fraud", &[(1, 100), (2, 0)]);
    p.shadows.push(Shadow { version: 3, percent: 1.0 });
    s.put_endpoint("e", &p, "", "a", None).await.unwrap();
    s.set_alias("fraud", "production", 4, "a").await.unwrap();
    for v in [1, 2, 3] {
        let e = s.delete_version("fraud", v).await.unwrap_err();
        assert_eq!(e.code(), ErrorCode::Conflict, "{e}");
        assert!(e.message().contains("endpoint 'e'"), "{e}");
    }
    let e = s.delete_version("fraud", 4).await.unwrap_err();
    assert!(e.message().contains("alias 'production'"), "{e}");
    s.delete_alias("fraud", "production", "a").await.unwrap();
    s.delete_version("fraud", 4).await.unwrap();
    assert_eq!(s.delete_version("fraud", 4).await.unwrap_err().code(), ErrorCode::NotFound);
    // An old revision may name a deleted version: only the current one protects.
    s.put_endpoint("e", &spec("fraud", &[(1, 100)]), "", "a", None).await.unwrap();
    s.delete_version("fraud", 3).await.unwrap();
    assert_eq!(s.list_versions("fraud").await.unwrap().len(), 2);
    let (next, _) = s.register_version(new_version("fraud", "e")).await.unwrap();
    assert_eq!(next.version, 5, "numbers of deleted versions are never reused");
}

async fn refused_changes_leave_nothing_behind(s: Arc<dyn MetadataStore>) {
    s.register_version(new_version("fraud", "a")).await.unwrap();
    let before = s.generation().await.unwrap();
    for (name, bad, code) in [
        ("e", spec("fraud", &[(1, 50), (2, 50)]), ErrorCode::NotFound),
        ("e", spec("fraud", &[(1, 60)]), ErrorCode::InvalidInput),
        ("e", spec("nope", &[(1, 100)]), ErrorCode::NotFound),
        ("bad name", spec("fraud", &[(1, 100)]), ErrorCode::InvalidInput),
    ] {
        assert_eq!(s.put_endpoint(name, &bad, "", "a", None).await.unwrap_err().code(), code);
    }
    assert!(s.list_endpoints().await.unwrap().is_empty(), "no endpoint half-made");
    assert_eq!(s.generation().await.unwrap(), before, "refused changes change nothing");
    let mut bad = new_version("no/slash", "a");
    bad.model = "no/slash".into();
    assert_eq!(s.register_version(bad).await.unwrap_err().code(), ErrorCode::InvalidInput);
    assert_eq!(s.list_models().await.unwrap().len(), 1);
}

async fn concurrent_pushes_get_distinct_numbers(s: Arc<dyn MetadataStore>) {
    let pushes = (0..8).map(|i| {
        let s = Arc::clone(&s);
        tokio::spawn(async move { s.register_version(new_version("fraud", &format!("content {i}"))).await })
    });
    let mut numbers = Vec::new();
    for p in pushes {
        numbers.push(p.await.unwrap().unwrap().0.version);
    }
    numbers.sort_unstable();
    assert_eq!(numbers, (1..=8).collect::<Vec<_>>());
}

async fn a_file_database_survives_reopening(s: Arc<dyn MetadataStore>) {
    // The in-memory SQLite of the suite says nothing about files: check one here.
    let dir = std::env::temp_dir().join(vigil_store::testing::unique_prefix("reopen"));
    let store = vigil_store::open_metadata(None, &dir).await.unwrap();
    store.register_version(new_version("fraud", "a")).await.unwrap();
    drop(store);
    let again = vigil_store::open_metadata(None, &dir).await.unwrap();
    assert_eq!(again.list_versions("fraud").await.unwrap().len(), 1, "migrations re-run harmlessly");
    std::fs::remove_dir_all(&dir).unwrap();
    // And the store under test still answers.
    assert!(s.list_models().await.unwrap().is_empty());
}

fn key(id: &str, role: Role) -> KeyRecord {
    KeyRecord {
        id: id.into(),
        name: format!("{id} key"),
        role,
        scope: "endpoint:fraud".parse().unwrap(),
        hash: "ab".repeat(32),
        created_by: "test".into(),
        created_at: "2026-11-26T00:00:00.000Z".into(),
        expires_at: None,
        revoked_at: None,
        rotated_from: None,
    }
}

async fn keys_are_created_revoked_and_rotated(s: Arc<dyn MetadataStore>) {
    let generation = s.generation().await.unwrap();
    s.create_key(&key("k1", Role::Predictor)).await.unwrap();
    assert!(s.generation().await.unwrap() > generation, "replicas must see key changes");
    assert_eq!(s.create_key(&key("k1", Role::Owner)).await.unwrap_err().code(), ErrorCode::Conflict);
    assert_eq!(s.create_key(&key("../x", Role::Owner)).await.unwrap_err().code(), ErrorCode::InvalidInput);
    let keys = s.list_keys().await.unwrap();
    assert_eq!(keys, vec![key("k1", Role::Predictor)], "everything round-trips, the hash included");

    let revoked = s.revoke_key("k1", "2026-11-26T01:00:00Z").await.unwrap();
    assert_eq!(revoked.revoked_at.as_deref(), Some("2026-11-26T01:00:00Z"));
    let again = s.revoke_key("k1", "2026-11-26T02:00:00Z").await.unwrap();
    assert_eq!(again.revoked_at, revoked.revoked_at, "revoking twice keeps the first time");
    assert_eq!(s.revoke_key("nope", "t").await.unwrap_err().code(), ErrorCode::NotFound);

    s.create_key(&key("k2", Role::Reader)).await.unwrap();
    let mut k3 = key("k3", Role::Reader);
    k3.rotated_from = Some("k2".into());
    s.rotate_key("k2", "2026-11-27T00:00:00Z", &k3).await.unwrap();
    let keys = s.list_keys().await.unwrap();
    let k2 = keys.iter().find(|k| k.id == "k2").unwrap();
    assert_eq!(k2.expires_at.as_deref(), Some("2026-11-27T00:00:00Z"));
    assert_eq!(keys.iter().find(|k| k.id == "k3").unwrap().rotated_from.as_deref(), Some("k2"));
    // A rotation never extends a key's life, and a revoked key cannot be rotated.
    s.rotate_key("k2", "2027-01-01T00:00:00Z", &key("k4", Role::Reader)).await.unwrap();
    let k2 = s.list_keys().await.unwrap().into_iter().find(|k| k.id == "k2").unwrap();
    assert_eq!(k2.expires_at.as_deref(), Some("2026-11-27T00:00:00Z"));
    let refused = s.rotate_key("k1", "2026-11-27T00:00:00Z", &key("k5", Role::Reader)).await.unwrap_err();
    assert_eq!(refused.code(), ErrorCode::NotFound);
    assert!(s.list_keys().await.unwrap().iter().all(|k| k.id != "k5"), "a refused rotation leaves nothing behind");
}

async fn the_first_key_is_created_once(s: Arc<dyn MetadataStore>) {
    let tries = (0..4).map(|i| {
        let s = Arc::clone(&s);
        tokio::spawn(async move { s.create_first_key(&key(&format!("first{i}"), Role::Owner)).await.unwrap() })
    });
    let created = futures::future::join_all(tries).await.into_iter().filter(|r| *r.as_ref().unwrap()).count();
    assert_eq!(created, 1);
    assert_eq!(s.list_keys().await.unwrap().len(), 1);
}

async fn audit_events_form_a_verifiable_chain(s: Arc<dyn MetadataStore>) {
    assert_eq!(s.audit_head().await.unwrap(), Some((0, GENESIS_HASH.to_owned())));
    let appends = (0..20).map(|i| {
        let s = Arc::clone(&s);
        tokio::spawn(async move {
            s.append_audit(NewAuditEvent {
                time: format!("2026-11-26T00:00:{i:02}.000Z"),
                principal: format!("key:p{}", i % 2),
                action: if i % 3 == 0 {
                    "PUT /api/v1/endpoints/{endpoint}".into()
                } else {
                    "GET /api/v1/models".into()
                },
                target: "endpoint:fraud".into(),
                outcome: "ok".into(),
                source: "127.0.0.1".into(),
                request_id: format!("r{i}"),
            })
            .await
            .unwrap()
        })
    });
    futures::future::join_all(appends).await;
    let all = s.list_audit(&AuditFilter::default()).await.unwrap();
    assert_eq!(all.iter().map(|e| e.seq).collect::<Vec<_>>(), (1..=20).collect::<Vec<_>>());
    let (seq, hash) = s.audit_head().await.unwrap().unwrap();
    assert_eq!(verify_chain(all.clone(), seq, &hash), Ok(20), "concurrent appends still chain");

    let p0 = AuditFilter { principal: Some("key:p0".into()), ..AuditFilter::default() };
    assert_eq!(s.list_audit(&p0).await.unwrap().len(), 10);
    let puts = AuditFilter { action: Some("PUT".into()), ..AuditFilter::default() };
    assert_eq!(s.list_audit(&puts).await.unwrap().len(), 7);
    let window = AuditFilter {
        since: Some("2026-11-26T00:00:05".into()),
        until: Some("2026-11-26T00:00:10".into()),
        ..AuditFilter::default()
    };
    assert_eq!(s.list_audit(&window).await.unwrap().len(), 5);
    let page = AuditFilter { after_seq: 15, limit: 3, ..AuditFilter::default() };
    assert_eq!(s.list_audit(&page).await.unwrap().iter().map(|e| e.seq).collect::<Vec<_>>(), vec![16, 17, 18]);
}

async fn secrets_are_versioned_and_sealed(s: Arc<dyn MetadataStore>) {
    let old_key = MasterKey::generate().unwrap();
    let vault = Vault::new(old_key.clone(), Vec::new());
    let put = |value: &'static str| {
        let vault = &vault;
        move |version| {
            vault
                .seal("db", version, value.as_bytes(), "key:x", "2026-11-26T00:00:00Z")
                .map_err(|e| Error::new(vigil_core::ErrorCode::Internal, e.to_string()))
        }
    };
    assert_eq!(s.put_secret("db", &put("one")).await.unwrap().version, 1);
    assert_eq!(s.put_secret("db", &put("two")).await.unwrap().version, 2);
    assert_eq!(vault.open(&s.get_secret("db", None).await.unwrap()).unwrap(), b"two");
    assert_eq!(vault.open(&s.get_secret("db", Some(1)).await.unwrap()).unwrap(), b"one");
    assert_eq!(s.get_secret("db", Some(9)).await.unwrap_err().code(), ErrorCode::NotFound);
    assert_eq!(s.get_secret("nope", None).await.unwrap_err().code(), ErrorCode::NotFound);
    assert_eq!(s.put_secret("../etc", &put("x")).await.unwrap_err().code(), ErrorCode::InvalidInput);
    let listed = s.list_secrets().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!((listed[0].name.as_str(), listed[0].version), ("db", 2));

    // Rotation: rewrap under a new master key, guarded by the old key's id.
    let old_id = vault.current_key_id().to_owned();
    let rotated = Vault::new(MasterKey::generate().unwrap(), vec![old_key]);
    let sealed = s.sealed_secrets().await.unwrap();
    assert_eq!(sealed.len(), 2);
    for one in &sealed {
        let rewrapped = rotated.rewrap(one).unwrap().unwrap();
        assert!(s.rewrap_secret(&rewrapped, &old_id).await.unwrap());
        assert!(!s.rewrap_secret(&rewrapped, &old_id).await.unwrap(), "a second rewrap finds it done");
    }
    assert_eq!(rotated.open(&s.get_secret("db", Some(1)).await.unwrap()).unwrap(), b"one");

    s.delete_secret("db").await.unwrap();
    assert_eq!(s.delete_secret("db").await.unwrap_err().code(), ErrorCode::NotFound);
    assert!(s.list_secrets().await.unwrap().is_empty());
}

async fn alert_rules_are_put_replaced_and_deleted(s: Arc<dyn MetadataStore>) {
    let generation = s.generation().await.unwrap();
    s.put_alert_rule("busy", r#"{"v":1}"#, "alice").await.unwrap();
    s.put_alert_rule("errors", r#"{"v":2}"#, "alice").await.unwrap();
    s.put_alert_rule("busy", r#"{"v":3}"#, "bob").await.unwrap();
    assert!(s.generation().await.unwrap() > generation, "replicas see rule changes");
    let rules = s.alert_rules().await.unwrap();
    let names: Vec<(&str, &str, &str)> =
        rules.iter().map(|r| (r.name.as_str(), r.rule.as_str(), r.updated_by.as_str())).collect();
    assert_eq!(names, [("busy", r#"{"v":3}"#, "bob"), ("errors", r#"{"v":2}"#, "alice")]);
    s.delete_alert_rule("busy").await.unwrap();
    assert_eq!(s.delete_alert_rule("busy").await.unwrap_err().code(), ErrorCode::NotFound);
    assert_eq!(s.alert_rules().await.unwrap().len(), 1);
}

/// With several replicas on one PostgreSQL, exactly one leads; when its
/// session ends, another takes over.
#[tokio::test]
async fn one_replica_leads_and_another_takes_over() {
    use vigil_store::Leadership;
    let Some(url) = vigil_store::testing::fresh_postgres("one_replica_leads").await else { return };
    let a = PostgresStore::connect(&url).await.unwrap();
    let b = PostgresStore::connect(&url).await.unwrap();
    assert!(a.lead().await);
    assert!(a.lead().await, "the leader stays the leader");
    assert!(!b.lead().await, "only one leads");
    drop(a);
    let mut took_over = false;
    for _ in 0..100 {
        if b.lead().await {
            took_over = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(took_over, "the other replica leads once the first is gone");
    assert!(SqliteStore::connect("sqlite::memory:").await.unwrap().lead().await);
}

async fn profiles_and_windows_are_kept(s: Arc<dyn MetadataStore>) {
    use vigil_store::StoredWindow;
    let generation = s.generation().await.unwrap();
    s.put_profile("credit", "1", r#"{"rows":1}"#, "alice").await.unwrap();
    s.put_profile("credit", "1", r#"{"rows":2}"#, "bob").await.unwrap();
    s.put_profile("credit", "2", r#"{"rows":3}"#, "bob").await.unwrap();
    assert!(s.generation().await.unwrap() > generation, "replicas see new profiles");
    let profiles = s.profiles().await.unwrap();
    let got: Vec<(&str, &str, &str)> =
        profiles.iter().map(|p| (p.version.as_str(), p.profile.as_str(), p.updated_by.as_str())).collect();
    assert_eq!(got, [("1", r#"{"rows":2}"#, "bob"), ("2", r#"{"rows":3}"#, "bob")]);

    let generation = s.generation().await.unwrap();
    let window = |version: &str, start_s, replica: &str, sketch: &str| StoredWindow {
        endpoint: "loans".into(),
        version: version.into(),
        start_s,
        replica: replica.into(),
        sketch: sketch.into(),
    };
    s.put_window(&window("1", 60, "a", "x")).await.unwrap();
    s.put_window(&window("1", 60, "b", "y")).await.unwrap();
    s.put_window(&window("1", 120, "a", "z")).await.unwrap();
    s.put_window(&window("1", 120, "a", "z2")).await.unwrap();
    s.put_window(&window("2", 0, "a", "w")).await.unwrap();
    assert_eq!(s.generation().await.unwrap(), generation, "windows do not make replicas reload");
    let got = s.windows("loans", 60, 180).await.unwrap();
    let got: Vec<(&str, i64, &str)> = got.iter().map(|w| (w.version.as_str(), w.start_s, w.sketch.as_str())).collect();
    assert_eq!(got, [("1", 60, "x"), ("1", 60, "y"), ("1", 120, "z2")]);
    assert!(s.windows("other", 0, i64::MAX).await.unwrap().is_empty());

    use vigil_store::StoredFeedback;
    let fb = |request_id: &str, row: u64, predicted_us: i64, truth: &str| StoredFeedback {
        endpoint: "loans".into(),
        request_id: request_id.into(),
        row,
        version: "1".into(),
        predicted_us,
        received_us: predicted_us + 5,
        prediction: r#"{"label":"approve"}"#.into(),
        truth: truth.into(),
    };
    s.put_feedback(&[fb("r1", 0, 10, "a"), fb("r1", 1, 10, "b"), fb("r2", 0, 20, "c")]).await.unwrap();
    s.put_feedback(&[fb("r1", 1, 10, "b2")]).await.unwrap();
    let got = s.feedback("loans", 0, 15).await.unwrap();
    let got: Vec<(&str, u64, &str)> = got.iter().map(|f| (f.request_id.as_str(), f.row, f.truth.as_str())).collect();
    assert_eq!(got, [("r1", 0, "a"), ("r1", 1, "b2")], "newer feedback replaces older; by prediction time");
    assert_eq!(s.generation().await.unwrap(), generation, "feedback does not make replicas reload");
    // Retention: windows that started before 100 s, ground truth of predictions made before it.
    assert_eq!(s.prune_monitoring(100).await.unwrap(), 3 + 3, "windows at 60 (two replicas) and 0; all feedback");
    assert_eq!(s.windows("loans", 0, i64::MAX).await.unwrap().len(), 1);
    assert!(s.feedback("loans", 0, i64::MAX).await.unwrap().is_empty());
}

/// A change made inside an audited call writes the call's event in its own
/// transaction; a refused change writes nothing; a read writes nothing.
async fn changes_in_an_audited_call_commit_with_their_event(s: Arc<dyn MetadataStore>) {
    use vigil_store::audit_scope::audited;
    s.register_version(new_version("fraud", "a")).await.unwrap();
    let call = |target: &str| NewAuditEvent {
        principal: "key:owner".into(),
        action: "PUT /api/v1/endpoints/{endpoint}".into(),
        target: target.into(),
        source: "127.0.0.1".into(),
        request_id: "r1".into(),
        ..NewAuditEvent::default()
    };
    let (revision, committed) =
        audited(call("endpoint:e"), s.put_endpoint("e", &spec("fraud", &[(1, 100)]), "", "key:owner", None)).await;
    revision.unwrap();
    assert_eq!(committed.len(), 1);
    assert_eq!((committed[0].outcome.as_str(), committed[0].target.as_str()), ("ok", "endpoint:e"));
    let (refused, committed) =
        audited(call("endpoint:f"), s.put_endpoint("f", &spec("fraud", &[(9, 100)]), "", "key:owner", None)).await;
    assert!(refused.is_err() && committed.is_empty());
    let (_, committed) = audited(call("endpoint:e"), s.list_endpoints()).await;
    assert!(committed.is_empty());
    let all = s.list_audit(&AuditFilter::default()).await.unwrap();
    assert_eq!(all.len(), 1, "{all:?}");
    assert!(!all[0].time.is_empty());
    let (seq, hash) = s.audit_head().await.unwrap().unwrap();
    assert_eq!(verify_chain(all, seq, &hash).unwrap(), 1);
    // Outside any call, a change writes no event (background work).
    s.register_version(new_version("fraud", "b")).await.unwrap();
    s.put_endpoint("e", &spec("fraud", &[(2, 100)]), "", "vigil", None).await.unwrap();
    assert_eq!(s.list_audit(&AuditFilter::default()).await.unwrap().len(), 1);
}

async fn audit_lists_newest_first(s: Arc<dyn MetadataStore>) {
    for i in 0..5 {
        let event = NewAuditEvent { time: format!("2026-12-08T00:00:0{i}.000Z"), ..NewAuditEvent::default() };
        s.append_audit(event).await.unwrap();
    }
    let seqs = |f: AuditFilter| {
        let s = Arc::clone(&s);
        async move { s.list_audit(&f).await.unwrap().iter().map(|e| e.seq).collect::<Vec<_>>() }
    };
    assert_eq!(seqs(AuditFilter { newest_first: true, limit: 2, ..AuditFilter::default() }).await, [5, 4]);
    assert_eq!(seqs(AuditFilter { newest_first: true, before_seq: 4, ..AuditFilter::default() }).await, [3, 2, 1]);
    assert_eq!(seqs(AuditFilter { after_seq: 3, ..AuditFilter::default() }).await, [4, 5]);
}
