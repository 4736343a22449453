//! The one mapping from failures to PROTOCOL.md error codes, HTTP statuses and WebSocket `error` frames.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use schemas::{ErrorBody, ErrorCode, ErrorDetail, FrameId, ServerFrame};
use store::StoreError;

#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    /// For `rate_limited`: when a retry would be accepted.
    retry_after_ms: Option<u64>,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError { code, message: message.into(), retry_after_ms: None }
    }
    pub fn rate_limited(message: impl Into<String>, retry_after_ms: u64) -> ApiError {
        ApiError { code: ErrorCode::RateLimited, message: message.into(), retry_after_ms: Some(retry_after_ms) }
    }
    /// `unavailable` with a hint of when to retry (an additive field, as on `rate_limited`).
    pub fn unavailable(message: impl Into<String>, retry_after_ms: u64) -> ApiError {
        ApiError { code: ErrorCode::Unavailable, message: message.into(), retry_after_ms: Some(retry_after_ms) }
    }
    pub fn retry_after_ms(&self) -> Option<u64> {
        self.retry_after_ms
    }
    pub fn unauthorized(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorCode::Unauthorized, message)
    }
    pub fn forbidden(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorCode::Forbidden, message)
    }
    pub fn invalid(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorCode::Invalid, message)
    }
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorCode::NotFound, message)
    }
    pub fn too_large(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorCode::TooLarge, message)
    }

    pub fn to_frame(&self, id: Option<FrameId>) -> ServerFrame {
        ServerFrame::Error { id, code: self.code, message: self.message.clone(), retry_after_ms: self.retry_after_ms }
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> ApiError {
        match error {
            StoreError::NotFound(message) => ApiError::new(ErrorCode::NotFound, message),
            StoreError::Forbidden(message) => ApiError::new(ErrorCode::Forbidden, message),
            StoreError::Invalid(message) => ApiError::new(ErrorCode::Invalid, message),
            StoreError::Unavailable(message) => {
                tracing::warn!(%message, "storage unavailable");
                ApiError::new(ErrorCode::Unavailable, "storage is unavailable; retry shortly")
            }
            StoreError::Internal(message) => {
                tracing::error!(%message, "storage failure");
                ApiError::new(ErrorCode::Internal, "internal error")
            }
        }
    }
}

impl From<subjects::InvalidId> for ApiError {
    fn from(error: subjects::InvalidId) -> ApiError {
        ApiError::invalid(format!("invalid id: {error}"))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let retry_after_ms = self.retry_after_ms;
        let body = ErrorBody { error: ErrorDetail { code: self.code, message: self.message, retry_after_ms } };
        let mut response = (status, axum::Json(body)).into_response();
        if let Some(millis) = retry_after_ms {
            // HTTP's own header counts whole seconds; round up so a client that honours it is never early.
            response.headers_mut().insert(axum::http::header::RETRY_AFTER, millis.div_ceil(1000).max(1).into());
        }
        response
    }
}

/// Parses an id from client input, naming the field in the error.
pub fn parse_id(field: &str, value: &str) -> Result<subjects::Id, ApiError> {
    subjects::Id::parse(value).map_err(|error| ApiError::invalid(format!("{field}: {error}")))
}
