//! The inference service: the one place requests are resolved, checked and run,
//! whichever protocol they came in on.

use crate::models::{ModelSet, ModelVersion, VersionState};
use std::sync::Arc;
use std::time::Instant;
use vigil_core::names::quoted;
use vigil_core::{Error, ErrorCode, Tensor};

pub struct InferenceOutcome {
    pub model: String,
    pub version: String,
    pub outputs: Vec<Tensor>,
}

#[derive(Clone)]
pub struct InferenceService {
    models: Arc<ModelSet>,
}

impl InferenceService {
    pub fn new(models: Arc<ModelSet>) -> Self {
        InferenceService { models }
    }

    pub fn models(&self) -> &ModelSet {
        &self.models
    }

    /// See [`ModelSet::ready`].
    pub fn ready(&self) -> bool {
        self.models.ready()
    }

    /// Runs `inputs` on a model version. `outputs` (if given) selects and orders
    /// the outputs returned. The request goes through the version's scheduler
    /// (bounded queue, worker threads, batching); a panic in a backend fails
    /// only its own request; past `deadline` it is not run.
    pub async fn infer(
        &self,
        model: &str,
        version: Option<&str>,
        inputs: Vec<Tensor>,
        outputs: Option<Vec<String>>,
        deadline: Option<Instant>,
    ) -> Result<InferenceOutcome, Error> {
        let v: Arc<ModelVersion> = self.models.resolve(model, version)?;
        let state = v.state();
        let (signature, loaded) = match &*state {
            VersionState::Ready { signature, scheduler, .. } => (signature, scheduler),
            VersionState::Loading => return Err(not_ready(&v, "is still loading")),
            VersionState::Failed { reason, .. } => return Err(not_ready(&v, &format!("failed to load: {reason}"))),
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
        let mut results = loaded.infer(inputs, deadline).await?.into_iter().map(Some).collect::<Vec<_>>();
        let outputs = selected
            .into_iter()
            .map(|i| results.get_mut(i).and_then(Option::take))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| Error::new(ErrorCode::Internal, "the backend returned fewer outputs than the signature"))?;
        Ok(InferenceOutcome { model: v.model.clone(), version: v.version.clone(), outputs })
    }
}

fn not_ready(v: &ModelVersion, what: &str) -> Error {
    Error::new(ErrorCode::ModelNotReady, format!("model '{}' version '{}' {what}", v.model, v.version))
}
