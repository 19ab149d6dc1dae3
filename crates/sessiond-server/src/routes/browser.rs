//! The browser-facing endpoints of the hybrid model: refresh and logout with the HttpOnly refresh
//! cookie. Every failure is a uniform 401 `unauthorized` (the reason goes to the log only), except
//! an outage, which is 503 so that clients retry instead of logging the user out.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use sessiond::{RequestContext, SessionError};

use super::dto::BrowserRefreshResponse;
use crate::config::Origin;
use crate::parse::client_ip;
use crate::problem::doc::{BrowserRefused, Unavailable};
use crate::problem::ApiError;
use crate::state::AppState;

/// The request's `Origin` must be one of `cookies.allowed_origins` (parsed like them, then
/// compared exactly: scheme, host and port).
fn origin_allowed(state: &AppState, headers: &HeaderMap) -> bool {
    headers
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<Origin>().ok())
        .is_some_and(|origin| state.config.cookies.allowed_origins.contains(&origin))
}

fn refresh_cookie(state: &AppState, headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|h| sessiond::cookie::from_header(h, &state.cookies.refresh))
        .filter(|v| !v.is_empty())
}

/// [`client_ip`] of this request, as text for the binding check.
fn request_ip(
    state: &AppState,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: &HeaderMap,
) -> Option<String> {
    let forwarded_for: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    client_ip(
        &state.config.sessions.trusted_proxies,
        peer.map(|Extension(ConnectInfo(addr))| addr),
        &forwarded_for,
    )
    .map(|ip| ip.to_string())
}

fn user_agent(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
}

fn uniform(reason: &'static str) -> ApiError {
    tracing::info!(reason, "browser request refused");
    ApiError::Unauthorized
}

fn fail(e: SessionError) -> ApiError {
    if e.is_outage() {
        return ApiError::Session(e);
    }
    uniform(e.reason())
}

/// Refresh with the HttpOnly cookie: a new access token in the body, the rotated refresh token
/// in the cookie.
#[utoipa::path(post, path = "/auth/browser/refresh", tag = "browser", operation_id = "browser_refresh",
    params(
        ("Origin" = String, Header, description = "The page's origin: one of `cookies.allowed_origins`"),
        ("__Host-sessiond-refresh" = String, Cookie, description = "The HttpOnly refresh cookie \
            (`sessiond-refresh` with `cookies.secure = false`)"),
    ),
    responses(
        (status = 200, description = "A new access token; the rotated refresh token is in `Set-Cookie`",
            body = BrowserRefreshResponse),
        BrowserRefused, Unavailable,
    ))]
pub(crate) async fn refresh(
    State(state): State<AppState>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    if !origin_allowed(&state, &headers) {
        return Err(uniform("origin_not_allowed"));
    }
    let token =
        refresh_cookie(&state, &headers).ok_or_else(|| uniform("refresh_cookie_missing"))?;
    let ip = request_ip(&state, peer, &headers);
    let ctx = RequestContext {
        ip: ip.as_deref(),
        user_agent: user_agent(&headers),
        ..RequestContext::default()
    };
    let now = state.service.now();
    // Browser sessions only; the kind is checked before anything is written.
    let refreshed = state
        .service
        .refresh_browser(&token, &ctx)
        .await
        .map_err(fail)?;
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
#[utoipa::path(post, path = "/auth/browser/logout", tag = "browser", operation_id = "browser_logout",
    params(
        ("Origin" = String, Header, description = "The page's origin: one of `cookies.allowed_origins`"),
        ("__Host-sessiond-refresh" = String, Cookie, description = "The HttpOnly refresh cookie \
            (`sessiond-refresh` with `cookies.secure = false`)"),
    ),
    responses(
        (status = 204,
            description = "Logged out: the session is revoked, the cookies cleared (`Clear-Site-Data`)"),
        BrowserRefused, Unavailable,
    ))]
pub(crate) async fn logout(
    State(state): State<AppState>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    if !origin_allowed(&state, &headers) {
        return Err(uniform("origin_not_allowed"));
    }
    let ip = request_ip(&state, peer, &headers);
    let ctx = RequestContext {
        ip: ip.as_deref(),
        user_agent: user_agent(&headers),
        ..RequestContext::default()
    };
    // A browser session whatever the binding (a mismatch is audited, not refused): logging out
    // from a new network must end the session on the server too.
    let outcome = match refresh_cookie(&state, &headers) {
        Some(token) => state.service.logout_browser(&token, &ctx).await.map(|_| ()),
        None => Err(SessionError::InvalidInput("no refresh cookie")),
    };
    let mut response = match outcome {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) if e.is_outage() => return Err(ApiError::Session(e)),
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
