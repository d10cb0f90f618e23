//! The inference service: the one place requests are resolved, checked and run,
//! whichever protocol they came in on.

use crate::models::{ModelSet, ModelVersion, VersionState};
use crate::shadow::{ShadowRecorder, TraceIds};
use arc_swap::ArcSwap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use vigil_core::names::quoted;
use vigil_core::predictions::PredictionLogging;
use vigil_core::{Error, ErrorCode, Tensor};

pub struct InferenceOutcome {
    /// The endpoint that answered (the name the client called).
    pub model: String,
    pub version: String,
    pub outputs: Vec<Tensor>,
    pub timing: StageTimes,
    /// When the endpoint's prediction logging drew this request: its
    /// settings, and copies of the inputs and (all) outputs.
    pub logged: Option<Logged>,
}

/// A request drawn for the prediction log.
pub struct Logged {
    pub settings: Arc<PredictionLogging>,
    pub inputs: Vec<Tensor>,
    pub outputs: Vec<Tensor>,
}

/// Where a request's time went inside the service (the adapters add decoding
/// and encoding around it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StageTimes {
    /// Choosing the version and checking the inputs against its signature.
    pub prepare: Duration,
    /// Waiting in the model's queue (and for a batch to fill).
    pub queue: Duration,
    /// Running the model.
    pub inference: Duration,
    /// Rows of the model run, on one request per run (see `Timed::batch`).
    pub batch: Option<usize>,
}

#[derive(Clone)]
pub struct InferenceService {
    /// Replaced whole when deployments change; a request holds the snapshot it
    /// started with, so a version it uses is drained, never cut off.
    models: Arc<ArcSwap<ModelSet>>,
    shadows: Arc<ShadowRecorder>,
    /// Prediction logging for endpoints whose policy sets none (the demo, a
    /// model repository, and registry endpoints without `logging`).
    default_logging: Option<Arc<PredictionLogging>>,
}

impl InferenceService {
    pub fn new(models: Arc<ModelSet>) -> Self {
        InferenceService {
            models: Arc::new(ArcSwap::new(models)),
            shadows: Arc::new(ShadowRecorder::default()),
            default_logging: None,
        }
    }

    /// Sets the prediction logging of endpoints whose policy sets none.
    pub fn with_default_logging(mut self, logging: Option<PredictionLogging>) -> Self {
        self.default_logging = logging.filter(|l| l.sample_rate > 0.0).map(Arc::new);
        self
    }

    /// The current snapshot.
    pub fn models(&self) -> Arc<ModelSet> {
        self.models.load_full()
    }

    /// Makes `models` what new requests see, atomically.
    pub fn publish(&self, models: Arc<ModelSet>) {
        self.models.store(models);
    }

    pub fn shadows(&self) -> &ShadowRecorder {
        &self.shadows
    }

    /// See [`ModelSet::ready`].
    pub fn ready(&self) -> bool {
        self.models.load().ready()
    }

    /// Runs `inputs` on a model version: the one named, else one drawn by the
    /// endpoint's traffic policy. `outputs` (if given) selects and orders the
    /// outputs returned. The request goes through the version's scheduler
    /// (bounded queue, worker threads, batching); a panic in a backend fails
    /// only its own request; past `deadline` it is not run. Requests that are
    /// not pinned to a version are copied to the endpoint's shadows by their
    /// percentages, after the answer, off the caller's path; with `trace`,
    /// each copy's run is reported under the request's span.
    pub async fn infer(
        &self,
        model: &str,
        version: Option<&str>,
        inputs: Vec<Tensor>,
        outputs: Option<Vec<String>>,
        deadline: Option<Instant>,
        trace: Option<TraceIds>,
    ) -> Result<InferenceOutcome, Error> {
        let started = Instant::now();
        let (endpoint, v) = self.models.load().choose(model, version, Some(fastrand::u32(0..100)))?;
        let shadows = if version.is_none() { endpoint.draw_shadows() } else { Vec::new() };
        let state = v.state();
        let (signature, loaded) = match &*state {
            VersionState::Ready { signature, scheduler, .. } => (signature, scheduler),
            VersionState::Loading => return Err(not_ready(&endpoint.name, &v, "is still loading")),
            VersionState::Failed { reason, .. } => {
                return Err(not_ready(&endpoint.name, &v, &format!("failed to load: {reason}")));
            }
        };
        let inputs = signature.arrange_inputs(inputs)?;
        let selected: Vec<usize> = match &outputs {
            None => (0..signature.outputs.len()).collect(),
            Some(names) => names
                .iter()
                .enumerate()
                .map(|(i, name)| {
                    if names[..i].contains(name) {
                        return Err(Error::invalid_input(format!(
                            "output {} is requested more than once",
                            quoted(name)
                        )));
                    }
                    signature.outputs.iter().position(|o| &o.name == name).ok_or_else(|| {
                        let known: Vec<&str> = signature.outputs.iter().map(|o| o.name.as_str()).collect();
                        Error::invalid_input(format!("unknown output {} (the model returns {known:?})", quoted(name)))
                    })
                })
                .collect::<Result<_, _>>()?,
        };
        // Copies only when a shadow was drawn and has room; otherwise it is counted as dropped.
        let shadows = self.shadows.admit(&endpoint.name, shadows);
        let logging =
            endpoint.logging.as_ref().or(self.default_logging.as_ref()).filter(|l| l.samples(fastrand::f64()));
        let copy = (!shadows.is_empty() || logging.is_some()).then(|| inputs.clone());
        let prepare = started.elapsed();
        let timed = loaded.infer(inputs, deadline).await?;
        let timing = StageTimes { prepare, queue: timed.queued, inference: timed.ran, batch: timed.batch };
        let results = timed.outputs;
        let logged = match (logging, copy) {
            (Some(settings), Some(inputs)) => {
                if !shadows.is_empty() {
                    self.shadows.mirror(&endpoint.name, shadows, inputs.clone(), &results, trace);
                }
                Some(Logged { settings: Arc::clone(settings), inputs, outputs: results.clone() })
            }
            (None, Some(copy)) => {
                self.shadows.mirror(&endpoint.name, shadows, copy, &results, trace);
                None
            }
            _ => None,
        };
        let mut results = results.into_iter().map(Some).collect::<Vec<_>>();
        let outputs = selected
            .into_iter()
            .map(|i| results.get_mut(i).and_then(Option::take))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| Error::new(ErrorCode::Internal, "the backend returned fewer outputs than the signature"))?;
        Ok(InferenceOutcome { model: endpoint.name.clone(), version: v.version.clone(), outputs, timing, logged })
    }
}

fn not_ready(endpoint: &str, v: &ModelVersion, what: &str) -> Error {
    Error::new(ErrorCode::ModelNotReady, format!("model '{endpoint}' version '{}' {what}", v.version))
}
