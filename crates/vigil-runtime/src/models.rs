//! What this server serves: endpoints, each with its model versions (and their
//! load state) and how a request picks one; and the loading itself (read, check
//! the signature, prepare, warm up).

use crate::model_config::{BackendChoice, ModelConfig};
use crate::onnx;
use crate::ort_backend::OrtBackend;
use crate::repository::ModelSource;
use crate::scheduler::{Batching, Scheduler, SchedulerConfig};
use crate::tract_backend::TractBackend;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use vigil_core::elements::ElementsSeed;
use vigil_core::features::FeaturePipeline;
use vigil_core::names::{is_valid_name, quoted};
use vigil_core::predictions::PredictionLogging;
use vigil_core::registry::EndpointSpec;
use vigil_core::tensor::element_count;
use vigil_core::{Backend, Error, ErrorCode, LoadOptions, LoadedModel, Signature, Tensor, TensorData};

/// Where a version is in its life.
#[derive(Clone)]
pub enum VersionState {
    Loading,
    Ready {
        signature: Signature,
        backend: &'static str,
        scheduler: Arc<Scheduler>,
        /// Reading, loading and warming the version.
        load_time: Duration,
        /// The feature pipeline, when the version's config declares features.
        features: Option<Arc<FeaturePipeline>>,
    },
    /// Failed to load; `signature` is what could be read from the model, if anything.
    Failed {
        reason: String,
        signature: Option<Signature>,
    },
}

impl VersionState {
    /// The protocol's state names (Triton's repository index uses these).
    pub fn name(&self) -> &'static str {
        match self {
            VersionState::Loading => "LOADING",
            VersionState::Ready { .. } => "READY",
            VersionState::Failed { .. } => "UNAVAILABLE",
        }
    }

    pub fn is_ready(&self) -> bool {
        matches!(self, VersionState::Ready { .. })
    }

    pub fn signature(&self) -> Option<&Signature> {
        match self {
            VersionState::Loading => None,
            VersionState::Ready { signature, .. } => Some(signature),
            VersionState::Failed { signature, .. } => signature.as_ref(),
        }
    }

    /// The feature pipeline of a ready version that declares features.
    pub fn features(&self) -> Option<&Arc<FeaturePipeline>> {
        match self {
            VersionState::Ready { features, .. } => features.as_ref(),
            _ => None,
        }
    }

    pub fn reason(&self) -> Option<&str> {
        match self {
            VersionState::Failed { reason, .. } => Some(reason),
            _ => None,
        }
    }
}

pub struct ModelVersion {
    pub model: String,
    pub version: String,
    /// The artifact's digest when it comes from the registry.
    pub digest: Option<String>,
    /// Taken when the version loads, so that its bytes are not kept twice.
    source: Mutex<Option<ModelSource>>,
    /// Behind an `Arc` so that every request reads it without copying the signature.
    state: RwLock<Arc<VersionState>>,
}

impl ModelVersion {
    /// A version waiting to be loaded with [`ModelVersion::load`].
    pub fn new(source: ModelSource) -> Arc<Self> {
        Arc::new(ModelVersion {
            model: source.model.clone(),
            version: source.version.clone(),
            digest: source.digest.clone(),
            source: Mutex::new(Some(source)),
            state: RwLock::new(Arc::new(VersionState::Loading)),
        })
    }

    /// Loads and warms the version (CPU work: call it off the async runtime).
    /// A failure, even a backend panic, is recorded on the version and logged.
    pub fn load(&self, settings: &LoadSettings) {
        let Some(source) = self.source.lock().unwrap_or_else(|p| p.into_inner()).take() else {
            return;
        };
        let started = Instant::now();
        let mut state =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| load(&source, settings))).unwrap_or_else(|_| {
                VersionState::Failed { reason: "the backend panicked while loading".into(), signature: None }
            });
        if let VersionState::Ready { load_time, .. } = &mut state {
            *load_time = started.elapsed();
        }
        match &state {
            VersionState::Failed { reason, .. } => {
                tracing::error!(model = %self.model, version = %self.version, %reason, "model failed to load")
            }
            VersionState::Ready { backend, .. } => tracing::info!(
                model = %self.model,
                version = %self.version,
                backend,
                seconds = started.elapsed().as_secs_f64(),
                "model ready"
            ),
            VersionState::Loading => {}
        }
        self.set_state(state);
    }

    /// A version that could not even be read (its artifact is missing or corrupted).
    pub fn failed(model: &str, version: &str, digest: &str, reason: String) -> Arc<Self> {
        Arc::new(ModelVersion {
            model: model.to_owned(),
            version: version.to_owned(),
            digest: Some(digest.to_owned()),
            source: Mutex::new(None),
            state: RwLock::new(Arc::new(VersionState::Failed { reason, signature: None })),
        })
    }

    pub fn state(&self) -> Arc<VersionState> {
        Arc::clone(&self.state.read().unwrap_or_else(|p| p.into_inner()))
    }

    fn set_state(&self, s: VersionState) {
        *self.state.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(s);
    }
}

/// Versions ordered numerically where they are numbers (`2` < `10`), then by name.
fn version_key(v: &str) -> (u8, u64, &str) {
    match v.parse::<u64>() {
        Ok(n) => (0, n, v),
        Err(_) => (1, 0, v),
    }
}

/// How models are loaded: which backends, and the limits a model must fit.
/// ONNX Runtime is loaded the first time a model needs it, so a server that
/// only runs tract never looks for it.
#[derive(Debug, Clone)]
pub struct LoadSettings {
    /// What `backend = "auto"` in a model's config means.
    pub default_backend: BackendChoice,
    /// ONNX Runtime's library, if configured (else `ORT_DYLIB_PATH`, else pip's).
    pub onnxruntime_library: Option<PathBuf>,
    /// Most elements in one warm-up tensor: a model declaring a huge fixed input
    /// fails to load instead of exhausting memory; also the bound on tensors
    /// that constant-shaped operators would make while the model is prepared.
    pub max_tensor_elements: usize,
    /// Most nodes in a model's graph (subgraphs included).
    pub max_graph_nodes: usize,
    /// How long one version may take to load and warm up before it is failed.
    pub load_timeout: Duration,
}

impl Default for LoadSettings {
    fn default() -> Self {
        let graph = onnx::GraphLimits::default();
        LoadSettings {
            default_backend: BackendChoice::Auto,
            onnxruntime_library: None,
            max_tensor_elements: graph.max_elements,
            max_graph_nodes: graph.max_nodes,
            load_timeout: Duration::from_secs(120),
        }
    }
}

impl LoadSettings {
    /// The backend for a model's choice. `auto` takes ONNX Runtime when it loads
    /// and falls back to tract; an explicit `onnxruntime` fails if it cannot load.
    pub fn pick(&self, choice: BackendChoice) -> Result<&'static dyn Backend, String> {
        let choice = if choice == BackendChoice::Auto { self.default_backend } else { choice };
        let ort = || OrtBackend::get(self.onnxruntime_library.as_deref());
        match choice {
            BackendChoice::Tract => Ok(&TractBackend),
            BackendChoice::Onnxruntime => ort().map(|b| b as &dyn Backend),
            BackendChoice::Auto => Ok(ort().map(|b| b as &dyn Backend).unwrap_or(&TractBackend)),
        }
    }
}

/// How an endpoint picks the version for a request that names none.
#[derive(Debug, Clone)]
pub enum Routing {
    /// The highest version that is ready: a model repository or the demo.
    HighestReady,
    /// A registry traffic policy: weighted routes and shadows.
    Policy(EndpointSpec),
}

/// The name clients call, its versions and how requests are spread over them.
pub struct Endpoint {
    pub name: String,
    /// The registry revision it serves; `None` for the model repository and the demo.
    pub revision: Option<u64>,
    /// Every version it can answer with (pinned or routed), ordered by version.
    pub versions: Vec<Arc<ModelVersion>>,
    pub routing: Routing,
    /// For a policy, worked out once so that a request only indexes: the version
    /// (index into `versions`) for each draw in `0..100`, the heaviest route,
    /// and the shadows with their percentages.
    slots: Vec<usize>,
    heaviest: Option<usize>,
    shadows: Vec<(usize, f64)>,
    /// The policy's prediction logging.
    pub logging: Option<Arc<PredictionLogging>>,
}

impl Endpoint {
    pub fn new(name: String, revision: Option<u64>, mut versions: Vec<Arc<ModelVersion>>, routing: Routing) -> Self {
        versions.sort_by(|a, b| version_key(&a.version).cmp(&version_key(&b.version)));
        let index = |number: u64| versions.iter().position(|v| v.version == number.to_string());
        let (mut slots, mut heaviest, mut shadows, mut logging) = (Vec::new(), None, Vec::new(), None);
        if let Routing::Policy(spec) = &routing {
            slots = (0..vigil_core::registry::TOTAL_WEIGHT).filter_map(|draw| index(spec.pick(draw))).collect();
            heaviest = spec.traffic.iter().max_by_key(|r| r.weight).and_then(|r| index(r.version));
            shadows = spec.shadows.iter().filter_map(|s| Some((index(s.version)?, s.percent))).collect();
            logging = spec.logging.clone().map(Arc::new);
        }
        Endpoint { name, revision, versions, routing, slots, heaviest, shadows, logging }
    }

    fn find(&self, version: &str) -> Option<&Arc<ModelVersion>> {
        self.versions.iter().find(|v| v.version == version)
    }

    /// The version for a request that names none. `draw` (uniform in `0..100`)
    /// spreads traffic by weight; without one, the heaviest route answers, which
    /// is what metadata describes.
    fn default_version(&self, draw: Option<u32>) -> Option<&Arc<ModelVersion>> {
        match &self.routing {
            // The highest overall when none is ready, so that its state can be reported.
            Routing::HighestReady => self.versions.iter().rev().find(|v| v.state().is_ready()).or(self.versions.last()),
            Routing::Policy(_) => {
                let slot = match draw {
                    Some(d) => self.slots.get(d as usize).copied(),
                    None => self.heaviest,
                };
                slot.and_then(|i| self.versions.get(i))
            }
        }
    }

    /// The shadow versions a request is copied to, drawn by their percentages.
    pub fn draw_shadows(&self) -> Vec<Arc<ModelVersion>> {
        self.shadows
            .iter()
            .filter(|(_, percent)| fastrand::f64() * 100.0 < *percent)
            .filter_map(|&(i, _)| self.versions.get(i).cloned())
            .collect()
    }
}

/// Every endpoint this server serves: an immutable snapshot, replaced whole
/// when the registry changes, so that a request sees one consistent state.
#[derive(Default)]
pub struct ModelSet {
    endpoints: BTreeMap<String, Arc<Endpoint>>,
}

impl ModelSet {
    /// Endpoints for model sources (a repository, the demo): one per model,
    /// routing to its highest ready version, every version in the `Loading`
    /// state; call [`ModelSet::load_all`].
    pub fn new(sources: Vec<ModelSource>) -> Self {
        let mut models: BTreeMap<String, Vec<Arc<ModelVersion>>> = BTreeMap::new();
        for source in sources {
            models.entry(source.model.clone()).or_default().push(ModelVersion::new(source));
        }
        let endpoints = models
            .into_iter()
            .map(|(name, versions)| Arc::new(Endpoint::new(name, None, versions, Routing::HighestReady)));
        ModelSet::from_endpoints(endpoints)
    }

    pub fn from_endpoints(endpoints: impl IntoIterator<Item = Arc<Endpoint>>) -> Self {
        ModelSet { endpoints: endpoints.into_iter().map(|e| (e.name.clone(), e)).collect() }
    }

    /// Loads and warms every version, one after the other (this is CPU work; call
    /// it off the async runtime). A failure is recorded on its version and logged.
    pub fn load_all(&self, settings: &LoadSettings) {
        for v in self.endpoints.values().flat_map(|e| &e.versions) {
            v.load(settings);
        }
    }

    pub fn endpoints(&self) -> impl Iterator<Item = &Arc<Endpoint>> {
        self.endpoints.values()
    }

    pub fn endpoint(&self, name: &str) -> Option<&Arc<Endpoint>> {
        self.endpoints.get(name)
    }

    /// Ready to take traffic: nothing is still loading, and at least one version
    /// is ready unless there is nothing to serve at all (an empty registry is a
    /// healthy server waiting for its first deployment). One broken model does
    /// not hold the others back, but a server on which every model failed must
    /// not receive traffic.
    pub fn ready(&self) -> bool {
        let states: Vec<Arc<VersionState>> =
            self.endpoints.values().flat_map(|e| &e.versions).map(|v| v.state()).collect();
        !states.iter().any(|s| matches!(**s, VersionState::Loading))
            && (states.is_empty() || states.iter().any(|s| s.is_ready()))
    }

    /// The endpoint and the version that answers a request: the one asked for,
    /// else one drawn by the traffic policy with `draw` (uniform in `0..100`).
    /// Every protocol resolves names here, so this is where outside names are
    /// checked: anything that is not a plain name is refused before any lookup.
    pub fn choose(
        &self,
        model: &str,
        version: Option<&str>,
        draw: Option<u32>,
    ) -> Result<(Arc<Endpoint>, Arc<ModelVersion>), Error> {
        for (what, name) in [("model", Some(model)), ("version", version)] {
            if let Some(name) = name.filter(|n| !is_valid_name(n)) {
                return Err(Error::new(
                    ErrorCode::ModelNotFound,
                    format!("no {what} {} (names are letters, digits, '_', '-', '.')", quoted(name)),
                ));
            }
        }
        let endpoint = self
            .endpoints
            .get(model)
            .ok_or_else(|| Error::new(ErrorCode::ModelNotFound, format!("unknown model {}", quoted(model))))?;
        let found = match version {
            Some(wanted) => endpoint.find(wanted),
            None => endpoint.default_version(draw),
        };
        let found = found.cloned().ok_or_else(|| {
            let known: Vec<&str> = endpoint.versions.iter().map(|v| v.version.as_str()).collect();
            Error::new(
                ErrorCode::ModelNotFound,
                format!("model {} has no version {} (it has {known:?})", quoted(model), quoted(version.unwrap_or(""))),
            )
        })?;
        Ok((Arc::clone(endpoint), found))
    }
}

/// What a model version is, for the metadata routes of every protocol.
pub struct ModelDescription {
    pub name: String,
    pub version: String,
    /// The version asked for, or every version of the model when none was.
    pub versions: Vec<String>,
    pub state: Arc<VersionState>,
}

impl ModelDescription {
    /// The platform name V2 clients see.
    pub const PLATFORM: &'static str = "onnx";

    pub fn is_ready(&self) -> bool {
        self.state.is_ready()
    }

    /// The backend serving the version, once it is ready.
    pub fn backend(&self) -> Option<&'static str> {
        match *self.state {
            VersionState::Ready { backend, .. } => Some(backend),
            _ => None,
        }
    }
}

impl ModelSet {
    pub fn describe(&self, model: &str, version: Option<&str>) -> Result<ModelDescription, Error> {
        let (endpoint, v) = self.choose(model, version, None)?;
        let versions = match version {
            Some(version) => vec![version.to_owned()],
            None => endpoint.versions.iter().map(|v| v.version.clone()).collect(),
        };
        Ok(ModelDescription { name: endpoint.name.clone(), version: v.version.clone(), versions, state: v.state() })
    }
}

/// The runs of a model at once that `[scheduling] instances` asks for: 0
/// means one per core on tract (single-threaded runs) and one on ONNX
/// Runtime (which already uses every core inside one run).
pub fn instances(configured: usize, backend: &dyn Backend) -> usize {
    match configured {
        0 if backend.name() == "tract" => std::thread::available_parallelism().map_or(1, |n| n.get()),
        0 => 1,
        n => n,
    }
}

fn load(source: &ModelSource, settings: &LoadSettings) -> VersionState {
    let failed = |reason: String, signature: Option<Signature>| VersionState::Failed { reason, signature };
    let config = match &source.config {
        Ok(c) => c,
        Err(e) => return failed(e.clone(), None),
    };
    let backend = match settings.pick(config.backend) {
        Ok(b) => b,
        Err(e) => return failed(e, None),
    };
    let bytes = match source.artifact.read() {
        Ok(b) => b,
        Err(e) => return failed(e, None),
    };
    let graph = onnx::GraphLimits { max_nodes: settings.max_graph_nodes, max_elements: settings.max_tensor_elements };
    if let Err(e) = onnx::check_graph(&bytes, graph) {
        return failed(e, None);
    }
    let signature = match onnx::read_signature(&bytes).and_then(|s| config.apply_overrides(s)) {
        Ok(s) => s,
        Err(e) => return failed(e, None),
    };
    // A spec that does not fit the model fails the version, as a bad signature does.
    let features = match config.feature_spec().map(|spec| FeaturePipeline::compile(spec, &signature)).transpose() {
        Ok(f) => f.map(Arc::new),
        Err(e) => return failed(format!("feature spec: {e}"), Some(signature)),
    };
    let instances = instances(config.scheduling.instances, backend);
    let options = LoadOptions { instances, ..config.onnxruntime.clone() };
    let model: Arc<dyn LoadedModel> = match backend.load(&bytes, &signature, &options) {
        Ok(m) => Arc::from(m),
        Err(e) => return failed(e, Some(signature)),
    };
    if let Err(e) = warm_up(model.as_ref(), &signature, config, settings.max_tensor_elements) {
        return failed(format!("warm-up failed: {e}"), Some(signature));
    }
    let scheduling = SchedulerConfig {
        instances,
        max_queue_size: config.scheduling.max_queue_size.max(1),
        batching: config.batching.as_ref().map(|b| Batching {
            max_batch_size: b.max_batch_size.max(1),
            max_queue_delay: Duration::from_micros(b.max_queue_delay_us),
            preferred_batch_sizes: b.preferred_batch_sizes.clone(),
        }),
    };
    match Scheduler::start(model, &signature, &scheduling, &source.model) {
        Ok(scheduler) => VersionState::Ready {
            signature,
            backend: backend.name(),
            scheduler: Arc::new(scheduler),
            load_time: Duration::ZERO,
            features,
        },
        Err(e) => failed(e, Some(signature)),
    }
}

/// One inference on the configured sample or on zeros, so that the first real
/// request does not pay for lazy initialisation, and a model that cannot run is
/// caught before it reports ready.
fn warm_up(
    model: &dyn LoadedModel,
    signature: &Signature,
    config: &ModelConfig,
    max_elements: usize,
) -> Result<(), String> {
    let inputs = sample_inputs(signature, config, max_elements, None)?;
    let outputs = model.infer(inputs).map_err(|e| e.to_string())?;
    for (out, spec) in outputs.iter().zip(&signature.outputs) {
        if out.datatype() != spec.datatype {
            return Err(format!(
                "output '{}' is {} but the signature says {}",
                spec.name,
                out.datatype(),
                spec.datatype
            ));
        }
    }
    Ok(())
}

/// Inputs to run the model on without a request, in signature order: the
/// config's warm-up sample where it gives one, else zeros, with dynamic axes
/// of size 1 (the first one `batch`, when given).
pub fn sample_inputs(
    signature: &Signature,
    config: &ModelConfig,
    max_elements: usize,
    batch: Option<usize>,
) -> Result<Vec<Tensor>, String> {
    let samples = config.warmup.as_ref().map(|w| &w.inputs);
    if let Some(unknown) = samples.into_iter().flatten().map(|(k, _)| k).find(|k| signature.input(k).is_none()) {
        return Err(format!("config.toml has a warm-up sample for unknown input '{unknown}'"));
    }
    let mut inputs = Vec::with_capacity(signature.inputs.len());
    for spec in &signature.inputs {
        let tensor = match samples.and_then(|s| s.get(&spec.name)) {
            Some(sample) => {
                let len = element_count(&sample.shape).filter(|&n| n <= max_elements).ok_or_else(|| {
                    format!("the warm-up sample for '{}' is over limits.max_tensor_elements", spec.name)
                })?;
                let data = serde::de::DeserializeSeed::deserialize(
                    ElementsSeed { datatype: spec.datatype, max_len: len },
                    &sample.data,
                )
                .map_err(|e| format!("warm-up sample for '{}': {e}", spec.name))?;
                Tensor::new(&spec.name, sample.shape.clone(), data)?
            }
            None => {
                let mut shape = spec.example_shape();
                if let (Some(batch), Some(first)) = (batch, spec.shape.first())
                    && *first < 0
                {
                    shape[0] = batch;
                }
                let len = element_count(&shape).filter(|&n| n <= max_elements).ok_or_else(|| {
                    format!("input '{}' has shape {:?}, over limits.max_tensor_elements", spec.name, spec.shape)
                })?;
                Tensor::new(&spec.name, shape, TensorData::zeros(spec.datatype, len))?
            }
        };
        inputs.push(tensor);
    }
    signature.arrange_inputs(inputs).map_err(|e| e.to_string())
}
