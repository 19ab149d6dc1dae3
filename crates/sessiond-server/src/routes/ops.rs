//! Operations endpoints: health, readiness, metrics, JWKS (the OpenAPI document is served by
//! `openapi`, which describes these).

use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;
use sessiond::error::ErrorCode;
use sessiond::keys::KeyPurpose;
use sessiond::SessionId;

use crate::problem::doc::Unavailable;
use crate::problem::problem;
use crate::routes::dto::{Health, JwkSet, Readiness};
use crate::state::AppState;

/// Liveness: the process serves requests.
#[utoipa::path(get, path = "/healthz", tag = "ops",
    responses((status = 200, description = "The process serves requests", body = Health)))]
pub(crate) async fn healthz() -> Json<Health> {
    Json(Health {
        status: String::from("ok"),
    })
}

/// Readiness: the database answers and an active key exists for every purpose.
#[utoipa::path(get, path = "/readyz", tag = "ops",
    responses((status = 200, description = "Ready to serve", body = Readiness), Unavailable))]
pub(crate) async fn readyz(State(state): State<AppState>) -> Response {
    // A read of a session that cannot exist: a round trip to the database, nothing else.
    let probe = SessionId::parse("ses-AAAAAAAAAAAAAAAAAAAAAA").map_err(|_| ());
    let db_ok = match probe {
        Ok(id) => state.service.session(&id).await.is_ok(),
        Err(()) => false,
    };
    let mut keys_ok = true;
    for purpose in KeyPurpose::ALL {
        keys_ok &= state.service.keys().active(purpose).await.is_ok();
    }
    if db_ok && keys_ok {
        Json(Readiness {
            status: String::from("ready"),
        })
        .into_response()
    } else {
        tracing::warn!(db_ok, keys_ok, "not ready");
        problem(ErrorCode::Unavailable)
    }
}

/// Prometheus metrics.
#[utoipa::path(get, path = "/metrics", tag = "ops",
    responses((status = 200, description = "Prometheus text exposition format 0.0.4",
        body = String, content_type = "text/plain")))]
pub(crate) async fn metrics(State(state): State<AppState>) -> Response {
    let mut response = state.metrics.render().into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}

/// The public keys of the active and retained access-token keys (JWK Set).
#[utoipa::path(get, path = "/.well-known/jwks.json", tag = "ops",
    responses((status = 200, description = "The JWK Set", body = JwkSet)))]
pub(crate) async fn jwks(State(state): State<AppState>) -> Response {
    let mut response = Json(state.service.jwks().await).into_response();
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=60"),
    );
    response
}
