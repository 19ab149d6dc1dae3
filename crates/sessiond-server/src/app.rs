//! The router: every route, the `/v1` API-key layer, metrics, the body limit and the answer to
//! a late body.

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;
use sessiond::error::ErrorCode;

use crate::problem::ApiError;
use crate::routes::{api, browser, events, ops};
use crate::state::AppState;

/// Request bodies above this are refused with 413.
const BODY_LIMIT: usize = 64 * 1024;

async fn not_found() -> ApiError {
    ApiError::NotFound(ErrorCode::NotFound)
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

/// The router with every route of docs/DESIGN.md §9.3 (the event streams come with live enforcement).
pub(crate) fn router(state: AppState) -> Router {
    // What a `verify` key may call: validation, reads, the event streams.
    let verify = Router::new()
        .route("/sessions/validate", post(api::validate))
        .route("/sessions/{id}", get(api::get_session))
        .route("/users/{user_id}/sessions", get(api::user_sessions))
        .route("/sessions/{id}/events", get(events::session_events))
        .route("/events", get(events::user_events));
    // Everything that changes state needs an `admin` key.
    let admin = Router::new()
        .route("/sessions", post(api::create_session))
        .route("/sessions/{id}/revoke", post(api::revoke_session))
        .route("/sessions/{id}/csrf", post(api::rotate_csrf))
        .route("/tokens/refresh", post(api::refresh))
        .route("/users/{user_id}/sessions/revoke", post(api::revoke_user))
        .route("/claims", post(api::claim))
        .route("/browser/login-codes", post(api::create_login_code))
        .route_layer(axum::middleware::from_fn(crate::auth::require_admin));
    let v1 = verify
        .merge(admin)
        // `route_layer`: an unknown path stays 404 and a wrong method 405, as without a key.
        // Outermost, so the caller is known before the scope is checked.
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::auth::require_api_key,
        ));
    // The browser routes answer pages of other origins: CORS for `cookies.allowed_origins`.
    // The CORS middleware answers preflights (`OPTIONS` with `Access-Control-Request-Method`)
    // itself; the explicit `OPTIONS` route keeps them inside the layer (the router's 405
    // fallback is not), and answers a plain `OPTIONS` 405 as before.
    let browser_routes = Router::new()
        .route(
            "/auth/browser/login",
            post(browser::login).options(method_not_allowed),
        )
        .route(
            "/auth/browser/refresh",
            post(browser::refresh).options(method_not_allowed),
        )
        .route(
            "/auth/browser/logout",
            post(browser::logout).options(method_not_allowed),
        )
        .route(
            "/auth/browser/sessions",
            get(browser::sessions).options(method_not_allowed),
        )
        .route(
            "/auth/browser/sessions/{id}/revoke",
            post(browser::revoke_session).options(method_not_allowed),
        )
        .route(
            "/auth/browser/sessions/revoke-others",
            post(browser::revoke_others).options(method_not_allowed),
        )
        .route(
            "/auth/browser/events",
            get(browser::events).options(method_not_allowed),
        )
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            browser::cors,
        ));
    Router::new()
        .nest("/v1", v1)
        .merge(browser_routes)
        .route("/.well-known/jwks.json", get(ops::jwks))
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .route("/openapi.json", get(crate::openapi::openapi))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn(crate::conn::answer_body_timeouts))
        .layer(axum::middleware::from_fn_with_state(
            state.metrics.clone(),
            crate::metrics::track,
        ))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(state)
}
