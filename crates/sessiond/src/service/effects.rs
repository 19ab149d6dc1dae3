//! Lifecycle effects as data: every operation of [`SessionService`] describes what it changed as
//! a list of [`Effect`]s, and [`SessionService::apply`] is the one place that turns them into
//! metrics, audit records and bus events (docs/DESIGN.md §5.9, §6.1). A path cannot forget an
//! audit record or publish an event twice: it only says what happened.
//!
//! Ordering per effect: counters first, then the audit record, then the event. Events are
//! published after the change is committed (the caller applies effects only after its store
//! call returned), so a watcher that subscribed before reading the row either sees the change in
//! the row or receives the event. A failed audit write or publish is logged and counted, never
//! returned: the change has happened and must not be reported as failed.

use crate::audit::{AuditEvent, AuditRecord};
use crate::clock::Timestamp;
use crate::error::SessionError;
use crate::events::SessionEvent;
use crate::id::KeyId;
use crate::keys::{KeyError, KeyPurpose};
use crate::session::{RevokeReason, Session};
use crate::store::{SessionOwner, StoreError};

use super::SessionService;

/// How a refresh was answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refresh {
    /// The current token rotated.
    Rotated,
    /// A recently rotated-out token got the current pair (no write).
    Converged,
    /// A lost response got a fresh pair.
    Reissued,
}

impl Refresh {
    fn as_str(self) -> &'static str {
        match self {
            Refresh::Rotated => "rotated",
            Refresh::Converged => "converged",
            Refresh::Reissued => "reissued",
        }
    }
}

/// One thing that happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Effect {
    /// A session was created, its credential signed by `key_id`.
    Created { session: Session, key_id: KeyId },
    /// A session was revoked (logout, admin, eviction, reuse detection, ...).
    Revoked {
        owner: SessionOwner,
        reason: RevokeReason,
    },
    /// A refresh was answered.
    Refreshed {
        session: Session,
        how: Refresh,
        ip: Option<String>,
    },
    /// A refresh token counted as reuse (a [`Effect::Revoked`] follows when it revoked).
    ReuseDetected { session: Session, why: &'static str },
    /// A session's CSRF token was replaced.
    CsrfRotated { owner: SessionOwner },
    /// A signing key was rotated in.
    KeyRotated { key_id: KeyId, purpose: KeyPurpose },
    /// A signing key was ended out of the ordinary rotation (`why`: `retired`,
    /// `operator_replaced`, `operator_withdrawn`).
    KeyRetired { key_id: KeyId, why: &'static str },
    /// A one-time token was claimed.
    TokenClaimed { record: Box<AuditRecord> },
    /// A credential was refused (counted always, audited rate-bounded per reason).
    ValidationFailed {
        reason: &'static str,
        session: Option<Session>,
        ip: Option<String>,
    },
    /// A check that does not refuse this operation failed anyway (browser logout with a binding
    /// mismatch): audited always, as the lifecycle record it accompanies.
    CheckOverridden {
        reason: &'static str,
        session: Session,
        ip: Option<String>,
    },
}

/// A refused operation and the session it saw, if it got as far as reading one: the failure is
/// audited about that session.
#[derive(Debug)]
pub(crate) struct Rejection {
    pub(crate) error: SessionError,
    pub(crate) seen: Option<Session>,
}

impl Rejection {
    /// `error`, after reading `session`.
    pub(crate) fn about(error: SessionError, session: &Session) -> Rejection {
        Rejection {
            error,
            seen: Some(session.clone()),
        }
    }
}

impl From<SessionError> for Rejection {
    fn from(error: SessionError) -> Self {
        Rejection { error, seen: None }
    }
}

impl From<StoreError> for Rejection {
    fn from(e: StoreError) -> Self {
        Rejection::from(SessionError::Store(e))
    }
}

impl From<KeyError> for Rejection {
    fn from(e: KeyError) -> Self {
        Rejection::from(SessionError::from(e))
    }
}

impl SessionService {
    /// Carries out `effects` of a change made at `at`: metrics, audit, events, in that order per
    /// effect, in the order given.
    pub(crate) async fn apply(&self, at: Timestamp, effects: Vec<Effect>) {
        for effect in effects {
            self.apply_one(at, effect).await;
        }
    }

    async fn apply_one(&self, at: Timestamp, effect: Effect) {
        let metrics = &self.inner.metrics;
        match effect {
            Effect::Created { session, key_id } => {
                metrics.session_created();
                let record =
                    AuditRecord::new(at, AuditEvent::SessionCreated, session.kind.as_str())
                        .about(&session)
                        .key(&key_id)
                        .ip(session.ip.as_deref());
                self.audit(record).await;
            }
            Effect::Revoked { owner, reason } => {
                metrics.sessions_revoked(1);
                let record =
                    AuditRecord::new(at, AuditEvent::SessionRevoked, reason.as_str()).owner(&owner);
                self.audit(record).await;
                self.publish(SessionEvent::revoked(
                    owner.id,
                    owner.user_id,
                    Some(owner.tenant),
                    &reason,
                    at,
                ))
                .await;
            }
            Effect::Refreshed { session, how, ip } => {
                match how {
                    Refresh::Rotated => metrics.refresh_rotated(),
                    Refresh::Converged => metrics.refresh_converged(),
                    Refresh::Reissued => metrics.refresh_reissued(),
                }
                let record = AuditRecord::new(at, AuditEvent::SessionRefreshed, how.as_str())
                    .about(&session)
                    .ip(ip.as_deref());
                self.audit(record).await;
                // Converging changes nothing: there is nothing to tell watchers.
                if how != Refresh::Converged {
                    self.publish(SessionEvent::refreshed(&session, at)).await;
                }
            }
            Effect::ReuseDetected { session, why } => {
                metrics.refresh_reuse();
                tracing::warn!(session_id = %session.id, user_id = %session.user_id, why, "refresh token reused");
                self.audit(AuditRecord::new(at, AuditEvent::RefreshReused, why).about(&session))
                    .await;
            }
            Effect::CsrfRotated { owner } => {
                self.audit(AuditRecord::new(at, AuditEvent::CsrfRotated, "rotated").owner(&owner))
                    .await;
            }
            Effect::KeyRotated { key_id, purpose } => {
                self.audit(
                    AuditRecord::new(at, AuditEvent::KeyRotated, purpose.as_str()).key(&key_id),
                )
                .await;
            }
            Effect::KeyRetired { key_id, why } => {
                // Every hit checks the key's status anyway; this frees the retired key's tokens
                // at once instead of letting them age out.
                self.inner.verified.clear();
                self.audit(AuditRecord::new(at, AuditEvent::KeyRetired, why).key(&key_id))
                    .await;
            }
            Effect::TokenClaimed { record } => self.audit(*record).await,
            Effect::ValidationFailed {
                reason,
                session,
                ip,
            } => {
                metrics.validation_failure(reason);
                tracing::debug!(
                    reason,
                    session_id = session.as_ref().map(|s| s.id.as_str()),
                    "validation failed"
                );
                if !self.inner.limiter.admit(reason, at) {
                    metrics.audit_suppressed();
                    return;
                }
                let mut record =
                    AuditRecord::new(at, AuditEvent::ValidationFailed, reason).ip(ip.as_deref());
                if let Some(s) = &session {
                    record = record.about(s);
                }
                self.audit(record).await;
            }
            Effect::CheckOverridden {
                reason,
                session,
                ip,
            } => {
                let record = AuditRecord::new(at, AuditEvent::ValidationFailed, reason)
                    .about(&session)
                    .ip(ip.as_deref());
                self.audit(record).await;
            }
        }
    }

    /// The answer of an operation whose refusals are audited: `operation`'s outcome, with a
    /// rejection's effects applied and its error returned.
    pub(crate) async fn settle<T>(
        &self,
        ip: Option<&str>,
        operation: impl std::future::Future<Output = Result<T, Rejection>>,
    ) -> Result<T, SessionError> {
        match operation.await {
            Ok(value) => Ok(value),
            Err(rejection) => Err(self.refused(rejection, ip).await),
        }
    }

    /// The effects of a refused operation: a verdict about the credential is counted and
    /// (rate-bounded) audited; an outage or bad input is only logged. Returns the error.
    pub(crate) async fn refused(&self, rejection: Rejection, ip: Option<&str>) -> SessionError {
        let Rejection { error, seen } = rejection;
        if !error.is_credential_failure() {
            tracing::warn!(code = error.code().as_str(), error = %error, "validation could not be decided");
            return error;
        }
        let effect = Effect::ValidationFailed {
            reason: error.reason(),
            session: seen,
            ip: ip.map(str::to_owned),
        };
        self.apply(self.inner.clock.now(), vec![effect]).await;
        error
    }

    /// Writes an audit record. A failed write is logged and counted, never surfaced: the
    /// lifecycle change it describes has already happened and must not be reported as failed.
    async fn audit(&self, record: AuditRecord) {
        if let Err(e) = self.inner.backend.append_audit(&record).await {
            self.inner.metrics.audit_write_error();
            tracing::error!(event = record.event.as_str(), reason = %record.reason, error = %e, "audit write failed");
        }
    }
}
