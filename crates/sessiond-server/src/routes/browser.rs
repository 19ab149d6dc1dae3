//! The browser-facing endpoints of the hybrid model: refresh and logout with the HttpOnly refresh
//! cookie. Every failure is a uniform 401 `unauthorized` (the reason goes to the log only), except
//! an outage, which is 503 so that clients retry instead of logging the user out.

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use sessiond::{RequestContext, SessionError};

use super::dto::BrowserRefreshResponse;
use crate::app::AppState;
use crate::problem::{ApiError, Problem};

/// The request's `Origin` must be one of `cookies.allowed_origins`.
fn origin_allowed(state: &AppState, headers: &HeaderMap) -> bool {
    headers
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|origin| {
            state
                .config
                .cookies
                .allowed_origins
                .iter()
                .any(|o| o == origin)
        })
}

fn refresh_cookie(state: &AppState, headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|h| sessiond::cookie::from_header(h, &state.cookies.refresh))
        .filter(|v| !v.is_empty())
}

fn uniform(reason: &'static str) -> ApiError {
    tracing::info!(reason, "browser request refused");
    ApiError::Unauthorized
}

fn fail(e: SessionError) -> ApiError {
    if e.code() == "unavailable" {
        return ApiError::Session(e);
    }
    uniform(e.reason())
}

/// Refresh with the HttpOnly cookie: a new access token in the body, the rotated refresh token
/// in the cookie.
#[utoipa::path(post, path = "/auth/browser/refresh", tag = "browser",
    responses((status = 200, body = BrowserRefreshResponse), (status = 401, body = Problem), (status = 503, body = Problem)))]
pub async fn refresh(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    if !origin_allowed(&state, &headers) {
        return Err(uniform("origin_not_allowed"));
    }
    let token =
        refresh_cookie(&state, &headers).ok_or_else(|| uniform("refresh_cookie_missing"))?;
    let ua = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok());
    let ctx = RequestContext {
        user_agent: ua,
        ..RequestContext::default()
    };
    let now = state.service.now();
    let refreshed = state.service.refresh(&token, &ctx).await.map_err(fail)?;
    if refreshed.session.kind != sessiond::SessionKind::Browser {
        return Err(uniform("not_a_browser_session"));
    }
    let cookie = state.cookies.refresh_cookie(
        refreshed.tokens.refresh_token.expose(),
        now,
        refreshed.tokens.refresh_expires_at,
    );
    let body = BrowserRefreshResponse {
        access_token: refreshed.tokens.access_token.expose().clone(),
        expires_at: refreshed.tokens.access_expires_at.to_rfc3339(),
    };
    let mut response = Json(body).into_response();
    set_cookie(&mut response, &cookie);
    no_store(&mut response);
    Ok(response)
}

/// Log out: revoke the session of the refresh cookie, clear the cookies and site data.
#[utoipa::path(post, path = "/auth/browser/logout", tag = "browser",
    responses((status = 204), (status = 401, body = Problem), (status = 503, body = Problem)))]
pub async fn logout(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    if !origin_allowed(&state, &headers) {
        return Err(uniform("origin_not_allowed"));
    }
    let outcome = match refresh_cookie(&state, &headers) {
        Some(token) => state.service.logout_refresh_token(&token).await.map(|_| ()),
        None => Err(SessionError::InvalidInput("no refresh cookie")),
    };
    let mut response = match outcome {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) if e.code() == "unavailable" => return Err(ApiError::Session(e)),
        Err(e) => {
            tracing::info!(
                reason = e.reason(),
                "browser logout without a valid refresh cookie"
            );
            ApiError::Unauthorized.into_response()
        }
    };
    // Clear the cookies either way: a browser that asks to log out must end up logged out.
    for cookie in state.cookies.clear_all() {
        set_cookie(&mut response, &cookie);
    }
    response.headers_mut().insert(
        "clear-site-data",
        HeaderValue::from_static("\"cookies\", \"storage\""),
    );
    no_store(&mut response);
    Ok(response)
}

fn set_cookie(response: &mut Response, cookie: &str) {
    if let Ok(value) = HeaderValue::from_str(cookie) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
}

fn no_store(response: &mut Response) {
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
}
