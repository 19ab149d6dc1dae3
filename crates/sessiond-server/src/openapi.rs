//! The OpenAPI document, assembled from the `#[utoipa::path]` annotations on the handlers and
//! the `ToSchema` wire types: it cannot drift from the code.

use axum::Json;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::problem::Problem;
use crate::routes::{api, browser, dto, events, ops};

struct ApiKeyAuth;

impl Modify for ApiKeyAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The API description served at `/openapi.json`.
#[derive(OpenApi)]
#[openapi(
    info(title = "sessiond", description = "Session and credential lifecycle service"),
    paths(
        api::create_session, api::validate, api::refresh, api::get_session, api::revoke_session,
        api::rotate_csrf, api::user_sessions, api::revoke_user, api::claim,
        events::session_events, events::user_events,
        browser::refresh, browser::logout,
        ops::healthz, ops::readyz, ops::metrics, openapi, ops::jwks,
    ),
    components(schemas(
        Problem, dto::SessionView, dto::KindParam, dto::CreateSessionRequest, dto::TokensView,
        dto::CreateSessionResponse, dto::ValidateRequest, dto::CredentialView, dto::ValidateResponse,
        dto::RefreshRequest, dto::RefreshResponse, dto::RevokeRequest, dto::CsrfResponse,
        dto::SessionResponse, dto::SessionsResponse, dto::RevokeUserRequest, dto::RevokeUserResponse,
        dto::ClaimRequest, dto::ClaimResponse, dto::BrowserRefreshResponse,
    )),
    modifiers(&ApiKeyAuth)
)]
pub(crate) struct ApiDoc;

/// This API's OpenAPI document, generated from the handlers and wire types.
#[utoipa::path(get, path = "/openapi.json", tag = "ops", responses((status = 200)))]
pub(crate) async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
