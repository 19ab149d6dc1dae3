//! The service's error: what a caller of [`crate::SessionService`] can get back.
//!
//! Each variant has a stable wire [`code`](SessionError::code) (docs/DESIGN.md §8.1) and a finer
//! [`reason`](SessionError::reason) for the audit trail, metrics and logs. Expected failures
//! (a bad credential) and unexpected ones (a store outage) are different variants, so a
//! database outage can never be reported as "invalid credential" nor accepted.

use crate::cookie::CookieError;
use crate::id::IdError;
use crate::keys::{KeyError, KeyRefusal};
use crate::store::StoreError;
use crate::token::TokenError;

/// Every wire code of the HTTP API (docs/DESIGN.md §8.1), with its HTTP status and title: a code
/// cannot exist without them. Exhaustive on purpose, so that the server's mapping is checked by
/// the compiler (a new code is a breaking change that every `match` must handle).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// 401: the credential is malformed, forged, or signed by an unusable key.
    InvalidCredential,
    /// 401: the credential verified but names no stored session.
    SessionNotFound,
    /// 401: the session's idle or absolute window has passed.
    SessionExpired,
    /// 401: the token's `exp` (plus leeway) has passed.
    TokenExpired,
    /// 401: the session was revoked.
    SessionRevoked,
    /// 401: a rotated-out refresh token was reused; the session is now revoked.
    RefreshTokenReused,
    /// 401: the request does not match the session's IP/User-Agent binding.
    BindingMismatch,
    /// 401: missing or wrong API key, or any failure of the browser routes.
    Unauthorized,
    /// 403: the API key's scope does not include this route (a `verify` key that tries to
    /// create or revoke).
    Forbidden,
    /// 403: a browser route was called from an origin not in `cookies.allowed_origins` (a
    /// configuration problem, not a session one; a cross-origin page gets no CORS headers and
    /// cannot read it).
    OriginNotAllowed,
    /// 403: CSRF protection was required and no token came.
    CsrfMissing,
    /// 403: the CSRF token does not match the session's.
    CsrfMismatch,
    /// 400: the request is malformed.
    InvalidRequest,
    /// 404: no such route or object.
    NotFound,
    /// 404: an id in the path names no session (`session_not_found` on the wire).
    UnknownSession,
    /// 405: the route does not take this method.
    MethodNotAllowed,
    /// 408: the request body did not arrive in time; the connection closes.
    RequestTimeout,
    /// 409: the one-time token was already used.
    TokenAlreadyUsed,
    /// 413: the body is larger than 64 KiB.
    PayloadTooLarge,
    /// 415: the body is not `application/json`.
    UnsupportedMediaType,
    /// 429: the API key has its most event streams open.
    TooManyStreams,
    /// 503: storage or keys could not be reached; nothing was decided.
    Unavailable,
}

impl ErrorCode {
    /// Every code, once (`SessionNotFound` and `UnknownSession` share a wire string, so the
    /// distinct wire strings are one fewer). [`ErrorCode::index`] keeps the list complete: a new
    /// code fails to compile there until it is listed, and a test checks the two agree.
    pub const ALL: [ErrorCode; 22] = [
        ErrorCode::InvalidCredential,
        ErrorCode::SessionNotFound,
        ErrorCode::SessionExpired,
        ErrorCode::TokenExpired,
        ErrorCode::SessionRevoked,
        ErrorCode::RefreshTokenReused,
        ErrorCode::BindingMismatch,
        ErrorCode::Unauthorized,
        ErrorCode::CsrfMissing,
        ErrorCode::CsrfMismatch,
        ErrorCode::InvalidRequest,
        ErrorCode::NotFound,
        ErrorCode::UnknownSession,
        ErrorCode::MethodNotAllowed,
        ErrorCode::RequestTimeout,
        ErrorCode::TokenAlreadyUsed,
        ErrorCode::PayloadTooLarge,
        ErrorCode::UnsupportedMediaType,
        ErrorCode::TooManyStreams,
        ErrorCode::Unavailable,
        ErrorCode::Forbidden,
        ErrorCode::OriginNotAllowed,
    ];

    /// The position of `self` in [`ErrorCode::ALL`].
    #[cfg_attr(not(test), allow(dead_code))]
    const fn index(self) -> usize {
        match self {
            ErrorCode::InvalidCredential => 0,
            ErrorCode::SessionNotFound => 1,
            ErrorCode::SessionExpired => 2,
            ErrorCode::TokenExpired => 3,
            ErrorCode::SessionRevoked => 4,
            ErrorCode::RefreshTokenReused => 5,
            ErrorCode::BindingMismatch => 6,
            ErrorCode::Unauthorized => 7,
            ErrorCode::CsrfMissing => 8,
            ErrorCode::CsrfMismatch => 9,
            ErrorCode::InvalidRequest => 10,
            ErrorCode::NotFound => 11,
            ErrorCode::UnknownSession => 12,
            ErrorCode::MethodNotAllowed => 13,
            ErrorCode::RequestTimeout => 14,
            ErrorCode::TokenAlreadyUsed => 15,
            ErrorCode::PayloadTooLarge => 16,
            ErrorCode::UnsupportedMediaType => 17,
            ErrorCode::TooManyStreams => 18,
            ErrorCode::Unavailable => 19,
            ErrorCode::Forbidden => 20,
            ErrorCode::OriginNotAllowed => 21,
        }
    }

    /// The code a problem body names, for clients of the HTTP API: `code` is its `code` member,
    /// `status` the response's status. The status only tells apart the two codes that share the
    /// wire string `session_not_found`: [`ErrorCode::UnknownSession`] on a 404 (an id in the
    /// path names no session), [`ErrorCode::SessionNotFound`] otherwise (a credential's session
    /// is gone, 401). `None` for a code this version does not know.
    pub fn from_wire(code: &str, status: u16) -> Option<ErrorCode> {
        if code == ErrorCode::UnknownSession.as_str() {
            return Some(if status == ErrorCode::UnknownSession.status() {
                ErrorCode::UnknownSession
            } else {
                ErrorCode::SessionNotFound
            });
        }
        ErrorCode::ALL.into_iter().find(|c| c.as_str() == code)
    }

    /// The code on the wire (`code` of the problem body, last segment of its `type`).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidCredential => "invalid_credential",
            ErrorCode::SessionNotFound | ErrorCode::UnknownSession => "session_not_found",
            ErrorCode::SessionExpired => "session_expired",
            ErrorCode::TokenExpired => "token_expired",
            ErrorCode::SessionRevoked => "session_revoked",
            ErrorCode::RefreshTokenReused => "refresh_token_reused",
            ErrorCode::BindingMismatch => "binding_mismatch",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::OriginNotAllowed => "origin_not_allowed",
            ErrorCode::CsrfMissing => "csrf_missing",
            ErrorCode::CsrfMismatch => "csrf_mismatch",
            ErrorCode::InvalidRequest => "invalid_request",
            ErrorCode::NotFound => "not_found",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::RequestTimeout => "request_timeout",
            ErrorCode::TokenAlreadyUsed => "token_already_used",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::UnsupportedMediaType => "unsupported_media_type",
            ErrorCode::TooManyStreams => "too_many_streams",
            ErrorCode::Unavailable => "unavailable",
        }
    }

    /// The HTTP status it is served with.
    pub fn status(self) -> u16 {
        match self {
            ErrorCode::InvalidCredential
            | ErrorCode::SessionNotFound
            | ErrorCode::SessionExpired
            | ErrorCode::TokenExpired
            | ErrorCode::SessionRevoked
            | ErrorCode::RefreshTokenReused
            | ErrorCode::BindingMismatch
            | ErrorCode::Unauthorized => 401,
            ErrorCode::CsrfMissing
            | ErrorCode::CsrfMismatch
            | ErrorCode::Forbidden
            | ErrorCode::OriginNotAllowed => 403,
            ErrorCode::InvalidRequest => 400,
            ErrorCode::NotFound | ErrorCode::UnknownSession => 404,
            ErrorCode::MethodNotAllowed => 405,
            ErrorCode::RequestTimeout => 408,
            ErrorCode::TokenAlreadyUsed => 409,
            ErrorCode::PayloadTooLarge => 413,
            ErrorCode::UnsupportedMediaType => 415,
            ErrorCode::TooManyStreams => 429,
            ErrorCode::Unavailable => 503,
        }
    }

    /// A short human-readable summary (the problem body's `title`).
    pub fn title(self) -> &'static str {
        match self {
            ErrorCode::InvalidCredential => {
                "The credential is malformed, forged or signed by an unusable key"
            }
            ErrorCode::SessionNotFound | ErrorCode::UnknownSession => "No such session",
            ErrorCode::SessionExpired => "The session has expired",
            ErrorCode::TokenExpired => "The token has expired",
            ErrorCode::SessionRevoked => "The session was revoked",
            ErrorCode::RefreshTokenReused => {
                "A rotated-out refresh token was reused; the session is revoked"
            }
            ErrorCode::BindingMismatch => "The request does not match the session's binding",
            ErrorCode::Unauthorized => "Unauthorized",
            ErrorCode::Forbidden => "The API key's scope does not allow this route",
            ErrorCode::OriginNotAllowed => "The page's origin is not in cookies.allowed_origins",
            ErrorCode::CsrfMissing => "CSRF token required",
            ErrorCode::CsrfMismatch => "CSRF token does not match",
            ErrorCode::InvalidRequest => "The request is malformed",
            ErrorCode::NotFound => "Not found",
            ErrorCode::MethodNotAllowed => "Method not allowed",
            ErrorCode::RequestTimeout => "The request body did not arrive in time",
            ErrorCode::TokenAlreadyUsed => "The token was already used",
            ErrorCode::PayloadTooLarge => "Request body larger than 64 KiB",
            ErrorCode::UnsupportedMediaType => "Expected application/json",
            ErrorCode::TooManyStreams => "Too many open streams",
            ErrorCode::Unavailable => "Storage or keys are unavailable; retry",
        }
    }

    /// Whether the code reports an outage (storage or keys), as opposed to a verdict or bad
    /// input.
    pub fn is_outage(self) -> bool {
        self == ErrorCode::Unavailable
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Compares with the wire text, for tests and clients that hold the text; code that decides
/// matches on the variants.
impl PartialEq<&str> for ErrorCode {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// Why a credential is not acceptable on its face (before the session row is consulted).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CredentialError {
    /// The cookie value is malformed or its MAC does not verify.
    #[error(transparent)]
    Cookie(#[from] CookieError),
    /// The signing key is unknown, retired past retention, or of another purpose.
    #[error("signing key not usable: {0}")]
    Key(#[source] KeyRefusal),
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
    /// A login code of the browser handoff, or its code verifier, was refused.
    #[error(transparent)]
    LoginCode(#[from] crate::login_code::LoginCodeError),
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
    /// The wire code (docs/DESIGN.md §8.1).
    pub fn code(&self) -> ErrorCode {
        match self {
            SessionError::InvalidCredential(_) => ErrorCode::InvalidCredential,
            SessionError::NotFound => ErrorCode::SessionNotFound,
            SessionError::Expired(_) => ErrorCode::SessionExpired,
            SessionError::TokenExpired => ErrorCode::TokenExpired,
            SessionError::TokenAlreadyUsed => ErrorCode::TokenAlreadyUsed,
            SessionError::Revoked => ErrorCode::SessionRevoked,
            SessionError::RefreshTokenReused => ErrorCode::RefreshTokenReused,
            SessionError::BindingMismatch(_) => ErrorCode::BindingMismatch,
            SessionError::CsrfMissing => ErrorCode::CsrfMissing,
            SessionError::CsrfMismatch => ErrorCode::CsrfMismatch,
            SessionError::InvalidInput(_) | SessionError::InvalidId(_) => ErrorCode::InvalidRequest,
            SessionError::Keys(_) | SessionError::Store(_) => ErrorCode::Unavailable,
        }
    }

    /// Whether nothing was decided because storage or keys could not be reached (503).
    pub fn is_outage(&self) -> bool {
        matches!(self, SessionError::Keys(_) | SessionError::Store(_))
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
                CredentialError::Key(k) => k.reason(),
                CredentialError::KeyMismatch => "key_mismatch",
                CredentialError::WrongKind => "wrong_kind",
                CredentialError::Token(t) => t.reason(),
                CredentialError::SubjectMismatch => "subject_mismatch",
                CredentialError::Foreign(f) => f.reason(),
                CredentialError::UnknownIssuer => "unknown_issuer",
                CredentialError::LoginCode(l) => l.reason(),
            },
            SessionError::Expired(Expiry::Idle) => "idle_expired",
            SessionError::Expired(Expiry::Absolute) => "absolute_expired",
            SessionError::BindingMismatch(Binding::Ip) => "ip_mismatch",
            SessionError::BindingMismatch(Binding::UserAgent) => "user_agent_mismatch",
            other => other.code().as_str(),
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

/// A key ring that could not answer: its store's outage stays a store outage, anything else is
/// a keys outage. Both are 503, never a verdict about a credential.
impl From<KeyError> for SessionError {
    fn from(e: KeyError) -> Self {
        match e {
            KeyError::Store(s) => SessionError::Store(s),
            other => SessionError::Keys(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_is_listed_once_in_order() {
        for (i, code) in ErrorCode::ALL.iter().enumerate() {
            assert_eq!(code.index(), i, "{code:?}");
        }
    }

    #[test]
    fn every_code_round_trips_through_the_wire() {
        for code in ErrorCode::ALL {
            assert_eq!(
                ErrorCode::from_wire(code.as_str(), code.status()),
                Some(code),
                "{code:?}"
            );
        }
        // The shared string: the status decides.
        assert_eq!(
            ErrorCode::from_wire("session_not_found", 401),
            Some(ErrorCode::SessionNotFound)
        );
        assert_eq!(
            ErrorCode::from_wire("session_not_found", 404),
            Some(ErrorCode::UnknownSession)
        );
        for unknown in [
            "",
            "Invalid_Credential",
            "urn:sessiond:problem:not_found",
            "teapot",
        ] {
            assert_eq!(ErrorCode::from_wire(unknown, 400), None, "{unknown}");
        }
    }
}
