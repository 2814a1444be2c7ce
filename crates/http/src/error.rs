//! API errors in the Prometheus envelope, with Prometheus's status codes.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use sextant_promql::{Error as QueryError, ErrorKind};

/// Prometheus API error types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorType {
    BadData,
    Execution,
    Timeout,
    Canceled,
    Internal,
    NotFound,
    Unavailable,
}

impl ErrorType {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorType::BadData => "bad_data",
            ErrorType::Execution => "execution",
            ErrorType::Timeout => "timeout",
            ErrorType::Canceled => "canceled",
            ErrorType::Internal => "internal",
            ErrorType::NotFound => "not_found",
            ErrorType::Unavailable => "unavailable",
        }
    }

    pub fn status(self) -> StatusCode {
        match self {
            ErrorType::BadData => StatusCode::BAD_REQUEST,
            ErrorType::Execution => StatusCode::UNPROCESSABLE_ENTITY,
            ErrorType::Timeout | ErrorType::Canceled | ErrorType::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorType::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            ErrorType::NotFound => StatusCode::NOT_FOUND,
        }
    }
}

/// An error answered as `{"status":"error","errorType":..,"error":..}`.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub kind: ErrorType,
    pub msg: String,
}

impl ApiError {
    pub fn new(kind: ErrorType, msg: impl Into<String>) -> Self {
        ApiError { kind, msg: msg.into() }
    }
    pub fn bad_data(msg: impl Into<String>) -> Self {
        Self::new(ErrorType::BadData, msg)
    }
    pub fn internal(msg: impl Into<String>) -> Self {
        Self::new(ErrorType::Internal, msg)
    }
}

impl From<QueryError> for ApiError {
    fn from(e: QueryError) -> Self {
        let kind = match e.kind {
            ErrorKind::BadData => ErrorType::BadData,
            ErrorKind::Execution | ErrorKind::Limit => ErrorType::Execution,
            ErrorKind::Timeout => ErrorType::Timeout,
            ErrorKind::Canceled => ErrorType::Canceled,
            ErrorKind::Internal => ErrorType::Internal,
        };
        ApiError { kind, msg: e.msg }
    }
}

impl From<sextant_storage::Error> for ApiError {
    fn from(e: sextant_storage::Error) -> Self {
        let kind = match &e {
            sextant_storage::Error::Invalid(_) => ErrorType::BadData,
            sextant_storage::Error::TooManySamples { .. } => ErrorType::Execution,
            sextant_storage::Error::Poisoned(_) | sextant_storage::Error::Closed => ErrorType::Unavailable,
            _ => ErrorType::Internal,
        };
        ApiError {
            kind,
            msg: e.to_string(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({"status": "error", "errorType": self.kind.as_str(), "error": self.msg});
        (
            self.kind.status(),
            [("content-type", "application/json")],
            body.to_string(),
        )
            .into_response()
    }
}
