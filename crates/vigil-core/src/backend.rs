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

    /// Runs the model `warmup + runs` times on `inputs` (in signature order)
    /// with the backend's own profiler on, and returns where the last `runs`
    /// spent their time, operator by operator.
    fn profile(
        &self,
        model: &[u8],
        signature: &Signature,
        options: &LoadOptions,
        inputs: &[Tensor],
        warmup: usize,
        runs: usize,
    ) -> Result<Profile, String>;
}

/// Where a model's time went over profiled runs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Profile {
    /// Runs measured (the warm-up is not counted).
    pub runs: usize,
    /// Their wall-clock time, summed.
    pub wall: std::time::Duration,
    /// One per node that ran, in no particular order.
    pub operators: Vec<OperatorTime>,
}

/// One node of the graph over the profiled runs.
#[derive(Debug, Clone, PartialEq)]
pub struct OperatorTime {
    /// The node's name in the graph the backend ran (after its optimisations).
    pub node: String,
    /// The operator, as the backend names it (`Gemm`, `Conv`, …).
    pub op: String,
    pub calls: usize,
    pub time: std::time::Duration,
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
