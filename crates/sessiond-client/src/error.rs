//! [`ClientError`]: every way a call can fail, split so that a caller tells "could not be
//! checked" ([`ClientError::is_outage`]) from "refused" ([`ClientError::Api`]) by type, never by
//! string.

use sessiond::error::ErrorCode;
use sessiond_api::Problem;

/// A failed call of the HTTP API.
///
/// No variant holds a secret: the API key travels in a header that is never kept, request bodies
/// (cookies, tokens, CSRF tokens) are never part of an error, and a body that did not parse is
/// described by its position, not by its text. Transport errors keep reqwest's error as their
/// source; it names the URL (route and ids, never a credential).
///
/// ```
/// use sessiond::ErrorCode;
/// use sessiond_client::ClientError;
///
/// fn verdict(result: Result<(), ClientError>) -> &'static str {
///     match result {
///         Ok(()) => "valid",
///         Err(e) if e.is_outage() => "could not be checked: retry, never log the user out",
///         Err(ClientError::Api { code: ErrorCode::TokenExpired, .. }) => "refresh",
///         Err(ClientError::Api { .. }) => "refused",
///         Err(_) => "client or server bug",
///     }
/// }
/// assert_eq!(verdict(Ok(())), "valid");
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The server answered with a problem: a verdict (401, 403, 409) or refused input (400, 404,
    /// 405, 408, 413, 415, 429). Never an outage (that is [`ClientError::Unavailable`]).
    #[error("{route}: {status} {code}: {title}")]
    Api {
        /// The route template, e.g. `POST /v1/sessions/validate`.
        route: &'static str,
        /// The HTTP status.
        status: u16,
        /// The wire code, the contract (docs/DESIGN.md §8.1).
        code: ErrorCode,
        /// The problem's short summary.
        title: String,
        /// The problem's explanation, when one was sent (sessiond sends none).
        detail: Option<String>,
    },
    /// The server could not decide: 503 `unavailable` (storage or keys unreachable), or a
    /// 502/503/504 from a proxy in between. Nothing was decided; retry.
    #[error("{route}: {status} unavailable: {title}")]
    Unavailable {
        /// The route template.
        route: &'static str,
        /// The HTTP status.
        status: u16,
        /// The problem's title, or the status's reason phrase.
        title: String,
        /// The problem's explanation, when one was sent.
        detail: Option<String>,
    },
    /// No connection to the server could be made (refused, unreachable, DNS, TLS handshake).
    #[error("{route}: cannot connect to sessiond")]
    Connect {
        /// The route template.
        route: &'static str,
        /// reqwest's error.
        #[source]
        source: reqwest::Error,
    },
    /// No answer within the configured time (connect, request, or a silent event stream).
    #[error("{route}: sessiond did not answer in time")]
    Timeout {
        /// The route template.
        route: &'static str,
    },
    /// The exchange broke after the connection was made (reset, malformed HTTP).
    #[error("{route}: transport error")]
    Transport {
        /// The route template.
        route: &'static str,
        /// reqwest's error.
        #[source]
        source: reqwest::Error,
    },
    /// The server answered, but not with what the API documents (another server, another
    /// version, or a bug): a body that does not match the wire type, an unknown error code, an
    /// event stream that does not parse.
    #[error("{route}: unexpected answer ({status}): {reason}")]
    Decode {
        /// The route template.
        route: &'static str,
        /// The HTTP status.
        status: u16,
        /// What did not match, by position and category; never the body's text.
        reason: String,
    },
    /// The client could not be built: a base URL that is not `http(s)://host[/prefix]` or holds
    /// credentials, an API key that is not a header value, a certificate that does not parse, no
    /// rustls `CryptoProvider` installed.
    #[error("cannot build the sessiond client: {reason}")]
    Build {
        /// What is wrong (no secret).
        reason: &'static str,
        /// reqwest's error, when it refused.
        #[source]
        source: Option<reqwest::Error>,
    },
}

impl ClientError {
    /// Whether nothing was decided because sessiond could not be reached or could not decide:
    /// [`Unavailable`](ClientError::Unavailable), [`Connect`](ClientError::Connect),
    /// [`Timeout`](ClientError::Timeout), [`Transport`](ClientError::Transport). A credential
    /// whose check ended in an outage must be neither accepted nor called invalid.
    pub fn is_outage(&self) -> bool {
        matches!(
            self,
            ClientError::Unavailable { .. }
                | ClientError::Connect { .. }
                | ClientError::Timeout { .. }
                | ClientError::Transport { .. }
        )
    }

    /// The wire code of a problem answer: [`ClientError::Api`]'s code, or
    /// [`ErrorCode::Unavailable`] for a 503 `unavailable`; `None` for the other variants.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Api { code, .. } => Some(*code),
            ClientError::Unavailable { .. } => Some(ErrorCode::Unavailable),
            _ => None,
        }
    }

    /// The HTTP status, when the server answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api { status, .. }
            | ClientError::Unavailable { status, .. }
            | ClientError::Decode { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// A transport failure of reqwest, classified.
    pub(crate) fn transport(route: &'static str, source: reqwest::Error) -> Self {
        if source.is_timeout() {
            ClientError::Timeout { route }
        } else if source.is_connect() {
            ClientError::Connect { route, source }
        } else if source.is_decode() {
            ClientError::Decode {
                route,
                status: source.status().map_or(0, |s| s.as_u16()),
                reason: String::from("the body could not be read"),
            }
        } else {
            ClientError::Transport { route, source }
        }
    }

    /// A body that did not deserialize: its position and category only (serde's message may
    /// quote the body, which may hold a token).
    pub(crate) fn decode(route: &'static str, status: u16, error: &serde_json::Error) -> Self {
        let category = match error.classify() {
            serde_json::error::Category::Io => "unreadable",
            serde_json::error::Category::Syntax => "not JSON",
            serde_json::error::Category::Data => "not the documented shape",
            serde_json::error::Category::Eof => "truncated",
        };
        ClientError::Decode {
            route,
            status,
            reason: format!(
                "{category} at line {} column {}",
                error.line(),
                error.column()
            ),
        }
    }

    /// The error of a non-success answer with `body`.
    pub(crate) fn from_answer(route: &'static str, status: u16, body: &[u8]) -> Self {
        let gateway = matches!(status, 502..=504);
        match serde_json::from_slice::<Problem>(body) {
            Ok(problem) => match problem.error_code() {
                Some(ErrorCode::Unavailable) => ClientError::Unavailable {
                    route,
                    status,
                    title: problem.title,
                    detail: problem.detail,
                },
                Some(code) if !gateway => ClientError::Api {
                    route,
                    status,
                    code,
                    title: problem.title,
                    detail: problem.detail,
                },
                Some(_) | None if gateway => ClientError::Unavailable {
                    route,
                    status,
                    title: problem.title,
                    detail: problem.detail,
                },
                _ => ClientError::Decode {
                    route,
                    status,
                    reason: String::from("a problem with a code this client does not know"),
                },
            },
            Err(_) if gateway => ClientError::Unavailable {
                route,
                status,
                title: reqwest::StatusCode::from_u16(status)
                    .ok()
                    .and_then(|s| s.canonical_reason())
                    .unwrap_or("unavailable")
                    .to_owned(),
                detail: None,
            },
            Err(e) => ClientError::decode(route, status, &e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROUTE: &str = "POST /v1/sessions/validate";

    fn problem(code: ErrorCode) -> Vec<u8> {
        serde_json::to_vec(&Problem::new(code)).unwrap()
    }

    #[test]
    fn answers_map_to_variants() {
        let cases: &[(u16, Vec<u8>, Option<ErrorCode>, bool)] = &[
            // status, body, code, outage
            (
                401,
                problem(ErrorCode::InvalidCredential),
                Some(ErrorCode::InvalidCredential),
                false,
            ),
            (
                401,
                problem(ErrorCode::SessionNotFound),
                Some(ErrorCode::SessionNotFound),
                false,
            ),
            (
                404,
                problem(ErrorCode::UnknownSession),
                Some(ErrorCode::UnknownSession),
                false,
            ),
            (
                400,
                problem(ErrorCode::InvalidRequest),
                Some(ErrorCode::InvalidRequest),
                false,
            ),
            (
                503,
                problem(ErrorCode::Unavailable),
                Some(ErrorCode::Unavailable),
                true,
            ),
            (
                502,
                b"<html>Bad Gateway</html>".to_vec(),
                Some(ErrorCode::Unavailable),
                true,
            ),
            (504, Vec::new(), Some(ErrorCode::Unavailable), true),
            (500, b"oops".to_vec(), None, false),
            (
                418,
                br#"{"type":"x","title":"t","status":418,"code":"teapot"}"#.to_vec(),
                None,
                false,
            ),
        ];
        for (status, body, code, outage) in cases {
            let e = ClientError::from_answer(ROUTE, *status, body);
            assert_eq!(e.code(), *code, "{status}: {e:?}");
            assert_eq!(e.is_outage(), *outage, "{status}: {e:?}");
            assert_eq!(e.status(), Some(*status));
        }
    }

    #[test]
    fn a_body_that_does_not_parse_is_not_quoted() {
        let secret = "eyJhbGciOiJFZERTQSJ9.secret-token-value.sig";
        let bodies = [
            format!(r#"{{"type":"x","title":"t","status":401,"code":["{secret}"]}}"#),
            format!(r#"{{"session": "{secret}"#),
            secret.to_owned(),
        ];
        for body in bodies {
            let e = ClientError::from_answer(ROUTE, 401, body.as_bytes());
            assert!(matches!(e, ClientError::Decode { .. }), "{e:?}");
            for shown in [e.to_string(), format!("{e:?}")] {
                assert!(!shown.contains("secret-token-value"), "{shown}");
            }
        }
    }
}
