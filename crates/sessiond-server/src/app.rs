//! The application: shared state and the router.

use sessiond::error::ErrorCode;
use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;
use sessiond::{Secret, SessionService};

use crate::config::Config;
use crate::cookies::CookieSettings;
use crate::metrics::Metrics;
use crate::problem::ApiError;
use crate::routes::{api, browser, events, ops};

/// Request bodies above this are refused with 413.
pub const BODY_LIMIT: usize = 64 * 1024;

/// What every handler can reach. Cheap to clone.
#[derive(Clone, Debug)]
pub struct AppState {
    /// The session engine.
    pub service: SessionService,
    /// The configuration in force.
    pub config: Arc<Config>,
    /// Cookie names and attributes.
    pub cookies: Arc<CookieSettings>,
    /// Prometheus registry.
    pub metrics: Arc<Metrics>,
    /// `SESSIOND_API_KEY`, accepted as an API key.
    pub bootstrap_api_key: Option<Arc<Secret<String>>>,
    /// Issuers whose JWK Set is fetched from a URL.
    pub remote_issuers: Option<crate::issuers::RemoteIssuers>,
    /// The event fan-out behind the SSE streams.
    pub events: crate::routes::events::EventHub,
}

impl AppState {
    /// Assembles the state.
    pub fn new(
        service: SessionService,
        config: Config,
        bootstrap_api_key: Option<Secret<String>>,
    ) -> Self {
        let events = crate::routes::events::EventHub::new(&config.events);
        AppState {
            metrics: Arc::new(Metrics::new(service.clone(), events.clone())),
            cookies: Arc::new(CookieSettings::new(&config)),
            events,
            config: Arc::new(config),
            bootstrap_api_key: bootstrap_api_key.map(Arc::new),
            remote_issuers: None,
            service,
        }
    }
}

async fn not_found() -> ApiError {
    ApiError::NotFound(ErrorCode::NotFound)
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

/// The router with every route of DESIGN §6 (the event streams come with live enforcement).
pub fn router(state: AppState) -> Router {
    let v1 = Router::new()
        .route("/sessions", post(api::create_session))
        .route("/sessions/validate", post(api::validate))
        .route("/sessions/{id}", get(api::get_session))
        .route("/sessions/{id}/revoke", post(api::revoke_session))
        .route("/sessions/{id}/csrf", post(api::rotate_csrf))
        .route("/tokens/refresh", post(api::refresh))
        .route("/users/{user_id}/sessions", get(api::user_sessions))
        .route("/users/{user_id}/sessions/revoke", post(api::revoke_user))
        .route("/claims", post(api::claim))
        .route("/sessions/{id}/events", get(events::session_events))
        .route("/events", get(events::user_events));
    Router::new()
        .nest("/v1", v1)
        .route("/auth/browser/refresh", post(browser::refresh))
        .route("/auth/browser/logout", post(browser::logout))
        .route("/.well-known/jwks.json", get(ops::jwks))
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .route("/openapi.json", get(ops::openapi))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::metrics::track,
        ))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(state)
}
