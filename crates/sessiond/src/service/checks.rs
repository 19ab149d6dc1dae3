//! The checks every credential path shares: status, binding, CSRF, and the rules for the
//! client facts a request carries.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::types::{MAX_IP_BYTES, MAX_USER_AGENT_BYTES};
use super::{RequestContext, SessionService};
use crate::clock::Timestamp;
use crate::error::{Binding, Expiry, SessionError};
use crate::session::{Session, SessionStatus};

pub(crate) fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

fn check_len(value: Option<&str>, max: usize, what: &'static str) -> Result<(), SessionError> {
    match value {
        Some(v) if v.len() > max || v.chars().any(char::is_control) => {
            Err(SessionError::InvalidInput(what))
        }
        _ => Ok(()),
    }
}

/// The session-creation rules for the client facts a request carries: an `ip` of at most 64
/// bytes and a `user_agent` of at most 1024, neither with control characters.
pub(crate) fn check_client(ip: Option<&str>, user_agent: Option<&str>) -> Result<(), SessionError> {
    check_len(ip, MAX_IP_BYTES, "ip is too long or has control characters")?;
    check_len(
        user_agent,
        MAX_USER_AGENT_BYTES,
        "user_agent is too long or has control characters",
    )
}

/// [`check_client`] on a request's context.
pub(crate) fn check_context(ctx: &RequestContext<'_>) -> Result<(), SessionError> {
    check_client(ctx.ip, ctx.user_agent)
}

/// The status of `session` at `now` as a result: active, or the error that names why not.
pub(crate) fn check_status(session: &Session, now: Timestamp) -> Result<(), SessionError> {
    match session.status(now) {
        SessionStatus::Active => Ok(()),
        SessionStatus::Revoked => Err(SessionError::Revoked),
        SessionStatus::AbsoluteExpired => Err(SessionError::Expired(Expiry::Absolute)),
        SessionStatus::IdleExpired => Err(SessionError::Expired(Expiry::Idle)),
    }
}

impl SessionService {
    pub(crate) fn check_binding(
        &self,
        session: &Session,
        ctx: &RequestContext<'_>,
    ) -> Result<(), SessionError> {
        let policy = &self.inner.config.sessions;
        // A recorded value must match (IPs as addresses); a request that omits it fails closed.
        if policy.bind_ip {
            if let Some(recorded) = &session.ip {
                if !same_ip(recorded, ctx.ip) {
                    return Err(SessionError::BindingMismatch(Binding::Ip));
                }
            }
        }
        if policy.bind_user_agent {
            if let Some(recorded) = &session.user_agent {
                if ctx.user_agent != Some(recorded.as_str()) {
                    return Err(SessionError::BindingMismatch(Binding::UserAgent));
                }
            }
        }
        Ok(())
    }
}

/// Double-submit CSRF check: SHA-256 of the presented token against the row's hash, compared
/// in constant time. An empty header counts as missing.
pub(crate) fn check_csrf(
    stored: Option<&[u8; 32]>,
    ctx: &RequestContext<'_>,
) -> Result<(), SessionError> {
    match ctx.csrf_token.filter(|t| !t.is_empty()) {
        None if ctx.require_csrf => Err(SessionError::CsrfMissing),
        None => Ok(()),
        Some(token) => {
            let presented = sha256(token.as_bytes());
            match stored {
                Some(stored) if bool::from(presented.ct_eq(stored)) => Ok(()),
                _ => Err(SessionError::CsrfMismatch),
            }
        }
    }
}

/// Whether the IP seen on a request is the recorded one. Two addresses compare as addresses
/// (`2001:DB8::1` is `2001:db8::1`, `::ffff:192.0.2.1` is `192.0.2.1`); anything that does not
/// parse as an address must match exactly. A request without an IP never matches.
fn same_ip(recorded: &str, seen: Option<&str>) -> bool {
    let Some(seen) = seen else {
        return false;
    };
    match (
        recorded.parse::<std::net::IpAddr>(),
        seen.parse::<std::net::IpAddr>(),
    ) {
        (Ok(a), Ok(b)) => a.to_canonical() == b.to_canonical(),
        _ => recorded == seen,
    }
}

#[cfg(test)]
mod tests {
    use super::same_ip;

    #[test]
    fn ip_binding_compares_addresses_not_spellings() {
        let cases: [(&str, Option<&str>, bool); 9] = [
            ("192.0.2.1", Some("192.0.2.1"), true),
            ("192.0.2.1", Some("192.0.2.2"), false),
            ("192.0.2.1", None, false),
            ("2001:DB8::1", Some("2001:db8:0:0:0:0:0:1"), true),
            ("::ffff:192.0.2.1", Some("192.0.2.1"), true),
            ("192.0.2.1", Some("::ffff:192.0.2.1"), true),
            ("192.0.2.1", Some("192.0.2.1 "), false),
            ("not-an-ip", Some("not-an-ip"), true),
            ("not-an-ip", Some("192.0.2.1"), false),
        ];
        for (recorded, seen, want) in cases {
            assert_eq!(same_ip(recorded, seen), want, "{recorded:?} vs {seen:?}");
        }
    }
}
