//! Opens an object store from its location: `s3://bucket[/prefix]` and
//! `az://container[/prefix]` take their credentials and endpoint from the
//! usual variables (`AWS_*`, `AZURE_*`, e.g. `AWS_ENDPOINT_URL`,
//! `AZURE_STORAGE_ACCOUNT_NAME`); anything else is a local directory,
//! created if missing.

use object_store::ClientConfigKey;
use object_store::ObjectStore;
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};
use object_store::local::LocalFileSystem;
use object_store::path::Path as StorePath;
use std::sync::Arc;
use vigil_core::Error;

/// The store at `location` and the prefix its objects go under. `field`
/// names the setting in messages; `timeout` bounds one whole request.
pub(crate) fn open(location: &str, field: &str, timeout: &str) -> Result<(Arc<dyn ObjectStore>, StorePath), Error> {
    let bad = |e: object_store::Error| Error::invalid_input(format!("{field} {location}: {e}"));
    let (store, prefix): (Arc<dyn ObjectStore>, &str) = if let Some(rest) = location.strip_prefix("s3://") {
        let s3 = AmazonS3Builder::from_env()
            .with_url(location)
            .with_config(AmazonS3ConfigKey::Client(ClientConfigKey::Timeout), timeout)
            .build()
            .map_err(bad)?;
        (Arc::new(s3), rest.split_once('/').map_or("", |(_, p)| p))
    } else if let Some(rest) = location.strip_prefix("az://") {
        let az = MicrosoftAzureBuilder::from_env()
            .with_url(location)
            .with_config(AzureConfigKey::Client(ClientConfigKey::Timeout), timeout)
            .build()
            .map_err(bad)?;
        (Arc::new(az), rest.split_once('/').map_or("", |(_, p)| p))
    } else if location.contains("://") {
        return Err(Error::invalid_input(format!("{field}: {location} is not s3://…, az://… or a directory")));
    } else {
        std::fs::create_dir_all(location)
            .map_err(|e| Error::storage(format!("{field}: cannot create the directory {location}: {e}")))?;
        (Arc::new(LocalFileSystem::new_with_prefix(location).map_err(bad)?), "")
    };
    Ok((store, StorePath::from(prefix)))
}
