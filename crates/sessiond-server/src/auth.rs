//! API-key authentication of the `/v1` routes, as one layer ([`require_api_key`]) on the whole
//! `/v1` router: a handler cannot forget it. The caller it proves ([`ApiCaller`]) travels in the
//! request's extensions for the handlers that need it (the SSE stream cap counts by key), and for
//! [`require_admin`], the layer on the routes that change state: a `verify`-scoped key gets 403
//! `forbidden` there. Which routes need `admin` is decided where the router is built.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap};
use axum::middleware::Next;
use axum::response::{IntoResponse as _, Response};
use sessiond::store::ApiKeyScope;
use sessiond::ApiKeyId;
use subtle::ConstantTimeEq;

use crate::api_keys::ApiKeyInfo;
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

    /// What the key may do; the bootstrap key may do everything.
    pub(crate) fn scope(&self) -> ApiKeyScope {
        self.0
            .as_ref()
            .map_or(ApiKeyScope::Admin, |info| info.scope)
    }
}

/// The credential of an `Authorization: Bearer <credential>` value. The scheme name is
/// case-insensitive (RFC 9110 §11.1); whitespace around the credential is dropped.
pub(crate) fn bearer(value: &str) -> Option<&str> {
    let (scheme, credential) = value.trim_start().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| credential.trim())
        .filter(|c| !c.is_empty())
}

/// Who presented the request's API key, or why nobody did: a missing or unknown key is 401
/// `unauthorized`, a storage outage 503 (through [`ApiError`]).
async fn authenticate(state: &AppState, headers: &HeaderMap) -> Result<ApiCaller, ApiError> {
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer)
        .ok_or(ApiError::Unauthorized)?;
    if let Some(bootstrap) = &state.bootstrap_api_key {
        if bool::from(bootstrap.expose().as_bytes().ct_eq(presented.as_bytes())) {
            tracing::debug!(api_key = "bootstrap", "API call");
            return Ok(ApiCaller(None));
        }
    }
    match state.api_keys.authenticate(presented).await? {
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

/// Middleware on the routes that change state (inside [`require_api_key`]): only an `admin` key
/// passes; a `verify` key is 403 `forbidden`. A request that reached it without a caller (a
/// router built wrong) is refused too, never let through.
pub(crate) async fn require_admin(request: Request, next: Next) -> Response {
    match request
        .extensions()
        .get::<ApiCaller>()
        .map(ApiCaller::scope)
    {
        Some(ApiKeyScope::Admin) => next.run(request).await,
        Some(ApiKeyScope::Verify) => ApiError::Forbidden.into_response(),
        None => {
            tracing::error!("an admin route was reached without API-key authentication");
            ApiError::Unauthorized.into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::bearer;

    #[test]
    fn the_bearer_scheme_is_case_insensitive() {
        for (value, credential) in [
            ("Bearer k", Some("k")),
            ("bearer k", Some("k")),
            ("BEARER k", Some("k")),
            ("bEaReR   k  ", Some("k")),
            (" Bearer k", Some("k")),
            ("Bearer ", None),
            ("Bearer", None),
            ("Basic k", None),
            ("Bearerk", None),
            ("Bearer\tk", None),
            ("", None),
        ] {
            assert_eq!(bearer(value), credential, "{value:?}");
        }
    }
}
