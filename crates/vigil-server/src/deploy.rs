//! Makes what this server serves match the registry. A sync reads every
//! endpoint's current revision, loads and warms the versions it needs that are
//! not loaded yet (fetched from the artifact store and verified), and only then
//! publishes a new snapshot, atomically: a new version takes traffic only once
//! it is warm, and a version no longer needed is dropped from the snapshot and
//! unloaded when its last request finishes. A revision whose versions fail to
//! load is not applied; the endpoint keeps serving its previous revision and
//! reports why.
//!
//! A revision whose load killed the process at an earlier start is skipped
//! (see [`crate::load_journal`]), and one version's load is abandoned after
//! `limits.load_timeout_ms`.
//!
//! Syncs run after every change made through this server and whenever the
//! store's generation moves (a change made through another replica).

use crate::load_journal::LoadJournal;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use vigil_core::Error;
use vigil_core::registry::Revision;
use vigil_runtime::model_config::ModelConfig;
use vigil_runtime::models::LoadSettings;
use vigil_runtime::repository::{Artifact, ModelSource};
use vigil_runtime::{Endpoint, InferenceService, ModelSet, ModelVersion, Routing, VersionState};
use vigil_store::{ArtifactStore, MetadataStore};

/// Where an endpoint's deployment stands on this server.
#[derive(Debug, Clone, Default, PartialEq, Serialize, utoipa::ToSchema)]
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
    /// When each revision that failed to load was last tried: retried after [`RETRY_AFTER`].
    failed: Mutex<HashMap<(String, u64), Instant>>,
    seen_generation: AtomicU64,
    synced_once: AtomicBool,
    journal: LoadJournal,
}

/// How long a revision that failed to load waits before it is tried again (a
/// transient store error should not need a new revision to recover).
pub const RETRY_AFTER: Duration = Duration::from_secs(30);

/// How many earlier revisions a server with nothing serving tries when the
/// current one fails to load (after a restart, say).
const FALLBACK_DEPTH: usize = 5;

impl Deployer {
    pub fn new(
        store: Arc<dyn MetadataStore>,
        artifacts: ArtifactStore,
        settings: LoadSettings,
        service: InferenceService,
        fixed: Vec<Arc<Endpoint>>,
        journal: LoadJournal,
    ) -> Self {
        Deployer {
            store,
            artifacts,
            settings,
            service,
            fixed,
            loaded: tokio::sync::Mutex::new(HashMap::new()),
            status: Mutex::new(BTreeMap::new()),
            failed: Mutex::new(HashMap::new()),
            seen_generation: AtomicU64::new(u64::MAX),
            synced_once: AtomicBool::new(false),
            journal,
        }
    }

    /// Whether the registry's endpoints have been loaded once (readiness waits for it).
    pub fn synced_once(&self) -> bool {
        self.synced_once.load(Ordering::Acquire)
    }

    pub fn status(&self, endpoint: &str) -> Option<DeployStatus> {
        self.status.lock().unwrap_or_else(|p| p.into_inner()).get(endpoint).cloned()
    }

    fn retry_due(&self, endpoint: &str, revision: u64) -> bool {
        let failed = self.failed.lock().unwrap_or_else(|p| p.into_inner());
        failed.get(&(endpoint.to_owned(), revision)).is_none_or(|at| at.elapsed() >= RETRY_AFTER)
    }

    fn note_failure(&self, endpoint: &str, revision: u64) {
        self.failed.lock().unwrap_or_else(|p| p.into_inner()).insert((endpoint.to_owned(), revision), Instant::now());
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
            let name = revision.endpoint.clone();
            let mut s = DeployStatus { serving_revision: None, desired_revision: revision.revision, error: None };
            if self.fixed.iter().any(|f| f.name == name) {
                // Another replica may have made it; here the repository or demo owns the name.
                s.error = Some(
                    "the model repository or the demo serves this name here; the registry's endpoint is not served"
                        .into(),
                );
                status.insert(name, s);
                continue;
            }
            let serving = live.endpoint(&name).filter(|e| e.revision.is_some());
            // What serves stays when it is this revision and healthy, or when this
            // revision failed recently (it is retried after a while, not at every sync).
            let stays = serving.filter(|e| {
                (is_revision(e, &revision) && !routed_failure(e, &revision))
                    || !self.retry_due(&name, revision.revision)
            });
            if let Some(e) = stays {
                remember(&mut keep, e);
                endpoints.push(Arc::clone(e));
                let kept = self.status(&name).unwrap_or(DeployStatus { serving_revision: e.revision, ..s });
                status.insert(name, kept);
                continue;
            }
            let (endpoint, failure) = if self.journal.crashed(&name, revision.revision) {
                let reason = "the server died while loading it at an earlier start, so it is skipped here; \
                              set the endpoint's traffic again (or roll back) to try again"
                    .to_owned();
                (
                    Arc::new(Endpoint::new(name.clone(), Some(revision.revision), Vec::new(), Routing::HighestReady)),
                    Some(reason),
                )
            } else {
                self.build_journaled(&revision, &loaded, &mut keep).await
            };
            let chosen = match (failure, serving) {
                (None, _) => {
                    tracing::info!(endpoint = %name, revision = revision.revision, "revision serving");
                    endpoint
                }
                (Some(reason), serving) => {
                    tracing::error!(endpoint = %name, revision = revision.revision, %reason, "revision not applied");
                    self.note_failure(&name, revision.revision);
                    s.error = Some(format!("revision {} not applied: {reason}", revision.revision));
                    // Never replace what serves with what cannot; with nothing
                    // serving (a restart), fall back to the newest earlier revision that loads.
                    match serving {
                        Some(old) => Arc::clone(old),
                        None => match self.fallback(&revision, &loaded, &mut keep).await {
                            Some(earlier) => earlier,
                            None => endpoint,
                        },
                    }
                }
            };
            // An endpoint whose routed versions did not load serves nothing.
            s.serving_revision = chosen.revision.filter(|_| serves(&chosen));
            remember(&mut keep, &chosen);
            endpoints.push(chosen);
            status.insert(name, s);
        }
        self.service.shadows().retain(|e| status.contains_key(e));
        self.journal.retain_current(&|e| status.get(e).map(|s: &DeployStatus| s.desired_revision));
        // Only current revisions that still fail are retried.
        self.failed.lock().unwrap_or_else(|p| p.into_inner()).retain(|(e, r), _| {
            status.get(e).is_some_and(|s: &DeployStatus| s.desired_revision == *r && s.error.is_some())
        });
        self.service.publish(Arc::new(ModelSet::from_endpoints(endpoints)));
        // Versions no longer in the snapshot are dropped here; each unloads when
        // the last request that holds it finishes.
        *loaded = keep;
        *self.status.lock().unwrap_or_else(|p| p.into_inner()) = status;
        self.seen_generation.store(generation, Ordering::Release);
        self.synced_once.store(true, Ordering::Release);
        Ok(())
    }

    /// The newest of the few revisions before `current` whose routed versions all load.
    async fn fallback(
        &self,
        current: &Revision,
        loaded: &HashMap<VersionKey, Arc<ModelVersion>>,
        keep: &mut HashMap<VersionKey, Arc<ModelVersion>>,
    ) -> Option<Arc<Endpoint>> {
        let history = self.store.revisions(&current.endpoint).await.ok()?;
        for earlier in history.iter().rev().filter(|r| r.revision < current.revision).take(FALLBACK_DEPTH) {
            if self.journal.crashed(&current.endpoint, earlier.revision) {
                continue;
            }
            let (endpoint, failure) = self.build_journaled(earlier, loaded, keep).await;
            if failure.is_none() {
                tracing::warn!(endpoint = %current.endpoint, revision = earlier.revision, "serving an earlier revision");
                return Some(endpoint);
            }
        }
        None
    }

    /// [`Deployer::build`], noted in the load journal while it runs.
    async fn build_journaled(
        &self,
        revision: &Revision,
        loaded: &HashMap<VersionKey, Arc<ModelVersion>>,
        keep: &mut HashMap<VersionKey, Arc<ModelVersion>>,
    ) -> (Arc<Endpoint>, Option<String>) {
        self.journal.begin(&revision.endpoint, revision.revision);
        let built = self.build(revision, loaded, keep).await;
        self.journal.end();
        built
    }

    /// A clean shutdown: nothing that was loading killed the process.
    pub fn stopped(&self) {
        self.journal.end();
    }

    /// The endpoint for a revision, with every version loaded (reused when
    /// already loaded, here or earlier in this sync), and the first failure of
    /// a version that takes traffic.
    async fn build(
        &self,
        revision: &Revision,
        loaded: &HashMap<VersionKey, Arc<ModelVersion>>,
        keep: &mut HashMap<VersionKey, Arc<ModelVersion>>,
    ) -> (Arc<Endpoint>, Option<String>) {
        let model = &revision.spec.model;
        let mut versions = Vec::new();
        let mut failure = None;
        for version in revision.spec.versions() {
            let digest = revision.digests.get(&version).cloned().unwrap_or_default();
            let key = (model.clone(), version, digest.clone());
            let reuse = keep.get(&key).or_else(|| loaded.get(&key)).filter(|v| v.state().is_ready());
            let v = match reuse {
                Some(v) => Arc::clone(v),
                None => self.load(model, version, &digest).await,
            };
            if let VersionState::Failed { reason, .. } = &*v.state() {
                let routed = revision.spec.traffic.iter().any(|r| r.version == version && r.weight > 0);
                if routed && failure.is_none() {
                    failure = Some(format!("version {version} of '{model}' failed to load: {reason}"));
                }
            } else {
                keep.insert(key, Arc::clone(&v));
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
        // A load cannot be cancelled; past the timeout it is abandoned (its
        // thread finishes on its own and what it made is dropped).
        let limit = self.settings.load_timeout;
        match tokio::time::timeout(limit, tokio::task::spawn_blocking(move || loading.load(&settings))).await {
            Ok(Ok(())) => v,
            Ok(Err(e)) => ModelVersion::failed(model, &version.to_string(), digest, format!("loading panicked: {e}")),
            Err(_) => {
                let reason = format!(
                    "loading took longer than limits.load_timeout_ms ({} ms) and was abandoned",
                    limit.as_millis()
                );
                tracing::error!(model, version, %reason, "model failed to load");
                ModelVersion::failed(model, &version.to_string(), digest, reason)
            }
        }
    }

    /// Syncs whenever the store's generation moves, every `interval`, until `stop`.
    pub async fn watch(self: Arc<Self>, interval: Duration, mut stop: watch::Receiver<bool>) {
        loop {
            let generation = self.store.generation().await;
            let retry = {
                let failed = self.failed.lock().unwrap_or_else(|p| p.into_inner());
                failed.values().any(|at| at.elapsed() >= RETRY_AFTER)
            };
            match generation {
                Ok(g) if g == self.seen_generation.load(Ordering::Acquire) && !retry => {}
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

/// Whether a serving endpoint is exactly this revision: the number, the
/// policy and every digest (numbers alone can repeat after a delete).
fn is_revision(e: &Endpoint, revision: &Revision) -> bool {
    e.revision == Some(revision.revision)
        && matches!(&e.routing, Routing::Policy(spec) if *spec == revision.spec)
        && e.versions
            .iter()
            .all(|v| v.version.parse::<u64>().ok().and_then(|n| revision.digests.get(&n)) == v.digest.as_ref())
}

/// Whether a version that takes traffic failed to load.
fn routed_failure(e: &Endpoint, revision: &Revision) -> bool {
    e.versions.iter().any(|v| {
        matches!(&*v.state(), VersionState::Failed { .. })
            && revision.spec.traffic.iter().any(|r| r.weight > 0 && r.version.to_string() == v.version)
    })
}

/// Whether every version that takes traffic is ready (and there is one).
fn serves(e: &Endpoint) -> bool {
    let Routing::Policy(spec) = &e.routing else { return false };
    let routed: Vec<String> = spec.traffic.iter().filter(|r| r.weight > 0).map(|r| r.version.to_string()).collect();
    !routed.is_empty() && routed.iter().all(|n| e.versions.iter().any(|v| &v.version == n && v.state().is_ready()))
}

fn remember(keep: &mut HashMap<VersionKey, Arc<ModelVersion>>, endpoint: &Endpoint) {
    for v in &endpoint.versions {
        if let (Ok(n), Some(digest)) = (v.version.parse::<u64>(), &v.digest) {
            keep.insert((v.model.clone(), n, digest.clone()), Arc::clone(v));
        }
    }
}
