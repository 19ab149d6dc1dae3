//! API-key authentication of the `/v1` routes, as one layer ([`require_api_key`]) on the whole
//! `/v1` router: a handler cannot forget it. The caller it proves ([`ApiCaller`]) travels in the
//! request's extensions for the handlers that need it (the SSE stream cap counts by key).

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap};
use axum::middleware::Next;
use axum::response::{IntoResponse as _, Response};
use sessiond::{ApiKeyId, ApiKeyInfo};
use subtle::ConstantTimeEq;

use crate::problem::ApiError;
use crate::state::AppState;

/// Proof that a `/v1` request carried a valid API key (`Authorization: Bearer <api key>`), and
/// which one: its public id, or `None` for the bootstrap `SESSIOND_API_KEY`. However the header
/// is spelled (surrounding whitespace), one key is one caller, so per-key limits hold.
#[derive(Debug, Clone)]
pub(crate) struct ApiCaller(Option<Arc<ApiKeyInfo>>);

impl ApiCaller {
    /// The key's public id; `None` for the bootstrap key.
    pub(crate) fn key_id(&self) -> Option<&ApiKeyId> {
        self.0.as_ref().map(|info| &info.id)
    }
}

/// Who presented the request's API key, or why nobody did: a missing or unknown key is 401
/// `unauthorized`, a storage outage 503 (through [`ApiError`]).
async fn authenticate(state: &AppState, headers: &HeaderMap) -> Result<ApiCaller, ApiError> {
    let presented = headers
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

/// Middleware on the `/v1` router: a request without a valid API key never reaches a handler;
/// one with a key carries its [`ApiCaller`] in the extensions.
pub(crate) async fn require_api_key(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    match authenticate(&state, request.headers()).await {
        Ok(caller) => {
            request.extensions_mut().insert(caller);
            next.run(request).await
        }
        Err(e) => e.into_response(),
    }
}
