//! Vigil's inference runtime: backends, model sources (a model repository on disk
//! or the embedded demo), loading with warm-up, and the inference service that the
//! protocol adapters call.
#![forbid(unsafe_code)]

pub mod demo;
pub mod model_config;
pub mod models;
pub mod onnx;
pub mod ort_backend;
pub mod profile;
pub mod repository;
pub mod scheduler;
pub mod service;
pub mod shadow;
pub mod tract_backend;

pub use models::{Endpoint, ModelSet, ModelVersion, Routing, VersionState};
pub use repository::ModelSource;
pub use service::{InferenceOutcome, InferenceService, Logged, PredictOutcome, RequestObserver, StageTimes};
pub use shadow::{ShadowObserver, ShadowRun, TraceIds};
