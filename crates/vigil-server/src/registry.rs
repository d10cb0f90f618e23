//! The registry's operations: registering versions, moving aliases, changing an
//! endpoint's traffic, rolling back, exporting and applying. Domain logic only:
//! the REST handlers in `api` decode, call these, and encode.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use vigil_core::names::{check_name, quoted};
use vigil_core::predictions::PredictionLogging;
use vigil_core::registry::{EndpointSpec, NewVersion, Revision, Route, Shadow, VersionRecord};
use vigil_core::security::{Role, Target};
use vigil_core::{Error, ErrorCode};
use vigil_runtime::model_config::ModelConfig;
use vigil_runtime::onnx;
use vigil_security::Principal;
use vigil_store::package::{self, PackageLimits};
use vigil_store::{ArtifactStore, MetadataStore};

pub struct Registry {
    pub store: Arc<dyn MetadataStore>,
    pub artifacts: ArtifactStore,
    /// Endpoint names served read-only from the model repository or the demo.
    pub reserved: BTreeSet<String>,
    pub package_limits: PackageLimits,
    /// What a model's graph may hold (checked again when it loads).
    pub graph_limits: onnx::GraphLimits,
    /// Registrations hold whole packages in memory: only a few at once.
    pub uploads: tokio::sync::Semaphore,
    /// Shared with request bodies: an unpacked model reserves its size here.
    pub budget: std::sync::Arc<vigil_core::budget::MemoryBudget>,
}

/// How many packages are unpacked and registered at once.
pub const CONCURRENT_UPLOADS: usize = 2;

/// A version by number or by alias (`3` or `"production"`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum VersionRef {
    Number(u64),
    Name(String),
}

/// A traffic policy as clients write it: versions by number or alias.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TrafficRequest {
    pub model: String,
    pub traffic: Vec<RouteRequest>,
    #[serde(default)]
    pub shadows: Vec<ShadowRequest>,
    /// Prediction logging; off when absent.
    #[serde(default)]
    pub logging: Option<PredictionLogging>,
    /// Why the change is made; kept with the revision.
    #[serde(default)]
    pub comment: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteRequest {
    pub version: VersionRef,
    pub weight: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ShadowRequest {
    pub version: VersionRef,
    pub percent: f64,
}

/// Everything needed to recreate an endpoint on another server that shares the
/// artifact store: its policy and, for each version, the artifact digest and
/// manifest (version numbers may differ there; content decides).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EndpointExport {
    pub endpoint: String,
    pub model: String,
    pub traffic: Vec<Route>,
    #[serde(default)]
    pub shadows: Vec<Shadow>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logging: Option<PredictionLogging>,
    pub versions: Vec<ExportedVersion>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExportedVersion {
    pub version: u64,
    pub digest: String,
    #[serde(default)]
    pub manifest: String,
}

/// Who registers what the model repository and the demo hold.
pub const IMPORTER: &str = "model-repository";

impl Registry {
    /// Registers the model in a package (tar or tar.gz of `model.onnx` and an
    /// optional `vigil.toml`). Returns the version and whether it is new.
    pub async fn push(&self, model: &str, archive: Bytes, by: &str) -> Result<(VersionRecord, bool), Error> {
        check_name("model", model)?;
        let _slot = self.uploads.acquire().await.map_err(|e| Error::new(ErrorCode::Internal, e.to_string()))?;
        let (limits, budget) = (self.package_limits, Arc::clone(&self.budget));
        let package = tokio::task::spawn_blocking(move || package::unpack_within(&archive, &limits, &budget))
            .await
            .map_err(|e| Error::new(ErrorCode::Internal, format!("unpacking: {e}")))??;
        // A profile in the package is checked before anything is stored.
        let profile = match &package.profile {
            Some(text) => {
                let p: vigil_monitor::drift::ReferenceProfile =
                    serde_json::from_str(text).map_err(|e| Error::invalid_input(format!("profile.json: {e}")))?;
                p.validate().map_err(|e| Error::invalid_input(format!("profile.json: {e}")))?;
                Some(serde_json::to_string(&p).map_err(|e| Error::new(ErrorCode::Internal, e.to_string()))?)
            }
            None => None,
        };
        let (record, created) = self.register(model, Bytes::from(package.model), package.manifest, by).await?;
        if let Some(profile) = profile {
            self.store.put_profile(&record.model, &record.version.to_string(), &profile, by).await?;
        }
        Ok((record, created))
    }

    /// Registers a version from an artifact already in the artifact store.
    pub async fn register_stored(
        &self,
        model: &str,
        digest: &str,
        manifest: String,
        by: &str,
    ) -> Result<(VersionRecord, bool), Error> {
        check_name("model", model)?;
        if !self.artifacts.contains(digest).await? {
            return Err(Error::not_found(format!(
                "artifact {digest} is not in the artifact store {}; push the model package instead",
                self.artifacts.location()
            )));
        }
        let bytes = self.artifacts.get(digest).await?;
        self.register(model, bytes, manifest, by).await
    }

    /// Checks what can be checked before anything is stored (the manifest
    /// parses, the model is ONNX with a signature that fits its overrides), then
    /// stores the artifact and the version.
    async fn register(
        &self,
        model: &str,
        bytes: Bytes,
        manifest: String,
        by: &str,
    ) -> Result<(VersionRecord, bool), Error> {
        let config = ModelConfig::parse_file(&manifest, "vigil.toml").map_err(Error::invalid_input)?;
        let (checked, limits) = (bytes.clone(), self.graph_limits);
        let signature = tokio::task::spawn_blocking(move || {
            onnx::check_graph(&checked, limits)?;
            onnx::read_signature(&checked)
        })
        .await
        .map_err(|e| Error::new(ErrorCode::Internal, format!("reading the model: {e}")))?
        .and_then(|s| config.apply_overrides(s))
        .map_err(|e| Error::invalid_input(format!("model.onnx: {e}")))?;
        let size_bytes = bytes.len() as u64;
        let digest = self.artifacts.put(bytes).await?;
        let new = NewVersion {
            model: model.to_owned(),
            digest,
            size_bytes,
            manifest,
            signature,
            labels: config.labels,
            metrics: config.metrics,
            lineage: config.lineage.to_lineage(),
            created_by: by.to_owned(),
        };
        self.store.register_version(new).await
    }

    /// Registers the read-only sources (the model repository, the demo) so that
    /// registry endpoints can use their versions too. Idempotent by content; a
    /// source that cannot be registered (unreadable, not ONNX, bad config) is
    /// skipped with a warning: its read-only endpoint reports why.
    pub async fn import(&self, sources: Vec<vigil_runtime::ModelSource>) {
        for source in sources {
            let artifact = source.artifact.clone();
            let bytes = match tokio::task::spawn_blocking(move || artifact.read()).await {
                Ok(Ok(b)) => b,
                Ok(Err(e)) => {
                    tracing::warn!(model = %source.model, version = %source.version, error = %e, "not imported");
                    continue;
                }
                Err(_) => continue,
            };
            match self.register(&source.model, bytes, source.manifest, IMPORTER).await {
                Ok((v, created)) => tracing::info!(
                    model = %source.model,
                    directory = %source.version,
                    version = v.version,
                    created,
                    "imported into the registry"
                ),
                Err(e) => tracing::warn!(model = %source.model, version = %source.version, error = %e, "not imported"),
            }
        }
    }

    /// A version number from a number or an alias.
    pub async fn resolve_version(&self, model: &str, version: &VersionRef) -> Result<u64, Error> {
        match version {
            VersionRef::Number(n) => Ok(*n),
            VersionRef::Name(name) => {
                if let Ok(n) = name.parse::<u64>() {
                    return Ok(n);
                }
                let aliases = self.store.list_aliases(model).await?;
                aliases.iter().find(|a| &a.alias == name).map(|a| a.version).ok_or_else(|| {
                    Error::not_found(format!("model {} has no version or alias {}", quoted(model), quoted(name)))
                })
            }
        }
    }

    pub async fn version(&self, model: &str, version: &str) -> Result<VersionRecord, Error> {
        let n = self.resolve_version(model, &VersionRef::Name(version.to_owned())).await?;
        self.store.get_version(model, n).await
    }

    fn check_writable(&self, endpoint: &str) -> Result<(), Error> {
        check_name("endpoint", endpoint)?;
        if self.reserved.contains(endpoint) {
            return Err(Error::conflict(format!(
                "endpoint {} is served from the model repository or the demo, which are read-only",
                quoted(endpoint)
            )));
        }
        Ok(())
    }

    /// Makes a traffic policy the endpoint's current revision (creating the
    /// endpoint). The caller's rights on the endpoint were checked by the
    /// guard; its rights on the model the policy points at are checked here.
    pub async fn set_traffic(
        &self,
        endpoint: &str,
        request: TrafficRequest,
        who: &Principal,
    ) -> Result<Revision, Error> {
        self.check_writable(endpoint)?;
        check_name("model", &request.model)?;
        self.may_use_model(who, endpoint, &request.model).await?;
        let by = who.id.as_str();
        let mut spec = EndpointSpec {
            model: request.model.clone(),
            traffic: Vec::new(),
            shadows: Vec::new(),
            logging: request.logging.clone(),
        };
        for r in &request.traffic {
            let version = self.resolve_version(&request.model, &r.version).await?;
            spec.traffic.push(Route { version, weight: r.weight });
        }
        for s in &request.shadows {
            let version = self.resolve_version(&request.model, &s.version).await?;
            spec.shadows.push(Shadow { version, percent: s.percent });
        }
        self.store.put_endpoint(endpoint, &spec, &request.comment, by, None).await
    }

    /// Restores an earlier revision's policy as a new revision: `to`, or by
    /// default the latest earlier revision whose policy differs from the current.
    pub async fn rollback(&self, endpoint: &str, to: Option<u64>, who: &Principal) -> Result<Revision, Error> {
        self.check_writable(endpoint)?;
        let revisions = self.store.revisions(endpoint).await?;
        let current = revisions.last().ok_or_else(|| Error::not_found(format!("no endpoint {}", quoted(endpoint))))?;
        let target = match to {
            Some(n) => revisions
                .iter()
                .find(|r| r.revision == n)
                .ok_or_else(|| Error::not_found(format!("endpoint {} has no revision {n}", quoted(endpoint))))?,
            None => revisions.iter().rev().find(|r| r.spec != current.spec).ok_or_else(|| {
                Error::conflict(format!("endpoint {} has no earlier revision to roll back to", quoted(endpoint)))
            })?,
        };
        if target.spec.model != current.spec.model {
            self.may_use_model(who, endpoint, &target.spec.model).await?;
        }
        let comment = format!("rollback to revision {}", target.revision);
        self.store.put_endpoint(endpoint, &target.spec, &comment, &who.id, Some(current.revision)).await
    }

    /// The endpoint's export: only for a caller that may read its model
    /// (the export holds the model's manifests).
    pub async fn export(&self, endpoint: &str, who: &Principal) -> Result<EndpointExport, Error> {
        let current = self.store.endpoint(endpoint).await?;
        if !who.allows(Role::Reader, Target::Model(&current.spec.model)) {
            return Err(Error::new(
                ErrorCode::Forbidden,
                format!(
                    "{} may not export endpoint {}: it serves model {}, which needs the Reader role on model:{}",
                    who.id,
                    quoted(endpoint),
                    quoted(&current.spec.model),
                    current.spec.model
                ),
            ));
        }
        let mut versions = Vec::new();
        for (&version, digest) in &current.digests {
            let record = self.store.get_version(&current.spec.model, version).await?;
            versions.push(ExportedVersion { version, digest: digest.clone(), manifest: record.manifest });
        }
        Ok(EndpointExport {
            endpoint: current.endpoint,
            model: current.spec.model,
            traffic: current.spec.traffic,
            shadows: current.spec.shadows,
            logging: current.spec.logging,
            versions,
        })
    }

    /// Makes this server's endpoint match an export: each version is found by
    /// content (digest and manifest) or registered from the shared artifact
    /// store, then the policy is set. Applying the same file again changes nothing.
    pub async fn apply(&self, doc: EndpointExport, who: &Principal) -> Result<Revision, Error> {
        self.check_writable(&doc.endpoint)?;
        check_name("model", &doc.model)?;
        self.may_use_model(who, &doc.endpoint, &doc.model).await?;
        let by = who.id.as_str();
        // Everything that can be checked is checked before anything is registered,
        // so that a refused file leaves nothing behind.
        let mut listed = BTreeSet::new();
        if let Some(twice) = doc.versions.iter().find(|v| !listed.insert(v.version)) {
            return Err(Error::invalid_input(format!("versions: version {} is listed twice", twice.version)));
        }
        let policy = EndpointSpec {
            model: doc.model.clone(),
            traffic: doc.traffic.clone(),
            shadows: doc.shadows.clone(),
            logging: doc.logging.clone(),
        };
        policy.validate()?;
        if let Some(missing) = policy.versions().into_iter().find(|v| !listed.contains(v)) {
            return Err(Error::invalid_input(format!(
                "traffic names version {missing}, which the file's versions do not list"
            )));
        }
        let existing = match self.store.list_versions(&doc.model).await {
            Ok(v) => v,
            Err(e) if e.code() == ErrorCode::NotFound => Vec::new(),
            Err(e) => return Err(e),
        };
        let find = |v: &ExportedVersion| existing.iter().find(|r| r.digest == v.digest && r.manifest == v.manifest);
        for v in doc.versions.iter().filter(|v| find(v).is_none()) {
            ModelConfig::parse_file(&v.manifest, &format!("version {}'s manifest", v.version))
                .map_err(Error::invalid_input)?;
            if !self.artifacts.contains(&v.digest).await? {
                return Err(Error::not_found(format!(
                    "versions: artifact {} (version {}) is not in the artifact store {}; push the model first",
                    v.digest,
                    v.version,
                    self.artifacts.location()
                )));
            }
        }
        let mut numbers = BTreeMap::new();
        for v in &doc.versions {
            let number = match find(v) {
                Some(r) => r.version,
                None => self.register_stored(&doc.model, &v.digest, v.manifest.clone(), by).await?.0.version,
            };
            numbers.insert(v.version, number);
        }
        let map = |version: u64| {
            numbers.get(&version).copied().ok_or_else(|| {
                Error::invalid_input(format!("traffic names version {version}, which the file's versions do not list"))
            })
        };
        let mut request = TrafficRequest {
            model: doc.model.clone(),
            traffic: Vec::new(),
            shadows: Vec::new(),
            logging: doc.logging.clone(),
            comment: "apply".into(),
        };
        for r in &doc.traffic {
            request.traffic.push(RouteRequest { version: VersionRef::Number(map(r.version)?), weight: r.weight });
        }
        for s in &doc.shadows {
            request.shadows.push(ShadowRequest { version: VersionRef::Number(map(s.version)?), percent: s.percent });
        }
        self.set_traffic(&doc.endpoint, request, who).await
    }
}

/// Pointing an endpoint at a model shows whoever may call the endpoint what the
/// model answers. Rights on the endpoint cover the model it already serves
/// (moving traffic between its versions); pointing it at another model needs
/// the Reader role on that model too, so that a grant scoped to `endpoint:a`
/// cannot borrow a model its holder may not see.
impl Registry {
    async fn may_use_model(&self, who: &Principal, endpoint: &str, model: &str) -> Result<(), Error> {
        if who.allows(Role::Reader, Target::Model(model)) {
            return Ok(());
        }
        let serves = match self.store.endpoint(endpoint).await {
            Ok(current) => current.spec.model == model,
            Err(e) if e.code() == ErrorCode::NotFound => false,
            Err(e) => return Err(e),
        };
        if serves {
            return Ok(());
        }
        Err(Error::new(
            ErrorCode::Forbidden,
            format!(
                "{} may not point endpoint {} at model {}: that needs the Reader role on model:{model}",
                who.id,
                quoted(endpoint),
                quoted(model)
            ),
        ))
    }
}
