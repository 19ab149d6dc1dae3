//! Counters the service keeps for every outcome, audited or not.
//!
//! Lock-free atomics; the server renders them in Prometheus format. Validation failures are
//! counted per reason code even when the audit trail is rate-bounded.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// The service's counters.
#[derive(Debug, Default)]
pub struct Metrics {
    sessions_created: AtomicU64,
    sessions_revoked: AtomicU64,
    refresh_reuse_detected: AtomicU64,
    refresh_rotated: AtomicU64,
    refresh_converged: AtomicU64,
    refresh_reissued: AtomicU64,
    audit_failures_suppressed: AtomicU64,
    audit_write_errors: AtomicU64,
    events_published: AtomicU64,
    event_publish_errors: AtomicU64,
    watch_lags: AtomicU64,
    validation_failures: Mutex<BTreeMap<&'static str, u64>>,
}

/// A point-in-time copy of [`Metrics`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct MetricsSnapshot {
    /// Sessions created.
    pub sessions_created: u64,
    /// Sessions revoked (any reason).
    pub sessions_revoked: u64,
    /// Refresh-token reuse detections (each revoked its session).
    pub refresh_reuse_detected: u64,
    /// Refreshes that rotated the current token.
    pub refresh_rotated: u64,
    /// Refreshes with a recently rotated-out token that converged on the current pair (inside
    /// the grace window, or after losing a race).
    pub refresh_converged: u64,
    /// Refreshes with the parent of an unused pair (a lost response) that got a fresh successor.
    pub refresh_reissued: u64,
    /// Validation failures whose audit record was suppressed by the rate bound.
    pub audit_failures_suppressed: u64,
    /// Audit records that could not be written.
    pub audit_write_errors: u64,
    /// Lifecycle events handed to the event bus.
    pub events_published: u64,
    /// Lifecycle events the event bus refused (the operation itself succeeded).
    pub event_publish_errors: u64,
    /// Times a watch fell behind the event bus and re-read its session from the store.
    pub watch_lags: u64,
    /// Validation failures by reason code.
    pub validation_failures: BTreeMap<&'static str, u64>,
}

impl Metrics {
    pub(crate) fn session_created(&self) {
        self.sessions_created.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn sessions_revoked(&self, n: u64) {
        self.sessions_revoked.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn refresh_reuse(&self) {
        self.refresh_reuse_detected.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn refresh_rotated(&self) {
        self.refresh_rotated.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn refresh_converged(&self) {
        self.refresh_converged.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn refresh_reissued(&self) {
        self.refresh_reissued.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn audit_suppressed(&self) {
        self.audit_failures_suppressed
            .fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn audit_write_error(&self) {
        self.audit_write_errors.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn event_published(&self) {
        self.events_published.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn event_publish_error(&self) {
        self.event_publish_errors.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn watch_lagged(&self) {
        self.watch_lags.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn validation_failure(&self, reason: &'static str) {
        let mut map = match self.validation_failures.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        *map.entry(reason).or_insert(0) += 1;
    }

    /// A copy of every counter.
    pub fn snapshot(&self) -> MetricsSnapshot {
        let failures = match self.validation_failures.lock() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        };
        MetricsSnapshot {
            sessions_created: self.sessions_created.load(Ordering::Relaxed),
            sessions_revoked: self.sessions_revoked.load(Ordering::Relaxed),
            refresh_reuse_detected: self.refresh_reuse_detected.load(Ordering::Relaxed),
            refresh_rotated: self.refresh_rotated.load(Ordering::Relaxed),
            refresh_converged: self.refresh_converged.load(Ordering::Relaxed),
            refresh_reissued: self.refresh_reissued.load(Ordering::Relaxed),
            audit_failures_suppressed: self.audit_failures_suppressed.load(Ordering::Relaxed),
            audit_write_errors: self.audit_write_errors.load(Ordering::Relaxed),
            events_published: self.events_published.load(Ordering::Relaxed),
            event_publish_errors: self.event_publish_errors.load(Ordering::Relaxed),
            watch_lags: self.watch_lags.load(Ordering::Relaxed),
            validation_failures: failures,
        }
    }
}
