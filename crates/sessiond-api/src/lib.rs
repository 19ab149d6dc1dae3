//! The wire types of sessiond's HTTP API (docs/DESIGN.md §9): what the server sends and
//! accepts, what `/openapi.json` documents (derived from these definitions), and what the typed
//! client (`sessiond-client`) reads. One definition serves all three, so they cannot drift.
//!
//! # Layout
//! - Requests and answers of the `/v1` routes (§9.3): [`CreateSessionRequest`] →
//!   [`CreateSessionResponse`], [`ValidateRequest`] → [`ValidateResponse`], [`RefreshRequest`]
//!   → [`RefreshResponse`], … with the shared views [`SessionView`], [`TokensView`],
//!   [`CredentialView`].
//! - The operations endpoints and the JWK Set: [`Health`], [`Readiness`], [`JwkSet`].
//! - Errors: [`Problem`], the `application/problem+json` body of every error (§9.2).
//! - Event streams (§9.6): [`EventData`] and [`ResyncData`], the `data` of the SSE events.
//! - Path and query parameters as the server extracts them: [`SessionPath`], [`UserPath`],
//!   [`TenantQuery`].
#![forbid(unsafe_code)]
#![deny(missing_docs)]

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sessiond::error::ErrorCode;
use sessiond::{
    Credential, KeyId, RevokeReason, Session, SessionId, SessionKind, Tenant, Timestamp, TokenPair,
    UserId, Validated,
};
use utoipa::{IntoParams, ToSchema};

// The rules below are the server's (docs/DESIGN.md §2.1, §5.3), spelled for JSON Schema; the
// tests of the server's `openapi` module check the numbers against the library's constants. JSON Schema counts
// characters where the server counts UTF-8 bytes, and cannot say "bytes": `maxLength` is the byte
// limit (exact for ASCII, and a bound every accepted value meets), the descriptions say bytes.
//
// - names (`user_id`, `tenant`, claim ids): 1 to 256 bytes, no control character (Unicode Cc);
// - `ip` at most 64 bytes, `user_agent` at most 1024, neither with a control character;
// - ids: `ses-` or `sk-` and the canonical base64url of 16 bytes (22 characters, the last one
//   carrying 2 bits: `A`, `Q`, `g` or `w`);
// - revoke reasons: `[a-z0-9_]{1,64}`.

/// A session as the API shows it: never a secret or a hash. Times are RFC 3339 UTC.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SessionView {
    /// `ses-…`
    #[schema(pattern = "^ses-[A-Za-z0-9_-]{21}[AQgw]$")]
    pub id: String,
    /// The application's user id.
    #[schema(
        min_length = 1,
        max_length = 256,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]+$"
    )]
    pub user_id: String,
    /// The tenant.
    #[schema(
        min_length = 1,
        max_length = 256,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]+$"
    )]
    pub tenant: String,
    /// `cookie`, `tokens` or `browser`.
    #[schema(value_type = KindParam)]
    pub kind: String,
    /// Creation time.
    #[schema(format = DateTime)]
    pub created_at: String,
    /// Last recorded activity.
    #[schema(format = DateTime)]
    pub last_seen_at: String,
    /// End of the idle window.
    #[schema(format = DateTime)]
    pub idle_expires_at: String,
    /// End of the absolute lifetime.
    #[schema(format = DateTime)]
    pub absolute_expires_at: String,
    /// Revocation time, if revoked.
    #[schema(format = DateTime, required = true)]
    pub revoked_at: Option<String>,
    /// Revocation reason code, if revoked.
    #[schema(pattern = "^[a-z0-9_]{1,64}$", required = true)]
    pub revoke_reason: Option<String>,
    /// IP recorded at creation.
    #[schema(required = true)]
    pub ip: Option<String>,
    /// User-Agent recorded at creation.
    #[schema(required = true)]
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

/// A wire value that does not turn back into the library's type: `field` is outside its rules
/// (a server of another version, or not a sessiond server). Names the field, never its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidView {
    /// The offending field, e.g. `session.idle_expires_at`.
    pub field: &'static str,
}

impl std::fmt::Display for InvalidView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "`{}` is not a valid value", self.field)
    }
}

impl std::error::Error for InvalidView {}

/// Maps any parse error of `field` to [`InvalidView`] (the error's text may quote the value).
fn invalid<E>(field: &'static str) -> impl Fn(E) -> InvalidView {
    move |_| InvalidView { field }
}

fn wire_time(text: &str, field: &'static str) -> Result<Timestamp, InvalidView> {
    Timestamp::parse_rfc3339(text).map_err(|_| InvalidView { field })
}

impl TryFrom<&SessionView> for Session {
    type Error = InvalidView;

    /// The session a server described (the inverse of `From<&Session>`).
    fn try_from(v: &SessionView) -> Result<Self, InvalidView> {
        Ok(Session {
            id: SessionId::parse(&v.id).map_err(invalid("session.id"))?,
            user_id: UserId::new(v.user_id.as_str()).map_err(invalid("session.user_id"))?,
            tenant: Tenant::new(v.tenant.as_str()).map_err(invalid("session.tenant"))?,
            kind: SessionKind::parse(&v.kind).ok_or(InvalidView {
                field: "session.kind",
            })?,
            created_at: wire_time(&v.created_at, "session.created_at")?,
            last_seen_at: wire_time(&v.last_seen_at, "session.last_seen_at")?,
            idle_expires_at: wire_time(&v.idle_expires_at, "session.idle_expires_at")?,
            absolute_expires_at: wire_time(&v.absolute_expires_at, "session.absolute_expires_at")?,
            revoked_at: v
                .revoked_at
                .as_deref()
                .map(|t| wire_time(t, "session.revoked_at"))
                .transpose()?,
            revoke_reason: v
                .revoke_reason
                .as_deref()
                .map(|r| RevokeReason::new(r).map_err(invalid("session.revoke_reason")))
                .transpose()?,
            ip: v.ip.clone(),
            user_agent: v.user_agent.clone(),
            claims: v.claims.clone(),
        })
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
    /// Whose session: 1 to 256 bytes, no control characters.
    #[schema(
        min_length = 1,
        max_length = 256,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]+$"
    )]
    pub user_id: String,
    /// Tenant (default `default`): 1 to 256 bytes, no control characters.
    #[schema(
        min_length = 1,
        max_length = 256,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]+$"
    )]
    pub tenant: Option<String>,
    /// Credential shape.
    pub kind: KindParam,
    /// Client IP, for binding and audit: at most 64 bytes, no control characters.
    #[schema(max_length = 64, pattern = r"^[^\u0000-\u001F\u007F-\u009F]*$")]
    pub ip: Option<String>,
    /// Client User-Agent, for binding: at most 1024 bytes, no control characters.
    #[schema(max_length = 1024, pattern = r"^[^\u0000-\u001F\u007F-\u009F]*$")]
    pub user_agent: Option<String>,
    /// Custom claims copied into access tokens: no reserved claim name, at most 4096 bytes
    /// serialized.
    #[schema(schema_with = schemas::custom_claims)]
    pub claims: Option<Map<String, Value>>,
}

impl CreateSessionRequest {
    /// A session of `kind` for `user_id` in the default tenant, without IP, User-Agent or
    /// claims (set the public fields for those).
    ///
    /// ```
    /// use sessiond_api::{CreateSessionRequest, KindParam};
    ///
    /// let mut request = CreateSessionRequest::new("alice", KindParam::Cookie);
    /// request.ip = Some("203.0.113.7".to_owned());
    /// ```
    pub fn new(user_id: impl Into<String>, kind: KindParam) -> Self {
        CreateSessionRequest {
            user_id: user_id.into(),
            tenant: None,
            kind,
            ip: None,
            user_agent: None,
            claims: None,
        }
    }
}

/// A token pair as the API returns it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TokensView {
    /// The access JWT.
    pub access_token: String,
    /// The refresh JWT; absent for browser sessions (it travels only in the HttpOnly cookie).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub refresh_token: Option<String>,
    /// Always `Bearer`.
    #[schema(pattern = "^Bearer$")]
    pub token_type: String,
    /// Seconds until the access token expires.
    #[schema(minimum = 0)]
    pub expires_in: i64,
    /// The access token's `exp`.
    #[schema(format = DateTime)]
    pub access_expires_at: String,
    /// The refresh token's `exp`.
    #[schema(format = DateTime)]
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
    #[schema(nullable = false)]
    pub cookie: Option<String>,
    /// The CSRF token (kind `cookie`).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub csrf_token: Option<String>,
    /// The tokens (kinds `tokens` and `browser`; no refresh token for `browser`).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub tokens: Option<TokensView>,
    /// `Set-Cookie` values to forward to the browser (kinds `cookie` and `browser`).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub set_cookie: Option<Vec<String>>,
}

/// `POST /v1/sessions/validate`: exactly one of `cookie`, `cookie_header`, `access_token` (a
/// `null` one is not given).
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
    /// The client IP (binding): at most 64 bytes, no control characters.
    #[schema(max_length = 64, pattern = r"^[^\u0000-\u001F\u007F-\u009F]*$")]
    pub ip: Option<String>,
    /// The client User-Agent (binding): at most 1024 bytes, no control characters.
    #[schema(max_length = 1024, pattern = r"^[^\u0000-\u001F\u007F-\u009F]*$")]
    pub user_agent: Option<String>,
}

impl ValidateRequest {
    /// Validates a session cookie's value (no CSRF token, no binding inputs; set the public
    /// fields for those).
    ///
    /// ```
    /// use sessiond_api::ValidateRequest;
    ///
    /// let mut request = ValidateRequest::cookie("v1.ses-….sk-….mac");
    /// request.csrf_token = Some("the X-CSRF-Token header".to_owned());
    /// request.require_csrf = true;
    /// ```
    pub fn cookie(value: impl Into<String>) -> Self {
        ValidateRequest {
            cookie: Some(value.into()),
            ..ValidateRequest::empty()
        }
    }

    /// Validates the session cookie found in a whole `Cookie` request header.
    pub fn cookie_header(header: impl Into<String>) -> Self {
        ValidateRequest {
            cookie_header: Some(header.into()),
            ..ValidateRequest::empty()
        }
    }

    /// Validates an access JWT.
    pub fn access_token(token: impl Into<String>) -> Self {
        ValidateRequest {
            access_token: Some(token.into()),
            ..ValidateRequest::empty()
        }
    }

    fn empty() -> Self {
        ValidateRequest {
            cookie: None,
            cookie_header: None,
            access_token: None,
            csrf_token: None,
            require_csrf: false,
            ip: None,
            user_agent: None,
        }
    }

    /// The credential fields, of which a request gives exactly one (a `null` is not given).
    pub const CREDENTIALS: [&'static str; 3] = ["cookie", "cookie_header", "access_token"];

    /// Each of [`Self::CREDENTIALS`] and whether the request gives it.
    pub fn credentials(&self) -> impl Iterator<Item = (&'static str, bool)> {
        let given = [
            self.cookie.is_some(),
            self.cookie_header.is_some(),
            self.access_token.is_some(),
        ];
        Self::CREDENTIALS.into_iter().zip(given)
    }
}

/// What was presented.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CredentialView {
    /// `cookie` or `access_token`.
    #[serde(rename = "type")]
    #[schema(pattern = "^(cookie|access_token)$")]
    pub kind: String,
    /// The key that signed it.
    #[schema(pattern = "^sk-[A-Za-z0-9_-]{21}[AQgw]$")]
    pub key_id: String,
    /// The token's `exp` (access tokens).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(format = DateTime, nullable = false)]
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

impl TryFrom<&CredentialView> for Credential {
    type Error = InvalidView;

    /// The credential a server described (the inverse of `From<&Credential>`).
    fn try_from(v: &CredentialView) -> Result<Self, InvalidView> {
        let key_id = KeyId::parse(&v.key_id).map_err(|_| InvalidView {
            field: "credential.key_id",
        })?;
        match (v.kind.as_str(), v.expires_at.as_deref()) {
            ("cookie", _) => Ok(Credential::Cookie { key_id }),
            ("access_token", Some(exp)) => Ok(Credential::AccessToken {
                key_id,
                expires_at: wire_time(exp, "credential.expires_at")?,
            }),
            ("access_token", None) => Err(InvalidView {
                field: "credential.expires_at",
            }),
            _ => Err(InvalidView {
                field: "credential.type",
            }),
        }
    }
}

impl TryFrom<&ValidateResponse> for Validated {
    type Error = InvalidView;

    /// The validation a server reported.
    fn try_from(v: &ValidateResponse) -> Result<Self, InvalidView> {
        Ok(Validated::new(
            Session::try_from(&v.session)?,
            wire_time(&v.deadline, "deadline")?,
            Credential::try_from(&v.credential)?,
        ))
    }
}

/// `200` of `POST /v1/sessions/validate`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ValidateResponse {
    /// The session.
    pub session: SessionView,
    /// When this credential stops being valid (earliest expiry).
    #[schema(format = DateTime)]
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
    /// session refreshed without it is refused (401 `binding_mismatch`). At most 64 bytes, no
    /// control characters.
    #[serde(default)]
    #[schema(max_length = 64, pattern = r"^[^\u0000-\u001F\u007F-\u009F]*$")]
    pub ip: Option<String>,
    /// The client's User-Agent, checked like `ip` (`sessions.bind_user_agent`). At most 1024
    /// bytes, no control characters.
    #[serde(default)]
    #[schema(max_length = 1024, pattern = r"^[^\u0000-\u001F\u007F-\u009F]*$")]
    pub user_agent: Option<String>,
}

impl RefreshRequest {
    /// Refreshes with `refresh_token`, without binding inputs (set `ip` and `user_agent` for a
    /// session bound to them).
    pub fn new(refresh_token: impl Into<String>) -> Self {
        RefreshRequest {
            refresh_token: refresh_token.into(),
            ip: None,
            user_agent: None,
        }
    }
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
    #[schema(pattern = "^[a-z0-9_]{1,64}$")]
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

/// `{id}` of the `/v1/sessions/{id}…` routes. An id that is not a session id names no session
/// (404 `session_not_found`, as for an unknown one).
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct SessionPath {
    /// The session's id, `ses-` and 22 base64url characters.
    #[param(pattern = "^ses-[A-Za-z0-9_-]{21}[AQgw]$")]
    pub id: String,
}

/// `{user_id}` of the `/v1/users/{user_id}…` routes.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct UserPath {
    /// The application's user id: 1 to 256 bytes, no control characters.
    #[param(
        min_length = 1,
        max_length = 256,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]+$"
    )]
    pub user_id: String,
}

/// `?tenant=`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct TenantQuery {
    /// Only this tenant: 1 to 256 bytes, no control characters.
    #[param(
        min_length = 1,
        max_length = 256,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]+$"
    )]
    pub tenant: Option<String>,
}

/// `POST /v1/users/{user_id}/sessions/revoke` (body optional).
#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RevokeUserRequest {
    /// Keep this session ("log out other devices").
    #[schema(pattern = "^ses-[A-Za-z0-9_-]{21}[AQgw]$")]
    pub except: Option<String>,
    /// Only this tenant: 1 to 256 bytes, no control characters.
    #[schema(
        min_length = 1,
        max_length = 256,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]+$"
    )]
    pub tenant: Option<String>,
}

/// `200` of `POST /v1/users/{user_id}/sessions/revoke`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RevokeUserResponse {
    /// How many sessions were revoked.
    pub revoked: usize,
}

/// `POST /v1/claims`: a token, or an id with its expiry (never both, nothing else).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum ClaimRequest {
    /// A JWT from a trusted issuer (or one of our access tokens).
    Token(TokenClaim),
    /// A raw id.
    Id(IdClaim),
}

/// `POST /v1/claims` with a token.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenClaim {
    /// A JWT from a trusted issuer (or one of our access tokens).
    pub token: String,
}

/// `POST /v1/claims` with a raw id.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IdClaim {
    /// The id: 1 to 256 bytes, no control characters.
    #[schema(
        min_length = 1,
        max_length = 256,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]+$"
    )]
    pub id: String,
    /// Until when the claim is kept (RFC 3339); one already past is 401 `token_expired`.
    #[schema(format = DateTime)]
    pub expires_at: String,
}

/// `201` of `POST /v1/claims`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ClaimResponse {
    /// Always true.
    #[schema(value_type = bool, schema_with = schemas::always_true)]
    pub claimed: bool,
    /// The token's issuer (token claims).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub issuer: Option<String>,
    /// The token's subject (token claims).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub subject: Option<String>,
    /// Until when the claim is kept.
    #[schema(format = DateTime)]
    pub expires_at: String,
    /// The token's claims (token claims).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false, value_type = Object)]
    pub claims: Option<Map<String, Value>>,
}

/// `200` of `POST /auth/browser/refresh`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct BrowserRefreshResponse {
    /// The new access JWT (keep it in memory only).
    pub access_token: String,
    /// Its `exp`.
    #[schema(format = DateTime)]
    pub expires_at: String,
    /// Whole seconds of the access token's life left, by the server's clock (so a page does not
    /// depend on its own clock).
    #[schema(minimum = 0)]
    pub expires_in: i64,
}

impl BrowserRefreshResponse {
    /// The access half of `pair`, as of `now`.
    pub fn new(pair: &TokenPair, now: sessiond::Timestamp) -> Self {
        BrowserRefreshResponse {
            access_token: pair.access_token.expose().clone(),
            expires_at: pair.access_expires_at.to_rfc3339(),
            expires_in: (pair.access_expires_at.unix_seconds() - now.unix_seconds()).max(0),
        }
    }
}

/// `POST /v1/browser/login-codes`: a login code for the browser login handoff.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginCodeRequest {
    /// Whose session: 1 to 256 bytes, no control characters.
    #[schema(
        min_length = 1,
        max_length = 256,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]+$"
    )]
    pub user_id: String,
    /// Tenant (default `default`): 1 to 256 bytes, no control characters.
    #[schema(
        min_length = 1,
        max_length = 256,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]+$"
    )]
    pub tenant: Option<String>,
    /// Custom claims copied into access tokens: no reserved claim name; the whole code must
    /// stay within 2048 characters.
    #[schema(schema_with = schemas::custom_claims)]
    pub claims: Option<Map<String, Value>>,
    /// The page's PKCE challenge: base64url without padding of SHA-256 of its code verifier
    /// (43 characters, canonical: the last one carries 4 bits and 2 zero bits).
    #[schema(
        min_length = 43,
        max_length = 43,
        pattern = "^[A-Za-z0-9_-]{42}[AEIMQUYcgkosw048]$"
    )]
    pub code_challenge: String,
    /// Always `S256`.
    pub code_challenge_method: ChallengeMethod,
}

/// A PKCE challenge method: only `S256`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub enum ChallengeMethod {
    /// SHA-256, base64url without padding (RFC 7636).
    S256,
}

/// `201` of `POST /v1/browser/login-codes`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct LoginCodeResponse {
    /// The code for the page to exchange at `POST /auth/browser/login` (opaque, URL-safe,
    /// at most 2048 characters, single use).
    #[schema(max_length = 2048, pattern = "^[A-Za-z0-9._-]+$")]
    pub login_code: String,
    /// The id the session will have once the code is exchanged (no session exists before).
    #[schema(pattern = "^ses-[A-Za-z0-9_-]{21}[AQgw]$")]
    pub session_id: String,
    /// Until when the code may be exchanged (`browser.login_code_ttl`).
    #[schema(format = DateTime)]
    pub expires_at: String,
}

/// `POST /auth/browser/login`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BrowserLoginRequest {
    /// The login code from `POST /v1/browser/login-codes`.
    #[schema(max_length = 2048)]
    pub code: String,
    /// The PKCE code verifier whose S256 challenge the code carries: 43 to 128 characters of
    /// `[A-Za-z0-9-._~]`.
    #[schema(
        min_length = 43,
        max_length = 128,
        pattern = "^[A-Za-z0-9._~-]{43,128}$"
    )]
    pub code_verifier: String,
}

/// `200` of `POST /auth/browser/login`: as [`BrowserRefreshResponse`], plus the session's id.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct BrowserLoginResponse {
    /// The access JWT (keep it in memory only).
    pub access_token: String,
    /// Its `exp`.
    #[schema(format = DateTime)]
    pub expires_at: String,
    /// Whole seconds of the access token's life left, by the server's clock.
    #[schema(minimum = 0)]
    pub expires_in: i64,
    /// The new session.
    #[schema(pattern = "^ses-[A-Za-z0-9_-]{21}[AQgw]$")]
    pub session_id: String,
}

/// One of the user's sessions as the account page shows it (`GET /auth/browser/sessions`).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DeviceSession {
    /// `ses-…`
    #[schema(pattern = "^ses-[A-Za-z0-9_-]{21}[AQgw]$")]
    pub id: String,
    /// Whether it is the session of the access token that asked.
    pub current: bool,
    /// Created.
    #[schema(format = DateTime)]
    pub created_at: String,
    /// Last activity (validation or refresh).
    #[schema(format = DateTime)]
    pub last_seen_at: String,
    /// Client IP recorded at creation.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub ip: Option<String>,
    /// Client User-Agent recorded at creation.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub user_agent: Option<String>,
    /// What the User-Agent says about the device (empty when it says nothing known).
    pub device: DeviceInfo,
}

/// The device a User-Agent names, as far as it can be told.
#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
pub struct DeviceInfo {
    /// Browser name, e.g. `Chrome`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub browser: Option<String>,
    /// Browser version.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub browser_version: Option<String>,
    /// Operating system, e.g. `Mac OSX`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub os: Option<String>,
    /// Operating system version.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub os_version: Option<String>,
    /// `pc`, `smartphone`, `mobilephone`, `appliance` or `crawler`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub category: Option<String>,
}

/// `200` of `GET /auth/browser/sessions`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DeviceSessionsResponse {
    /// The user's active sessions in the token's tenant, most recently seen first.
    pub sessions: Vec<DeviceSession>,
}

/// `200` of `GET /healthz`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Health {
    /// Always `ok`.
    #[schema(pattern = "^ok$")]
    pub status: String,
}

/// `200` of `GET /readyz`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Readiness {
    /// Always `ready` (otherwise the answer is 503 `unavailable`).
    #[schema(pattern = "^ready$")]
    pub status: String,
}

/// `200` of `GET /.well-known/jwks.json`: a JWK Set (RFC 7517) of the access-token keys that
/// verify, active and retained; Ed25519 only (never an HS256 secret, never a private member).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct JwkSet {
    /// The public keys.
    pub keys: Vec<PublicJwk>,
}

/// One public key of [`JwkSet`].
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PublicJwk {
    /// `OKP`.
    #[schema(pattern = "^OKP$")]
    pub kty: String,
    /// `Ed25519`.
    #[schema(pattern = "^Ed25519$")]
    pub crv: String,
    /// The public key, base64url (32 bytes).
    #[schema(pattern = "^[A-Za-z0-9_-]{43}$")]
    pub x: String,
    /// `sig`.
    #[serde(rename = "use")]
    #[schema(pattern = "^sig$")]
    pub key_use: String,
    /// `EdDSA`.
    #[schema(pattern = "^EdDSA$")]
    pub alg: String,
    /// The key's id, as in the `kid` of the tokens it signs.
    #[schema(pattern = "^sk-[A-Za-z0-9_-]{21}[AQgw]$")]
    pub kid: String,
}

// `application/problem+json` (RFC 9457; docs/DESIGN.md §9.2); `code` is the contract, and
// [`Problem::error_code`] reads it back. The doc line below is the schema's description in
// `/openapi.json`.
/// The body of every error response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Problem {
    /// A URI naming the problem type: `urn:sessiond:problem:<code>`.
    #[serde(rename = "type")]
    #[schema(pattern = "^urn:sessiond:problem:[a-z_]+$")]
    pub kind: String,
    /// A short human-readable summary.
    pub title: String,
    /// The HTTP status.
    #[schema(minimum = 400, maximum = 599)]
    pub status: u16,
    /// The machine-readable code: the contract (the responses of each operation say which).
    #[schema(schema_with = schemas::every_code)]
    pub code: String,
    /// A human-readable explanation of this occurrence (RFC 9457). sessiond does not send one
    /// (input is never echoed); clients keep it when something in between (a proxy speaking
    /// problem+json) does, so it is not part of the documented schema.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(ignore)]
    pub detail: Option<String>,
}

impl Problem {
    /// The problem the server sends for `code`: its status and title come with the code.
    ///
    /// ```
    /// use sessiond::ErrorCode;
    /// use sessiond_api::Problem;
    ///
    /// let p = Problem::new(ErrorCode::InvalidCredential);
    /// assert_eq!((p.status, p.kind.as_str()), (401, "urn:sessiond:problem:invalid_credential"));
    /// ```
    pub fn new(code: ErrorCode) -> Self {
        Problem {
            kind: format!("urn:sessiond:problem:{code}"),
            title: code.title().to_owned(),
            status: code.status(),
            code: code.as_str().to_owned(),
            detail: None,
        }
    }

    /// The code, by [`ErrorCode::from_wire`] (the status tells apart the two meanings of
    /// `session_not_found`); `None` for a code this version does not know.
    ///
    /// ```
    /// use sessiond::ErrorCode;
    /// use sessiond_api::Problem;
    ///
    /// let p = Problem::new(ErrorCode::UnknownSession);
    /// assert_eq!(p.error_code(), Some(ErrorCode::UnknownSession));
    /// ```
    pub fn error_code(&self) -> Option<ErrorCode> {
        ErrorCode::from_wire(&self.code, self.status)
    }
}

/// The distinct wire strings of `codes`, in order (two codes share `session_not_found`).
///
/// ```
/// use sessiond::ErrorCode;
///
/// let wire = sessiond_api::wire_codes(&[ErrorCode::SessionNotFound, ErrorCode::UnknownSession]);
/// assert_eq!(wire, ["session_not_found"]);
/// ```
pub fn wire_codes(codes: &[ErrorCode]) -> Vec<&'static str> {
    let mut wire: Vec<&'static str> = Vec::new();
    for code in codes {
        if !wire.contains(&code.as_str()) {
            wire.push(code.as_str());
        }
    }
    wire
}

/// The `data` of the `revoked`, `expired` and `refreshed` events of the event streams
/// (docs/DESIGN.md §9.6).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventData {
    /// The session the event is about.
    pub session_id: SessionId,
    /// `revoked`: the revoke reason (absent when none was recorded); `expired`: `idle_expired`,
    /// `absolute_expired`, `deleted` or `certificate_expired`; `refreshed`: absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// When it happened, by the server's clock.
    pub at: Timestamp,
}

/// The `data` of the `ended` event of `GET /auth/browser/events` (docs/DESIGN.md §9.6).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndedData {
    /// The session that ended.
    pub session_id: SessionId,
    /// `logout`, `reuse_detected`, `revoked` or `expired`.
    pub reason: String,
    /// `revoked`: the revoke reason; `expired`: `idle_expired`, `absolute_expired` or `deleted`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// When it ended, by the server's clock.
    pub at: Timestamp,
}

/// The `data` of a `resync` event: events could not be replayed; re-read the user's sessions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResyncData {
    /// Why: `replay_unavailable` ([`ResyncData::REPLAY_UNAVAILABLE`]).
    pub reason: String,
}

impl ResyncData {
    /// The one reason the server sends today.
    pub const REPLAY_UNAVAILABLE: &'static str = "replay_unavailable";
}

/// The `data` of a `heartbeat` event (the deployment-wide stream only, every `[events]
/// keep_alive`): the stream is alive and every event up to this event's `id` has been sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeartbeatData {
    /// When it was sent, by the server's clock.
    pub at: Timestamp,
    /// The access-token keys that verify now (the `kid`s of the JWKS): a verifier drops any
    /// other key it holds, so a retired key stops verifying within one heartbeat.
    #[serde(default)]
    pub keys: Vec<KeyId>,
}

/// Schemas the derive cannot spell with attributes.
mod schemas {
    use sessiond::error::ErrorCode;
    use sessiond::service::{MAX_CLAIMS_BYTES, RESERVED_CLAIMS};
    use utoipa::openapi::schema::{ObjectBuilder, Schema, SchemaType, Type};

    /// `Problem.code`: one of every wire code.
    pub(super) fn every_code() -> Schema {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .enum_values(Some(super::wire_codes(&ErrorCode::ALL)))
            .description(Some(
                "The machine-readable code: the contract (the responses of each operation say which).",
            ))
            .into()
    }

    /// `claims` of `POST /v1/sessions`: an object (or null) whose names are not reserved.
    pub(super) fn custom_claims() -> Schema {
        let not_reserved = format!("^(?!(?:{})$)", RESERVED_CLAIMS.join("|"));
        ObjectBuilder::new()
            .schema_type(SchemaType::from_iter([Type::Object, Type::Null]))
            .property_names(Some(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .pattern(Some(not_reserved)),
            ))
            .description(Some(format!(
                "Custom claims copied into access tokens: none named {}; at most {} bytes \
                 serialized.",
                RESERVED_CLAIMS.join(", "),
                MAX_CLAIMS_BYTES
            )))
            .into()
    }

    /// `claimed`: `true`.
    pub(super) fn always_true() -> Schema {
        ObjectBuilder::new()
            .schema_type(Type::Boolean)
            .enum_values(Some([true]))
            .description(Some("Always true."))
            .into()
    }
}
