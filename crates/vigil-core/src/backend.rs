//! The seam between Vigil and an inference engine.

use crate::error::Error;
use crate::signature::Signature;
use crate::tensor::Tensor;
use serde::Deserialize;

/// An inference engine that turns model bytes into a runnable model.
pub trait Backend: Send + Sync {
    /// Short name, e.g. `tract`.
    fn name(&self) -> &'static str;

    /// Prepares a model to run. `signature` is the one to serve (read from the
    /// model, with config overrides applied); the backend fixes its input facts from it.
    fn load(&self, model: &[u8], signature: &Signature, options: &LoadOptions) -> Result<Box<dyn LoadedModel>, String>;
}

/// A model ready to run. Implementations are shared between threads.
pub trait LoadedModel: Send + Sync {
    /// Runs the model on inputs given in signature order (already validated) and
    /// returns every output, named, in signature order. Input the backend cannot
    /// take is `ErrorCode::InvalidInput`; a failure while running is `InferenceFailed`.
    fn infer(&self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, Error>;
}

/// How a backend prepares a model; each backend uses what applies to it
/// (tract: none of it yet).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LoadOptions {
    /// Threads used inside one operator; 0 lets the backend choose (ONNX Runtime: one per core).
    pub intra_op_threads: usize,
    /// Threads running independent operators in parallel; 0 lets the backend choose.
    pub inter_op_threads: usize,
    /// Graph optimisation before the first run.
    pub optimization_level: OptimizationLevel,
    /// Execution providers in order of preference; the CPU is always the fallback.
    pub execution_providers: Vec<ExecutionProvider>,
    /// Copies of the model that run requests at the same time (ONNX Runtime
    /// sessions); set from the model's `[scheduling] instances`, not read here.
    #[serde(skip)]
    pub instances: usize,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            intra_op_threads: 0,
            inter_op_threads: 0,
            optimization_level: OptimizationLevel::All,
            execution_providers: Vec::new(),
            instances: 1,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OptimizationLevel {
    Disable,
    Basic,
    Extended,
    All,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExecutionProvider {
    Cpu,
    Cuda,
}
