//! Sessions: the row behind every credential, its status and its deadline.
//!
//! Policy (TTLs, touch interval, limits) lives in [`SessionPolicy`]; facts (when this row's
//! idle and absolute windows end, whether it was revoked) live on the row. Status is derived
//! from the facts and `now` through the one expiry boundary, [`crate::clock::is_expired`], in a
//! fixed precedence: revoked, then absolutely expired, then idle-expired.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::clock::{is_expired, Timestamp};
use crate::id::{KeyId, SessionId, Tenant, UserId};

/// The credential shape a session was created for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum SessionKind {
    /// Signed session cookie + CSRF token.
    Cookie,
    /// Access + refresh JWT pair.
    Tokens,
    /// Access JWT in memory + refresh JWT in an HttpOnly cookie.
    Browser,
}

impl SessionKind {
    /// The stored name: `cookie`, `tokens`, `browser`.
    pub fn as_str(self) -> &'static str {
        match self {
            SessionKind::Cookie => "cookie",
            SessionKind::Tokens => "tokens",
            SessionKind::Browser => "browser",
        }
    }

    /// Parses a stored name.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "cookie" => Some(SessionKind::Cookie),
            "tokens" => Some(SessionKind::Tokens),
            "browser" => Some(SessionKind::Browser),
            _ => None,
        }
    }
}

/// Where a session stands at a given instant. Ordered by precedence: a revoked session is
/// reported revoked even if it has also expired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SessionStatus {
    /// Usable.
    Active,
    /// No activity within the idle window.
    IdleExpired,
    /// Past the absolute lifetime, however active.
    AbsoluteExpired,
    /// Revoked (logout, admin, reuse detection, eviction).
    Revoked,
}

/// Why a session was revoked: a short machine-readable code (`[a-z0-9_]`, 1 to 64 bytes).
#[derive(Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct RevokeReason(String);

impl RevokeReason {
    /// Plain logout or an explicit revoke without a reason.
    pub fn logout() -> Self {
        RevokeReason(String::from("logout"))
    }
    /// Revoked as part of "log out everywhere" / "log out other devices".
    pub fn revoked_all() -> Self {
        RevokeReason(String::from("revoked_all"))
    }
    /// The oldest session, revoked to honour the per-user limit.
    pub fn evicted() -> Self {
        RevokeReason(String::from("evicted"))
    }
    /// A refresh token was presented again after rotation: presumed theft.
    pub fn refresh_token_reused() -> Self {
        RevokeReason(String::from("refresh_token_reused"))
    }
    /// The user ended it from another of their sessions (the account page's device list).
    pub fn user_revoked() -> Self {
        RevokeReason(String::from("user_revoked"))
    }

    /// Parses a reason code.
    ///
    /// # Errors
    /// [`InvalidReason`] when the code is empty, too long, or has characters outside
    /// `[a-z0-9_]`.
    pub fn new(code: &str) -> Result<Self, InvalidReason> {
        let ok = !code.is_empty()
            && code.len() <= 64
            && code
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if ok {
            Ok(RevokeReason(code.to_owned()))
        } else {
            Err(InvalidReason)
        }
    }

    /// The code.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for RevokeReason {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        RevokeReason::new(&text).map_err(serde::de::Error::custom)
    }
}

impl fmt::Debug for RevokeReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for RevokeReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A revoke reason code was not `[a-z0-9_]{1,64}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("reason must be 1 to 64 characters of [a-z0-9_]")]
pub struct InvalidReason;

/// A session as the outside may see it: never a secret or a hash.
///
/// Exhaustive on purpose: storage backends outside this crate build it from their rows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// The session's id.
    pub id: SessionId,
    /// Whose session it is.
    pub user_id: UserId,
    /// The tenant it belongs to.
    pub tenant: Tenant,
    /// The credential shape.
    pub kind: SessionKind,
    /// When it was created.
    pub created_at: Timestamp,
    /// The last recorded activity (written at most once per touch interval).
    pub last_seen_at: Timestamp,
    /// When the idle window ends unless there is activity.
    pub idle_expires_at: Timestamp,
    /// When the session ends however active it is.
    pub absolute_expires_at: Timestamp,
    /// When it was revoked, if it was.
    pub revoked_at: Option<Timestamp>,
    /// Why it was revoked.
    pub revoke_reason: Option<RevokeReason>,
    /// The client IP recorded at creation, if given.
    pub ip: Option<String>,
    /// The User-Agent recorded at creation, if given.
    pub user_agent: Option<String>,
    /// Application claims carried into access tokens.
    pub claims: serde_json::Map<String, serde_json::Value>,
}

impl Session {
    /// The status at `now`, by the documented precedence.
    pub fn status(&self, now: Timestamp) -> SessionStatus {
        if self.revoked_at.is_some() {
            SessionStatus::Revoked
        } else if is_expired(self.absolute_expires_at, now) {
            SessionStatus::AbsoluteExpired
        } else if is_expired(self.idle_expires_at, now) {
            SessionStatus::IdleExpired
        } else {
            SessionStatus::Active
        }
    }

    /// The earliest instant the session stops being usable without further activity.
    pub fn deadline(&self) -> Timestamp {
        self.idle_expires_at.min(self.absolute_expires_at)
    }
}

/// The refresh-token state of a token session: hashes and bookkeeping, never a secret.
///
/// Every refresh secret has a generation, unique within its session. The secret of generation
/// `g` was derived from its parent's secret under a refresh key (docs/DESIGN.md, "Refresh
/// rotation"), so a client holding an ancestor of the current secret on [`RefreshState::chain`]
/// can be brought to the current secret without the row ever holding one.
#[derive(Clone, PartialEq, Eq)]
pub struct RefreshState {
    /// SHA-256 of the current refresh secret.
    pub hash: [u8; 32],
    /// The current secret's generation (0 at creation; the highest ever issued).
    pub generation: u64,
    /// Whether the current pair has been used: its refresh token presented, or one of its access
    /// tokens validated. A rotated-out token whose successor is unused is a lost response.
    pub used: bool,
    /// The recent rotation steps that lead to the current secret, oldest first: each step's
    /// parent is the previous step's generation, and the last step produced
    /// [`RefreshState::generation`]. Empty before the first rotation. Abandoned branches are not
    /// kept: a token that is not on this path is not a predecessor of the current one.
    pub chain: Vec<RefreshStep>,
}

impl fmt::Debug for RefreshState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RefreshState")
            .field("generation", &self.generation)
            .field("used", &self.used)
            .field("chain", &self.chain)
            .finish_non_exhaustive()
    }
}

/// One rotation on a refresh chain: the secret of `generation` was derived from the secret of
/// `parent` under the refresh key `key_id`, at `at`, which is when `parent` was rotated out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshStep {
    /// The generation this step produced.
    pub generation: u64,
    /// The generation it was derived from.
    pub parent: u64,
    /// When (the moment the parent stopped being current).
    pub at: Timestamp,
    /// The refresh key the derivation used.
    pub key_id: KeyId,
}

impl RefreshStep {
    /// The stored form of a chain: a JSON array of `[generation, parent, at_ms, "key_id"]`.
    /// Written directly (key ids are `[A-Za-z0-9_-]` with a prefix, so nothing needs escaping):
    /// it is on the refresh path.
    pub fn encode_chain(chain: &[RefreshStep]) -> String {
        use std::fmt::Write as _;
        let mut out = String::with_capacity(2 + chain.len() * 64);
        out.push('[');
        for (i, s) in chain.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            // Writing to a String cannot fail.
            let _ = write!(
                out,
                "[{},{},{},\"{}\"]",
                s.generation,
                s.parent,
                s.at.unix_millis(),
                s.key_id.as_str()
            );
        }
        out.push(']');
        out
    }

    /// Parses [`RefreshStep::encode_chain`]'s form; `None` for anything else.
    pub fn decode_chain(text: &str) -> Option<Vec<RefreshStep>> {
        if text == "[]" {
            return Some(Vec::new());
        }
        let rows: Vec<(u64, u64, i64, &str)> = serde_json::from_str(text).ok()?;
        rows.into_iter()
            .map(|(generation, parent, at, key_id)| {
                Some(RefreshStep {
                    generation,
                    parent,
                    at: Timestamp::from_unix_millis(at),
                    key_id: KeyId::parse(key_id).ok()?,
                })
            })
            .collect()
    }
}

/// A session row as a backend stores it: the public [`Session`] plus hashes and the signing
/// key id.
#[derive(Clone, PartialEq, Eq)]
pub struct SessionRecord {
    /// The public part.
    pub session: Session,
    /// The key the session's cookie was signed with.
    pub key_id: KeyId,
    /// SHA-256 of the CSRF token, for cookie sessions.
    pub csrf_hash: Option<[u8; 32]>,
    /// The refresh-token state, for token and browser sessions.
    pub refresh: Option<RefreshState>,
}

impl SessionRecord {
    /// Assembles a record.
    pub fn new(
        session: Session,
        key_id: KeyId,
        csrf_hash: Option<[u8; 32]>,
        refresh: Option<RefreshState>,
    ) -> Self {
        SessionRecord {
            session,
            key_id,
            csrf_hash,
            refresh,
        }
    }
}

impl fmt::Debug for SessionRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionRecord")
            .field("session", &self.session)
            .field("key_id", &self.key_id)
            .field("refresh", &self.refresh)
            .finish_non_exhaustive()
    }
}

/// Lifetimes of cookie sessions.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct CookiePolicy {
    /// Inactivity after which the session ends (default 1 h).
    pub idle_ttl: Duration,
    /// Lifetime from creation, however active (default 8 h).
    pub absolute_ttl: Duration,
    /// The least time between two activity writes for one session (default 60 s).
    pub touch_interval: Duration,
}

impl Default for CookiePolicy {
    fn default() -> Self {
        CookiePolicy {
            idle_ttl: Duration::from_secs(3600),
            absolute_ttl: Duration::from_secs(8 * 3600),
            touch_interval: Duration::from_secs(60),
        }
    }
}

/// Limits and bindings that apply to every session kind.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct SessionPolicy {
    /// Most active sessions per user and tenant; 0 means no limit. Past it, the oldest is
    /// revoked with reason `evicted`.
    pub max_per_user: u32,
    /// Require the validating request's IP to equal the one recorded at creation.
    pub bind_ip: bool,
    /// Require the validating request's User-Agent to equal the one recorded at creation.
    pub bind_user_agent: bool,
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::random::OsRandom;

    /// A cookie session of user `u` created at 0, with the idle and absolute expiries given
    /// (Unix milliseconds), revoked at 1 by logout if `revoked`.
    pub(crate) fn session(idle: i64, abs: i64, revoked: bool) -> Session {
        Session {
            id: SessionId::generate(&OsRandom),
            user_id: UserId::new("u").unwrap(),
            tenant: Tenant::default(),
            kind: SessionKind::Cookie,
            created_at: Timestamp::from_unix_millis(0),
            last_seen_at: Timestamp::from_unix_millis(0),
            idle_expires_at: Timestamp::from_unix_millis(idle),
            absolute_expires_at: Timestamp::from_unix_millis(abs),
            revoked_at: revoked.then(|| Timestamp::from_unix_millis(1)),
            revoke_reason: revoked.then(RevokeReason::logout),
            ip: None,
            user_agent: None,
            claims: serde_json::Map::new(),
        }
    }

    #[test]
    fn status_precedence_and_boundaries() {
        let t = Timestamp::from_unix_millis;
        assert_eq!(
            session(100, 200, false).status(t(99)),
            SessionStatus::Active
        );
        assert_eq!(
            session(100, 200, false).status(t(100)),
            SessionStatus::IdleExpired
        );
        assert_eq!(
            session(300, 200, false).status(t(200)),
            SessionStatus::AbsoluteExpired
        );
        assert_eq!(
            session(100, 100, false).status(t(100)),
            SessionStatus::AbsoluteExpired
        );
        assert_eq!(
            session(100, 100, true).status(t(500)),
            SessionStatus::Revoked
        );
        assert_eq!(session(100, 200, false).deadline(), t(100));
        assert_eq!(session(300, 200, false).deadline(), t(200));
    }

    #[test]
    fn refresh_chains_round_trip_and_refuse_anything_else() {
        use crate::random::SeededRandom;
        let key = KeyId::generate(&SeededRandom::new(3));
        let chain: Vec<RefreshStep> = (1..=3)
            .map(|g| RefreshStep {
                generation: g,
                parent: g - 1,
                at: Timestamp::from_unix_millis(1_700_000_000_123 + g as i64),
                key_id: key.clone(),
            })
            .collect();
        let text = RefreshStep::encode_chain(&chain);
        assert_eq!(RefreshStep::decode_chain(&text), Some(chain));
        assert_eq!(RefreshStep::decode_chain("[]"), Some(Vec::new()));
        assert_eq!(RefreshStep::encode_chain(&[]), "[]");
        for bad in [
            "",
            "{}",
            "[[1,0,5]]",
            "[[1,0,5,\"not-a-key\"]]",
            "[[-1,0,5,\"k\"]]",
        ] {
            assert_eq!(RefreshStep::decode_chain(bad), None, "{bad}");
        }
    }

    #[test]
    fn reason_codes() {
        assert!(RevokeReason::new("user_logout_2").is_ok());
        for bad in ["", "Logout", "a b", "x".repeat(65).as_str(), "tok=abc"] {
            assert!(RevokeReason::new(bad).is_err(), "{bad}");
        }
    }
}
