//! The one place errors become HTTP responses: `application/problem+json` (RFC 9457) with a
//! machine-readable `code` (DESIGN §6). Expected failures (a bad credential) and unexpected ones
//! (storage down) map to different statuses: an outage is a 503 `unavailable`, never a 401.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
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
    /// 404 with a code.
    NotFound(&'static str),
    /// 405 `method_not_allowed`.
    MethodNotAllowed,
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

fn status_of(e: &SessionError) -> StatusCode {
    match e.code() {
        "csrf_missing" | "csrf_mismatch" => StatusCode::FORBIDDEN,
        "invalid_request" => StatusCode::BAD_REQUEST,
        "token_already_used" => StatusCode::CONFLICT,
        "unavailable" => StatusCode::SERVICE_UNAVAILABLE,
        "session_not_found" => StatusCode::UNAUTHORIZED,
        _ => StatusCode::UNAUTHORIZED,
    }
}

fn title_of(code: &str) -> &'static str {
    match code {
        "invalid_credential" => "The credential is malformed, forged or signed by an unusable key",
        "session_not_found" => "No such session",
        "session_expired" => "The session has expired",
        "session_revoked" => "The session was revoked",
        "token_expired" => "The token has expired",
        "refresh_token_reused" => "A rotated-out refresh token was reused; the session is revoked",
        "binding_mismatch" => "The request does not match the session's binding",
        "csrf_missing" => "CSRF token required",
        "csrf_mismatch" => "CSRF token does not match",
        "token_already_used" => "The token was already used",
        "invalid_request" => "The request is malformed",
        "unauthorized" => "Unauthorized",
        "not_found" => "Not found",
        "method_not_allowed" => "Method not allowed",
        "payload_too_large" => "Request body larger than 64 KiB",
        "unsupported_media_type" => "Expected application/json",
        "too_many_streams" => "Too many open streams",
        "unavailable" => "Storage or keys are unavailable; retry",
        _ => "Error",
    }
}

/// Builds a problem response.
pub(crate) fn problem(status: StatusCode, code: &str) -> Response {
    let body = Problem {
        kind: format!("urn:sessiond:problem:{code}"),
        title: title_of(code).to_owned(),
        status: status.as_u16(),
        code: code.to_owned(),
    };
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
                if e.code() == "unavailable" {
                    tracing::warn!(error = %e, "request failed: backend unavailable");
                }
                problem(status_of(&e), e.code())
            }
            ApiError::BadRequest(reason) => {
                tracing::debug!(reason, "bad request");
                problem(StatusCode::BAD_REQUEST, "invalid_request")
            }
            ApiError::Unauthorized => problem(StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::NotFound(code) => problem(StatusCode::NOT_FOUND, code),
            ApiError::MethodNotAllowed => {
                problem(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed")
            }
            ApiError::PayloadTooLarge => {
                problem(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large")
            }
            ApiError::UnsupportedMediaType => {
                problem(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
            }
            ApiError::TooManyStreams => problem(StatusCode::TOO_MANY_REQUESTS, "too_many_streams"),
        }
    }
}
