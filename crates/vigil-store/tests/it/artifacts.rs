//! `ArtifactStore` conformance: a local directory, S3 (an S3-compatible server
//! at `VIGIL_TEST_S3_ENDPOINT`, e.g. moto) and Azure Blob (Azurite at
//! `VIGIL_TEST_AZURE_ENDPOINT`). `.ci/services.sh` starts both.

use bytes::Bytes;
use vigil_core::ErrorCode;
use vigil_store::ArtifactStore;
use vigil_store::testing::unique_prefix;

fn local(test: &str) -> Option<ArtifactStore> {
    let dir = std::env::temp_dir().join(unique_prefix(test));
    Some(ArtifactStore::local(&dir).unwrap())
}

fn s3(test: &str) -> Option<ArtifactStore> {
    let Ok(bucket) = std::env::var("VIGIL_TEST_S3_BUCKET") else {
        return vigil_store::testing::skipped(
            test,
            "VIGIL_TEST_S3_BUCKET is not set (.ci/services.sh starts an S3 server)",
        );
    };
    Some(ArtifactStore::open(&format!("s3://{bucket}/{}", unique_prefix(test))).unwrap())
}

fn azure(test: &str) -> Option<ArtifactStore> {
    let Ok(container) = std::env::var("VIGIL_TEST_AZURE_CONTAINER") else {
        return vigil_store::testing::skipped(
            test,
            "VIGIL_TEST_AZURE_CONTAINER is not set (.ci/services.sh starts Azurite)",
        );
    };
    Some(ArtifactStore::open(&format!("az://{container}/{}", unique_prefix(test))).unwrap())
}

macro_rules! conformance {
    ($($test:ident),* $(,)?) => {
        mod on_local { $(#[tokio::test] async fn $test() { if let Some(s) = super::local(stringify!($test)) { super::$test(s).await } })* }
        mod on_s3 { $(#[tokio::test] async fn $test() { if let Some(s) = super::s3(stringify!($test)) { super::$test(s).await } })* }
        mod on_azure { $(#[tokio::test] async fn $test() { if let Some(s) = super::azure(stringify!($test)) { super::$test(s).await } })* }
    };
}

conformance!(content_addressed_round_trip, corruption_and_absence_are_caught);

async fn content_addressed_round_trip(s: ArtifactStore) {
    let bytes = Bytes::from(vec![7u8; 300_000]);
    let digest = s.put(bytes.clone()).await.unwrap();
    assert_eq!(digest, vigil_store::artifacts::digest_of(&bytes));
    assert_eq!(s.put(bytes.clone()).await.unwrap(), digest, "the same content is the same artifact");
    assert!(s.contains(&digest).await.unwrap());
    assert_eq!(s.get(&digest).await.unwrap(), bytes);
    let other = s.put(Bytes::from_static(b"other")).await.unwrap();
    assert_ne!(other, digest);
    assert_eq!(s.get(&other).await.unwrap(), Bytes::from_static(b"other"));
}

async fn corruption_and_absence_are_caught(s: ArtifactStore) {
    let digest = s.put(Bytes::from_static(b"the real model")).await.unwrap();
    s.overwrite_unchecked(&digest, Bytes::from_static(b"a swapped model")).await.unwrap();
    let e = s.get(&digest).await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::Storage);
    assert!(e.message().contains("corrupted"), "{e}");
    s.delete_unchecked(&digest).await.unwrap();
    let e = s.get(&digest).await.unwrap_err();
    assert!(e.message().contains("missing"), "{e}");
    assert!(!s.contains(&digest).await.unwrap());
    // Pushing the content again repairs it.
    s.put(Bytes::from_static(b"the real model")).await.unwrap();
    assert_eq!(s.get(&digest).await.unwrap(), Bytes::from_static(b"the real model"));
    assert_eq!(s.get("sha256:../../x").await.unwrap_err().code(), ErrorCode::InvalidInput);
}
