//! The embedded SQLite backend (sqlx): one file, WAL, zero set-up.
//!
//! Writes go through a pool of one connection, so writers queue in process instead of
//! contending for SQLite's lock; reads use a separate pool and run concurrently under WAL.
//! Every state change is one statement or one transaction whose first statement writes, so it
//! takes the write lock up front and cannot fail on a lock upgrade. Other processes on the same
//! file (the CLI while the server runs) wait on `busy_timeout`.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::Row;

use super::{
    ApiKeyRecord, ApiKeyStore, AuditStore, ClaimOutcome, ClaimStore, KeyStore, RefreshRotation,
    Revocation, SessionOwner, SessionStore, StoreError,
};
use crate::audit::{AuditEvent, AuditQuery, AuditRecord};
use crate::clock::Timestamp;
use crate::id::{ApiKeyId, KeyId, SessionId, Tenant, UserId};
use crate::keys::{KeyAlgorithm, KeyPurpose, KeyRecord};
use crate::session::{
    RefreshState, RefreshStep, RevokeReason, Session, SessionKind, SessionRecord,
};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// Connection settings for [`SqliteStore`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SqliteOptions {
    /// Readers in the read pool (default 8).
    pub read_connections: u32,
    /// How long a statement waits for another process's write lock (default 5 s).
    pub busy_timeout: Duration,
    /// How long to wait for a pooled connection before reporting the store unavailable
    /// (default 5 s).
    pub acquire_timeout: Duration,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        SqliteOptions {
            read_connections: 8,
            busy_timeout: Duration::from_secs(5),
            acquire_timeout: Duration::from_secs(5),
        }
    }
}

/// Sessions, keys and the audit trail in one SQLite file.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    read: SqlitePool,
    write: SqlitePool,
}

fn map_err(e: sqlx::Error) -> StoreError {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => StoreError::Unavailable(Box::new(e)),
        sqlx::Error::Database(ref db)
            if matches!(db.code().as_deref(), Some("5") | Some("6") | Some("517")) =>
        {
            // SQLITE_BUSY, SQLITE_LOCKED, SQLITE_BUSY_SNAPSHOT: another writer held the lock.
            StoreError::Unavailable(Box::new(e))
        }
        other => StoreError::Backend(Box::new(other)),
    }
}

fn ts(row: &SqliteRow, col: &str) -> Result<Timestamp, StoreError> {
    row.try_get::<i64, _>(col)
        .map(Timestamp::from_unix_millis)
        .map_err(map_err)
}

fn opt_ts(row: &SqliteRow, col: &str) -> Result<Option<Timestamp>, StoreError> {
    row.try_get::<Option<i64>, _>(col)
        .map(|v| v.map(Timestamp::from_unix_millis))
        .map_err(map_err)
}

fn hash(row: &SqliteRow, col: &'static str) -> Result<Option<[u8; 32]>, StoreError> {
    let bytes: Option<Vec<u8>> = row.try_get(col).map_err(map_err)?;
    bytes
        .map(|b| {
            b.as_slice()
                .try_into()
                .map_err(|_| StoreError::Corrupt { what: col })
        })
        .transpose()
}

fn text(row: &SqliteRow, col: &str) -> Result<String, StoreError> {
    row.try_get::<String, _>(col).map_err(map_err)
}

fn session_from_row(row: &SqliteRow) -> Result<SessionRecord, StoreError> {
    let kind = text(row, "kind")?;
    let claims: String = text(row, "claims")?;
    let reason: Option<String> = row.try_get("revoke_reason").map_err(map_err)?;
    let session = Session {
        id: SessionId::parse(&text(row, "id")?).map_err(corrupt("session id"))?,
        user_id: UserId::new(text(row, "user_id")?).map_err(corrupt("user id"))?,
        tenant: Tenant::new(text(row, "tenant")?).map_err(corrupt("tenant"))?,
        kind: SessionKind::parse(&kind).ok_or(StoreError::Corrupt {
            what: "session kind",
        })?,
        created_at: ts(row, "created_at")?,
        last_seen_at: ts(row, "last_seen_at")?,
        idle_expires_at: ts(row, "idle_expires_at")?,
        absolute_expires_at: ts(row, "absolute_expires_at")?,
        revoked_at: opt_ts(row, "revoked_at")?,
        revoke_reason: reason
            .map(|r| RevokeReason::new(&r).map_err(corrupt("revoke reason")))
            .transpose()?,
        ip: row.try_get("ip").map_err(map_err)?,
        user_agent: row.try_get("user_agent").map_err(map_err)?,
        claims: serde_json::from_str(&claims).map_err(corrupt("claims"))?,
    };
    let refresh = match hash(row, "refresh_hash")? {
        Some(h) => Some(RefreshState {
            hash: h,
            generation: u64::try_from(
                row.try_get::<i64, _>("refresh_generation")
                    .map_err(map_err)?,
            )
            .map_err(corrupt("refresh generation"))?,
            used: row.try_get::<bool, _>("refresh_used").map_err(map_err)?,
            chain: RefreshStep::decode_chain(&text(row, "refresh_chain")?).ok_or(
                StoreError::Corrupt {
                    what: "refresh chain",
                },
            )?,
        }),
        None => None,
    };
    Ok(SessionRecord {
        session,
        key_id: KeyId::parse(&text(row, "key_id")?).map_err(corrupt("key id"))?,
        csrf_hash: hash(row, "csrf_hash")?,
        refresh,
    })
}

fn owner_from_row(row: &SqliteRow) -> Result<SessionOwner, StoreError> {
    Ok(SessionOwner {
        id: SessionId::parse(&text(row, "id")?).map_err(corrupt("session id"))?,
        user_id: UserId::new(text(row, "user_id")?).map_err(corrupt("user id"))?,
        tenant: Tenant::new(text(row, "tenant")?).map_err(corrupt("tenant"))?,
    })
}

fn key_from_row(row: &SqliteRow) -> Result<KeyRecord, StoreError> {
    Ok(KeyRecord {
        id: KeyId::parse(&text(row, "id")?).map_err(corrupt("key id"))?,
        purpose: KeyPurpose::parse(&text(row, "purpose")?).map_err(corrupt("key purpose"))?,
        algorithm: KeyAlgorithm::parse(&text(row, "algorithm")?)
            .map_err(corrupt("key algorithm"))?,
        created_at: ts(row, "created_at")?,
        retired_at: opt_ts(row, "retired_at")?,
        verify_until: opt_ts(row, "verify_until")?,
        public_key: row.try_get("public_key").map_err(map_err)?,
        sealed: row.try_get("sealed").map_err(map_err)?,
    })
}

fn audit_from_row(row: &SqliteRow) -> Result<AuditRecord, StoreError> {
    let event = text(row, "event")?;
    let mut record = AuditRecord::new(
        ts(row, "at")?,
        AuditEvent::parse(&event).ok_or(StoreError::Corrupt {
            what: "audit event",
        })?,
        text(row, "reason")?,
    );
    let sid: Option<String> = row.try_get("session_id").map_err(map_err)?;
    let uid: Option<String> = row.try_get("user_id").map_err(map_err)?;
    let tenant: Option<String> = row.try_get("tenant").map_err(map_err)?;
    let kid: Option<String> = row.try_get("key_id").map_err(map_err)?;
    record.session_id = sid
        .map(|s| SessionId::parse(&s).map_err(corrupt("audit session id")))
        .transpose()?;
    record.user_id = uid
        .map(|u| UserId::new(u).map_err(corrupt("audit user id")))
        .transpose()?;
    record.tenant = tenant
        .map(|t| Tenant::new(t).map_err(corrupt("audit tenant")))
        .transpose()?;
    record.key_id = kid
        .map(|k| KeyId::parse(&k).map_err(corrupt("audit key id")))
        .transpose()?;
    record.ip = row.try_get("ip").map_err(map_err)?;
    Ok(record)
}

/// Maps any decoding failure of a stored field to [`StoreError::Corrupt`] naming the field.
fn corrupt<E>(what: &'static str) -> impl FnOnce(E) -> StoreError {
    move |_| StoreError::Corrupt { what }
}

fn millis(t: Timestamp) -> i64 {
    t.unix_millis()
}

impl SqliteStore {
    /// Opens (creating if missing) the database at `url` (`sqlite://path` or a plain path) and
    /// applies pending migrations.
    ///
    /// # Errors
    /// [`StoreError`] when the file cannot be opened or migrated.
    pub async fn open(url: &str, options: SqliteOptions) -> Result<Self, StoreError> {
        let store = Self::connect(url, options).await?;
        store.migrate().await?;
        Ok(store)
    }

    /// Opens the database without migrating.
    ///
    /// # Errors
    /// [`StoreError`] when the URL is malformed or the file cannot be opened.
    pub async fn connect(url: &str, options: SqliteOptions) -> Result<Self, StoreError> {
        let url = if url.starts_with("sqlite:") {
            url.to_owned()
        } else {
            format!("sqlite://{url}")
        };
        let connect = SqliteConnectOptions::from_str(&url)
            .map_err(map_err)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(options.busy_timeout)
            .foreign_keys(true);
        // No ping before each acquire (sqlx's default): an SQLite connection is a file handle in
        // this process, not a socket that can go stale, and the ping is a round trip to the
        // connection's worker thread on every query. A broken connection still fails the query
        // itself, as a `StoreError`.
        let write = SqlitePoolOptions::new()
            .max_connections(1)
            .test_before_acquire(false)
            .acquire_timeout(options.acquire_timeout)
            .connect_with(connect.clone())
            .await
            .map_err(map_err)?;
        let read = SqlitePoolOptions::new()
            .max_connections(options.read_connections.max(1))
            .test_before_acquire(false)
            .acquire_timeout(options.acquire_timeout)
            .connect_with(connect.read_only(false))
            .await
            .map_err(map_err)?;
        Ok(SqliteStore { read, write })
    }

    /// Applies pending migrations.
    ///
    /// # Errors
    /// [`StoreError::Backend`] when a migration fails or the database is newer than this build.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        MIGRATOR
            .run(&self.write)
            .await
            .map_err(|e| StoreError::Backend(Box::new(e)))
    }

    /// SQLite's `data_version` as seen by this store's writer connection: it moves when another
    /// connection commits to the file and never for this connection's own writes. The writer is
    /// the only connection of this store that writes, so a change means another store, in
    /// practice another process (`sessiond sessions revoke` while the server runs). The server
    /// polls it to tell its in-process event bus that rows changed behind its back.
    ///
    /// # Errors
    /// [`StoreError`] when the writer connection cannot be used.
    pub async fn external_commits(&self) -> Result<i64, StoreError> {
        sqlx::query_scalar::<_, i64>("PRAGMA data_version")
            .fetch_one(&self.write)
            .await
            .map_err(map_err)
    }

    /// Closes both pools, waiting for connections to finish.
    pub async fn close(&self) {
        self.write.close().await;
        self.read.close().await;
    }
}

macro_rules! session_columns {
    () => {
        "id, user_id, tenant, kind, created_at, last_seen_at, idle_expires_at, \
         absolute_expires_at, revoked_at, revoke_reason, key_id, csrf_hash, refresh_hash, \
         refresh_generation, refresh_used, refresh_chain, ip, user_agent, claims"
    };
}

#[async_trait]
impl SessionStore for SqliteStore {
    async fn create_session(
        &self,
        record: &SessionRecord,
        max_active: Option<u32>,
        now: Timestamp,
    ) -> Result<Vec<SessionOwner>, StoreError> {
        let s = &record.session;
        let claims =
            serde_json::to_string(&s.claims).map_err(|_| StoreError::Corrupt { what: "claims" })?;
        let refresh = record.refresh.as_ref();
        let generation = refresh.map_or(0, |r| i64::try_from(r.generation).unwrap_or(i64::MAX));
        let mut tx = self.write.begin().await.map_err(map_err)?;
        sqlx::query(
            "INSERT INTO sessions (id, user_id, tenant, kind, created_at, last_seen_at, \
             idle_expires_at, absolute_expires_at, revoked_at, revoke_reason, key_id, csrf_hash, \
             refresh_hash, refresh_generation, refresh_used, refresh_chain, ip, \
             user_agent, claims) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(s.id.as_str())
        .bind(s.user_id.as_str())
        .bind(s.tenant.as_str())
        .bind(s.kind.as_str())
        .bind(millis(s.created_at))
        .bind(millis(s.last_seen_at))
        .bind(millis(s.idle_expires_at))
        .bind(millis(s.absolute_expires_at))
        .bind(s.revoked_at.map(millis))
        .bind(s.revoke_reason.as_ref().map(RevokeReason::as_str))
        .bind(record.key_id.as_str())
        .bind(record.csrf_hash.as_ref().map(|h| h.as_slice()))
        .bind(refresh.map(|r| r.hash.as_slice()))
        .bind(generation)
        .bind(refresh.is_some_and(|r| r.used))
        .bind(RefreshStep::encode_chain(
            refresh.map_or(&[][..], |r| r.chain.as_slice()),
        ))
        .bind(s.ip.as_deref())
        .bind(s.user_agent.as_deref())
        .bind(claims)
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
        let mut evicted = Vec::new();
        if let Some(max) = max_active {
            let rows = sqlx::query(
                "UPDATE sessions SET revoked_at = ?1, revoke_reason = 'evicted' \
                 WHERE id IN (SELECT id FROM sessions \
                   WHERE user_id = ?2 AND tenant = ?3 AND revoked_at IS NULL \
                     AND idle_expires_at > ?1 AND absolute_expires_at > ?1 \
                   ORDER BY (id = ?4) DESC, created_at DESC, id DESC LIMIT -1 OFFSET ?5) \
                 RETURNING id, user_id, tenant",
            )
            .bind(millis(now))
            .bind(s.user_id.as_str())
            .bind(s.tenant.as_str())
            .bind(s.id.as_str())
            .bind(i64::from(max))
            .fetch_all(&mut *tx)
            .await
            .map_err(map_err)?;
            evicted = rows.iter().map(owner_from_row).collect::<Result<_, _>>()?;
        }
        tx.commit().await.map_err(map_err)?;
        Ok(evicted)
    }

    async fn session(&self, id: &SessionId) -> Result<Option<SessionRecord>, StoreError> {
        let row = sqlx::query(concat!(
            "SELECT ",
            session_columns!(),
            " FROM sessions WHERE id = ?"
        ))
        .bind(id.as_str())
        .fetch_optional(&self.read)
        .await
        .map_err(map_err)?;
        row.as_ref().map(session_from_row).transpose()
    }

    async fn touch_session(
        &self,
        id: &SessionId,
        last_seen_at: Timestamp,
        idle_expires_at: Timestamp,
        seen_before: Timestamp,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE sessions SET last_seen_at = ?1, \
             idle_expires_at = MIN(?2, absolute_expires_at) \
             WHERE id = ?3 AND revoked_at IS NULL AND last_seen_at <= ?4",
        )
        .bind(millis(last_seen_at))
        .bind(millis(idle_expires_at))
        .bind(id.as_str())
        .bind(millis(seen_before))
        .execute(&self.write)
        .await
        .map_err(map_err)?;
        Ok(done.rows_affected() == 1)
    }

    async fn revoke_session(
        &self,
        id: &SessionId,
        at: Timestamp,
        reason: &RevokeReason,
    ) -> Result<Revocation, StoreError> {
        let revoked = sqlx::query(
            "UPDATE sessions SET revoked_at = ?, revoke_reason = ? \
             WHERE id = ? AND revoked_at IS NULL RETURNING id, user_id, tenant",
        )
        .bind(millis(at))
        .bind(reason.as_str())
        .bind(id.as_str())
        .fetch_optional(&self.write)
        .await
        .map_err(map_err)?;
        if let Some(row) = revoked {
            return Ok(Revocation::Revoked(owner_from_row(&row)?));
        }
        let exists = sqlx::query("SELECT 1 FROM sessions WHERE id = ?")
            .bind(id.as_str())
            .fetch_optional(&self.write)
            .await
            .map_err(map_err)?;
        Ok(if exists.is_some() {
            Revocation::AlreadyRevoked
        } else {
            Revocation::NotFound
        })
    }

    async fn revoke_user_sessions(
        &self,
        user: &UserId,
        tenant: Option<&Tenant>,
        except: Option<&SessionId>,
        at: Timestamp,
        reason: &RevokeReason,
    ) -> Result<Vec<SessionOwner>, StoreError> {
        let rows = sqlx::query(
            "UPDATE sessions SET revoked_at = ?1, revoke_reason = ?2 \
             WHERE user_id = ?3 AND (?4 IS NULL OR tenant = ?4) AND (?5 IS NULL OR id <> ?5) \
               AND revoked_at IS NULL AND idle_expires_at > ?1 AND absolute_expires_at > ?1 \
             RETURNING id, user_id, tenant",
        )
        .bind(millis(at))
        .bind(reason.as_str())
        .bind(user.as_str())
        .bind(tenant.map(Tenant::as_str))
        .bind(except.map(SessionId::as_str))
        .fetch_all(&self.write)
        .await
        .map_err(map_err)?;
        rows.iter().map(owner_from_row).collect()
    }

    async fn user_sessions(
        &self,
        user: &UserId,
        tenant: Option<&Tenant>,
        now: Timestamp,
    ) -> Result<Vec<Session>, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            session_columns!(),
            " FROM sessions WHERE user_id = ?1 AND (?2 IS NULL OR tenant = ?2) \
              AND revoked_at IS NULL AND idle_expires_at > ?3 AND absolute_expires_at > ?3 \
              ORDER BY created_at, id"
        ))
        .bind(user.as_str())
        .bind(tenant.map(Tenant::as_str))
        .bind(millis(now))
        .fetch_all(&self.read)
        .await
        .map_err(map_err)?;
        rows.iter()
            .map(|r| session_from_row(r).map(|rec| rec.session))
            .collect()
    }

    async fn set_csrf_hash(
        &self,
        id: &SessionId,
        hash: &[u8; 32],
        now: Timestamp,
    ) -> Result<Option<SessionOwner>, StoreError> {
        let row = sqlx::query(
            "UPDATE sessions SET csrf_hash = ?1 WHERE id = ?2 AND revoked_at IS NULL \
             AND idle_expires_at > ?3 AND absolute_expires_at > ?3 RETURNING id, user_id, tenant",
        )
        .bind(hash.as_slice())
        .bind(id.as_str())
        .bind(millis(now))
        .fetch_optional(&self.write)
        .await
        .map_err(map_err)?;
        row.as_ref().map(owner_from_row).transpose()
    }

    async fn delete_expired_sessions(&self, now: Timestamp, limit: u32) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "DELETE FROM sessions WHERE id IN (SELECT id FROM sessions \
             WHERE idle_expires_at <= ?1 OR absolute_expires_at <= ?1 LIMIT ?2)",
        )
        .bind(millis(now))
        .bind(i64::from(limit))
        .execute(&self.write)
        .await
        .map_err(map_err)?;
        Ok(done.rows_affected())
    }

    async fn rotate_refresh(&self, r: RefreshRotation<'_>) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE sessions SET refresh_hash = ?1, refresh_generation = ?2, refresh_used = 0, \
               refresh_chain = ?3, last_seen_at = ?4, \
               idle_expires_at = MIN(?5, absolute_expires_at) \
             WHERE id = ?6 AND refresh_hash = ?7 AND (?8 = 0 OR refresh_used = 0) \
               AND revoked_at IS NULL AND idle_expires_at > ?4 AND absolute_expires_at > ?4",
        )
        .bind(r.new_hash.as_slice())
        .bind(i64::try_from(r.generation).map_err(corrupt("refresh generation"))?)
        .bind(RefreshStep::encode_chain(r.chain))
        .bind(millis(r.now))
        .bind(millis(r.idle_expires_at))
        .bind(r.id.as_str())
        .bind(r.expected_hash.as_slice())
        .bind(r.only_if_unused)
        .execute(&self.write)
        .await
        .map_err(map_err)?;
        Ok(done.rows_affected() == 1)
    }

    async fn mark_refresh_used(&self, id: &SessionId, generation: u64) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE sessions SET refresh_used = 1 \
             WHERE id = ?1 AND refresh_generation = ?2 AND refresh_used = 0",
        )
        .bind(id.as_str())
        .bind(i64::try_from(generation).map_err(corrupt("refresh generation"))?)
        .execute(&self.write)
        .await
        .map_err(map_err)?;
        Ok(done.rows_affected() == 1)
    }
}

#[async_trait]
impl ClaimStore for SqliteStore {
    async fn claim(
        &self,
        id: &str,
        expires_at: Timestamp,
        now: Timestamp,
    ) -> Result<ClaimOutcome, StoreError> {
        if crate::clock::is_expired(expires_at, now) {
            return Ok(ClaimOutcome::Expired);
        }
        // Insert-if-absent in one statement; a leftover record that has itself expired (not yet
        // collected) is replaced, so the outcome never depends on GC timing.
        let done = sqlx::query(
            "INSERT INTO claims (id, expires_at, claimed_at) VALUES (?1, ?2, ?3) \
             ON CONFLICT (id) DO UPDATE SET expires_at = excluded.expires_at, \
               claimed_at = excluded.claimed_at WHERE claims.expires_at <= ?3",
        )
        .bind(id)
        .bind(millis(expires_at))
        .bind(millis(now))
        .execute(&self.write)
        .await
        .map_err(map_err)?;
        Ok(if done.rows_affected() == 1 {
            ClaimOutcome::Claimed
        } else {
            ClaimOutcome::AlreadyUsed
        })
    }

    async fn delete_expired_claims(&self, now: Timestamp, limit: u32) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "DELETE FROM claims WHERE id IN (SELECT id FROM claims WHERE expires_at <= ?1 LIMIT ?2)",
        )
        .bind(millis(now))
        .bind(i64::from(limit))
        .execute(&self.write)
        .await
        .map_err(map_err)?;
        Ok(done.rows_affected())
    }
}

#[async_trait]
impl KeyStore for SqliteStore {
    async fn keys(&self) -> Result<Vec<KeyRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, purpose, algorithm, created_at, retired_at, verify_until, public_key, \
             sealed FROM signing_keys ORDER BY created_at, id",
        )
        .fetch_all(&self.read)
        .await
        .map_err(map_err)?;
        rows.iter().map(key_from_row).collect()
    }

    async fn insert_first_active_key(&self, key: &KeyRecord) -> Result<bool, StoreError> {
        let done = insert_key(
            key,
            "INSERT INTO signing_keys (id, purpose, algorithm, created_at, \
             retired_at, verify_until, public_key, sealed) VALUES (?, ?, ?, ?, NULL, NULL, ?, ?) \
             ON CONFLICT DO NOTHING",
        )
        .execute(&self.write)
        .await
        .map_err(map_err)?;
        Ok(done.rows_affected() == 1)
    }

    async fn rotate_key(
        &self,
        key: &KeyRecord,
        retired_at: Timestamp,
        verify_until: Timestamp,
    ) -> Result<(), StoreError> {
        let mut tx = self.write.begin().await.map_err(map_err)?;
        sqlx::query(
            "UPDATE signing_keys SET retired_at = ?, verify_until = ? \
             WHERE purpose = ? AND retired_at IS NULL",
        )
        .bind(millis(retired_at))
        .bind(millis(verify_until))
        .bind(key.purpose.as_str())
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
        insert_key(
            key,
            "INSERT INTO signing_keys (id, purpose, algorithm, created_at, \
             retired_at, verify_until, public_key, sealed) VALUES (?, ?, ?, ?, NULL, NULL, ?, ?)",
        )
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
        tx.commit().await.map_err(map_err)
    }

    async fn delete_expired_keys(&self, now: Timestamp, limit: u32) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "DELETE FROM signing_keys WHERE id IN (SELECT id FROM signing_keys \
             WHERE retired_at IS NOT NULL AND verify_until <= ?1 LIMIT ?2)",
        )
        .bind(millis(now))
        .bind(i64::from(limit))
        .execute(&self.write)
        .await
        .map_err(map_err)?;
        Ok(done.rows_affected())
    }
}

fn insert_key<'q>(
    key: &'q KeyRecord,
    sql: &'q str,
) -> sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments<'q>> {
    sqlx::query(sql)
        .bind(key.id.as_str())
        .bind(key.purpose.as_str())
        .bind(key.algorithm.as_str())
        .bind(millis(key.created_at))
        .bind(key.public_key.as_deref())
        .bind(key.sealed.as_slice())
}

#[async_trait]
impl AuditStore for SqliteStore {
    async fn append_audit(&self, record: &AuditRecord) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO audit_log (at, event, reason, session_id, user_id, tenant, key_id, ip) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(millis(record.at))
        .bind(record.event.as_str())
        .bind(record.reason.as_str())
        .bind(record.session_id.as_ref().map(SessionId::as_str))
        .bind(record.user_id.as_ref().map(UserId::as_str))
        .bind(record.tenant.as_ref().map(Tenant::as_str))
        .bind(record.key_id.as_ref().map(KeyId::as_str))
        .bind(record.ip.as_deref())
        .execute(&self.write)
        .await
        .map_err(map_err)?;
        Ok(())
    }

    async fn audit_records(&self, query: &AuditQuery) -> Result<Vec<AuditRecord>, StoreError> {
        let limit = if query.limit == 0 { 100 } else { query.limit };
        let rows = sqlx::query(
            "SELECT at, event, reason, session_id, user_id, tenant, key_id, ip FROM audit_log \
             WHERE (?1 IS NULL OR session_id = ?1) AND (?2 IS NULL OR user_id = ?2) \
             ORDER BY seq DESC LIMIT ?3",
        )
        .bind(query.session_id.as_ref().map(SessionId::as_str))
        .bind(query.user_id.as_ref().map(UserId::as_str))
        .bind(i64::from(limit))
        .fetch_all(&self.read)
        .await
        .map_err(map_err)?;
        rows.iter().map(audit_from_row).collect()
    }
}

fn api_key_from_row(row: &SqliteRow) -> Result<ApiKeyRecord, StoreError> {
    Ok(ApiKeyRecord {
        id: ApiKeyId::parse(&text(row, "id")?).map_err(corrupt("api key id"))?,
        name: text(row, "name")?,
        hash: hash(row, "hash")?.ok_or(StoreError::Corrupt {
            what: "api key hash",
        })?,
        created_at: ts(row, "created_at")?,
        revoked_at: opt_ts(row, "revoked_at")?,
    })
}

#[async_trait]
impl ApiKeyStore for SqliteStore {
    async fn insert_api_key(&self, key: &ApiKeyRecord) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO api_keys (id, name, hash, created_at, revoked_at) VALUES (?, ?, ?, ?, ?)",
        )
        .bind(key.id.as_str())
        .bind(key.name.as_str())
        .bind(key.hash.as_slice())
        .bind(millis(key.created_at))
        .bind(key.revoked_at.map(millis))
        .execute(&self.write)
        .await
        .map_err(map_err)?;
        Ok(())
    }

    async fn api_key_by_hash(&self, hash: &[u8; 32]) -> Result<Option<ApiKeyRecord>, StoreError> {
        let row = sqlx::query(
            "SELECT id, name, hash, created_at, revoked_at FROM api_keys WHERE hash = ?",
        )
        .bind(hash.as_slice())
        .fetch_optional(&self.read)
        .await
        .map_err(map_err)?;
        row.as_ref().map(api_key_from_row).transpose()
    }

    async fn api_keys(&self) -> Result<Vec<ApiKeyRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, name, hash, created_at, revoked_at FROM api_keys ORDER BY created_at, id",
        )
        .fetch_all(&self.read)
        .await
        .map_err(map_err)?;
        rows.iter().map(api_key_from_row).collect()
    }

    async fn revoke_api_key(&self, id: &ApiKeyId, at: Timestamp) -> Result<bool, StoreError> {
        let done =
            sqlx::query("UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL")
                .bind(millis(at))
                .bind(id.as_str())
                .execute(&self.write)
                .await
                .map_err(map_err)?;
        Ok(done.rows_affected() == 1)
    }
}
