//! Live enforcement (docs/DESIGN.md §6.3): [`SessionService::watch`] resolves when a session's connection
//! must end — revoked, idle or absolute window passed, or the credential's own deadline (access
//! token `exp`, certificate `notAfter`) passed — whichever comes first.
//!
//! # No lost wakeups
//! The watch subscribes to the [`crate::events::EventBus`] *before* it reads the row. A
//! revocation that committed before the read is in the row; one that commits after it is
//! published after its commit, so after the subscription, and reaches the watch. A subscription
//! that fell behind ([`RecvError::Lagged`]) may have missed it, so a lag makes the watch re-read
//! the row; a closed bus makes it poll the row every [`ServiceConfig::watch_recheck`].
//!
//! # Clock jumps
//! Deadlines are wall-clock facts on the row, compared with the injected [`crate::Clock`]
//! through [`is_expired`]. The watch never sleeps longer than `watch_recheck` (monotonic tokio
//! time) between two readings of that clock, and ends only on a reading at or past the deadline.
//! So a forward jump past the deadline ends the watch at most one period after the jump, and a
//! backward jump cannot end it early; it ends at most one period after the clock reaches the
//! deadline again.
//!
//! # Sliding idle windows
//! Activity elsewhere (validations on other requests or nodes) slides the idle window without an
//! event. Before resolving [`EndReason::IdleExpired`] the watch re-reads the row and re-checks; a
//! `refreshed` event also triggers a re-read. The absolute window and the credential deadline
//! never move, so they need no re-read.
//!
//! [`ServiceConfig::watch_recheck`]: super::ServiceConfig::watch_recheck

use std::fmt;
use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::time::Duration;

use tokio::time::Instant;

use super::{Credential, SessionService, Validated};
use crate::clock::{is_expired, Timestamp};
use crate::error::SessionError;
use crate::events::{EventKind, RecvError, Subscription};
use crate::id::SessionId;
use crate::session::{RevokeReason, Session, SessionStatus};

/// The shortest re-check period honoured; smaller configured values are raised to it.
const MIN_RECHECK: Duration = Duration::from_millis(10);

/// What kind of credential deadline bounds a watched connection besides the session's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DeadlineKind {
    /// An access token's `exp`.
    Token,
    /// A client certificate's `notAfter`.
    Certificate,
}

/// A credential deadline: the connection ends at `at` even if the session lives on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct ExtraDeadline {
    /// What expires.
    pub kind: DeadlineKind,
    /// When (the connection ends once `now >= at`).
    pub at: Timestamp,
}

impl ExtraDeadline {
    /// An access token expiring at `exp`.
    pub fn token(exp: Timestamp) -> Self {
        ExtraDeadline {
            kind: DeadlineKind::Token,
            at: exp,
        }
    }

    /// A client certificate expiring at `not_after`.
    pub fn certificate(not_after: Timestamp) -> Self {
        ExtraDeadline {
            kind: DeadlineKind::Certificate,
            at: not_after,
        }
    }

    fn end_reason(self) -> EndReason {
        match self.kind {
            DeadlineKind::Token => EndReason::TokenExpired,
            DeadlineKind::Certificate => EndReason::CertificateExpired,
        }
    }
}

/// Why a watched connection must end.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum EndReason {
    /// The session was revoked.
    Revoked {
        /// The revoke reason, when known.
        reason: Option<RevokeReason>,
    },
    /// No activity within the idle window (re-checked against the row before reporting).
    IdleExpired,
    /// The session's absolute lifetime passed.
    AbsoluteExpired,
    /// The access token's `exp` ([`DeadlineKind::Token`]) passed.
    TokenExpired,
    /// The client certificate's `notAfter` ([`DeadlineKind::Certificate`]) passed.
    CertificateExpired,
    /// The row no longer exists (garbage-collected after it expired, possibly by a node whose
    /// clock runs ahead).
    Deleted,
}

impl EndReason {
    /// A machine-readable code: `revoked`, `idle_expired`, `absolute_expired`, `token_expired`,
    /// `certificate_expired`, `deleted`.
    pub fn code(&self) -> &'static str {
        match self {
            EndReason::Revoked { .. } => "revoked",
            EndReason::IdleExpired => "idle_expired",
            EndReason::AbsoluteExpired => "absolute_expired",
            EndReason::TokenExpired => "token_expired",
            EndReason::CertificateExpired => "certificate_expired",
            EndReason::Deleted => "deleted",
        }
    }

    /// The event this end is reported as: [`EventKind::Revoked`] or [`EventKind::Expired`].
    pub fn kind(&self) -> EventKind {
        match self {
            EndReason::Revoked { .. } => EventKind::Revoked,
            _ => EventKind::Expired,
        }
    }

    /// The revoke reason, for [`EndReason::Revoked`].
    pub fn revoke_reason(&self) -> Option<&RevokeReason> {
        match self {
            EndReason::Revoked { reason } => reason.as_ref(),
            _ => None,
        }
    }
}

impl fmt::Display for EndReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.revoke_reason() {
            Some(reason) => write!(f, "revoked ({reason})"),
            None => f.write_str(self.code()),
        }
    }
}

#[derive(Debug)]
enum State {
    /// Decided when the watch was created.
    Ended(EndReason),
    /// Waiting, with the subscription taken before the row was read.
    Live(Subscription),
}

/// A pending end of a session's connection: `.await` it (or call [`Watch::wait`]) to learn
/// why the connection must close. Dropping it stops watching.
#[derive(Debug)]
#[must_use = "a watch does nothing until awaited"]
pub struct Watch {
    service: SessionService,
    session: Session,
    extra: Option<ExtraDeadline>,
    state: State,
}

/// The verdict on `session` at `now`, by the row's precedence (revoked, absolute, idle), then
/// the credential deadline.
fn verdict(session: &Session, extra: Option<ExtraDeadline>, now: Timestamp) -> Option<EndReason> {
    match session.status(now) {
        SessionStatus::Revoked => Some(EndReason::Revoked {
            reason: session.revoke_reason.clone(),
        }),
        SessionStatus::AbsoluteExpired => Some(EndReason::AbsoluteExpired),
        SessionStatus::IdleExpired => Some(EndReason::IdleExpired),
        SessionStatus::Active => extra
            .filter(|e| is_expired(e.at, now))
            .map(ExtraDeadline::end_reason),
    }
}

impl SessionService {
    /// Watches a session for the end of its connection: revocation, idle or absolute expiry,
    /// or `extra` (the credential's own deadline), whichever comes first. A session that has
    /// already ended yields a watch that resolves at once.
    ///
    /// Revocations arrive through the event bus (immediately, on any node a cross-node bus
    /// reaches); deadlines are checked against the injected clock at least every
    /// [`super::ServiceConfig::watch_recheck`]. See the module documentation for why no
    /// revocation is lost and how clock jumps are bounded.
    ///
    /// # Errors
    /// [`SessionError::NotFound`] when no such row exists, [`SessionError::Store`] when it
    /// could not be read. Failures while waiting are not errors: see [`Watch::wait`].
    pub async fn watch(
        &self,
        session_id: &SessionId,
        extra: Option<ExtraDeadline>,
    ) -> Result<Watch, SessionError> {
        // Subscribe first: every revocation committed after the read below is published after
        // this point.
        let subscription = self.inner.events.subscribe();
        let record = self
            .inner
            .backend
            .session(session_id)
            .await?
            .ok_or(SessionError::NotFound)?;
        let session = record.session;
        let state = match verdict(&session, extra, self.inner.clock.now()) {
            Some(end) => State::Ended(end),
            None => State::Live(subscription),
        };
        Ok(Watch {
            service: self.clone(),
            session,
            extra,
            state,
        })
    }

    /// Watches the session of a successful validation, bounded also by the access token's
    /// `exp` when an access token was validated.
    ///
    /// # Errors
    /// As [`SessionService::watch`].
    pub async fn watch_validated(&self, validated: &Validated) -> Result<Watch, SessionError> {
        let extra = match &validated.credential {
            Credential::AccessToken { expires_at, .. } => Some(ExtraDeadline::token(*expires_at)),
            Credential::Cookie { .. } => None,
        };
        self.watch(&validated.session.id, extra).await
    }

    /// The row, for a watch that must re-check it.
    async fn reread(&self, id: &SessionId) -> Result<Option<Session>, SessionError> {
        Ok(self.inner.backend.session(id).await?.map(|r| r.session))
    }
}

impl Watch {
    /// The session as read when the watch started.
    pub fn session(&self) -> &Session {
        &self.session
    }

    /// The end decided when the watch started (the session had already ended), if any.
    pub fn ended(&self) -> Option<&EndReason> {
        match &self.state {
            State::Ended(end) => Some(end),
            State::Live(_) => None,
        }
    }

    /// The earliest deadline known when the watch started (idle, absolute, credential). The
    /// idle part may still slide with activity.
    pub fn deadline(&self) -> Timestamp {
        let own = self.session.deadline();
        self.extra.map_or(own, |e| e.at.min(own))
    }

    /// Waits until the connection must end and says why.
    ///
    /// Never fails: while the store cannot be read the watch keeps the deadlines it knows and
    /// retries once per re-check period, so an outage can delay noticing a revocation that
    /// arrived only as a lag, never extend the connection past a known deadline. An idle
    /// deadline that cannot be re-checked ends the connection (fail closed).
    pub async fn wait(self) -> EndReason {
        let Watch {
            service,
            mut session,
            extra,
            state,
        } = self;
        let mut subscription = match state {
            State::Ended(end) => return end,
            State::Live(s) => s,
        };
        let inner = &service.inner;
        let recheck = inner.config.watch_recheck.max(MIN_RECHECK);
        let mut bus_open = true;
        // Whether the row must be re-read before deciding (after a lag, a refresh, or a failed
        // re-read), and when a failed re-read may be retried: at most once per period, so a
        // busy bus cannot turn a store outage into a read storm.
        let mut stale = false;
        let mut retry_at: Option<Instant> = None;
        loop {
            if (stale || !bus_open) && retry_at.is_none_or(|t| Instant::now() >= t) {
                match service.reread(&session.id).await {
                    Ok(Some(row)) => {
                        session = row;
                        stale = false;
                        retry_at = None;
                    }
                    Ok(None) => return EndReason::Deleted,
                    Err(e) => {
                        tracing::warn!(session_id = %session.id, error = %e, "watch could not re-read its session; retrying");
                        stale = true;
                        retry_at = Some(Instant::now() + recheck);
                    }
                }
            }

            let now = inner.clock.now();
            match verdict(&session, extra, now) {
                None => {}
                Some(EndReason::IdleExpired) => {
                    // Activity elsewhere may have slid the window: decide on a fresh row.
                    match service.reread(&session.id).await {
                        Ok(Some(row)) => {
                            session = row;
                            stale = false;
                            if let Some(end) = verdict(&session, extra, inner.clock.now()) {
                                return end;
                            }
                            continue;
                        }
                        Ok(None) => return EndReason::Deleted,
                        Err(e) => {
                            tracing::warn!(session_id = %session.id, error = %e, "idle expiry could not be re-checked; ending the watch");
                            return EndReason::IdleExpired;
                        }
                    }
                }
                Some(end) => return end,
            }

            let deadline = extra.map_or(session.deadline(), |e| e.at.min(session.deadline()));
            // Never one long sleep: the wall clock is read again at least every `recheck`.
            let nap = deadline.duration_since(now).min(recheck);
            if !bus_open {
                tokio::time::sleep(nap).await;
                continue;
            }
            match tokio::time::timeout(nap, subscription.recv()).await {
                // The tick: read the clock again.
                Err(_elapsed) => {}
                Ok(Ok(event)) if event.session_id == session.id => match event.kind {
                    EventKind::Revoked => {
                        return EndReason::Revoked {
                            reason: event.reason.and_then(|r| RevokeReason::new(&r).ok()),
                        }
                    }
                    // The idle window moved, or another watcher saw an end: decide on the row.
                    EventKind::Refreshed | EventKind::Expired => stale = true,
                },
                Ok(Ok(_other_session)) => {}
                Ok(Err(RecvError::Lagged { missed })) => {
                    inner.metrics.watch_lagged();
                    tracing::debug!(session_id = %session.id, missed, "watch lagged behind the event bus; re-reading its session");
                    stale = true;
                }
                Ok(Err(RecvError::Closed)) => {
                    tracing::warn!(session_id = %session.id, "event bus closed; watch polls its session instead");
                    bus_open = false;
                }
            }
        }
    }
}

impl IntoFuture for Watch {
    type Output = EndReason;
    type IntoFuture = Pin<Box<dyn Future<Output = EndReason> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.wait())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::tests::session;

    #[test]
    fn verdict_precedence_and_boundary() {
        let t = Timestamp::from_unix_millis;
        let tok = Some(ExtraDeadline::token(t(50)));
        assert_eq!(verdict(&session(100, 200, false), tok, t(49)), None);
        assert_eq!(
            verdict(&session(100, 200, false), tok, t(50)),
            Some(EndReason::TokenExpired)
        );
        let cert = Some(ExtraDeadline::certificate(t(100)));
        // The session's own reasons win at the same instant.
        assert_eq!(
            verdict(&session(100, 200, false), cert, t(100)),
            Some(EndReason::IdleExpired)
        );
        assert_eq!(
            verdict(&session(300, 200, false), cert, t(250)),
            Some(EndReason::AbsoluteExpired)
        );
        assert_eq!(
            verdict(&session(100, 200, true), cert, t(0)),
            Some(EndReason::Revoked {
                reason: Some(RevokeReason::logout())
            })
        );
        assert_eq!(
            verdict(&session(300, 400, false), cert, t(100)),
            Some(EndReason::CertificateExpired)
        );
    }

    #[test]
    fn codes_and_kinds() {
        let revoked = EndReason::Revoked {
            reason: Some(RevokeReason::evicted()),
        };
        assert_eq!(revoked.code(), "revoked");
        assert_eq!(revoked.kind(), EventKind::Revoked);
        assert_eq!(revoked.to_string(), "revoked (evicted)");
        assert_eq!(EndReason::IdleExpired.kind(), EventKind::Expired);
        assert_eq!(EndReason::TokenExpired.to_string(), "token_expired");
    }
}
