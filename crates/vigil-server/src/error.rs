//! API errors: every domain error code maps to a status here, and nowhere else.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use vigil_core::{Error, ErrorCode};

/// `{"error": "...", "code": "..."}` with a status. The V2 protocol only asks for
/// `error`; `code` is a stable, machine-readable extra.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn bad_request(message: impl Into<String>) -> Self {
        Error::invalid_input(message).into()
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        ApiError { status: StatusCode::NOT_FOUND, code: "not_found", message: message.into() }
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        let status = match e.code() {
            ErrorCode::InvalidInput => StatusCode::BAD_REQUEST,
            ErrorCode::ModelNotFound => StatusCode::NOT_FOUND,
            ErrorCode::ModelNotReady => StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::InferenceFailed | ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError { status, code: e.code().as_str(), message: e.message().to_owned() }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::warn!(status = %self.status, code = self.code, error = %self.message, "request failed");
        }
        (self.status, Json(serde_json::json!({ "error": self.message, "code": self.code }))).into_response()
    }
}
