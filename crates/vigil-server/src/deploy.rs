//! Makes what this server serves match the registry. A sync reads every
//! endpoint's current revision, loads and warms the versions it needs that are
//! not loaded yet (fetched from the artifact store and verified), and only then
//! publishes a new snapshot, atomically: a new version takes traffic only once
//! it is warm, and a version no longer needed is dropped from the snapshot and
//! unloaded when its last request finishes. A revision whose versions fail to
//! load is not applied; the endpoint keeps serving its previous revision and
//! reports why.
//!
//! Syncs run after every change made through this server and whenever the
//! store's generation moves (a change made through another replica).

use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use vigil_core::Error;
use vigil_core::registry::Revision;
use vigil_runtime::model_config::ModelConfig;
use vigil_runtime::models::LoadSettings;
use vigil_runtime::repository::{Artifact, ModelSource};
use vigil_runtime::{Endpoint, InferenceService, ModelSet, ModelVersion, Routing, VersionState};
use vigil_store::{ArtifactStore, MetadataStore};

/// Where an endpoint's deployment stands on this server.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct DeployStatus {
    /// The revision serving here.
    pub serving_revision: Option<u64>,
    /// The registry's current revision.
    pub desired_revision: u64,
    /// Why the desired revision is not serving, or why some of its versions failed.
    pub error: Option<String>,
}

/// A loaded version is reused while its model, number and artifact stay the same.
type VersionKey = (String, u64, String);

pub struct Deployer {
    store: Arc<dyn MetadataStore>,
    artifacts: ArtifactStore,
    settings: LoadSettings,
    service: InferenceService,
    /// Endpoints from the model repository and the demo: always served, never synced.
    fixed: Vec<Arc<Endpoint>>,
    loaded: tokio::sync::Mutex<HashMap<VersionKey, Arc<ModelVersion>>>,
    status: Mutex<BTreeMap<String, DeployStatus>>,
    seen_generation: AtomicU64,
    synced_once: AtomicBool,
}

impl Deployer {
    pub fn new(
        store: Arc<dyn MetadataStore>,
        artifacts: ArtifactStore,
        settings: LoadSettings,
        service: InferenceService,
        fixed: Vec<Arc<Endpoint>>,
    ) -> Self {
        Deployer {
            store,
            artifacts,
            settings,
            service,
            fixed,
            loaded: tokio::sync::Mutex::new(HashMap::new()),
            status: Mutex::new(BTreeMap::new()),
            seen_generation: AtomicU64::new(u64::MAX),
            synced_once: AtomicBool::new(false),
        }
    }

    /// Whether the registry's endpoints have been loaded once (readiness waits for it).
    pub fn synced_once(&self) -> bool {
        self.synced_once.load(Ordering::Acquire)
    }

    pub fn status(&self, endpoint: &str) -> Option<DeployStatus> {
        self.status.lock().unwrap_or_else(|p| p.into_inner()).get(endpoint).cloned()
    }

    /// Brings this server in line with the registry (one sync at a time).
    pub async fn sync(&self) -> Result<(), Error> {
        let mut loaded = self.loaded.lock().await;
        let generation = self.store.generation().await?;
        let revisions = self.store.list_endpoints().await?;
        let live = self.service.models();
        let mut endpoints: Vec<Arc<Endpoint>> = self.fixed.clone();
        let mut keep: HashMap<VersionKey, Arc<ModelVersion>> = HashMap::new();
        let mut status = BTreeMap::new();
        for revision in revisions {
            let serving = live.endpoint(&revision.endpoint).filter(|e| e.revision.is_some());
            if let Some(e) = serving.filter(|e| e.revision == Some(revision.revision)) {
                remember(&mut keep, e);
                endpoints.push(Arc::clone(e));
                status.insert(revision.endpoint.clone(), self.status(&revision.endpoint).unwrap_or_default());
                continue;
            }
            let (endpoint, failure) = self.build(&revision, &loaded).await;
            let mut s = DeployStatus {
                serving_revision: Some(revision.revision),
                desired_revision: revision.revision,
                error: None,
            };
            match (failure, serving) {
                // Never replace what serves with what cannot.
                (Some(reason), Some(old)) => {
                    tracing::error!(endpoint = %revision.endpoint, revision = revision.revision, %reason, "revision not applied");
                    s.serving_revision = old.revision;
                    s.error = Some(format!("revision {} not applied: {reason}", revision.revision));
                    remember(&mut keep, old);
                    endpoints.push(Arc::clone(old));
                }
                (failure, _) => {
                    s.error = failure;
                    tracing::info!(endpoint = %revision.endpoint, revision = revision.revision, "revision serving");
                    remember(&mut keep, &endpoint);
                    endpoints.push(endpoint);
                }
            }
            status.insert(revision.endpoint.clone(), s);
        }
        self.service.publish(Arc::new(ModelSet::from_endpoints(endpoints)));
        // Versions no longer in the snapshot are dropped here; each unloads when
        // the last request that holds it finishes.
        *loaded = keep;
        *self.status.lock().unwrap_or_else(|p| p.into_inner()) = status;
        self.seen_generation.store(generation, Ordering::Release);
        self.synced_once.store(true, Ordering::Release);
        Ok(())
    }

    /// The endpoint for a revision, with every version loaded (reused when
    /// already loaded), and the first failure of a version that takes traffic.
    async fn build(
        &self,
        revision: &Revision,
        loaded: &HashMap<VersionKey, Arc<ModelVersion>>,
    ) -> (Arc<Endpoint>, Option<String>) {
        let model = &revision.spec.model;
        let mut versions = Vec::new();
        let mut failure = None;
        for version in revision.spec.versions() {
            let digest = revision.digests.get(&version).cloned().unwrap_or_default();
            let key = (model.clone(), version, digest.clone());
            let v = match loaded.get(&key) {
                Some(v) if v.state().is_ready() => Arc::clone(v),
                _ => self.load(model, version, &digest).await,
            };
            if let VersionState::Failed { reason, .. } = &*v.state() {
                let routed = revision.spec.traffic.iter().any(|r| r.version == version && r.weight > 0);
                if routed && failure.is_none() {
                    failure = Some(format!("version {version} of '{model}' failed to load: {reason}"));
                }
            }
            versions.push(v);
        }
        let endpoint = Endpoint::new(
            revision.endpoint.clone(),
            Some(revision.revision),
            versions,
            Routing::Policy(revision.spec.clone()),
        );
        (Arc::new(endpoint), failure)
    }

    /// Fetches, verifies, loads and warms one version.
    async fn load(&self, model: &str, version: u64, digest: &str) -> Arc<ModelVersion> {
        let number = version.to_string();
        let record = match self.store.get_version(model, version).await {
            Ok(r) => r,
            Err(e) => return ModelVersion::failed(model, &number, digest, e.to_string()),
        };
        let bytes = match self.artifacts.get(digest).await {
            Ok(b) => b,
            Err(e) => return ModelVersion::failed(model, &number, digest, e.to_string()),
        };
        let source = ModelSource {
            model: model.to_owned(),
            version: number,
            artifact: Artifact::Bytes(bytes),
            digest: Some(digest.to_owned()),
            config: ModelConfig::parse_file(&record.manifest, "vigil.toml"),
            manifest: record.manifest,
        };
        let v = ModelVersion::new(source);
        let (loading, settings) = (Arc::clone(&v), self.settings.clone());
        if let Err(e) = tokio::task::spawn_blocking(move || loading.load(&settings)).await {
            return ModelVersion::failed(model, &version.to_string(), digest, format!("loading panicked: {e}"));
        }
        v
    }

    /// Syncs whenever the store's generation moves, every `interval`, until `stop`.
    pub async fn watch(self: Arc<Self>, interval: Duration, mut stop: watch::Receiver<bool>) {
        loop {
            let generation = self.store.generation().await;
            match generation {
                Ok(g) if g == self.seen_generation.load(Ordering::Acquire) => {}
                Ok(_) => {
                    if let Err(e) = self.sync().await {
                        tracing::warn!(error = %e, "syncing with the registry failed; retrying");
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot read the registry's generation; retrying"),
            }
            tokio::select! {
                () = tokio::time::sleep(interval) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    }
}

fn remember(keep: &mut HashMap<VersionKey, Arc<ModelVersion>>, endpoint: &Endpoint) {
    for v in &endpoint.versions {
        if let (Ok(n), Some(digest)) = (v.version.parse::<u64>(), &v.digest) {
            keep.insert((v.model.clone(), n, digest.clone()), Arc::clone(v));
        }
    }
}
