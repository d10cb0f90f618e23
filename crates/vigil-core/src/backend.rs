//! The seam between Vigil and an inference engine.

use crate::error::Error;
use crate::signature::Signature;
use crate::tensor::Tensor;

/// An inference engine that turns model bytes into a runnable model.
pub trait Backend: Send + Sync {
    /// Short name, e.g. `tract`.
    fn name(&self) -> &'static str;

    /// Reads the model's signature from its bytes without preparing it to run, so
    /// that a model that fails to load can still show what it takes.
    fn read_signature(&self, model: &[u8]) -> Result<Signature, String>;

    /// Prepares a model to run. `signature` is the one to serve (read from the
    /// model, with config overrides applied); the backend fixes its input facts from it.
    fn load(&self, model: &[u8], signature: &Signature) -> Result<Box<dyn LoadedModel>, String>;
}

/// A model ready to run. Implementations are shared between threads.
pub trait LoadedModel: Send + Sync {
    /// Runs the model on inputs given in signature order (already validated) and
    /// returns every output, named, in signature order. Input the backend cannot
    /// take is `ErrorCode::InvalidInput`; a failure while running is `InferenceFailed`.
    fn infer(&self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, Error>;
}
