//! The browser-facing endpoints of the hybrid model: the login handoff's exchange, refresh and
//! logout with the HttpOnly refresh cookie; the account routes (the user's sessions) and the
//! live-end stream with the access token (`Authorization: Bearer`) of a `browser` session, where
//! `token_expired` is the one failure told apart from `unauthorized`. A page whose `Origin` is not in `cookies.allowed_origins` gets 403
//! `origin_not_allowed` (a configuration problem; cross-origin it also gets no CORS headers, so
//! it cannot read even that). Every session failure is a uniform 401 `unauthorized`, meaning "log
//! in again" (which check failed goes to the log only). An outage is 503, so that clients retry
//! instead of logging the user out.
//!
//! CORS ([`cors`]): responses to an allowed origin carry `Access-Control-Allow-Origin` (that
//! origin) and `-Allow-Credentials: true`; its preflights get `GET, POST`, `content-type` and
//! `authorization`; `Vary: Origin` always. Other origins get no CORS header at all (their
//! preflight is 403 `origin_not_allowed`), so their pages cannot read any answer.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::Event;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use sessiond::error::ErrorCode;
use sessiond::{
    EndReason, RequestContext, RevokeReason, Session, SessionError, SessionId, SessionKind,
    SessionStatus, Validated,
};
use tokio::sync::mpsc;

use super::dto::{
    BrowserLoginRequest, BrowserLoginResponse, BrowserRefreshResponse, DeviceInfo, DeviceSession,
    DeviceSessionsResponse, EndedData, RevokeUserResponse, SessionPath,
};
use crate::config::Origin;
use crate::extract::{ApiJson, ApiPath};
use crate::parse::client_ip;
use crate::problem::doc::{
    AccountRefused, BadRequest, BodyTimeout, BrowserRefused, NoSuchOwnSession, OriginRefused,
    PayloadTooLarge, SessionStreamsRefused, Unavailable, UnsupportedMediaType,
};
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

/// The cookie routes' gate: the `Origin` check, then this request's client IP (for
/// [`context`]).
fn admit(
    state: &AppState,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: &HeaderMap,
) -> Result<Option<String>, ApiError> {
    if !origin_allowed(state, headers) {
        tracing::info!("browser request from an origin not in cookies.allowed_origins");
        return Err(ApiError::OriginNotAllowed);
    }
    Ok(request_ip(state, peer, headers))
}

/// The end user's facts for the binding check: the client IP and the request's User-Agent.
fn context<'a>(ip: &'a Option<String>, headers: &'a HeaderMap) -> RequestContext<'a> {
    RequestContext {
        ip: ip.as_deref(),
        user_agent: user_agent(headers),
        ..RequestContext::default()
    }
}

/// 200 with `body` and the refresh cookie of `pair` (issued at `now`); [`cors`] adds
/// `Cache-Control: no-store`.
fn with_refresh_cookie(
    state: &AppState,
    body: impl serde::Serialize,
    pair: &sessiond::TokenPair,
    now: sessiond::Timestamp,
) -> Response {
    let cookie =
        state
            .cookies
            .refresh_cookie(pair.refresh_token.expose(), now, pair.refresh_expires_at);
    let mut response = Json(body).into_response();
    set_cookie(&mut response, &cookie);
    response
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
        OriginRefused, BrowserRefused, Unavailable,
    ))]
pub(crate) async fn refresh(
    State(state): State<AppState>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let ip = admit(&state, peer, &headers)?;
    let token =
        refresh_cookie(&state, &headers).ok_or_else(|| uniform("refresh_cookie_missing"))?;
    let now = state.service.now();
    // Browser sessions only; the kind is checked before anything is written.
    let refreshed = state
        .service
        .refresh_browser(&token, &context(&ip, &headers))
        .await
        .map_err(fail)?;
    let body = BrowserRefreshResponse::new(&refreshed.tokens, now);
    Ok(with_refresh_cookie(&state, body, &refreshed.tokens, now))
}

/// The login handoff's exchange: a login code and the page's PKCE verifier become a new
/// `browser` session, its access token in the body, its refresh token in the cookie.
#[utoipa::path(post, path = "/auth/browser/login", tag = "browser", operation_id = "browser_login",
    request_body = BrowserLoginRequest,
    params(
        ("Origin" = String, Header, description = "The page's origin: one of `cookies.allowed_origins`"),
    ),
    responses(
        (status = 200, description = "Logged in: the access token; the refresh token is in `Set-Cookie`",
            body = BrowserLoginResponse),
        BadRequest, BrowserRefused, OriginRefused, BodyTimeout, PayloadTooLarge, UnsupportedMediaType,
        Unavailable,
    ))]
pub(crate) async fn login(
    State(state): State<AppState>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    body: Result<ApiJson<BrowserLoginRequest>, ApiError>,
) -> Result<Response, ApiError> {
    let ip = admit(&state, peer, &headers)?;
    let ApiJson(req) = body?;
    let now = state.service.now();
    let created = state
        .service
        .exchange_login_code(&req.code, &req.code_verifier, &context(&ip, &headers))
        .await
        .map_err(fail)?;
    let access = BrowserRefreshResponse::new(&created.tokens, now);
    let body = BrowserLoginResponse {
        access_token: access.access_token,
        expires_at: access.expires_at,
        expires_in: access.expires_in,
        session_id: created.session.id.as_str().to_owned(),
    };
    Ok(with_refresh_cookie(&state, body, &created.tokens, now))
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
        OriginRefused, BrowserRefused, Unavailable,
    ))]
pub(crate) async fn logout(
    State(state): State<AppState>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let ip = admit(&state, peer, &headers)?;
    // A browser session whatever the binding (a mismatch is audited, not refused): logging out
    // from a new network must end the session on the server too.
    let outcome = match refresh_cookie(&state, &headers) {
        Some(token) => state
            .service
            .logout_browser(&token, &context(&ip, &headers))
            .await
            .map(|_| ()),
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
    // Only what the operator asked for: the directives act on the whole origin.
    let directives: Vec<&str> = state
        .config
        .cookies
        .clear_site_data
        .iter()
        .map(|d| d.directive())
        .collect();
    if !directives.is_empty() {
        if let Ok(value) = HeaderValue::from_str(&directives.join(", ")) {
            response.headers_mut().insert("clear-site-data", value);
        }
    }
    Ok(response)
}

fn set_cookie(response: &mut Response, cookie: &str) {
    if let Ok(value) = HeaderValue::from_str(cookie) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
}

/// The CORS middleware of the browser routes (module documentation). A preflight is answered
/// here: 204 with the CORS headers for an allowed origin; 403 `origin_not_allowed` without any
/// CORS header otherwise, so the browser stops before sending the request. Other requests go on
/// to their handler, and an allowed origin's answer (success or failure) gets
/// `Access-Control-Allow-Origin` and `-Allow-Credentials`; `Vary: Origin` and
/// `Cache-Control: no-store` are on every answer of these routes, failures included.
pub(crate) async fn cors(
    State(state): State<AppState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let allowed = origin_allowed(&state, request.headers())
        .then(|| request.headers().get(header::ORIGIN).cloned())
        .flatten();
    let preflight = request.method() == axum::http::Method::OPTIONS
        && request
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    let mut response = if preflight {
        match &allowed {
            Some(_) => {
                let mut r = StatusCode::NO_CONTENT.into_response();
                let h = r.headers_mut();
                h.insert(
                    header::ACCESS_CONTROL_ALLOW_METHODS,
                    HeaderValue::from_static("GET, POST"),
                );
                h.insert(
                    header::ACCESS_CONTROL_ALLOW_HEADERS,
                    HeaderValue::from_static("content-type, authorization"),
                );
                h.insert(
                    header::ACCESS_CONTROL_MAX_AGE,
                    HeaderValue::from_static("600"),
                );
                r
            }
            None => ApiError::OriginNotAllowed.into_response(),
        }
    } else {
        next.run(request).await
    };
    let h = response.headers_mut();
    if let Some(origin) = allowed {
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        h.insert(
            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
    }
    h.append(header::VARY, HeaderValue::from_static("origin"));
    // Tokens, cookies and session lists: no answer of these routes, failures included, may be
    // kept by a cache.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// The access token of `Authorization: Bearer` (none: 401, before the `Origin` check), validated
/// as `POST /v1/sessions/validate` does
/// (with this request's ip and user agent for the bindings), of a `browser` session only.
/// Every refusal is the uniform 401 `unauthorized`, except an access token whose only fault is
/// its expiry: 401 `token_expired` (the page refreshes once and retries).
/// `read`: a `GET` route, where a same-origin request may come without `Origin`
/// ([`same_origin_read`]).
async fn account(
    state: &AppState,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: &HeaderMap,
    read: bool,
) -> Result<Validated, ApiError> {
    // No credential at all is 401 whatever the origin (as for a missing API key on `/v1`);
    // a credential from an origin not configured is 403.
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(crate::auth::bearer)
        .ok_or_else(|| uniform("access_token_missing"))?;
    let allowed = origin_allowed(state, headers) || (read && same_origin_read(headers));
    if !allowed {
        tracing::info!("browser request from an origin not in cookies.allowed_origins");
        return Err(ApiError::OriginNotAllowed);
    }
    let ip = request_ip(state, peer, headers);
    let validated = match state
        .service
        .validate_access_token(token, &context(&ip, headers))
        .await
    {
        Ok(v) => v,
        Err(SessionError::TokenExpired) => {
            tracing::info!(reason = "token_expired", "browser request refused");
            return Err(ApiError::Session(SessionError::TokenExpired));
        }
        Err(e) => return Err(fail(e)),
    };
    if validated.session.kind != SessionKind::Browser {
        return Err(uniform("wrong_kind"));
    }
    Ok(validated)
}

/// A browser's same-origin `GET` without `Origin`: browsers send `Origin` on a same-origin
/// request only when its method is not `GET` or `HEAD` (Fetch standard), so a page served from
/// sessiond's own origin reads its device list and live-end stream without one. Its
/// `Sec-Fetch-Site: same-origin` (a header pages cannot set) says where it came from. Only for
/// the access-token routes: the credential is the `Authorization` header, never ambient, and a
/// request that does carry `Origin` is judged by it alone.
fn same_origin_read(headers: &HeaderMap) -> bool {
    !headers.contains_key(header::ORIGIN)
        && headers
            .get("sec-fetch-site")
            .is_some_and(|v| v.as_bytes() == b"same-origin")
}

/// The device a User-Agent names, as far as woothee can tell (its `UNKNOWN` is left out).
fn device(user_agent: Option<&str>) -> DeviceInfo {
    let Some(parsed) = user_agent.and_then(|ua| woothee::parser::Parser::new().parse(ua)) else {
        return DeviceInfo::default();
    };
    let known =
        |v: &str| (!v.is_empty() && v != woothee::woothee::VALUE_UNKNOWN).then(|| v.to_owned());
    DeviceInfo {
        browser: known(parsed.name),
        browser_version: known(parsed.version),
        os: known(parsed.os),
        os_version: known(&parsed.os_version),
        category: known(parsed.category),
    }
}

fn device_session(session: &Session, current: &SessionId) -> DeviceSession {
    DeviceSession {
        id: session.id.as_str().to_owned(),
        current: session.id == *current,
        created_at: session.created_at.to_rfc3339(),
        last_seen_at: session.last_seen_at.to_rfc3339(),
        ip: session.ip.clone(),
        user_agent: session.user_agent.clone(),
        device: device(session.user_agent.as_deref()),
    }
}

/// The account page's device list: the token's user's active sessions in the token's tenant.
#[utoipa::path(get, path = "/auth/browser/sessions", tag = "browser",
    operation_id = "browser_sessions",
    params(
        ("Origin" = String, Header, description = "The page's origin: one of `cookies.allowed_origins`"),
    ),
    responses(
        (status = 200, description = "The user's active sessions in this tenant, most recently seen first",
            body = DeviceSessionsResponse),
        AccountRefused, OriginRefused, Unavailable,
    ),
    security(("access_token" = [])))]
pub(crate) async fn sessions(
    State(state): State<AppState>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let me = account(&state, peer, &headers, true).await?.session;
    let mut list = state
        .service
        .user_sessions(&me.user_id, Some(&me.tenant))
        .await?;
    list.sort_by(|a, b| {
        b.last_seen_at
            .cmp(&a.last_seen_at)
            .then(b.created_at.cmp(&a.created_at))
            .then(a.id.as_str().cmp(b.id.as_str()))
    });
    let body = DeviceSessionsResponse {
        sessions: list.iter().map(|s| device_session(s, &me.id)).collect(),
    };
    Ok(Json(body).into_response())
}

/// End one of the user's sessions (this one: reason `logout`; another: `user_revoked`).
#[utoipa::path(post, path = "/auth/browser/sessions/{id}/revoke", tag = "browser",
    operation_id = "browser_revoke_session",
    params(
        SessionPath,
        ("Origin" = String, Header, description = "The page's origin: one of `cookies.allowed_origins`"),
    ),
    responses(
        (status = 204, description = "Revoked"),
        AccountRefused, OriginRefused, NoSuchOwnSession, Unavailable,
    ),
    security(("access_token" = [])))]
pub(crate) async fn revoke_session(
    State(state): State<AppState>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    ApiPath(SessionPath { id }): ApiPath<SessionPath>,
) -> Result<Response, ApiError> {
    let me = account(&state, peer, &headers, false).await?.session;
    let not_found = || ApiError::NotFound(ErrorCode::UnknownSession);
    let id = SessionId::parse(&id).map_err(|_| not_found())?;
    let target = state.service.session(&id).await?.ok_or_else(not_found)?;
    // Another user's or tenant's session, or one that has ended, is "not found": whether it
    // exists is not this user's business.
    if target.user_id != me.user_id
        || target.tenant != me.tenant
        || target.status(state.service.now()) != SessionStatus::Active
    {
        return Err(not_found());
    }
    let reason = if id == me.id {
        RevokeReason::logout()
    } else {
        RevokeReason::user_revoked()
    };
    state.service.revoke(&id, &reason).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// End every other session of the user in this tenant ("log out other devices").
#[utoipa::path(post, path = "/auth/browser/sessions/revoke-others", tag = "browser",
    operation_id = "browser_revoke_others",
    params(
        ("Origin" = String, Header, description = "The page's origin: one of `cookies.allowed_origins`"),
    ),
    responses(
        (status = 200, description = "How many sessions were revoked", body = RevokeUserResponse),
        AccountRefused, OriginRefused, Unavailable,
    ),
    security(("access_token" = [])))]
pub(crate) async fn revoke_others(
    State(state): State<AppState>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let me = account(&state, peer, &headers, false).await?.session;
    let ids = state
        .service
        .revoke_user(
            &me.user_id,
            Some(&me.tenant),
            Some(&me.id),
            &RevokeReason::user_revoked(),
        )
        .await?;
    Ok(Json(RevokeUserResponse { revoked: ids.len() }).into_response())
}

/// The `ended` event of a session whose watch ended with `end`.
fn ended_event(session_id: &SessionId, end: &EndReason, at: sessiond::Timestamp) -> Event {
    let (reason, detail) = match end {
        EndReason::Revoked { reason: Some(r) } if *r == RevokeReason::logout() => ("logout", None),
        EndReason::Revoked { reason: Some(r) } if *r == RevokeReason::refresh_token_reused() => {
            ("reuse_detected", None)
        }
        EndReason::Revoked { reason } => {
            ("revoked", reason.as_ref().map(|r| r.as_str().to_owned()))
        }
        other => ("expired", Some(other.code().to_owned())),
    };
    let data = EndedData {
        session_id: session_id.clone(),
        reason: reason.to_owned(),
        detail,
        at,
    };
    let json = serde_json::to_string(&data).unwrap_or_else(|_| String::from("{}"));
    Event::default().event("ended").data(json)
}

/// The live end of a page's session: one `ended` event when the session ends, then the stream
/// closes (see docs/DESIGN.md §9.6).
#[utoipa::path(get, path = "/auth/browser/events", tag = "browser",
    operation_id = "browser_events",
    params(
        ("Origin" = String, Header, description = "The page's origin: one of `cookies.allowed_origins`"),
    ),
    responses(
        (status = 200, content_type = "text/event-stream",
            description = "SSE: `: keep-alive` comments, then one `ended` event (`data`: \
                `{session_id, reason, detail?, at}`, `reason` one of `logout`, `reuse_detected`, \
                `revoked`, `expired`) when the session ends; closes after it, or without an event \
                when the server shuts down"),
        AccountRefused, OriginRefused, SessionStreamsRefused, Unavailable,
    ),
    security(("access_token" = [])))]
pub(crate) async fn events(
    State(state): State<AppState>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let me = account(&state, peer, &headers, true).await?.session;
    let hub = state.events.clone();
    let slot = hub.acquire_for_session(me.id.clone())?;
    // The session's own end (revocation, idle or absolute deadline), not the access token's:
    // the stream outlives the token it was opened with.
    let watch = match state.service.watch(&me.id, None).await {
        Ok(w) => w,
        Err(SessionError::NotFound) => return Err(uniform("session_not_found")),
        Err(e) => return Err(fail(e)),
    };
    let (tx, rx) = mpsc::channel(1);
    let service = state.service.clone();
    let id = me.id;
    tokio::spawn(async move {
        let _slot = slot;
        tokio::select! {
            end = watch.wait() => {
                let revoked_at = match &end {
                    EndReason::Revoked { .. } => {
                        service.session(&id).await.ok().flatten().and_then(|s| s.revoked_at)
                    }
                    _ => None,
                };
                let at = revoked_at.unwrap_or_else(|| service.now());
                let _ = tx.send(ended_event(&id, &end, at)).await;
            }
            () = tx.closed() => {}
            // Shutdown: close without an event; the page reopens with backoff.
            () = hub.shutting_down() => {}
        }
    });
    Ok(super::events::sse_response(&state, rx))
}
