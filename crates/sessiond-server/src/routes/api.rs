//! The server-to-server API under `/v1` (API key required: [`crate::auth`] is a layer on the
//! whole `/v1` router, so these handlers only ever see authenticated requests).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use sessiond::error::ErrorCode;
use sessiond::SessionError;
use sessiond::{
    NewSession, RequestContext, RevokeOutcome, RevokeReason, SessionId, SessionKind, Tenant,
    Timestamp, UserId,
};

use super::dto::*;
use crate::extract::{ApiJson, ApiPath, ApiQuery, OptionalJson};
use crate::problem::doc::{
    AlreadyClaimed, ApiKeyRefused, BadRequest, BodyTimeout, CredentialRefused, CsrfRefused,
    NoSuchSession, PayloadTooLarge, ScopeRefused, Unavailable, UnsupportedMediaType,
};
use crate::problem::ApiError;
use crate::state::AppState;
use crate::tls::ClientCertificate;

fn session_id(text: &str) -> Result<SessionId, ApiError> {
    SessionId::parse(text).map_err(|_| ApiError::NotFound(ErrorCode::UnknownSession))
}

fn user_id(text: &str) -> Result<UserId, ApiError> {
    UserId::new(text).map_err(|_| {
        ApiError::BadRequest("user_id must be 1 to 256 bytes without control characters")
    })
}

fn tenant(text: Option<&str>) -> Result<Option<Tenant>, ApiError> {
    text.map(|t| Tenant::new(t).map_err(|_| ApiError::BadRequest("tenant must be 1 to 256 bytes")))
        .transpose()
}

/// Create a session of any kind.
#[utoipa::path(post, path = "/v1/sessions", tag = "sessions", request_body = CreateSessionRequest,
    responses(
        (status = 201, description = "The session and its credentials", body = CreateSessionResponse,
            links(
                ("GetSession" = (operation_id = "get_session",
                    parameters(("id" = "$response.body#/session/id")))),
                ("RotateCsrf" = (operation_id = "rotate_csrf",
                    parameters(("id" = "$response.body#/session/id")))),
                ("SessionEvents" = (operation_id = "session_events",
                    parameters(("id" = "$response.body#/session/id")))),
                ("RevokeSession" = (operation_id = "revoke_session",
                    parameters(("id" = "$response.body#/session/id")))),
                ("UserSessions" = (operation_id = "user_sessions",
                    parameters(("user_id" = "$response.body#/session/user_id")))),
                ("UserEvents" = (operation_id = "user_events",
                    parameters(("user_id" = "$response.body#/session/user_id")))),
                ("RevokeUser" = (operation_id = "revoke_user",
                    parameters(("user_id" = "$response.body#/session/user_id")))),
                ("ValidateCookie" = (operation_id = "validate",
                    request_body = json!({"cookie": "$response.body#/cookie"}))),
                ("ValidateAccessToken" = (operation_id = "validate",
                    request_body = json!({"access_token": "$response.body#/tokens/access_token"}))),
                ("RefreshTokens" = (operation_id = "refresh_tokens",
                    request_body = json!({"refresh_token": "$response.body#/tokens/refresh_token"}))),
            )),
        BadRequest, ApiKeyRefused, ScopeRefused, BodyTimeout, PayloadTooLarge, UnsupportedMediaType,
        Unavailable,
    ),
    security(("api_key" = [])))]
pub(crate) async fn create_session(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<CreateSessionRequest>,
) -> Result<Response, ApiError> {
    let mut new = NewSession::new(user_id(&req.user_id)?);
    if let Some(t) = tenant(req.tenant.as_deref())? {
        new = new.tenant(t);
    }
    if let Some(ip) = req.ip {
        new = new.ip(ip);
    }
    if let Some(ua) = req.user_agent {
        new = new.user_agent(ua);
    }
    if let Some(claims) = req.claims {
        new = new.claims(claims);
    }
    let now = state.service.now();
    let response = match SessionKind::from(req.kind) {
        SessionKind::Cookie => {
            let created = state.service.create_cookie_session(new).await?;
            let until = created.session.absolute_expires_at;
            CreateSessionResponse {
                set_cookie: Some(vec![
                    state
                        .cookies
                        .session_cookie(created.cookie.expose(), now, until),
                    state
                        .cookies
                        .csrf_cookie(created.csrf_token.expose(), now, until),
                ]),
                cookie: Some(created.cookie.expose().clone()),
                csrf_token: Some(created.csrf_token.expose().clone()),
                tokens: None,
                session: SessionView::from(&created.session),
            }
        }
        kind => {
            let browser = kind == SessionKind::Browser;
            let created = state.service.create_token_session(new, kind).await?;
            let set_cookie = browser.then(|| {
                vec![state.cookies.refresh_cookie(
                    created.tokens.refresh_token.expose(),
                    now,
                    created.tokens.refresh_expires_at,
                )]
            });
            CreateSessionResponse {
                tokens: Some(TokensView::new(&created.tokens, now, !browser)),
                set_cookie,
                cookie: None,
                csrf_token: None,
                session: SessionView::from(&created.session),
            }
        }
    };
    Ok((StatusCode::CREATED, Json(response)).into_response())
}

/// Validate a cookie (value or whole header) or an access token; checks CSRF and bindings.
#[utoipa::path(post, path = "/v1/sessions/validate", tag = "sessions", request_body = ValidateRequest,
    responses(
        (status = 200, description = "The credential is valid: its session and deadline",
            body = ValidateResponse),
        BadRequest, CredentialRefused, CsrfRefused, BodyTimeout, PayloadTooLarge,
        UnsupportedMediaType, Unavailable,
    ),
    security(("api_key" = [])))]
pub(crate) async fn validate(
    State(state): State<AppState>,
    client_cert: Option<Extension<ClientCertificate>>,
    ApiJson(req): ApiJson<ValidateRequest>,
) -> Result<Json<ValidateResponse>, ApiError> {
    let ctx = RequestContext {
        ip: req.ip.as_deref(),
        user_agent: req.user_agent.as_deref(),
        csrf_token: req.csrf_token.as_deref(),
        require_csrf: req.require_csrf,
    };
    if req.credentials().filter(|(_, given)| *given).count() != 1 {
        return Err(ApiError::BadRequest(
            "give exactly one of cookie, cookie_header, access_token",
        ));
    }
    let validated = if let Some(token) = &req.access_token {
        state.service.validate_access_token(token, &ctx).await?
    } else {
        let value = match (&req.cookie, &req.cookie_header) {
            (Some(v), _) => v.clone(),
            (None, Some(h)) => {
                sessiond::cookie::from_header(h, &state.cookies.session).unwrap_or_default()
            }
            (None, None) => String::new(),
        };
        state.service.validate_cookie(&value, &ctx).await?
    };
    // docs/DESIGN.md §5.4: the deadline is the earliest of every expiry, the mTLS client certificate's
    // `notAfter` included (the connection also closes then, see `tls`).
    let deadline = match client_cert {
        Some(Extension(cert)) => validated.deadline.min(cert.not_after),
        None => validated.deadline,
    };
    Ok(Json(ValidateResponse {
        session: SessionView::from(&validated.session),
        deadline: deadline.to_rfc3339(),
        credential: CredentialView::from(&validated.credential),
    }))
}

/// Exchange a refresh token for a new pair (rotation with reuse detection).
#[utoipa::path(post, path = "/v1/tokens/refresh", tag = "tokens", operation_id = "refresh_tokens",
    request_body = RefreshRequest,
    responses(
        (status = 200, description = "The session and its new token pair", body = RefreshResponse),
        BadRequest, CredentialRefused, ScopeRefused, BodyTimeout, PayloadTooLarge, UnsupportedMediaType,
        Unavailable,
    ),
    security(("api_key" = [])))]
pub(crate) async fn refresh(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<RefreshRequest>,
) -> Result<Json<RefreshResponse>, ApiError> {
    let now = state.service.now();
    let ctx = RequestContext {
        ip: req.ip.as_deref(),
        user_agent: req.user_agent.as_deref(),
        ..RequestContext::default()
    };
    // Token and browser sessions, on purpose: a backend that proxies the browser flow holds the
    // browser session's refresh token and sets the cookie itself. Cookie sessions have none.
    let refreshed = state.service.refresh(&req.refresh_token, &ctx).await?;
    Ok(Json(RefreshResponse {
        session: SessionView::from(&refreshed.session),
        tokens: TokensView::new(&refreshed.tokens, now, true),
    }))
}

/// A session by id, revoked and expired ones included.
#[utoipa::path(get, path = "/v1/sessions/{id}", tag = "sessions", params(SessionPath),
    responses(
        (status = 200, description = "The session", body = SessionResponse),
        BadRequest, ApiKeyRefused, NoSuchSession, Unavailable,
    ),
    security(("api_key" = [])))]
pub(crate) async fn get_session(
    State(state): State<AppState>,
    ApiPath(SessionPath { id }): ApiPath<SessionPath>,
) -> Result<Json<SessionResponse>, ApiError> {
    let id = session_id(&id)?;
    let session = state
        .service
        .session(&id)
        .await?
        .ok_or(ApiError::NotFound(ErrorCode::UnknownSession))?;
    Ok(Json(SessionResponse {
        session: SessionView::from(&session),
    }))
}

/// Revoke one session (idempotent).
#[utoipa::path(post, path = "/v1/sessions/{id}/revoke", tag = "sessions", params(SessionPath),
    request_body(content = Option<RevokeRequest>,
        description = "Optional: an empty body revokes with reason `logout`"),
    responses(
        (status = 204, description = "Revoked (or it already was)"),
        BadRequest, ApiKeyRefused, ScopeRefused, NoSuchSession, BodyTimeout, PayloadTooLarge, Unavailable,
    ),
    security(("api_key" = [])))]
pub(crate) async fn revoke_session(
    State(state): State<AppState>,
    ApiPath(SessionPath { id }): ApiPath<SessionPath>,
    OptionalJson(req): OptionalJson<RevokeRequest>,
) -> Result<StatusCode, ApiError> {
    let id = session_id(&id)?;
    let reason = match req.reason {
        Some(r) => RevokeReason::new(&r)
            .map_err(|_| ApiError::BadRequest("reason must be [a-z0-9_]{1,64}"))?,
        None => RevokeReason::logout(),
    };
    match state.service.revoke(&id, &reason).await? {
        RevokeOutcome::NotFound => Err(ApiError::NotFound(ErrorCode::UnknownSession)),
        _ => Ok(StatusCode::NO_CONTENT),
    }
}

/// Rotate a cookie session's CSRF token.
#[utoipa::path(post, path = "/v1/sessions/{id}/csrf", tag = "sessions", params(SessionPath),
    responses(
        (status = 200, description = "The new CSRF token and its cookie", body = CsrfResponse),
        BadRequest, CredentialRefused, ScopeRefused, NoSuchSession, Unavailable,
    ),
    security(("api_key" = [])))]
pub(crate) async fn rotate_csrf(
    State(state): State<AppState>,
    ApiPath(SessionPath { id }): ApiPath<SessionPath>,
) -> Result<Json<CsrfResponse>, ApiError> {
    let id = session_id(&id)?;
    let token = state.service.rotate_csrf(&id).await.map_err(|e| match e {
        SessionError::NotFound => ApiError::NotFound(ErrorCode::UnknownSession),
        other => ApiError::Session(other),
    })?;
    let now = state.service.now();
    let until = state
        .service
        .session(&id)
        .await?
        .map_or(now, |s| s.absolute_expires_at);
    Ok(Json(CsrfResponse {
        set_cookie: vec![state.cookies.csrf_cookie(token.expose(), now, until)],
        csrf_token: token.expose().clone(),
    }))
}

/// A user's active sessions.
#[utoipa::path(get, path = "/v1/users/{user_id}/sessions", tag = "users", params(UserPath, TenantQuery),
    responses(
        (status = 200, description = "The user's active sessions", body = SessionsResponse),
        BadRequest, ApiKeyRefused, Unavailable,
    ),
    security(("api_key" = [])))]
pub(crate) async fn user_sessions(
    State(state): State<AppState>,
    ApiPath(UserPath { user_id: user }): ApiPath<UserPath>,
    ApiQuery(q): ApiQuery<TenantQuery>,
) -> Result<Json<SessionsResponse>, ApiError> {
    let user = user_id(&user)?;
    let tenant = tenant(q.tenant.as_deref())?;
    let sessions = state.service.user_sessions(&user, tenant.as_ref()).await?;
    Ok(Json(SessionsResponse {
        sessions: sessions.iter().map(SessionView::from).collect(),
    }))
}

/// Revoke all of a user's sessions, optionally all but one.
#[utoipa::path(post, path = "/v1/users/{user_id}/sessions/revoke", tag = "users", params(UserPath),
    request_body(content = Option<RevokeUserRequest>,
        description = "Optional: an empty body revokes every session of the user in every tenant"),
    responses(
        (status = 200, description = "How many sessions were revoked", body = RevokeUserResponse),
        BadRequest, ApiKeyRefused, ScopeRefused, BodyTimeout, PayloadTooLarge, Unavailable,
    ),
    security(("api_key" = [])))]
pub(crate) async fn revoke_user(
    State(state): State<AppState>,
    ApiPath(UserPath { user_id: user }): ApiPath<UserPath>,
    OptionalJson(req): OptionalJson<RevokeUserRequest>,
) -> Result<Json<RevokeUserResponse>, ApiError> {
    let user = user_id(&user)?;
    let tenant = tenant(req.tenant.as_deref())?;
    let except = req
        .except
        .as_deref()
        .map(|e| {
            SessionId::parse(e).map_err(|_| ApiError::BadRequest("except must be a session id"))
        })
        .transpose()?;
    let ids = state
        .service
        .revoke_user(
            &user,
            tenant.as_ref(),
            except.as_ref(),
            &RevokeReason::revoked_all(),
        )
        .await?;
    Ok(Json(RevokeUserResponse { revoked: ids.len() }))
}

/// Claim a one-time token (trusted issuer or ours) or a raw id, exactly once.
#[utoipa::path(post, path = "/v1/claims", tag = "claims", request_body = ClaimRequest,
    responses(
        (status = 201, description = "Claimed: this was the first use", body = ClaimResponse),
        BadRequest, CredentialRefused, ScopeRefused, AlreadyClaimed, BodyTimeout, PayloadTooLarge,
        UnsupportedMediaType, Unavailable,
    ),
    security(("api_key" = [])))]
pub(crate) async fn claim(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<ClaimRequest>,
) -> Result<Response, ApiError> {
    let response = match req {
        ClaimRequest::Token(TokenClaim { token }) => {
            let claimed = match state.service.claim_token(&token).await {
                Err(e) if matches!(e.reason(), "unknown_kid" | "unknown_issuer") => {
                    // A key the cached set lacks: the issuer may have rotated. Refetch (rate-
                    // limited) and retry once; nothing was claimed by the failed attempt.
                    let remote = state.remote_issuers.as_ref();
                    let iss = crate::issuers::unverified_issuer(&token);
                    match (remote, iss) {
                        (Some(remote), Some(iss)) if remote.refetch_for_unknown_kid(&iss).await => {
                            state.service.claim_token(&token).await?
                        }
                        _ => return Err(ApiError::Session(e)),
                    }
                }
                other => other?,
            };
            ClaimResponse {
                claimed: true,
                issuer: Some(claimed.issuer),
                subject: claimed.subject,
                expires_at: claimed.expires_at.to_rfc3339(),
                claims: Some(claimed.claims),
            }
        }
        ClaimRequest::Id(IdClaim { id, expires_at }) => {
            let until = Timestamp::parse_rfc3339(&expires_at)
                .map_err(|_| ApiError::BadRequest("expires_at must be RFC 3339"))?;
            match state.service.claim(&id, until).await? {
                sessiond::store::ClaimOutcome::Claimed => ClaimResponse {
                    claimed: true,
                    issuer: None,
                    subject: None,
                    expires_at: until.to_rfc3339(),
                    claims: None,
                },
                sessiond::store::ClaimOutcome::AlreadyUsed => {
                    return Err(ApiError::Session(sessiond::SessionError::TokenAlreadyUsed))
                }
                _ => return Err(ApiError::Session(sessiond::SessionError::TokenExpired)),
            }
        }
    };
    Ok((StatusCode::CREATED, Json(response)).into_response())
}

/// Make a login code for the browser login handoff (docs/DESIGN.md §9.4): the page exchanges it
/// with its PKCE verifier at `POST /auth/browser/login`. No session exists until then.
#[utoipa::path(post, path = "/v1/browser/login-codes", tag = "browser",
    operation_id = "create_login_code", request_body = LoginCodeRequest,
    responses(
        (status = 201, description = "The login code and the id its session will have",
            body = LoginCodeResponse),
        BadRequest, ApiKeyRefused, ScopeRefused, BodyTimeout, PayloadTooLarge, UnsupportedMediaType,
        Unavailable,
    ),
    security(("api_key" = [])))]
pub(crate) async fn create_login_code(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<LoginCodeRequest>,
) -> Result<Response, ApiError> {
    let ChallengeMethod::S256 = req.code_challenge_method;
    let mut new = NewSession::new(user_id(&req.user_id)?);
    if let Some(t) = tenant(req.tenant.as_deref())? {
        new = new.tenant(t);
    }
    if let Some(claims) = req.claims {
        new = new.claims(claims);
    }
    let code = state
        .service
        .create_login_code(new, &req.code_challenge)
        .await?;
    let body = LoginCodeResponse {
        login_code: code.code.expose().clone(),
        session_id: code.session_id.as_str().to_owned(),
        expires_at: code.expires_at.to_rfc3339(),
    };
    Ok((StatusCode::CREATED, Json(body)).into_response())
}
