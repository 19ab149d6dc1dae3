//! The audit trail: one record per lifecycle event, with a reason code.
//!
//! Records carry ids (session, user, tenant, key) and codes, never a token, cookie value, CSRF
//! plaintext or key material. Validation failures are audited too, but at most
//! [`AuditPolicy::failures_per_window`] records per reason per window, so a flood of forged
//! cookies cannot become a flood of writes; [`crate::metrics::Metrics`] still counts every one.

use std::collections::HashMap;
use std::fmt;
use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::clock::{is_expired, Timestamp};
use crate::id::{KeyId, SessionId, Tenant, UserId};

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum AuditEvent {
    /// A session was created.
    SessionCreated,
    /// A refresh rotated a token session.
    SessionRefreshed,
    /// A session was revoked (the reason says why: logout, evicted, refresh_token_reused, ...).
    SessionRevoked,
    /// A session's CSRF token was rotated.
    CsrfRotated,
    /// A refresh token was presented again after rotation.
    RefreshReused,
    /// A signing key was created or rotated in.
    KeyRotated,
    /// A signing key was ended out of the ordinary rotation: `retired` (`keys retire`, at
    /// once), `operator_replaced` or `operator_withdrawn` (operator material changed at start).
    KeyRetired,
    /// A credential failed validation (rate-bounded per reason).
    ValidationFailed,
    /// A one-time token was claimed.
    TokenClaimed,
}

impl AuditEvent {
    /// The stored name, e.g. `session_created`.
    pub fn as_str(self) -> &'static str {
        match self {
            AuditEvent::SessionCreated => "session_created",
            AuditEvent::SessionRefreshed => "session_refreshed",
            AuditEvent::SessionRevoked => "session_revoked",
            AuditEvent::CsrfRotated => "csrf_rotated",
            AuditEvent::RefreshReused => "refresh_reused",
            AuditEvent::KeyRotated => "key_rotated",
            AuditEvent::KeyRetired => "key_retired",
            AuditEvent::ValidationFailed => "validation_failed",
            AuditEvent::TokenClaimed => "token_claimed",
        }
    }

    /// Parses a stored name.
    pub fn parse(text: &str) -> Option<Self> {
        [
            AuditEvent::SessionCreated,
            AuditEvent::SessionRefreshed,
            AuditEvent::SessionRevoked,
            AuditEvent::CsrfRotated,
            AuditEvent::RefreshReused,
            AuditEvent::KeyRotated,
            AuditEvent::KeyRetired,
            AuditEvent::ValidationFailed,
            AuditEvent::TokenClaimed,
        ]
        .into_iter()
        .find(|e| e.as_str() == text)
    }
}

impl fmt::Display for AuditEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One entry of the audit trail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct AuditRecord {
    /// When.
    pub at: Timestamp,
    /// What.
    pub event: AuditEvent,
    /// Why, as a machine-readable code (`logout`, `evicted`, `csrf_mismatch`, ...).
    pub reason: String,
    /// The session concerned, if any.
    pub session_id: Option<SessionId>,
    /// The user concerned, if known.
    pub user_id: Option<UserId>,
    /// The tenant concerned, if known.
    pub tenant: Option<Tenant>,
    /// The key concerned (key events) or the key that signed the credential.
    pub key_id: Option<KeyId>,
    /// The client IP of the request, if given.
    pub ip: Option<String>,
}

impl AuditRecord {
    /// A record of `event` for `reason` at `at`, with no subject yet.
    pub fn new(at: Timestamp, event: AuditEvent, reason: impl Into<String>) -> Self {
        AuditRecord {
            at,
            event,
            reason: reason.into(),
            session_id: None,
            user_id: None,
            tenant: None,
            key_id: None,
            ip: None,
        }
    }

    /// Sets the session, user and tenant from `session`.
    pub fn about(mut self, session: &crate::session::Session) -> Self {
        self.session_id = Some(session.id.clone());
        self.user_id = Some(session.user_id.clone());
        self.tenant = Some(session.tenant.clone());
        self
    }

    /// Sets the session, user and tenant from the owner a store change returned.
    pub fn owner(mut self, owner: &crate::store::SessionOwner) -> Self {
        self.session_id = Some(owner.id.clone());
        self.user_id = Some(owner.user_id.clone());
        self.tenant = Some(owner.tenant.clone());
        self
    }

    /// Sets the session id alone.
    pub fn session(mut self, id: &SessionId) -> Self {
        self.session_id = Some(id.clone());
        self
    }

    /// Sets the key id.
    pub fn key(mut self, id: &KeyId) -> Self {
        self.key_id = Some(id.clone());
        self
    }

    /// Sets the client IP.
    pub fn ip(mut self, ip: Option<&str>) -> Self {
        self.ip = ip.map(str::to_owned);
        self
    }
}

/// Which audit records to read.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct AuditQuery {
    /// Only records about this session.
    pub session_id: Option<SessionId>,
    /// Only records about this user.
    pub user_id: Option<UserId>,
    /// At most this many (newest first); 0 means 100.
    pub limit: u32,
}

impl AuditQuery {
    /// Records about `id`.
    pub fn session(id: &SessionId) -> Self {
        AuditQuery {
            session_id: Some(id.clone()),
            ..AuditQuery::default()
        }
    }

    /// The newest `limit` records of any kind.
    pub fn latest(limit: u32) -> Self {
        AuditQuery {
            limit,
            ..AuditQuery::default()
        }
    }
}

/// How failed validations are audited.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct AuditPolicy {
    /// Most failure records written per reason code per window (default 20).
    pub failures_per_window: u32,
    /// The window (default 60 s).
    pub failure_window: Duration,
}

impl Default for AuditPolicy {
    fn default() -> Self {
        AuditPolicy {
            failures_per_window: 20,
            failure_window: Duration::from_secs(60),
        }
    }
}

/// Decides, per reason code, whether one more failure record fits in the current window.
#[derive(Debug)]
pub(crate) struct FailureLimiter {
    policy: AuditPolicy,
    windows: Mutex<HashMap<&'static str, (Timestamp, u32)>>,
}

impl FailureLimiter {
    pub(crate) fn new(policy: AuditPolicy) -> Self {
        FailureLimiter {
            policy,
            windows: Mutex::new(HashMap::new()),
        }
    }

    /// Whether a record for `reason` may be written at `now`; counts it if so.
    pub(crate) fn admit(&self, reason: &'static str, now: Timestamp) -> bool {
        let mut windows = match self.windows.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        let entry = windows.entry(reason).or_insert((now, 0));
        let window_end = entry.0.saturating_add(self.policy.failure_window);
        if is_expired(window_end, now) || now < entry.0 {
            *entry = (now, 0);
        }
        if entry.1 < self.policy.failures_per_window {
            entry.1 += 1;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limiter_bounds_each_reason_per_window() {
        let limiter = FailureLimiter::new(AuditPolicy {
            failures_per_window: 3,
            failure_window: Duration::from_secs(10),
        });
        let t = Timestamp::from_unix_millis;
        let admitted = (0..10).filter(|_| limiter.admit("bad_mac", t(0))).count();
        assert_eq!(admitted, 3);
        assert!(
            limiter.admit("csrf_mismatch", t(0)),
            "reasons have separate budgets"
        );
        assert!(!limiter.admit("bad_mac", t(9_999)));
        assert!(
            limiter.admit("bad_mac", t(10_000)),
            "a new window starts at the boundary"
        );
    }

    #[test]
    fn event_names_round_trip() {
        for e in [
            AuditEvent::SessionCreated,
            AuditEvent::ValidationFailed,
            AuditEvent::KeyRotated,
            AuditEvent::KeyRetired,
        ] {
            assert_eq!(AuditEvent::parse(e.as_str()), Some(e));
        }
        assert_eq!(AuditEvent::parse("nope"), None);
    }
}
