//! Errors with stable codes. Adapters map codes to protocol statuses in one place.

use std::fmt;

/// Stable, documented error codes: clients may match on them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// The request is malformed or does not fit the model's signature.
    InvalidInput,
    /// No model (or no version of it) by that name.
    ModelNotFound,
    /// The model exists but is loading or failed to load.
    ModelNotReady,
    /// The backend failed while running a valid request.
    InferenceFailed,
    /// The request body is larger than the configured limit.
    PayloadTooLarge,
    /// The model's queue is full: retry later.
    Overloaded,
    /// The request's deadline passed before the model could run it.
    DeadlineExceeded,
    /// No registry object (version, alias, endpoint, revision) by that name.
    NotFound,
    /// The change conflicts with the current state (e.g. deleting a version that takes traffic).
    Conflict,
    /// The metadata or artifact store failed or holds something it should not (a corrupted artifact).
    Storage,
    /// No credentials, or credentials that do not prove who the caller is.
    Unauthenticated,
    /// The caller is known but its roles do not allow this.
    Forbidden,
    /// The caller sent too many requests: retry after the time the answer gives.
    RateLimited,
    /// The client did not send its whole request body in time.
    RequestTimeout,
    /// A bug or an unexpected condition in Vigil.
    Internal,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidInput => "invalid_input",
            ErrorCode::ModelNotFound => "model_not_found",
            ErrorCode::ModelNotReady => "model_not_ready",
            ErrorCode::InferenceFailed => "inference_failed",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::Overloaded => "overloaded",
            ErrorCode::DeadlineExceeded => "deadline_exceeded",
            ErrorCode::NotFound => "not_found",
            ErrorCode::Conflict => "conflict",
            ErrorCode::Storage => "storage",
            ErrorCode::Unauthenticated => "unauthenticated",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::RequestTimeout => "request_timeout",
            ErrorCode::Internal => "internal",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A domain error: a stable code and a message for people.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Error {
    code: ErrorCode,
    message: String,
    /// Every problem found, where there are several (bad records): the
    /// message sums them up, these say where each one is.
    details: Box<[crate::features::RecordError]>,
}

impl Error {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Error { code, message: message.into(), details: Box::default() }
    }

    /// An invalid-input error listing each problem.
    pub fn with_details(message: impl Into<String>, details: Vec<crate::features::RecordError>) -> Self {
        Error { code: ErrorCode::InvalidInput, message: message.into(), details: details.into_boxed_slice() }
    }

    pub fn details(&self) -> &[crate::features::RecordError] {
        &self.details
    }

    pub fn invalid_input(message: impl Into<String>) -> Self {
        Error::new(ErrorCode::InvalidInput, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Error::new(ErrorCode::NotFound, message)
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        Error::new(ErrorCode::Conflict, message)
    }

    pub fn storage(message: impl Into<String>) -> Self {
        Error::new(ErrorCode::Storage, message)
    }

    pub fn code(&self) -> ErrorCode {
        self.code
    }

    pub fn message(&self) -> &str {
        &self.message
    }
}
