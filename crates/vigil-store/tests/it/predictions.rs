//! `PredictionStore` conformance: the prediction log's chunks behave the same
//! in the metadata store (SQLite, PostgreSQL) and in an object store (a local
//! directory, S3, Azure Blob).

use std::sync::Arc;
use vigil_core::predictions::{ChunkFilter, ChunkPolicy, StoredChunk};
use vigil_store::testing::{skipped, unique_prefix};
use vigil_store::{ObjectPredictionStore, PostgresStore, PredictionStore, SqliteStore};

async fn sqlite(_: &str) -> Option<Arc<dyn PredictionStore>> {
    Some(Arc::new(SqliteStore::connect("sqlite::memory:").await.unwrap()))
}

async fn postgres(test: &str) -> Option<Arc<dyn PredictionStore>> {
    let url = vigil_store::testing::fresh_postgres(test).await?;
    Some(Arc::new(PostgresStore::connect(&url).await.unwrap()))
}

async fn local(test: &str) -> Option<Arc<dyn PredictionStore>> {
    let dir = std::env::temp_dir().join(unique_prefix(test));
    Some(Arc::new(ObjectPredictionStore::open(&dir.display().to_string()).unwrap()))
}

async fn s3(test: &str) -> Option<Arc<dyn PredictionStore>> {
    let Ok(bucket) = std::env::var("VIGIL_TEST_S3_BUCKET") else {
        return skipped(test, "VIGIL_TEST_S3_BUCKET is not set (.ci/services.sh starts an S3 server)");
    };
    Some(Arc::new(ObjectPredictionStore::open(&format!("s3://{bucket}/{}", unique_prefix(test))).unwrap()))
}

async fn azure(test: &str) -> Option<Arc<dyn PredictionStore>> {
    let Ok(container) = std::env::var("VIGIL_TEST_AZURE_CONTAINER") else {
        return skipped(test, "VIGIL_TEST_AZURE_CONTAINER is not set (.ci/services.sh starts Azurite)");
    };
    Some(Arc::new(ObjectPredictionStore::open(&format!("az://{container}/{}", unique_prefix(test))).unwrap()))
}

/// Runs each test on one store.
macro_rules! on {
    ($store:ident: $($test:ident),*) => {
        mod $store { $(#[tokio::test] async fn $test() {
            if let Some(s) = super::$store(stringify!($test)).await { super::$test(s).await }
        })* }
    };
}

/// Runs each test on every store.
macro_rules! conformance {
    ($($test:ident),* $(,)?) => {
        on!(sqlite: $($test),*);
        on!(postgres: $($test),*);
        on!(local: $($test),*);
        on!(s3: $($test),*);
        on!(azure: $($test),*);
    };
}

conformance!(chunks_are_selected_paged_and_pruned, recent_chunks_are_found_among_many, edge_cases_agree);

fn chunk(id: &str, endpoint: &str, first_us: i64, last_us: i64, size: usize) -> StoredChunk {
    StoredChunk {
        id: id.into(),
        endpoint: endpoint.into(),
        first_us,
        last_us,
        records: 3,
        master_key_id: "k1".into(),
        wrapped_key: vec![1; 8],
        ciphertext: vec![7; size],
    }
}

async fn ids(s: &Arc<dyn PredictionStore>, f: ChunkFilter) -> Vec<String> {
    s.list_chunks(&f).await.unwrap().into_iter().map(|c| c.id).collect()
}

async fn chunks_are_selected_paged_and_pruned(s: Arc<dyn PredictionStore>) {
    // Chunk i holds records from 1_000 + 10 i to 1_000 + 10 i + 5.
    let chunks: Vec<StoredChunk> =
        (0..10).map(|i| chunk(&format!("{i:02}"), "fraud", 1_000 + 10 * i, 1_005 + 10 * i, 92)).collect();
    for c in chunks.iter().chain([&chunk("zz", "other", 1_000, 1_005, 92)]) {
        s.insert_chunk(c).await.unwrap();
    }
    let fraud = ChunkFilter { endpoint: "fraud".into(), limit: 100, ..Default::default() };
    assert_eq!(ids(&s, fraud.clone()).await.len(), 10);
    // Chunks with a record in [1_033, 1_051): 03 (to 1_035), 04, 05 (from 1_050).
    let window = ChunkFilter { since_us: Some(1_033), until_us: Some(1_051), ..fraud.clone() };
    assert_eq!(ids(&s, window).await, ["03", "04", "05"]);
    let page = ids(&s, ChunkFilter { limit: 4, ..fraud.clone() }).await;
    assert_eq!(page, ["00", "01", "02", "03"]);
    let next = ids(&s, ChunkFilter { from: Some((1_030, "03".into())), limit: 4, ..fraud.clone() }).await;
    assert_eq!(next, ["03", "04", "05", "06"], "from a cursor's chunk, inclusive");
    let stored = s.list_chunks(&ChunkFilter { limit: 1, ..fraud.clone() }).await.unwrap();
    assert_eq!(stored[0], chunks[0], "a chunk reads back as written");

    // Age first: chunks whose last record is before 1_020 go. Then size:
    // each takes 100 to 112 bytes (ciphertext, wrapped key and, in an
    // object, a header), so 350 keeps the newest three.
    assert_eq!(s.prune_chunks("fraud", 1_020, u64::MAX).await.unwrap(), 2);
    assert_eq!(s.prune_chunks("fraud", 0, 350).await.unwrap(), 5);
    assert_eq!(ids(&s, fraud).await, ["07", "08", "09"]);
    let other = ChunkFilter { endpoint: "other".into(), limit: 10, ..Default::default() };
    assert_eq!(ids(&s, other).await, ["zz"], "another endpoint's chunks are not touched");
    assert!(
        s.list_chunks(&ChunkFilter { endpoint: "none".into(), limit: 10, ..Default::default() })
            .await
            .unwrap()
            .is_empty()
    );
}

/// Real times, a day of chunks a minute apart, of which a reader wants the
/// last few: an object store lists from shortly before `since`, and must
/// still find a chunk that began before it and ends after.
async fn recent_chunks_are_found_among_many(s: Arc<dyn PredictionStore>) {
    const MINUTE: i64 = 60_000_000;
    let start = 1_795_000_000_000_000;
    let policy = s.chunk_policy();
    assert!(policy == ChunkPolicy::ROWS || policy == ChunkPolicy::OBJECTS);
    let span = policy.flush_after.as_micros() as i64;
    let all: Vec<StoredChunk> = (0..60)
        .map(|i| chunk(&format!("{:032x}", i * 7919), "fraud", start + i * MINUTE, start + i * MINUTE + span, 10))
        .collect();
    for c in &all {
        s.insert_chunk(c).await.unwrap();
    }
    let since = start + 57 * MINUTE + span / 2;
    let recent = ChunkFilter { endpoint: "fraud".into(), since_us: Some(since), limit: 100, ..Default::default() };
    let want: Vec<String> = all[57..].iter().map(|c| c.id.clone()).collect();
    assert_eq!(ids(&s, recent.clone()).await, want);
    let first = ids(&s, ChunkFilter { limit: 1, ..recent.clone() }).await;
    assert_eq!(first, want[..1]);
    let until = ChunkFilter { until_us: Some(start + 2 * MINUTE), ..recent };
    assert!(ids(&s, until).await.is_empty(), "since after until selects nothing");
}

/// Where an object store's names and offsets could part from SQL's order
/// and filters: the span boundary, ids of different lengths at one time,
/// a cursor before the epoch, and pruning of chunks that overlap in time.
async fn edge_cases_agree(s: Arc<dyn PredictionStore>) {
    const SPAN: i64 = vigil_core::predictions::MAX_CHUNK_SPAN_US;
    let since = 10 * SPAN;
    // The longest span a chunk may have, ending exactly at `since`.
    s.insert_chunk(&chunk("edge", "a", since - SPAN, since, 10)).await.unwrap();
    let f = ChunkFilter { endpoint: "a".into(), since_us: Some(since), limit: 10, ..Default::default() };
    assert_eq!(ids(&s, f).await, ["edge"]);

    for id in ["b", "ab", "a"] {
        s.insert_chunk(&chunk(id, "ids", 7, 8, 10)).await.unwrap();
    }
    let all = ChunkFilter { endpoint: "ids".into(), limit: 10, ..Default::default() };
    assert_eq!(ids(&s, all.clone()).await, ["a", "ab", "b"]);
    assert_eq!(ids(&s, ChunkFilter { from: Some((7, "ab".into())), ..all.clone() }).await, ["ab", "b"]);
    assert_eq!(ids(&s, ChunkFilter { from: Some((-5, "zz".into())), ..all.clone() }).await, ["a", "ab", "b"]);
    assert_eq!(ids(&s, ChunkFilter { from: Some((7, "b".into())), since_us: Some(8), ..all }).await, ["b"]);

    // "long" runs from 100 to 500, "short" (newer by its start) from 200 to
    // 250. Age takes "short"; the size limit then counts "long" alone.
    s.insert_chunk(&chunk("long", "overlap", 100, 500, 92)).await.unwrap();
    s.insert_chunk(&chunk("short", "overlap", 200, 250, 92)).await.unwrap();
    assert_eq!(s.prune_chunks("overlap", 300, 150).await.unwrap(), 1);
    let left = ChunkFilter { endpoint: "overlap".into(), limit: 10, ..Default::default() };
    assert_eq!(ids(&s, left).await, ["long"]);
}
