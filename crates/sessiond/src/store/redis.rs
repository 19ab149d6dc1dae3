//! Redis as the one-time claim store (docs/DESIGN.md §7.4): the fast path for claims when several
//! sessiond nodes share one deployment. Sessions, keys and the audit trail stay in the main
//! backend; plug this in with [`ServiceBuilder::claim_store`](crate::service::ServiceBuilder::claim_store).
//!
//! # Why a script and not `SET key 1 NX PXAT exp`
//! The original contract sketched a claim as `SET key 1 NX PXAT exp`. That lets Redis's own clock decide the
//! outcome, and [`ClaimStore::claim`] must not: "now" is injected (a manual clock in tests, the
//! service's clock in production), and a leftover record whose own expiry is at or before that
//! `now` must count as absent whether or not Redis has collected it yet. With `PXAT` a claim
//! whose `expires_at` is in the past by Redis's clock vanishes at once (so the next claim of the
//! id wrongly succeeds), and one whose expiry is in the future by Redis's clock blocks a claim
//! the injected clock says is already free. `NX` cannot express "absent or expired at `now`".
//!
//! So one Lua script ([`CLAIM_SCRIPT`], sent as `EVALSHA`, or as `EVAL` when the server has
//! forgotten it; atomic on the server) stores the logical expiry (milliseconds since the epoch)
//! as the value and decides against the injected `now`: an existing value greater than `now` is
//! [`ClaimOutcome::AlreadyUsed`]; otherwise the value is (re)written and the call is
//! [`ClaimOutcome::Claimed`]. The key also gets a real TTL of `expires_at - now` milliseconds,
//! so Redis garbage-collects it by itself; the TTL is only for collection and never decides an
//! outcome. Under a real clock the key outlives its logical expiry by the request's latency at
//! most, never dies before it. The script reads and writes only its one declared key, so it
//! stays correct behind a cluster-aware client too (one hash slot).
//!
//! # Failures
//! Connection refused, timeouts, dropped connections, a cluster that is down, loading or in
//! failover are [`StoreError::Unavailable`]; any other error the server answers with is
//! [`StoreError::Backend`]. Both keep the Redis error as their source; neither carries a claim
//! id. The [`ConnectionManager`] reconnects by itself: while Redis is unreachable every claim
//! fails promptly (bounded by [`RedisOptions::connect_timeout`] plus
//! [`RedisOptions::response_timeout`]), and the first claim after Redis is back succeeds, without
//! a restart.
//!
//! A claim that times out after it was sent may or may not have been recorded: it is reported
//! as unavailable, and a retry of the same id may then find it [`ClaimOutcome::AlreadyUsed`].
//! That errs on the side of "at most once", which is the property a one-time claim exists for.

use std::error::Error as StdError;
use std::fmt;
use std::io;
use std::time::Duration;

use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{ErrorKind, RedisError, Script, ServerErrorKind};

use super::{ClaimOutcome, ClaimStore, StoreError};
use crate::clock::Timestamp;

/// The key prefix of claims unless [`RedisOptions::key_prefix`] says otherwise.
pub const DEFAULT_KEY_PREFIX: &str = "sessiond:claim:";

/// The claim script. `KEYS[1]`: the claim's key; `ARGV[1]`: its logical expiry, `ARGV[2]`: the
/// injected now (both milliseconds since the Unix epoch), `ARGV[3]`: the TTL in milliseconds
/// (at least 1). Returns 1 (claimed), 0 (already used), or -1 when the key holds something that
/// is not an expiry (left untouched; reported as corrupt).
///
/// A stored expiry at or before now is expired (the one boundary of `clock::is_expired`), so
/// the key counts as absent and is overwritten.
pub const CLAIM_SCRIPT: &str = r"
local stored = redis.call('GET', KEYS[1])
if stored then
  local expires_at = tonumber(stored)
  if expires_at == nil then
    return -1
  end
  if expires_at > tonumber(ARGV[2]) then
    return 0
  end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3])
return 1
";

/// The longest TTL given to a key (about 285,000 years): far beyond any real claim, and well
/// inside what Redis accepts for `PX`. Only collection depends on it, never an outcome.
const MAX_TTL_MILLIS: i64 = 1 << 53;

/// Connection settings for [`RedisClaimStore`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RedisOptions {
    /// Prepended to every claim id to form its key (default [`DEFAULT_KEY_PREFIX`]). Distinct
    /// prefixes keep deployments, or test runs, sharing one Redis apart.
    pub key_prefix: String,
    /// How long one attempt to open a connection may take (default 2 s).
    pub connect_timeout: Duration,
    /// How long one command may wait for its answer (default 2 s).
    pub response_timeout: Duration,
}

impl Default for RedisOptions {
    fn default() -> Self {
        RedisOptions {
            key_prefix: DEFAULT_KEY_PREFIX.to_owned(),
            connect_timeout: Duration::from_secs(2),
            response_timeout: Duration::from_secs(2),
        }
    }
}

/// One-time claims in Redis, shared by every node that points at the same server.
///
/// Cloning is cheap and shares the connection.
#[derive(Clone)]
pub struct RedisClaimStore {
    conn: ConnectionManager,
    script: Script,
    prefix: String,
    /// The most one operation may take, reconnection included.
    deadline: Duration,
}

impl fmt::Debug for RedisClaimStore {
    // The URL may carry a password: only the settings are shown.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisClaimStore")
            .field("prefix", &self.prefix)
            .field("deadline", &self.deadline)
            .finish_non_exhaustive()
    }
}

impl RedisClaimStore {
    /// Connects to `url` (`redis://[user:password@]host:port[/db]`, or `rediss://` where the
    /// Redis client was built with TLS) and loads the claim script, so an unreachable server,
    /// bad credentials or a user not allowed to run scripts show up here rather than on the
    /// first claim. Later outages are survived: the connection is re-established on demand.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the server cannot be reached within
    /// [`RedisOptions::connect_timeout`] (plus [`RedisOptions::response_timeout`] for the script
    /// load); [`StoreError::Backend`] for an invalid URL or any error the server answers with.
    pub async fn connect(url: &str, options: RedisOptions) -> Result<Self, StoreError> {
        let store = Self::connect_lazy(url, options)?;
        let mut conn = store.conn.clone();
        store
            .bounded(store.script.load_async(&mut conn))
            .await
            .map(|_sha| ())?;
        Ok(store)
    }

    /// Like [`RedisClaimStore::connect`], but opens no connection until the first command: a
    /// node can start while Redis is down, answer its claims as unavailable, and serve them as
    /// soon as Redis is back.
    ///
    /// # Errors
    /// [`StoreError::Backend`] for an invalid URL, or when called outside a Tokio runtime (the
    /// connection's tasks need one).
    pub fn connect_lazy(url: &str, options: RedisOptions) -> Result<Self, StoreError> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(StoreError::Backend(Box::new(io::Error::other(
                "RedisClaimStore must be created inside a Tokio runtime",
            ))));
        }
        let client = redis::Client::open(url).map_err(map_err)?;
        // No reconnection back-off: a claim is on a request path, and a prompt 503 beats a
        // request stuck behind retries. Each command while Redis is down makes one fresh attempt
        // (a refused connection costs nothing), so the first one after it returns goes through.
        let config = ConnectionManagerConfig::new()
            .set_number_of_retries(0)
            .set_connection_timeout(Some(options.connect_timeout))
            .set_response_timeout(Some(options.response_timeout));
        let conn = ConnectionManager::new_lazy_with_config(client, config).map_err(map_err)?;
        Ok(RedisClaimStore {
            conn,
            script: Script::new(CLAIM_SCRIPT),
            prefix: options.key_prefix,
            deadline: options
                .connect_timeout
                .saturating_add(options.response_timeout),
        })
    }

    /// The key prefix in use.
    pub fn key_prefix(&self) -> &str {
        &self.prefix
    }

    /// Checks that Redis answers (`PING`), for readiness probes.
    ///
    /// # Errors
    /// As [`ClaimStore::claim`].
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.with_retry(
            |mut conn| async move { redis::cmd("PING").query_async::<()>(&mut conn).await },
        )
        .await
    }

    /// Runs `op` on a fresh handle of the shared connection within the deadline. A connection
    /// that was refused never carried the command, so it is safe to retry once: the failed
    /// attempt has already started a new connection, and if Redis is back this call succeeds.
    async fn with_retry<T, F, Fut>(&self, op: F) -> Result<T, StoreError>
    where
        F: Fn(ConnectionManager) -> Fut,
        Fut: std::future::Future<Output = Result<T, RedisError>>,
    {
        self.bounded(async {
            match op(self.conn.clone()).await {
                Err(e) if e.is_connection_refusal() => op(self.conn.clone()).await,
                other => other,
            }
        })
        .await
    }

    async fn bounded<T>(
        &self,
        op: impl std::future::Future<Output = Result<T, RedisError>>,
    ) -> Result<T, StoreError> {
        match tokio::time::timeout(self.deadline, op).await {
            Ok(result) => result.map_err(map_err),
            Err(_elapsed) => Err(StoreError::Unavailable(Box::new(io::Error::new(
                io::ErrorKind::TimedOut,
                "redis did not answer in time",
            )))),
        }
    }
}

#[async_trait]
impl ClaimStore for RedisClaimStore {
    async fn claim(
        &self,
        id: &str,
        expires_at: Timestamp,
        now: Timestamp,
    ) -> Result<ClaimOutcome, StoreError> {
        if crate::clock::is_expired(expires_at, now) {
            return Ok(ClaimOutcome::Expired);
        }
        let key = format!("{}{id}", self.prefix);
        let ttl = ttl_millis(expires_at, now);
        let call = |command: &str, script: &str| {
            let mut cmd = redis::cmd(command);
            cmd.arg(script)
                .arg(1)
                .arg(key.as_str())
                .arg(expires_at.unix_millis())
                .arg(now.unix_millis())
                .arg(ttl);
            cmd
        };
        let (evalsha, eval) = (
            call("EVALSHA", self.script.get_hash()),
            call("EVAL", CLAIM_SCRIPT),
        );
        let answer: i64 = self
            .with_retry(|mut conn| {
                let (evalsha, eval) = (&evalsha, &eval);
                async move {
                    match evalsha.query_async(&mut conn).await {
                        // Redis restarted or failed over and forgot the script: `EVAL` runs it
                        // and caches it again in one round trip, and unlike `SCRIPT LOAD` then
                        // `EVALSHA` it cannot lose a race with another `SCRIPT FLUSH`.
                        Err(e) if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                            eval.query_async(&mut conn).await
                        }
                        other => other,
                    }
                }
            })
            .await?;
        match answer {
            1 => Ok(ClaimOutcome::Claimed),
            0 => Ok(ClaimOutcome::AlreadyUsed),
            _ => Err(StoreError::Corrupt { what: "claim" }),
        }
    }

    /// Always 0: every claim key carries a TTL, so Redis deletes expired claims by itself and
    /// there is nothing for the GC sweep to do. (An expired key Redis has not collected yet
    /// already counts as absent to [`ClaimStore::claim`].)
    async fn delete_expired_claims(&self, _now: Timestamp, _limit: u32) -> Result<u64, StoreError> {
        Ok(0)
    }
}

/// The real TTL of a claim: its remaining logical lifetime, at least 1 ms, at most
/// [`MAX_TTL_MILLIS`].
fn ttl_millis(expires_at: Timestamp, now: Timestamp) -> i64 {
    expires_at
        .unix_millis()
        .saturating_sub(now.unix_millis())
        .clamp(1, MAX_TTL_MILLIS)
}

/// Sorts a Redis error into "could not reach / could not decide now" and "answered with an
/// error", keeping it as the source.
fn map_err(e: RedisError) -> StoreError {
    let unavailable = is_unavailable(&e);
    let source: Box<dyn StdError + Send + Sync> = Box::new(e);
    if unavailable {
        StoreError::Unavailable(source)
    } else {
        StoreError::Backend(source)
    }
}

/// Whether `e` means "could not reach Redis, or it could not decide now" (connection refused,
/// timed out or dropped, a cluster that is down, loading, in failover or busy with a script),
/// as opposed to an error the server answered with. Shared with the event bus
/// ([`crate::events::redis`]).
pub(crate) fn is_unavailable(e: &RedisError) -> bool {
    e.is_io_error()
        || e.is_timeout()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || matches!(
            e.kind(),
            ErrorKind::ClusterConnectionNotFound
                | ErrorKind::Server(
                    ServerErrorKind::ClusterDown
                        | ServerErrorKind::MasterDown
                        | ServerErrorKind::TryAgain
                        | ServerErrorKind::BusyLoading
                        | ServerErrorKind::ReadOnly
                )
        )
        // A long-running script holds the server.
        || e.code() == Some("BUSY")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_is_the_remaining_lifetime_clamped() {
        let at = |ms| Timestamp::from_unix_millis(ms);
        assert_eq!(ttl_millis(at(1_500), at(1_000)), 500);
        assert_eq!(ttl_millis(at(1_001), at(1_000)), 1);
        assert_eq!(
            ttl_millis(at(1_000), at(1_000)),
            1,
            "never zero or negative"
        );
        assert_eq!(ttl_millis(at(i64::MAX), at(i64::MIN)), MAX_TTL_MILLIS);
    }

    #[test]
    fn errors_are_sorted_into_unavailable_and_backend() {
        let cases: Vec<(RedisError, bool)> = vec![
            (
                io::Error::new(io::ErrorKind::ConnectionRefused, "refused").into(),
                true,
            ),
            (io::Error::new(io::ErrorKind::TimedOut, "slow").into(), true),
            (
                io::Error::new(io::ErrorKind::BrokenPipe, "gone").into(),
                true,
            ),
            (
                (ErrorKind::Server(ServerErrorKind::ClusterDown), "down").into(),
                true,
            ),
            (
                (ErrorKind::Server(ServerErrorKind::BusyLoading), "loading").into(),
                true,
            ),
            (
                (ErrorKind::Server(ServerErrorKind::ReadOnly), "replica").into(),
                true,
            ),
            (
                (ErrorKind::Server(ServerErrorKind::ResponseError), "bad").into(),
                false,
            ),
            (
                (ErrorKind::Server(ServerErrorKind::NoPerm), "acl").into(),
                false,
            ),
            ((ErrorKind::AuthenticationFailed, "auth").into(), false),
            ((ErrorKind::UnexpectedReturnType, "type").into(), false),
        ];
        for (error, unavailable) in cases {
            let shown = format!("{error:?}");
            let mapped = map_err(error);
            assert_eq!(
                matches!(mapped, StoreError::Unavailable(_)),
                unavailable,
                "{shown}"
            );
            assert!(mapped.source().is_some(), "the source is kept: {shown}");
        }
    }

    #[test]
    fn outside_a_runtime_is_an_error_not_a_panic() {
        let err = RedisClaimStore::connect_lazy("redis://127.0.0.1:1", RedisOptions::default())
            .unwrap_err();
        assert!(matches!(err, StoreError::Backend(_)), "{err:?}");
    }

    #[tokio::test]
    async fn an_invalid_url_is_a_backend_error() {
        for url in ["", "http://127.0.0.1:6379", "redis://127.0.0.1:notaport"] {
            let err = RedisClaimStore::connect_lazy(url, RedisOptions::default()).unwrap_err();
            assert!(matches!(err, StoreError::Backend(_)), "{url}: {err:?}");
        }
    }

    #[tokio::test]
    async fn debug_shows_no_url() {
        let store = RedisClaimStore::connect_lazy(
            "redis://user:hunter2@127.0.0.1:1/0",
            RedisOptions::default(),
        )
        .unwrap();
        let shown = format!("{store:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains(DEFAULT_KEY_PREFIX));
    }
}
