//! Request extractors with errors in problem+json: handlers take [`ApiJson`], [`ApiPath`] and
//! [`ApiQuery`], never axum's own `Json`, `Path` or `Query` extractors, whose rejections are
//! `text/plain` (clippy's `disallowed-types` holds the line; see `clippy.toml`).

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use serde::de::DeserializeOwned;

use crate::problem::ApiError;

/// A JSON body: malformed JSON is 400 `invalid_request`, an oversize body 413, a wrong content
/// type 415. Never echoes the body.
#[derive(Debug)]
pub(crate) struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(ApiJson(v)),
            Err(JsonRejection::MissingJsonContentType(_)) => Err(ApiError::UnsupportedMediaType),
            Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => Err(ApiError::PayloadTooLarge),
            Err(JsonRejection::BytesRejection(e))
                if e.status() == StatusCode::PAYLOAD_TOO_LARGE =>
            {
                Err(ApiError::PayloadTooLarge)
            }
            Err(_) => Err(ApiError::BadRequest("malformed JSON body")),
        }
    }
}

/// Path parameters: one that does not decode (invalid percent-encoding or UTF-8) is 400
/// `invalid_request`, never echoed.
#[derive(Debug)]
pub(crate) struct ApiPath<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        #[allow(clippy::disallowed_types)] // The one wrapper.
        let path = axum::extract::Path::<T>::from_request_parts(parts, state).await;
        match path {
            Ok(axum::extract::Path(v)) => Ok(ApiPath(v)),
            Err(_) => Err(ApiError::BadRequest("malformed path parameter")),
        }
    }
}

/// The query string: an unknown, duplicate or malformed parameter, or one whose value does not
/// decode to UTF-8, is 400 `invalid_request` (the parameter types say which are known:
/// `#[serde(deny_unknown_fields)]`). axum's decoder would turn invalid UTF-8 into U+FFFD, a
/// different name than the client sent; this one refuses it.
#[derive(Debug)]
pub(crate) struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let raw = parts.uri.query().unwrap_or("");
        let utf8 = percent_encoding::percent_decode_str(raw)
            .decode_utf8()
            .is_ok();
        if !utf8 {
            return Err(ApiError::BadRequest("query string is not UTF-8"));
        }
        #[allow(clippy::disallowed_types)] // The one wrapper.
        let query = axum::extract::Query::<T>::from_request_parts(parts, state).await;
        match query {
            Ok(axum::extract::Query(v)) => Ok(ApiQuery(v)),
            Err(_) => Err(ApiError::BadRequest("malformed query string")),
        }
    }
}
