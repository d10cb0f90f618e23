//! API errors: every domain error code maps to a status here, and nowhere else.

use axum::Json;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use vigil_core::{Error, ErrorCode};

/// `{"error": "...", "code": "..."}` with a status. The V2 protocol only asks for
/// `error`; `code` is a stable, machine-readable extra.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Each problem, where there are several (bad records).
    pub details: Vec<vigil_core::features::RecordError>,
}

impl ApiError {
    pub fn bad_request(message: impl Into<String>) -> Self {
        Error::invalid_input(message).into()
    }

    /// A route that does not exist (the code is `not_found`, not a model error).
    pub fn no_route(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError { status, code: "no_route", message: message.into(), details: Vec::new() }
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        ApiError {
            status: http_status(e.code()),
            code: e.code().as_str(),
            message: e.message().to_owned(),
            details: e.details().to_vec(),
        }
    }
}

/// The HTTP status of a domain error code (gRPC answers are counted by it too).
pub fn http_status(code: ErrorCode) -> StatusCode {
    match code {
        ErrorCode::InvalidInput => StatusCode::BAD_REQUEST,
        ErrorCode::ModelNotFound => StatusCode::NOT_FOUND,
        ErrorCode::ModelNotReady => StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorCode::Overloaded => StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        ErrorCode::NotFound => StatusCode::NOT_FOUND,
        ErrorCode::Conflict => StatusCode::CONFLICT,
        ErrorCode::Storage => StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::Unauthenticated => StatusCode::UNAUTHORIZED,
        ErrorCode::Forbidden => StatusCode::FORBIDDEN,
        ErrorCode::RateLimited => StatusCode::TOO_MANY_REQUESTS,
        ErrorCode::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
        ErrorCode::InferenceFailed | ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// An error with a code, as an API error.
pub(crate) fn vigil_error(code: ErrorCode, message: impl Into<String>) -> ApiError {
    Error::new(code, message).into()
}

/// Longest error message sent back: messages quote parts of the request, and a
/// hostile request must not be able to make the error larger than itself.
const MAX_MESSAGE_BYTES: usize = 1024;

fn truncated(mut message: String) -> String {
    if message.len() > MAX_MESSAGE_BYTES {
        let mut end = MAX_MESSAGE_BYTES;
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        message.truncate(end);
        message.push('…');
    }
    message
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let message = truncated(self.message);
        if self.status.is_server_error() {
            tracing::warn!(status = %self.status, code = self.code, error = %message, "request failed");
        }
        let mut body = serde_json::json!({ "error": message, "code": self.code });
        if !self.details.is_empty() {
            // Bounded: the pipeline lists at most MAX_LISTED_ERRORS, each message short.
            body["details"] = serde_json::json!(self.details);
        }
        let body = Json(body);
        let reason = Refused(message.chars().take(AUDITED_REASON_CHARS).collect());
        let mut response = if self.code == ErrorCode::Overloaded.as_str() {
            // The queue drains in well under a second at any sane load.
            (self.status, [(header::RETRY_AFTER, "1")], body).into_response()
        } else {
            (self.status, body).into_response()
        };
        // For the audit log: why a control-plane call was refused.
        response.extensions_mut().insert(reason);
        response
    }
}

/// The message of an error answer, kept on the response for the guard's audit event.
#[derive(Debug, Clone)]
pub struct Refused(pub String);

/// How much of an error's message an audit event keeps.
const AUDITED_REASON_CHARS: usize = 300;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overload_asks_clients_to_retry() {
        let r = ApiError::from(Error::new(ErrorCode::Overloaded, "full")).into_response();
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(r.headers()[header::RETRY_AFTER], "1");
        let r = ApiError::from(Error::new(ErrorCode::DeadlineExceeded, "late")).into_response();
        assert_eq!(r.status(), StatusCode::GATEWAY_TIMEOUT);
    }

    #[test]
    fn long_messages_are_cut_on_a_character_boundary() {
        let m = truncated("é".repeat(2000));
        assert!(m.len() <= MAX_MESSAGE_BYTES + 3 && m.ends_with('…'));
    }
}
