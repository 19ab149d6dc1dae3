//! The one place errors become HTTP responses: `application/problem+json` (RFC 9457) with a
//! machine-readable `code` (docs/DESIGN.md §9.2; codes and statuses §8.1). Expected failures (a bad credential) and unexpected ones
//! (storage down) map to different statuses: an outage is a 503 `unavailable`, never a 401.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use sessiond::error::ErrorCode;
use sessiond::SessionError;
use sessiond_api::Problem;

/// The media type of every error response.
pub(crate) const PROBLEM_JSON: &str = "application/problem+json";

/// An error a handler returns.
#[derive(Debug)]
pub(crate) enum ApiError {
    /// A library outcome with its wire code.
    Session(SessionError),
    /// 400 `invalid_request` with a reason (no input echoed).
    BadRequest(&'static str),
    /// 401 `unauthorized`: missing or wrong API key, or any browser-route failure.
    Unauthorized,
    /// 403 `forbidden`: the API key's scope does not include the route.
    Forbidden,
    /// 403 `origin_not_allowed`: a browser route called from an origin not configured.
    OriginNotAllowed,
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
    /// 429 `too_many_streams`: the API key (or the browser session) has its most event streams
    /// open.
    TooManyStreams,
}

impl From<SessionError> for ApiError {
    fn from(e: SessionError) -> Self {
        ApiError::Session(e)
    }
}

/// Builds a problem response: status and title come with the code (`sessiond::ErrorCode`).
pub(crate) fn problem(code: ErrorCode) -> Response {
    let body = Problem::new(code);
    let status = StatusCode::from_u16(code.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = (status, axum::Json(body)).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
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
            ApiError::Forbidden => problem(ErrorCode::Forbidden),
            ApiError::OriginNotAllowed => problem(ErrorCode::OriginNotAllowed),
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

/// The error responses as the OpenAPI document describes them. Each type is one reusable
/// response (`#/components/responses/<name>`): one status, `application/problem+json`, a
/// [`Problem`] whose `code` is one of the listed codes. Handlers name the ones they can return in
/// `#[utoipa::path(responses(...))]`; `crate::openapi` registers them all ([`doc::all`]).
pub(crate) mod doc {
    use std::collections::BTreeMap;

    use sessiond::error::ErrorCode;
    use utoipa::openapi::schema::{AllOfBuilder, ObjectBuilder, Type};
    use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};

    use sessiond_api::wire_codes;

    use super::PROBLEM_JSON;

    /// A problem response of `status` whose code is one of `codes`.
    fn problem_response(
        description: &str,
        status: u16,
        codes: &[ErrorCode],
    ) -> utoipa::openapi::Response {
        let wire = wire_codes(codes);
        let narrowed = ObjectBuilder::new()
            .required("type")
            .required("status")
            .required("code")
            .property(
                "type",
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .enum_values(Some(
                        wire.iter().map(|c| format!("urn:sessiond:problem:{c}")),
                    )),
            )
            .property(
                "status",
                ObjectBuilder::new()
                    .schema_type(Type::Integer)
                    .enum_values(Some([status])),
            )
            .property(
                "code",
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .enum_values(Some(wire)),
            );
        let schema = AllOfBuilder::new()
            .item(Ref::from_schema_name("Problem"))
            .item(narrowed);
        ResponseBuilder::new()
            .description(description)
            .content(
                PROBLEM_JSON,
                ContentBuilder::new().schema(Some(schema)).build(),
            )
            .build()
    }

    macro_rules! problem_responses {
        ($($(#[doc = $doc:literal])+ $name:ident = $status:literal, [$($code:ident),+ $(,)?];)+) => {
            $(
                $(#[doc = $doc])+
                pub(crate) struct $name;

                impl $name {
                    /// The codes it carries.
                    pub(crate) const CODES: &'static [ErrorCode] = &[$(ErrorCode::$code),+];

                    fn describe() -> (&'static str, RefOr<utoipa::openapi::Response>) {
                        let description = [$($doc),+].map(str::trim).join(" ");
                        (
                            stringify!($name),
                            problem_response(&description, $status, Self::CODES).into(),
                        )
                    }
                }

                impl utoipa::IntoResponses for $name {
                    fn responses() -> BTreeMap<String, RefOr<utoipa::openapi::Response>> {
                        BTreeMap::from([(
                            $status.to_string(),
                            RefOr::Ref(Ref::from_response_name(stringify!($name))),
                        )])
                    }
                }
            )+

            /// Every problem response component: name, response.
            pub(crate) fn all() -> Vec<(&'static str, RefOr<utoipa::openapi::Response>)> {
                vec![$($name::describe()),+]
            }

            /// Every problem response component: name, status, codes (for tests).
            #[cfg(test)]
            pub(crate) const TABLE: &[(&str, u16, &[ErrorCode])] =
                &[$((stringify!($name), $status, $name::CODES)),+];
        };
    }

    problem_responses! {
        /// `invalid_request`: a malformed body, path parameter or query string, or a value
        /// outside its documented rules.
        BadRequest = 400, [InvalidRequest];
        /// `unauthorized`: no valid API key (`Authorization: Bearer <api key>`).
        ApiKeyRefused = 401, [Unauthorized];
        /// `unauthorized` (no valid API key), or the presented credential or its session was
        /// refused: the code says why.
        CredentialRefused = 401, [
            Unauthorized, InvalidCredential, SessionNotFound, SessionExpired, TokenExpired,
            SessionRevoked, RefreshTokenReused, BindingMismatch,
        ];
        /// `unauthorized`: no usable session (missing, invalid, expired, revoked or reused
        /// refresh cookie): log in again. Which check failed is logged, never sent.
        BrowserRefused = 401, [Unauthorized];
        /// `unauthorized`: the access token (`Authorization: Bearer`) is not one of a live
        /// `browser` session: log in again; or `token_expired`: its only fault is its expiry
        /// (refresh once, then retry). Which check failed is logged, never sent.
        AccountRefused = 401, [Unauthorized, TokenExpired];
        /// `origin_not_allowed`: the `Origin` header is missing or not in
        /// `cookies.allowed_origins` (configuration, not the session).
        OriginRefused = 403, [OriginNotAllowed];
        /// `csrf_missing` or `csrf_mismatch`.
        CsrfRefused = 403, [CsrfMissing, CsrfMismatch];
        /// `forbidden`: the API key is `verify`-scoped; this route needs an `admin` key.
        ScopeRefused = 403, [Forbidden];
        /// `session_not_found`: the id names no session (or is not a session id).
        NoSuchSession = 404, [UnknownSession];
        /// `session_not_found`: the id is not an active session of this user in this tenant
        /// (whether it exists otherwise is not told).
        NoSuchOwnSession = 404, [UnknownSession];
        /// `request_timeout`: the body did not arrive within `server.body_read_timeout` of the
        /// request head; the connection closes.
        BodyTimeout = 408, [RequestTimeout];
        /// `token_already_used`: the one-time token or id was claimed before.
        AlreadyClaimed = 409, [TokenAlreadyUsed];
        /// `payload_too_large`: the body is larger than 64 KiB.
        PayloadTooLarge = 413, [PayloadTooLarge];
        /// `unsupported_media_type`: the body is not `application/json`.
        UnsupportedMediaType = 415, [UnsupportedMediaType];
        /// `too_many_streams`: the API key has its most event streams open.
        TooManyStreams = 429, [TooManyStreams];
        /// `too_many_streams`: the session has 4 live-end streams open on this node.
        SessionStreamsRefused = 429, [TooManyStreams];
        /// `unavailable`: storage or keys could not be reached; nothing was decided. Retry.
        Unavailable = 503, [Unavailable];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documented_problem_responses_carry_codes_of_their_status() {
        for (name, status, codes) in doc::TABLE {
            for code in *codes {
                assert_eq!(code.status(), *status, "{name}: {code:?}");
            }
        }
    }
}
