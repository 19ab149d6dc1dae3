//! Wire types of the HTTP API (docs/DESIGN.md §9.3). They are what the server sends and accepts, and what
//! `/openapi.json` documents (derived from these definitions).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sessiond::{Credential, Session, SessionKind, TokenPair};
use utoipa::ToSchema;

/// A session as the API shows it: never a secret or a hash. Times are RFC 3339 UTC.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SessionView {
    /// `ses-…`
    pub id: String,
    /// The application's user id.
    pub user_id: String,
    /// The tenant.
    pub tenant: String,
    /// `cookie`, `tokens` or `browser`.
    pub kind: String,
    /// Creation time.
    pub created_at: String,
    /// Last recorded activity.
    pub last_seen_at: String,
    /// End of the idle window.
    pub idle_expires_at: String,
    /// End of the absolute lifetime.
    pub absolute_expires_at: String,
    /// Revocation time, if revoked.
    pub revoked_at: Option<String>,
    /// Revocation reason code, if revoked.
    pub revoke_reason: Option<String>,
    /// IP recorded at creation.
    pub ip: Option<String>,
    /// User-Agent recorded at creation.
    pub user_agent: Option<String>,
    /// Custom claims.
    #[schema(value_type = Object)]
    pub claims: Map<String, Value>,
}

impl From<&Session> for SessionView {
    fn from(s: &Session) -> Self {
        SessionView {
            id: s.id.to_string(),
            user_id: s.user_id.to_string(),
            tenant: s.tenant.to_string(),
            kind: s.kind.as_str().to_owned(),
            created_at: s.created_at.to_rfc3339(),
            last_seen_at: s.last_seen_at.to_rfc3339(),
            idle_expires_at: s.idle_expires_at.to_rfc3339(),
            absolute_expires_at: s.absolute_expires_at.to_rfc3339(),
            revoked_at: s.revoked_at.map(|t| t.to_rfc3339()),
            revoke_reason: s.revoke_reason.as_ref().map(|r| r.as_str().to_owned()),
            ip: s.ip.clone(),
            user_agent: s.user_agent.clone(),
            claims: s.claims.clone(),
        }
    }
}

/// The credential shape to create.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum KindParam {
    /// Signed cookie + CSRF token.
    Cookie,
    /// Access + refresh JWT pair.
    Tokens,
    /// Access JWT in memory + refresh JWT in an HttpOnly cookie.
    Browser,
}

impl From<KindParam> for SessionKind {
    fn from(k: KindParam) -> Self {
        match k {
            KindParam::Cookie => SessionKind::Cookie,
            KindParam::Tokens => SessionKind::Tokens,
            KindParam::Browser => SessionKind::Browser,
        }
    }
}

/// `POST /v1/sessions`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSessionRequest {
    /// Whose session.
    pub user_id: String,
    /// Tenant (default `default`).
    pub tenant: Option<String>,
    /// Credential shape.
    pub kind: KindParam,
    /// Client IP, for binding and audit.
    pub ip: Option<String>,
    /// Client User-Agent, for binding.
    pub user_agent: Option<String>,
    /// Custom claims copied into access tokens (no reserved names).
    #[schema(value_type = Option<Object>)]
    pub claims: Option<Map<String, Value>>,
}

/// A token pair as the API returns it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TokensView {
    /// The access JWT.
    pub access_token: String,
    /// The refresh JWT; absent for browser sessions (it travels only in the HttpOnly cookie).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    /// Always `Bearer`.
    pub token_type: String,
    /// Seconds until the access token expires.
    pub expires_in: i64,
    /// The access token's `exp`.
    pub access_expires_at: String,
    /// The refresh token's `exp`.
    pub refresh_expires_at: String,
}

impl TokensView {
    /// From a pair; `with_refresh` false leaves the refresh token out.
    pub fn new(pair: &TokenPair, now: sessiond::Timestamp, with_refresh: bool) -> Self {
        TokensView {
            access_token: pair.access_token.expose().clone(),
            refresh_token: with_refresh.then(|| pair.refresh_token.expose().clone()),
            token_type: String::from("Bearer"),
            expires_in: pair.access_expires_at.unix_seconds() - now.unix_seconds(),
            access_expires_at: pair.access_expires_at.to_rfc3339(),
            refresh_expires_at: pair.refresh_expires_at.to_rfc3339(),
        }
    }
}

/// `201` of `POST /v1/sessions`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CreateSessionResponse {
    /// The new session.
    pub session: SessionView,
    /// The v1 cookie value (kind `cookie`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cookie: Option<String>,
    /// The CSRF token (kind `cookie`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub csrf_token: Option<String>,
    /// The tokens (kinds `tokens` and `browser`; no refresh token for `browser`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tokens: Option<TokensView>,
    /// `Set-Cookie` values to forward to the browser (kinds `cookie` and `browser`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub set_cookie: Option<Vec<String>>,
}

/// `POST /v1/sessions/validate`: exactly one of `cookie`, `cookie_header`, `access_token`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ValidateRequest {
    /// The session cookie's value.
    pub cookie: Option<String>,
    /// The whole `Cookie` request header; the session cookie is taken from it.
    pub cookie_header: Option<String>,
    /// An access JWT.
    pub access_token: Option<String>,
    /// The CSRF header value, checked whenever given.
    pub csrf_token: Option<String>,
    /// Fail with `csrf_missing` when no CSRF token is given.
    #[serde(default)]
    pub require_csrf: bool,
    /// The client IP (binding).
    pub ip: Option<String>,
    /// The client User-Agent (binding).
    pub user_agent: Option<String>,
}

/// What was presented.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CredentialView {
    /// `cookie` or `access_token`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The key that signed it.
    pub key_id: String,
    /// The token's `exp` (access tokens).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
}

impl From<&Credential> for CredentialView {
    fn from(c: &Credential) -> Self {
        match c {
            Credential::Cookie { key_id } => CredentialView {
                kind: String::from("cookie"),
                key_id: key_id.to_string(),
                expires_at: None,
            },
            Credential::AccessToken { key_id, expires_at } => CredentialView {
                kind: String::from("access_token"),
                key_id: key_id.to_string(),
                expires_at: Some(expires_at.to_rfc3339()),
            },
            _ => CredentialView {
                kind: String::from("other"),
                key_id: String::new(),
                expires_at: None,
            },
        }
    }
}

/// `200` of `POST /v1/sessions/validate`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ValidateResponse {
    /// The session.
    pub session: SessionView,
    /// When this credential stops being valid (earliest expiry).
    pub deadline: String,
    /// What was presented.
    pub credential: CredentialView,
}

/// `POST /v1/tokens/refresh`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefreshRequest {
    /// The refresh JWT.
    pub refresh_token: String,
    /// The client's IP, checked against a session bound to one (`sessions.bind_ip`); a bound
    /// session refreshed without it is refused (401 `binding_mismatch`).
    #[serde(default)]
    pub ip: Option<String>,
    /// The client's User-Agent, checked like `ip` (`sessions.bind_user_agent`).
    #[serde(default)]
    pub user_agent: Option<String>,
}

/// `200` of `POST /v1/tokens/refresh`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RefreshResponse {
    /// The session.
    pub session: SessionView,
    /// The new pair.
    pub tokens: TokensView,
}

/// `POST /v1/sessions/{id}/revoke` (body optional).
#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RevokeRequest {
    /// Reason code (`[a-z0-9_]{1,64}`, default `logout`).
    pub reason: Option<String>,
}

/// `200` of `POST /v1/sessions/{id}/csrf`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CsrfResponse {
    /// The new CSRF token.
    pub csrf_token: String,
    /// The CSRF cookie to forward to the browser.
    pub set_cookie: Vec<String>,
}

/// `200` of `GET /v1/sessions/{id}`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SessionResponse {
    /// The session.
    pub session: SessionView,
}

/// `200` of `GET /v1/users/{user_id}/sessions`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SessionsResponse {
    /// Active sessions, oldest first.
    pub sessions: Vec<SessionView>,
}

/// `?tenant=`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct TenantQuery {
    /// Only this tenant.
    pub tenant: Option<String>,
}

/// `POST /v1/users/{user_id}/sessions/revoke` (body optional).
#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RevokeUserRequest {
    /// Keep this session ("log out other devices").
    pub except: Option<String>,
    /// Only this tenant.
    pub tenant: Option<String>,
}

/// `200` of `POST /v1/users/{user_id}/sessions/revoke`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RevokeUserResponse {
    /// How many sessions were revoked.
    pub revoked: usize,
}

/// `POST /v1/claims`: a token, or an id with its expiry.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum ClaimRequest {
    /// A JWT from a trusted issuer (or one of our access tokens).
    Token {
        /// The JWT.
        token: String,
    },
    /// A raw id.
    Id {
        /// The id (1 to 256 bytes).
        id: String,
        /// RFC 3339 expiry.
        expires_at: String,
    },
}

/// `201` of `POST /v1/claims`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ClaimResponse {
    /// Always true.
    pub claimed: bool,
    /// The token's issuer (token claims).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// The token's subject (token claims).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// Until when the claim is kept.
    pub expires_at: String,
    /// The token's claims (token claims).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub claims: Option<Map<String, Value>>,
}

/// `200` of `POST /auth/browser/refresh`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct BrowserRefreshResponse {
    /// The new access JWT (keep it in memory only).
    pub access_token: String,
    /// Its `exp`.
    pub expires_at: String,
}
