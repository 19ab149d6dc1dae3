//! The service's error: what a caller of [`crate::SessionService`] can get back.
//!
//! Each variant has a stable wire [`code`](SessionError::code) (DESIGN §6) and a finer
//! [`reason`](SessionError::reason) for the audit trail, metrics and logs. Expected failures
//! (a bad credential) and unexpected ones (a store outage) are different variants, so a
//! database outage can never be reported as "invalid credential" nor accepted.

use crate::cookie::CookieError;
use crate::id::IdError;
use crate::keys::KeyError;
use crate::store::StoreError;
use crate::token::TokenError;

/// Why a credential is not acceptable on its face (before the session row is consulted).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CredentialError {
    /// The cookie value is malformed or its MAC does not verify.
    #[error(transparent)]
    Cookie(#[from] CookieError),
    /// The signing key is unknown, retired past retention, or of another purpose.
    #[error("signing key not usable: {0}")]
    Key(#[source] KeyError),
    /// The credential was signed by a different key than the one that issued the session.
    #[error("credential key does not match the session")]
    KeyMismatch,
    /// The credential is of a shape the session was not created for.
    #[error("credential does not match the session kind")]
    WrongKind,
    /// One of our JWTs was refused (format, signature, type, issuer, audience, claims).
    #[error(transparent)]
    Token(#[from] TokenError),
    /// A foreign issuer's token was refused by its verifier.
    #[error(transparent)]
    Foreign(#[from] crate::jose::foreign::ForeignError),
    /// The token's `iss` is not a trusted issuer.
    #[error("issuer is not trusted")]
    UnknownIssuer,
    /// The token's subject is not the session's user.
    #[error("token subject does not match the session")]
    SubjectMismatch,
}

/// Which expiry ended a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Expiry {
    /// No activity within the idle window.
    Idle,
    /// Past the absolute lifetime.
    Absolute,
}

/// Which binding did not match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Binding {
    /// The client IP.
    Ip,
    /// The User-Agent.
    UserAgent,
}

/// A failure of a [`crate::SessionService`] operation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    /// The credential is malformed, forged, or signed by an unusable key (401
    /// `invalid_credential`).
    #[error("invalid credential")]
    InvalidCredential(#[source] CredentialError),
    /// The credential verified but names no stored session (401 `session_not_found`).
    #[error("session not found")]
    NotFound,
    /// The session's idle or absolute window has passed (401 `session_expired`).
    #[error("session expired ({0:?})")]
    Expired(Expiry),
    /// The token's `exp` (plus leeway) has passed; refresh or log in again (401
    /// `token_expired`).
    #[error("token expired")]
    TokenExpired,
    /// A one-time token or id was claimed before (409 `token_already_used`).
    #[error("token already used")]
    TokenAlreadyUsed,
    /// The session was revoked (401 `session_revoked`).
    #[error("session revoked")]
    Revoked,
    /// A rotated-out refresh token was presented; the session is now revoked (401
    /// `refresh_token_reused`).
    #[error("refresh token reused")]
    RefreshTokenReused,
    /// IP or User-Agent binding did not match (401 `binding_mismatch`); the session stays valid.
    #[error("{0:?} binding mismatch")]
    BindingMismatch(Binding),
    /// CSRF protection was required and no token came (403 `csrf_missing`).
    #[error("CSRF token missing")]
    CsrfMissing,
    /// The CSRF token does not match the session's (403 `csrf_mismatch`).
    #[error("CSRF token mismatch")]
    CsrfMismatch,
    /// An argument is out of its allowed range (400 `invalid_request`).
    #[error("invalid request: {0}")]
    InvalidInput(&'static str),
    /// An application id or name is malformed (400 `invalid_request`).
    #[error("invalid identifier")]
    InvalidId(#[from] IdError),
    /// The key ring could not provide a signing key (503 `unavailable`).
    #[error("signing keys unavailable")]
    Keys(#[source] KeyError),
    /// Storage failed; nothing was decided (503 `unavailable`).
    #[error("storage unavailable")]
    Store(#[from] StoreError),
}

impl SessionError {
    /// The machine-readable wire code of DESIGN §6.
    pub fn code(&self) -> &'static str {
        match self {
            SessionError::InvalidCredential(_) => "invalid_credential",
            SessionError::NotFound => "session_not_found",
            SessionError::Expired(_) => "session_expired",
            SessionError::TokenExpired => "token_expired",
            SessionError::TokenAlreadyUsed => "token_already_used",
            SessionError::Revoked => "session_revoked",
            SessionError::RefreshTokenReused => "refresh_token_reused",
            SessionError::BindingMismatch(_) => "binding_mismatch",
            SessionError::CsrfMissing => "csrf_missing",
            SessionError::CsrfMismatch => "csrf_mismatch",
            SessionError::InvalidInput(_) | SessionError::InvalidId(_) => "invalid_request",
            SessionError::Keys(_) | SessionError::Store(_) => "unavailable",
        }
    }

    /// A finer reason code for audit records, metrics and logs (never contains input).
    pub fn reason(&self) -> &'static str {
        match self {
            SessionError::InvalidCredential(c) => match c {
                CredentialError::Cookie(e) => match e {
                    CookieError::Empty => "cookie_empty",
                    CookieError::TooLong => "cookie_too_long",
                    CookieError::SegmentCount { .. } => "cookie_segments",
                    CookieError::UnsupportedVersion => "cookie_version",
                    CookieError::MalformedSessionId => "cookie_session_id",
                    CookieError::MalformedKeyId => "cookie_key_id",
                    CookieError::MalformedMac | CookieError::MacLength { .. } => {
                        "cookie_mac_format"
                    }
                    CookieError::BadMac | CookieError::KeyNotHmac => "bad_mac",
                },
                CredentialError::Key(KeyError::Retired) => "key_retired",
                CredentialError::Key(_) => "unknown_key",
                CredentialError::KeyMismatch => "key_mismatch",
                CredentialError::WrongKind => "wrong_kind",
                CredentialError::Token(t) => t.reason(),
                CredentialError::SubjectMismatch => "subject_mismatch",
                CredentialError::Foreign(f) => f.reason(),
                CredentialError::UnknownIssuer => "unknown_issuer",
            },
            SessionError::Expired(Expiry::Idle) => "idle_expired",
            SessionError::Expired(Expiry::Absolute) => "absolute_expired",
            SessionError::BindingMismatch(Binding::Ip) => "ip_mismatch",
            SessionError::BindingMismatch(Binding::UserAgent) => "user_agent_mismatch",
            other => other.code(),
        }
    }

    /// Whether this is a verdict about the credential (audited as a validation failure), as
    /// opposed to bad input or an outage.
    pub fn is_credential_failure(&self) -> bool {
        !matches!(
            self,
            SessionError::InvalidInput(_)
                | SessionError::InvalidId(_)
                | SessionError::Keys(_)
                | SessionError::Store(_)
        )
    }
}
