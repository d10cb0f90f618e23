//! The inference service: the one place requests are resolved, checked and run,
//! whichever protocol they came in on.

use crate::models::{Endpoint, ModelSet, ModelVersion, VersionState};
use crate::scheduler::Inline;
use crate::shadow::{ShadowInput, ShadowRecorder, TraceIds};
use arc_swap::ArcSwap;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use vigil_core::features::{FeaturePipeline, RecordError, Records};
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
    /// settings, a copy of the inputs and, when the request asked for a
    /// subset, a copy of all outputs. Otherwise its outputs are these very
    /// `outputs`: take them back with [`InferenceOutcome::log_outputs`] once
    /// they are answered, which spares copying them for every logged request.
    pub logged: Option<Logged>,
}

impl InferenceOutcome {
    /// The prediction log's record of this request, with its outputs: moved
    /// from `outputs` (consumed here) unless the log already holds a copy.
    pub fn log_outputs(logged: Option<Logged>, outputs: Vec<Tensor>) -> Option<Logged> {
        logged.map(|mut l| {
            if l.outputs.is_empty() {
                l.outputs = outputs;
            }
            l
        })
    }
}

/// What [`InferenceService::predict`] answered.
pub struct PredictOutcome {
    pub model: String,
    pub version: String,
    /// One per record, in request order: its prediction, or (with
    /// `invalid_records = "report"`) its problems.
    pub predictions: Vec<Result<serde_json::Value, Vec<RecordError>>>,
    pub timing: StageTimes,
    pub logged: Option<Logged>,
}

/// A request drawn for the prediction log.
pub struct Logged {
    pub settings: Arc<PredictionLogging>,
    /// The model's inputs, in signature order.
    pub inputs: Vec<Tensor>,
    pub outputs: Vec<Tensor>,
    /// The version's feature pipeline, if it has one: the log records
    /// features and predictions by name with it, off the request path.
    pub features: Option<Arc<FeaturePipeline>>,
    /// For records with some set aside as invalid: the request index of each
    /// row of the tensors (none when row `i` is record `i`).
    pub rows: Option<Vec<usize>>,
}

/// Where a request's time went inside the service (the adapters add decoding
/// and encoding around it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StageTimes {
    /// Choosing the version and checking the inputs against its signature
    /// (and for records, checking and transforming them into tensors).
    pub prepare: Duration,
    /// Waiting in the model's queue (and for a batch to fill).
    pub queue: Duration,
    /// Running the model.
    pub inference: Duration,
    /// Making predictions of the outputs (records only).
    pub postprocess: Duration,
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
    /// Sees every request's inputs and outputs (monitoring).
    observer: Arc<OnceLock<Arc<dyn RequestObserver>>>,
    /// When this caller's requests may run on its own thread (a protocol's
    /// view of the service sets it; see [`Inline`]).
    inline: Inline,
}

/// Told about every request's checked inputs before the model runs, and its
/// outputs after, on the request path: it must be quick and must not block
/// (counting into a window, say). Tensors are in signature order; `features`
/// is the version's pipeline, if any.
pub trait RequestObserver: Send + Sync {
    fn inputs(&self, endpoint: &str, version: &ModelVersion, inputs: &[Tensor], features: Option<&FeaturePipeline>);
    fn outputs(&self, endpoint: &str, version: &ModelVersion, outputs: &[Tensor], features: Option<&FeaturePipeline>);
    /// Records the version's feature spec refused, with every problem listed.
    fn rejected(&self, endpoint: &str, version: &ModelVersion, problems: &[RecordError]);
}

impl InferenceService {
    pub fn new(models: Arc<ModelSet>) -> Self {
        InferenceService {
            models: Arc::new(ArcSwap::new(models)),
            shadows: Arc::new(ShadowRecorder::default()),
            default_logging: None,
            observer: Arc::new(OnceLock::new()),
            inline: Inline::default(),
        }
    }

    /// The same service (models, shadows, logging, observer) for a caller
    /// whose quick requests run on its own thread as `inline` says.
    pub fn with_inline(&self, inline: Inline) -> Self {
        InferenceService { inline, ..self.clone() }
    }

    /// Sets the prediction logging of endpoints whose policy sets none.
    pub fn with_default_logging(mut self, logging: Option<PredictionLogging>) -> Self {
        self.default_logging = logging.filter(|l| l.sample_rate > 0.0).map(Arc::new);
        self
    }

    /// Shows every request's inputs and outputs to `observer` (once; later calls are ignored).
    pub fn set_observer(&self, observer: Arc<dyn RequestObserver>) {
        let _ = self.observer.set(observer);
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
        let chosen = self.choose(model, version)?;
        let signature = chosen.signature()?;
        let inputs = signature.arrange_inputs(inputs)?;
        let selected = select_outputs(signature, outputs.as_deref())?;
        let copy = |inputs: &Vec<Tensor>| ShadowInput::Tensors(inputs.clone());
        let mut ran = self.run(&chosen, inputs, copy, started, deadline, trace).await?;
        let everything = selected.iter().copied().eq(0..ran.outputs.len());
        if let Some(logged) = ran.logged.as_mut().filter(|_| !everything) {
            // The answer is a subset: the log keeps every output.
            logged.outputs = ran.outputs.clone();
        }
        let mut results = ran.outputs.into_iter().map(Some).collect::<Vec<_>>();
        let outputs = selected
            .into_iter()
            .map(|i| results.get_mut(i).and_then(Option::take))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| Error::new(ErrorCode::Internal, "the backend returned fewer outputs than the signature"))?;
        Ok(InferenceOutcome {
            model: chosen.endpoint.name.clone(),
            version: chosen.version.version.clone(),
            outputs,
            timing: ran.timing,
            logged: ran.logged,
        })
    }

    /// Predicts named records with the chosen version's feature pipeline:
    /// every record is checked and transformed (the preprocessing stage), the
    /// valid ones run as one request exactly as [`InferenceService::infer`]
    /// runs tensors (traffic policy, queue, batching, shadows, prediction
    /// log), and the outputs become one prediction per record (the
    /// postprocessing stage). `max_elements` bounds each input tensor.
    pub async fn predict(
        &self,
        model: &str,
        version: Option<&str>,
        records: Records,
        max_elements: usize,
        deadline: Option<Instant>,
        trace: Option<TraceIds>,
    ) -> Result<PredictOutcome, Error> {
        let started = Instant::now();
        let chosen = self.choose(model, version)?;
        chosen.signature()?;
        let pipeline = chosen.state.features().cloned().ok_or_else(|| {
            Error::invalid_input(format!(
                "model '{}' version '{}' declares no features, so it takes tensors only (/v2/models/{}/infer); \
                 a [[features]] section in its vigil.toml enables records",
                chosen.endpoint.name, chosen.version.version, chosen.endpoint.name
            ))
        })?;
        let encoded = pipeline.encode(&records, max_elements).inspect_err(|e| {
            if let Some(observer) = self.observer.get().filter(|_| !e.details().is_empty()) {
                observer.rejected(&chosen.endpoint.name, &chosen.version, e.details());
            }
        })?;
        if let Some(observer) = self.observer.get().filter(|_| !encoded.rejected.is_empty()) {
            let problems: Vec<RecordError> = encoded.rejected.iter().flat_map(|(_, p)| p.iter().cloned()).collect();
            observer.rejected(&chosen.endpoint.name, &chosen.version, &problems);
        }
        let count = records.len();
        let mut outcome = PredictOutcome {
            model: chosen.endpoint.name.clone(),
            version: chosen.version.version.clone(),
            predictions: Vec::with_capacity(count),
            timing: StageTimes { prepare: started.elapsed(), ..StageTimes::default() },
            logged: None,
        };
        // The request index of each row, for the log, when some records were set aside.
        let rows = (!encoded.rejected.is_empty()).then(|| encoded.rows.clone());
        let mut rejected = encoded.rejected.into_iter().peekable();
        let mut predictions = Vec::new().into_iter();
        if !encoded.rows.is_empty() {
            let records = Arc::new(records);
            let copy = move |_: &Vec<Tensor>| ShadowInput::Records(records, max_elements);
            let ran = self.run(&chosen, encoded.tensors, copy, started, deadline, trace).await?;
            let post = Instant::now();
            predictions = pipeline.predictions(&ran.outputs, encoded.rows.len())?.into_iter();
            outcome.timing = StageTimes { postprocess: post.elapsed(), ..ran.timing };
            outcome.logged = ran.logged.map(|l| Logged { rows, outputs: ran.outputs, ..l });
        }
        for r in 0..count {
            let answer = match rejected.next_if(|(i, _)| *i == r) {
                Some((_, problems)) => Err(problems),
                None => Ok(predictions
                    .next()
                    .ok_or_else(|| Error::new(ErrorCode::Internal, "fewer predictions than valid records"))?),
            };
            outcome.predictions.push(answer);
        }
        Ok(outcome)
    }

    fn choose(&self, model: &str, version: Option<&str>) -> Result<Chosen, Error> {
        let (endpoint, version_chosen) = self.models.load().choose(model, version, Some(fastrand::u32(0..100)))?;
        let shadows = if version.is_none() { endpoint.draw_shadows() } else { Vec::new() };
        let state = version_chosen.state();
        Ok(Chosen { endpoint, version: version_chosen, state, shadows })
    }

    /// Runs checked `inputs` on the chosen version: the shared path of every
    /// request once its inputs are tensors. `copy` makes what shadows and the
    /// prediction log get, only when one of them wants it.
    async fn run(
        &self,
        chosen: &Chosen,
        inputs: Vec<Tensor>,
        copy: impl FnOnce(&Vec<Tensor>) -> ShadowInput,
        started: Instant,
        deadline: Option<Instant>,
        trace: Option<TraceIds>,
    ) -> Result<Ran, Error> {
        let VersionState::Ready { scheduler, features, .. } = &*chosen.state else {
            return Err(Error::new(ErrorCode::Internal, "the version is no longer ready"));
        };
        // Copies only when a shadow was drawn and has room; otherwise it is counted as dropped.
        let shadows = self.shadows.admit(&chosen.endpoint.name, chosen.shadows.clone());
        let logging =
            chosen.endpoint.logging.as_ref().or(self.default_logging.as_ref()).filter(|l| l.samples(fastrand::f64()));
        let logged_inputs = logging.is_some().then(|| inputs.clone());
        let shadow_input = (!shadows.is_empty()).then(|| copy(&inputs));
        let observer = self.observer.get();
        if let Some(observer) = observer {
            observer.inputs(&chosen.endpoint.name, &chosen.version, &inputs, features.as_deref());
        }
        let prepare = started.elapsed();
        let timed = scheduler.infer(inputs, deadline, self.inline).await?;
        if let Some(observer) = observer {
            observer.outputs(&chosen.endpoint.name, &chosen.version, &timed.outputs, features.as_deref());
        }
        let timing = StageTimes {
            prepare,
            queue: timed.queued,
            inference: timed.ran,
            postprocess: Duration::ZERO,
            batch: timed.batch,
        };
        if let Some(input) = shadow_input {
            self.shadows.mirror(&chosen.endpoint.name, shadows, input, &timed.outputs, trace);
        }
        // Outputs are added by the caller once answered (they are not copied).
        let logged = logging.zip(logged_inputs).map(|(settings, inputs)| Logged {
            settings: Arc::clone(settings),
            inputs,
            outputs: Vec::new(),
            features: features.clone(),
            rows: None,
        });
        Ok(Ran { outputs: timed.outputs, timing, logged })
    }
}

/// The endpoint, version and shadows a request was given.
struct Chosen {
    endpoint: Arc<Endpoint>,
    version: Arc<ModelVersion>,
    state: Arc<VersionState>,
    shadows: Vec<Arc<ModelVersion>>,
}

impl Chosen {
    /// The version's signature, if it is ready to run.
    fn signature(&self) -> Result<&vigil_core::Signature, Error> {
        match &*self.state {
            VersionState::Ready { signature, .. } => Ok(signature),
            VersionState::Loading => Err(not_ready(&self.endpoint.name, &self.version, "is still loading")),
            VersionState::Failed { reason, .. } => {
                Err(not_ready(&self.endpoint.name, &self.version, &format!("failed to load: {reason}")))
            }
        }
    }
}

/// A run's outputs (all of them, in signature order), timing and log copy.
struct Ran {
    outputs: Vec<Tensor>,
    timing: StageTimes,
    logged: Option<Logged>,
}

/// The indices of the outputs asked for, in the order asked (all when none are named).
fn select_outputs(signature: &vigil_core::Signature, names: Option<&[String]>) -> Result<Vec<usize>, Error> {
    let Some(names) = names else { return Ok((0..signature.outputs.len()).collect()) };
    names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            if names[..i].contains(name) {
                return Err(Error::invalid_input(format!("output {} is requested more than once", quoted(name))));
            }
            signature.outputs.iter().position(|o| &o.name == name).ok_or_else(|| {
                let known: Vec<&str> = signature.outputs.iter().map(|o| o.name.as_str()).collect();
                Error::invalid_input(format!("unknown output {} (the model returns {known:?})", quoted(name)))
            })
        })
        .collect()
}

fn not_ready(endpoint: &str, v: &ModelVersion, what: &str) -> Error {
    Error::new(ErrorCode::ModelNotReady, format!("model '{endpoint}' version '{}' {what}", v.version))
}
