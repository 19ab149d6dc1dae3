//! Request extractors with errors in problem+json.

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use serde::de::DeserializeOwned;
use std::sync::Arc;

use sessiond::{ApiKeyId, ApiKeyInfo};
use subtle::ConstantTimeEq;

use crate::app::AppState;
use crate::problem::ApiError;

/// A JSON body: malformed JSON is 400 `invalid_request`, an oversize body 413, a wrong content
/// type 415. Never echoes the body.
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

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

/// Proof that a `/v1` request carried a valid API key (`Authorization: Bearer <api key>`), and
/// which one: its public id, or `None` for the bootstrap `SESSIOND_API_KEY`. However the header
/// is spelled (surrounding whitespace), one key is one caller, so per-key limits hold.
#[derive(Debug, Clone)]
pub struct ApiCaller(Option<Arc<ApiKeyInfo>>);

impl ApiCaller {
    /// The key's public id; `None` for the bootstrap key.
    pub fn key_id(&self) -> Option<&ApiKeyId> {
        self.0.as_ref().map(|info| &info.id)
    }
}

impl PartialEq for ApiCaller {
    fn eq(&self, other: &Self) -> bool {
        self.key_id() == other.key_id()
    }
}

impl Eq for ApiCaller {}

impl std::hash::Hash for ApiCaller {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.key_id().hash(state);
    }
}

impl FromRequestParts<AppState> for ApiCaller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let presented = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .ok_or(ApiError::Unauthorized)?;
        if let Some(bootstrap) = &state.bootstrap_api_key {
            if bool::from(bootstrap.expose().as_bytes().ct_eq(presented.as_bytes())) {
                tracing::debug!(api_key = "bootstrap", "API call");
                return Ok(ApiCaller(None));
            }
        }
        match state.service.authenticate_api_key(presented).await? {
            Some(info) => {
                tracing::debug!(api_key = %info.id, "API call");
                Ok(ApiCaller(Some(info)))
            }
            None => Err(ApiError::Unauthorized),
        }
    }
}
