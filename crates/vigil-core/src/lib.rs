//! Vigil's domain types: tensors, model signatures, the backend traits and the
//! stable error codes. No I/O, no HTTP, no SQL: every other crate builds on this.
#![forbid(unsafe_code)]

pub mod backend;
pub mod budget;
pub mod datatype;
pub mod error;
pub mod signature;
pub mod tensor;

pub use backend::{Backend, LoadOptions, LoadedModel, OperatorTime, Profile};
pub use datatype::DataType;
pub use error::{Error, ErrorCode};
pub use signature::{Signature, TensorSpec};
pub use tensor::{Tensor, TensorData};
pub mod elements;
pub mod features;
pub mod names;
pub mod predictions;
pub mod registry;
pub mod security;
