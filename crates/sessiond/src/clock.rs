//! Time as an injected dependency.
//!
//! Every expiry decision in sessiond takes "now" from a [`Clock`], so tests move a
//! [`ManualClock`] instead of sleeping. Instants are [`Timestamp`]s: milliseconds since the Unix
//! epoch, UTC, the same integer in every backend.
//!
//! There is exactly one expiry boundary in the code base, [`is_expired`]: a deadline `at` has
//! passed when `now >= at`. Everything that asks "is this over?" goes through it.

use std::fmt;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An instant in UTC with millisecond precision, stored as milliseconds since the Unix epoch.
#[derive(Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

impl Timestamp {
    /// The Unix epoch.
    pub const EPOCH: Timestamp = Timestamp(0);

    /// An instant from milliseconds since the Unix epoch.
    pub const fn from_unix_millis(millis: i64) -> Self {
        Timestamp(millis)
    }

    /// An instant from whole seconds since the Unix epoch (JWT `NumericDate`), saturating.
    pub const fn from_unix_seconds(seconds: i64) -> Self {
        Timestamp(seconds.saturating_mul(1000))
    }

    /// Milliseconds since the Unix epoch.
    pub const fn unix_millis(self) -> i64 {
        self.0
    }

    /// Whole seconds since the Unix epoch, rounded down (JWT `NumericDate`).
    pub const fn unix_seconds(self) -> i64 {
        self.0.div_euclid(1000)
    }

    /// This instant moved forward by `d`, saturating at the end of the representable range.
    pub fn saturating_add(self, d: Duration) -> Self {
        Timestamp(self.0.saturating_add(duration_millis(d)))
    }

    /// This instant moved back by `d`, saturating at the start of the representable range.
    pub fn saturating_sub(self, d: Duration) -> Self {
        Timestamp(self.0.saturating_sub(duration_millis(d)))
    }

    /// The time from `earlier` to `self`, or zero when `earlier` is not earlier.
    pub fn duration_since(self, earlier: Timestamp) -> Duration {
        let diff = self.0.saturating_sub(earlier.0);
        Duration::from_millis(u64::try_from(diff).unwrap_or(0))
    }

    /// RFC 3339 in UTC with millisecond precision, e.g. `2026-11-22T15:18:15.123Z`.
    pub fn to_rfc3339(self) -> String {
        let nanos = i128::from(self.0) * 1_000_000;
        match time::OffsetDateTime::from_unix_timestamp_nanos(nanos) {
            Ok(t) => {
                let (y, mo, d) = (t.year(), u8::from(t.month()), t.day());
                format!(
                    "{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
                    t.hour(),
                    t.minute(),
                    t.second(),
                    t.millisecond()
                )
            }
            // Out of the calendar's range: fall back to the raw number, never panic.
            Err(_) => format!("@{}ms", self.0),
        }
    }

    /// Parses an RFC 3339 instant (any offset); sub-millisecond digits are truncated.
    ///
    /// # Errors
    /// [`TimestampParseError`] when the text is not RFC 3339.
    pub fn parse_rfc3339(text: &str) -> Result<Self, TimestampParseError> {
        let t = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
            .map_err(|_| TimestampParseError)?;
        let millis = t.unix_timestamp_nanos().div_euclid(1_000_000);
        i64::try_from(millis)
            .map(Timestamp)
            .map_err(|_| TimestampParseError)
    }
}

/// The text was not an RFC 3339 timestamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("not an RFC 3339 timestamp")]
pub struct TimestampParseError;

fn duration_millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_rfc3339())
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Timestamp::parse_rfc3339(&text).map_err(serde::de::Error::custom)
    }
}

/// The one expiry boundary: a deadline `at` has passed when `now >= at`.
pub fn is_expired(at: Timestamp, now: Timestamp) -> bool {
    now >= at
}

/// A source of the current time.
pub trait Clock: Send + Sync + fmt::Debug + 'static {
    /// The current instant.
    fn now(&self) -> Timestamp;
}

/// The operating system's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        let millis = match SystemTime::now().duration_since(UNIX_EPOCH) {
            Ok(d) => duration_millis(d),
            // A wall clock set before 1970: report the epoch rather than a negative time.
            Err(_) => 0,
        };
        Timestamp(millis)
    }
}

/// A clock that only moves when told to; clones share one time.
#[derive(Debug, Clone)]
pub struct ManualClock {
    millis: Arc<AtomicI64>,
}

impl ManualClock {
    /// A clock standing at `start`.
    pub fn new(start: Timestamp) -> Self {
        ManualClock {
            millis: Arc::new(AtomicI64::new(start.0)),
        }
    }

    /// Moves the clock forward by `d`.
    pub fn advance(&self, d: Duration) {
        self.millis.fetch_add(duration_millis(d), Ordering::SeqCst);
    }

    /// Moves the clock back by `d` (a wall-clock jump backwards).
    pub fn rewind(&self, d: Duration) {
        self.millis.fetch_sub(duration_millis(d), Ordering::SeqCst);
    }

    /// Sets the clock to `at`.
    pub fn set(&self, at: Timestamp) {
        self.millis.store(at.0, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp(self.millis.load(Ordering::SeqCst))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boundary_is_inclusive_of_the_deadline() {
        let at = Timestamp::from_unix_millis(1_000);
        assert!(!is_expired(at, Timestamp::from_unix_millis(999)));
        assert!(is_expired(at, Timestamp::from_unix_millis(1_000)));
        assert!(is_expired(at, Timestamp::from_unix_millis(1_001)));
    }

    #[test]
    fn rfc3339_round_trip() {
        let t = Timestamp::from_unix_millis(1_795_360_695_123);
        let text = t.to_rfc3339();
        assert_eq!(text, "2026-11-22T15:18:15.123Z");
        assert_eq!(Timestamp::parse_rfc3339(&text).unwrap(), t);
        assert!(Timestamp::parse_rfc3339("yesterday").is_err());
    }

    #[test]
    fn manual_clock_moves_only_when_told() {
        let c = ManualClock::new(Timestamp::from_unix_millis(10_000));
        assert_eq!(c.now().unix_millis(), 10_000);
        c.advance(Duration::from_secs(2));
        assert_eq!(c.now().unix_millis(), 12_000);
        c.rewind(Duration::from_secs(5));
        assert_eq!(c.now().unix_millis(), 7_000);
        let shared = c.clone();
        shared.set(Timestamp::from_unix_millis(1));
        assert_eq!(c.now().unix_millis(), 1);
    }

    #[test]
    fn saturating_arithmetic() {
        let t = Timestamp::from_unix_millis(i64::MAX - 1);
        assert_eq!(
            t.saturating_add(Duration::from_secs(10)).unix_millis(),
            i64::MAX
        );
        assert_eq!(Timestamp::EPOCH.duration_since(t), Duration::ZERO);
        assert_eq!(Timestamp::from_unix_seconds(5).unix_seconds(), 5);
    }
}
