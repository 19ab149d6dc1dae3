//! The one place errors become HTTP responses: `application/problem+json` (RFC 9457) with a
//! machine-readable `code` (docs/DESIGN.md §9.2; codes and statuses §8.1). Expected failures (a bad credential) and unexpected ones
//! (storage down) map to different statuses: an outage is a 503 `unavailable`, never a 401.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use sessiond::error::ErrorCode;
use sessiond::SessionError;

/// The body of every error response.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct Problem {
    /// A URI naming the problem type: `urn:sessiond:problem:<code>`.
    #[serde(rename = "type")]
    pub kind: String,
    /// A short human-readable summary.
    pub title: String,
    /// The HTTP status.
    pub status: u16,
    /// The machine-readable code (`invalid_credential`, `session_revoked`, ...).
    pub code: String,
}

/// An error a handler returns.
#[derive(Debug)]
pub(crate) enum ApiError {
    /// A library outcome with its wire code.
    Session(SessionError),
    /// 400 `invalid_request` with a reason (no input echoed).
    BadRequest(&'static str),
    /// 401 `unauthorized`: missing or wrong API key, or any browser-route failure.
    Unauthorized,
    /// 404: `not_found` (no such route) or `session_not_found` (an id names no session).
    NotFound(ErrorCode),
    /// 405 `method_not_allowed`.
    MethodNotAllowed,
    /// 408 `request_timeout`: the body did not arrive within `server.body_read_timeout`
    /// (docs/DESIGN.md §9.8); sent with `Connection: close`.
    RequestTimeout,
    /// 413 `payload_too_large`.
    PayloadTooLarge,
    /// 415 `unsupported_media_type`.
    UnsupportedMediaType,
    /// 429 `too_many_streams`: the API key has its most event streams open.
    TooManyStreams,
}

impl From<SessionError> for ApiError {
    fn from(e: SessionError) -> Self {
        ApiError::Session(e)
    }
}

/// Builds a problem response: status and title come with the code (`sessiond::ErrorCode`).
pub(crate) fn problem(code: ErrorCode) -> Response {
    let body = Problem {
        kind: format!("urn:sessiond:problem:{code}"),
        title: code.title().to_owned(),
        status: code.status(),
        code: code.as_str().to_owned(),
    };
    let status = StatusCode::from_u16(code.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = (status, axum::Json(body)).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    response
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            ApiError::Session(e) => {
                if e.is_outage() {
                    tracing::warn!(error = %e, "request failed: backend unavailable");
                }
                problem(e.code())
            }
            ApiError::BadRequest(reason) => {
                tracing::debug!(reason, "bad request");
                problem(ErrorCode::InvalidRequest)
            }
            ApiError::Unauthorized => problem(ErrorCode::Unauthorized),
            ApiError::NotFound(code) => problem(code),
            ApiError::MethodNotAllowed => problem(ErrorCode::MethodNotAllowed),
            ApiError::RequestTimeout => {
                let mut response = problem(ErrorCode::RequestTimeout);
                response
                    .headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
                response
            }
            ApiError::PayloadTooLarge => problem(ErrorCode::PayloadTooLarge),
            ApiError::UnsupportedMediaType => problem(ErrorCode::UnsupportedMediaType),
            ApiError::TooManyStreams => problem(ErrorCode::TooManyStreams),
        }
    }
}
