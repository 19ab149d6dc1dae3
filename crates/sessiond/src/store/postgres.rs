//! The PostgreSQL backend (sqlx): several sessiond nodes sharing one database.
//!
//! Same tables, same semantics and the same conformance suite as [`super::sqlite`]; times are
//! BIGINT Unix milliseconds, hashes BYTEA, claims JSON text.
//!
//! # Atomicity
//! Every state change is one statement or one transaction, at PostgreSQL's default READ
//! COMMITTED isolation, so it holds across processes and not only across tasks:
//! - single-row changes (touch, revoke, CSRF, refresh rotation, API-key revoke) are one
//!   conditional `UPDATE`; a concurrent writer of the same row waits for the row lock and then
//!   re-evaluates the `WHERE` clause on the committed row, so "exactly one wins" follows from the
//!   condition (`revoked_at IS NULL`, `last_seen_at <= bound`, `refresh_hash = expected`);
//! - claims and the first active key are `INSERT … ON CONFLICT`, which PostgreSQL arbitrates on
//!   the unique index even between transactions that cannot see each other;
//! - creating a session under a limit and rotating a key are transactions that first take a
//!   transaction-scoped advisory lock (see `lock_key`), because a row-level lock
//!   cannot protect a row that does not exist yet: two creates that each insert and then count
//!   would both miss the other's uncommitted row and both keep one session too many, and two
//!   rotations that each retire-then-insert would both insert while retiring only the old key.
//!   Once the lock is held, every later statement of the transaction takes a fresh snapshot and
//!   sees what the previous holder committed;
//! - statements that lock several session rows (eviction, revoke-all) lock them in `id` order,
//!   so they cannot deadlock with each other; garbage collection deletes with
//!   `FOR UPDATE SKIP LOCKED`, so it never waits for (or blocks) a row that a request holds.
//!
//! # Row cache
//! Session rows are cached on every node and answered from memory only while the node holds a
//! lease on the channel every store's invalidations travel on; each session write returns only
//! when every caching node has forgotten the rows it changed or can no longer answer
//! (`pg_lease`, docs/DESIGN.md §15.5). Besides the pool, each store holds one listening
//! connection.
//!
//! # Connections
//! The pool reconnects by itself: an idle connection is pinged before it is handed out
//! (`test_before_acquire`) and a connection that failed is closed when released, so after an
//! outage every node recovers without a restart. While the database is unreachable every call
//! fails with [`StoreError::Unavailable`] after at most the acquire timeout.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};
use sqlx::migrate::MigrateError;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};

use super::pg_lease::{self, Coherence};
use super::row_cache::{Changed, RowCache, Scope};
use super::rows::{
    self, api_key_columns, audit_columns, key_columns, owner_columns, session_columns, Columns,
};
use super::sql::{sql_store, Statements};
use super::{Revocation, StoreError};
use crate::id::SessionId;
use crate::session::SessionRecord;

pub use super::pg_lease::LeaseOptions;
use crate::cache::CacheLimits;

/// How long a write waits for its row-cache invalidation to be published (`pg_lease`).
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(2);

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// A PostgreSQL schema name that is safe to put into SQL text: `[a-z_][a-z0-9_]{0,62}`, and not
/// starting with `pg_` (reserved by PostgreSQL).
///
/// Schema names cannot be bound as parameters (`SET search_path`, `CREATE SCHEMA`), so this is
/// the one place where an identifier is interpolated; the grammar leaves nothing to escape.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PgSchema(String);

/// A schema name outside `[a-z_][a-z0-9_]{0,62}`, or starting with `pg_`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("invalid schema name: expected [a-z_][a-z0-9_]{{0,62}}, not starting with pg_")]
#[non_exhaustive]
pub struct InvalidSchema;

impl PgSchema {
    /// Parses a schema name.
    ///
    /// # Errors
    /// [`InvalidSchema`] when `name` is empty, longer than 63 bytes, starts with a digit or
    /// `pg_`, or contains anything but lowercase ASCII letters, digits and `_`.
    pub fn new(name: impl Into<String>) -> Result<Self, InvalidSchema> {
        let name = name.into();
        let mut bytes = name.bytes();
        let first_ok = bytes
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b == b'_');
        let rest_ok = bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if first_ok && rest_ok && name.len() <= 63 && !name.starts_with("pg_") {
            Ok(PgSchema(name))
        } else {
            Err(InvalidSchema)
        }
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PgSchema {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for PgSchema {
    type Err = InvalidSchema;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        PgSchema::new(s)
    }
}

/// Connection settings for [`PgStore`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct PgOptions {
    /// Connections in the pool (default 16).
    pub max_connections: u32,
    /// How long a call waits for a pooled connection, including opening a new one, before the
    /// store reports itself unavailable (default 5 s).
    pub acquire_timeout: Duration,
    /// How long [`PgStore::connect`] and [`PgStore::open`] keep trying to reach the database
    /// (it may still be starting) before they give up (default 10 s).
    pub connect_timeout: Duration,
    /// The server-side `statement_timeout` of every connection; `None` keeps the server's
    /// setting (default `None`). A statement that runs longer fails as unavailable.
    pub statement_timeout: Option<Duration>,
    /// The schema holding sessiond's tables; `None` uses the connection's default
    /// `search_path` (usually `public`). When set, [`PgStore::migrate`] creates it if missing
    /// and every pooled connection runs `SET search_path TO <schema>`, so deployments (or test
    /// runs) sharing one database never see each other's rows.
    pub schema: Option<PgSchema>,
    /// The session-row cache (default [`PgOptions::DEFAULT_ROW_CACHE`]; either limit at zero
    /// turns it off). A node answers from it only while it holds a lease on the invalidations
    /// every node publishes (docs/DESIGN.md §15.5); every store publishes them and waits for
    /// the nodes that cache, whether or not it caches itself.
    pub row_cache: CacheLimits,
    /// The lease that lets a node answer from its row cache, and the clock drift allowed.
    pub lease: LeaseOptions,
    /// Where the connection that `LISTEN`s for invalidations goes, when not to `url` (e.g. past
    /// a PgBouncer in transaction mode, which cannot `LISTEN`). Same database.
    pub listen_url: Option<String>,
}

impl PgOptions {
    /// The default row cache: 65,536 rows, 32 MiB.
    pub const DEFAULT_ROW_CACHE: CacheLimits = CacheLimits::new(65_536, 32 << 20);
}

impl Default for PgOptions {
    fn default() -> Self {
        PgOptions {
            max_connections: 16,
            acquire_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(10),
            statement_timeout: None,
            schema: None,
            row_cache: Self::DEFAULT_ROW_CACHE,
            lease: LeaseOptions::default(),
            listen_url: None,
        }
    }
}

/// Sessions, keys, claims, API keys and the audit trail in a PostgreSQL database, shared by any
/// number of sessiond processes.
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
    schema: Option<PgSchema>,
    /// Session rows, coherent across every node of the database (docs/DESIGN.md §15.5).
    rows: Option<Arc<RowCache>>,
    /// This store's part in keeping every node's cache coherent, cache or not.
    coherence: Arc<Coherence>,
}

/// Whether `e` means "the database could not be reached or cannot serve now" rather than "the
/// database refused this statement". Shared with the PostgreSQL event bus.
pub(crate) fn is_unavailable(e: &sqlx::Error) -> bool {
    rows::is_unavailable(e, unavailable_code)
}

/// PostgreSQL's table of SQLSTATEs that mean "cannot serve now": they say nothing about the
/// statement, only about the server's state right now: class 08 (connection exception), class
/// 53 (insufficient resources), 57P01..57P03 (admin, crash or start-up shutdown), 57P05 (idle
/// session timeout), 57014 (statement timeout or cancel), 40001/40P01 (serialization failure,
/// deadlock: the transaction was rolled back and may be retried), 55P03 (lock timeout) and
/// 25006 (read-only: a standby after a fail-over). Every other SQLSTATE refused the statement.
fn unavailable_code(code: &str) -> bool {
    code.starts_with("08")
        || code.starts_with("53")
        || matches!(
            code,
            "57P01" | "57P02" | "57P03" | "57P05" | "57014" | "40001" | "40P01" | "55P03" | "25006"
        )
}

fn map_err(e: sqlx::Error) -> StoreError {
    rows::classify(e, unavailable_code)
}

fn map_migrate_err(e: MigrateError) -> StoreError {
    let transient = match &e {
        MigrateError::Execute(inner) | MigrateError::ExecuteMigration(inner, _) => {
            is_unavailable(inner)
        }
        _ => false,
    };
    if transient {
        StoreError::Unavailable(Box::new(e))
    } else {
        StoreError::Backend(Box::new(e))
    }
}

/// What every new pooled connection runs before its first use: the schema's `search_path` and
/// the statement timeout. Empty when neither is set.
fn session_setup(options: &PgOptions) -> String {
    let mut sql = String::new();
    if let Some(schema) = &options.schema {
        // Quoted although the grammar needs no escaping: a valid name may still be a keyword.
        sql.push_str("SET search_path TO \"");
        sql.push_str(schema.as_str());
        sql.push_str("\";");
    }
    if let Some(timeout) = options.statement_timeout {
        // Milliseconds, at least 1 (0 would disable the timeout), at most what PostgreSQL takes.
        let ms = timeout.as_millis().clamp(1, i32::MAX.unsigned_abs().into());
        sql.push_str("SET statement_timeout = ");
        sql.push_str(itoa::Buffer::new().format(ms));
        sql.push(';');
    }
    sql
}

/// Runs [`session_setup`]'s statements on a new connection.
async fn set_up_connection(conn: &mut PgConnection, setup: Arc<str>) -> Result<(), sqlx::Error> {
    // A query without arguments goes over the simple-query protocol, which runs several
    // statements in one round trip.
    sqlx::Executor::execute(conn, &*setup).await?;
    Ok(())
}

/// Acquires one connection, retrying while the database is unreachable (it may be starting up)
/// until the caller's timeout drops this future; `last` keeps the latest such error so the
/// caller can report it.
async fn first_connection(pool: &PgPool, last: &mut Option<sqlx::Error>) -> Result<(), StoreError> {
    loop {
        match pool.acquire().await {
            Ok(_conn) => return Ok(()),
            Err(e) if is_unavailable(&e) => {
                *last = Some(e);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(map_err(e)),
        }
    }
}

impl PgStore {
    /// Connects to the database at `url` (`postgres://user@host:port/db?…`) without migrating
    /// ([`PgStore::open`] also migrates): builds the pool and waits (up to
    /// `options.connect_timeout`) for its first connection, so a wrong URL or an unreachable
    /// server is reported here rather than on the first request.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the database cannot be reached within
    /// `options.connect_timeout`; [`StoreError::Backend`] when the URL is malformed or the server
    /// refuses the login.
    pub async fn connect(url: &str, options: PgOptions) -> Result<Self, StoreError> {
        let connect = PgConnectOptions::from_str(url).map_err(map_err)?;
        let mut pool = PgPoolOptions::new()
            .max_connections(options.max_connections.max(1))
            .acquire_timeout(options.acquire_timeout)
            // Ping an idle connection before handing it out, so a connection the server dropped
            // (restart, fail-over, idle timeout) is replaced instead of failing a request.
            .test_before_acquire(true);
        let setup = session_setup(&options);
        if !setup.is_empty() {
            let setup: Arc<str> = setup.into();
            pool = pool.after_connect(move |conn, _meta| {
                Box::pin(set_up_connection(conn, Arc::clone(&setup)))
            });
        }
        let pool = pool.connect_lazy_with(connect.clone());
        let mut last = None;
        let first =
            tokio::time::timeout(options.connect_timeout, first_connection(&pool, &mut last)).await;
        let failure = match first {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e),
            Err(_elapsed) => Some(StoreError::Unavailable(Box::new(
                last.unwrap_or(sqlx::Error::PoolTimedOut),
            ))),
        };
        if let Some(e) = failure {
            pool.close().await;
            return Err(e);
        }
        let listen = match &options.listen_url {
            Some(url) => PgConnectOptions::from_str(url).map_err(map_err)?,
            None => connect,
        };
        // Writes on PostgreSQL announce their rows instead of draining a writer (`pg_lease`):
        // the cache's barrier is never needed.
        let rows = RowCache::new(options.row_cache, Box::new(|| Box::pin(async {}))).map(Arc::new);
        let coherence = Coherence::start(
            pool.clone(),
            listen,
            pg_lease::channel(options.schema.as_ref().map(PgSchema::as_str)),
            rows.clone(),
            options.lease,
            (PUBLISH_TIMEOUT, options.connect_timeout),
        );
        Ok(PgStore {
            pool,
            schema: options.schema,
            rows,
            coherence: Arc::new(coherence),
        })
    }

    /// Creates the configured schema if it is missing, then applies pending migrations. Safe to
    /// run from several nodes at once: schema creation is serialized by an advisory lock, and
    /// sqlx's migrator holds its own.
    ///
    /// # Errors
    /// [`StoreError::Backend`] when a migration fails or the database is newer than this build;
    /// [`StoreError::Unavailable`] when the database cannot be reached.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        if let Some(schema) = &self.schema {
            // Two concurrent `CREATE SCHEMA IF NOT EXISTS` can both pass the existence check and
            // one then fails on pg_namespace's unique index; the lock makes them take turns.
            let mut tx = self.begin_serialized(&["schema"]).await?;
            let create = format!("CREATE SCHEMA IF NOT EXISTS \"{}\"", schema.as_str());
            sqlx::Executor::execute(&mut *tx, create.as_str())
                .await
                .map_err(map_err)?;
            tx.commit().await.map_err(map_err)?;
        }
        MIGRATOR.run(&self.pool).await.map_err(map_migrate_err)
    }

    /// Stops answering from the row cache (telling the other nodes), then closes the pool,
    /// waiting for checked-out connections to be returned.
    pub async fn close(&self) {
        self.coherence.stop().await;
        self.pool.close().await;
    }

    /// See [`lock_key`].
    fn lock_key(&self, parts: &[&str]) -> i64 {
        lock_key(self.schema.as_ref(), parts)
    }
}

/// The key of a transaction-scoped advisory lock (`pg_advisory_xact_lock`) over `parts` within
/// `schema`: the first 8 bytes of SHA-256 over the length-prefixed parts, so `("ab", "c")` and
/// `("a", "bc")` differ. Advisory locks are per database, not per schema, hence the schema in
/// the key. A collision between two different keys only makes unrelated callers take turns; it
/// never changes an outcome.
fn lock_key(schema: Option<&PgSchema>, parts: &[&str]) -> i64 {
    let mut h = Sha256::new();
    let schema = schema.map_or("", PgSchema::as_str);
    for part in ["sessiond", schema].iter().chain(parts) {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part.as_bytes());
    }
    h.finalize()
        .first_chunk::<8>()
        .map_or(0, |b| i64::from_be_bytes(*b))
}

/// PostgreSQL's statements: `$N` parameters, `LEAST` for the idle cap, typed NULL tests,
/// row locks in `id` order for multi-row changes, `SKIP LOCKED` for garbage collection.
const SQL: Statements = Statements {
    insert_session: concat!(
        "INSERT INTO sessions (",
        session_columns!(),
        ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, \
         $17, $18, $19)"
    ),
    // Everything active beyond the newest `max` (the new session always counts as newest) is
    // evicted. The victims are row-locked in id order, the order revoke-all uses too, so the
    // two cannot deadlock; one revoked meanwhile by someone else is skipped.
    evict: concat!(
        "UPDATE sessions SET revoked_at = $1, revoke_reason = 'evicted' \
         WHERE revoked_at IS NULL AND id IN ( \
           SELECT id FROM sessions WHERE revoked_at IS NULL AND id IN ( \
             SELECT id FROM sessions \
             WHERE user_id = $2 AND tenant = $3 AND revoked_at IS NULL \
               AND idle_expires_at > $1 AND absolute_expires_at > $1 \
             ORDER BY (id = $4) DESC, created_at DESC, id DESC OFFSET $5) \
           ORDER BY id FOR UPDATE) \
         RETURNING ",
        owner_columns!()
    ),
    revoke_one: "WITH revoked AS ( \
                   UPDATE sessions SET revoked_at = $1, revoke_reason = $2 \
                   WHERE id = $3 AND revoked_at IS NULL RETURNING id, user_id, tenant) \
                 SELECT revoked.id, revoked.user_id, revoked.tenant, \
                        EXISTS (SELECT 1 FROM sessions WHERE id = $3) AS found \
                 FROM (SELECT 1) AS one LEFT JOIN revoked ON TRUE",
    session: concat!(
        "SELECT ",
        session_columns!(),
        " FROM sessions WHERE id = $1"
    ),
    touch:
        "UPDATE sessions SET last_seen_at = $1, idle_expires_at = LEAST($2, absolute_expires_at) \
            WHERE id = $3 AND revoked_at IS NULL AND last_seen_at <= $4",
    // Rows are locked in id order (as eviction does), so concurrent multi-row revocations
    // cannot deadlock.
    revoke_user: concat!(
        "UPDATE sessions SET revoked_at = $1, revoke_reason = $2 \
         WHERE revoked_at IS NULL AND id IN ( \
           SELECT id FROM sessions \
           WHERE user_id = $3 AND ($4::text IS NULL OR tenant = $4) \
             AND ($5::text IS NULL OR id <> $5) \
             AND revoked_at IS NULL AND idle_expires_at > $1 AND absolute_expires_at > $1 \
           ORDER BY id FOR UPDATE) \
         RETURNING ",
        owner_columns!()
    ),
    user_sessions: concat!(
        "SELECT ",
        session_columns!(),
        " FROM sessions WHERE user_id = $1 AND ($2::text IS NULL OR tenant = $2) \
          AND revoked_at IS NULL AND idle_expires_at > $3 AND absolute_expires_at > $3 \
          ORDER BY created_at, id"
    ),
    set_csrf: concat!(
        "UPDATE sessions SET csrf_hash = $1 WHERE id = $2 AND revoked_at IS NULL \
         AND idle_expires_at > $3 AND absolute_expires_at > $3 RETURNING ",
        owner_columns!()
    ),
    // SKIP LOCKED: a row a request is updating right now waits for the next sweep; GC never
    // queues behind (or blocks) validation, and sweeps on several nodes split the work.
    delete_expired_sessions: "DELETE FROM sessions WHERE id IN (SELECT id FROM sessions \
                              WHERE idle_expires_at <= $1 OR absolute_expires_at <= $1 \
                              LIMIT $2 FOR UPDATE SKIP LOCKED)",
    // Compare-and-swap: a concurrent rotation of the same row waits for the row lock, then
    // re-checks `refresh_hash = expected` against the winner's committed row and fails.
    rotate_refresh: "UPDATE sessions SET refresh_hash = $1, refresh_generation = $2, \
                       refresh_used = FALSE, refresh_chain = $3, last_seen_at = $4, \
                       idle_expires_at = LEAST($5, absolute_expires_at) \
                     WHERE id = $6 AND refresh_hash = $7 AND (NOT $8 OR NOT refresh_used) \
                       AND revoked_at IS NULL AND idle_expires_at > $4 \
                       AND absolute_expires_at > $4",
    mark_refresh_used: "UPDATE sessions SET refresh_used = TRUE \
                        WHERE id = $1 AND refresh_generation = $2 AND NOT refresh_used",
    // Concurrent claims of one id are arbitrated by the primary key: one inserts (or
    // replaces), the others wait for it and then find an unexpired record.
    claim: "INSERT INTO claims (id, expires_at, claimed_at) VALUES ($1, $2, $3) \
            ON CONFLICT (id) DO UPDATE SET expires_at = EXCLUDED.expires_at, \
              claimed_at = EXCLUDED.claimed_at WHERE claims.expires_at <= EXCLUDED.claimed_at",
    delete_expired_claims: "DELETE FROM claims WHERE id IN (SELECT id FROM claims \
                            WHERE expires_at <= $1 LIMIT $2 FOR UPDATE SKIP LOCKED)",
    // The conflict target is the partial unique index, so only "this purpose already has an
    // active key" answers `false`; any other conflict (a duplicate id) is an error.
    insert_first_key: concat!(
        "INSERT INTO signing_keys (",
        key_columns!(),
        ") VALUES ($1, $2, $3, $4, NULL, NULL, $5, $6, $7, $8) \
         ON CONFLICT (purpose) WHERE retired_at IS NULL DO NOTHING"
    ),
    // Under the purpose's lock, the retiring UPDATE's snapshot includes the key that the
    // previous rotation inserted, so it retires exactly the current active key and the insert
    // never meets a second one (no unique-violation for a racing rotation); with an expected
    // id, a rotation that lost to another finds nothing to retire and changes nothing.
    retire_key: "UPDATE signing_keys SET retired_at = $1, verify_until = $2 \
                 WHERE purpose = $3 AND retired_at IS NULL AND ($4::text IS NULL OR id = $4) \
                 RETURNING id, fingerprint",
    end_active_key: "UPDATE signing_keys SET retired_at = $1, verify_until = $1 \
                     WHERE id = $2 AND purpose = $3 AND retired_at IS NULL RETURNING fingerprint",
    end_retired_key: "UPDATE signing_keys SET verify_until = $1 \
                      WHERE id = $2 AND purpose = $3 AND retired_at IS NOT NULL \
                        AND verify_until > $1 RETURNING fingerprint",
    key_exists: "SELECT 1 FROM signing_keys WHERE id = $1 AND purpose = $2",
    record_operator_key: "UPDATE signing_keys SET origin = 'operator', fingerprint = $1 \
                          WHERE id = $2 AND retired_at IS NULL AND origin = 'generated'",
    record_retired_fingerprint: "INSERT INTO retired_operator_keys \
                                   (fingerprint, purpose, key_id, retired_at) \
                                 VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
    retired_operator_key: "SELECT key_id FROM retired_operator_keys WHERE fingerprint = $1",
    insert_key: concat!(
        "INSERT INTO signing_keys (",
        key_columns!(),
        ") VALUES ($1, $2, $3, $4, NULL, NULL, $5, $6, $7, $8)"
    ),
    delete_expired_keys: "DELETE FROM signing_keys WHERE id IN (SELECT id FROM signing_keys \
                          WHERE retired_at IS NOT NULL AND verify_until <= $1 \
                          LIMIT $2 FOR UPDATE SKIP LOCKED)",
    append_audit: concat!(
        "INSERT INTO audit_log (",
        audit_columns!(),
        ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
    ),
    audit_records: concat!(
        "SELECT ",
        audit_columns!(),
        " FROM audit_log WHERE ($1::text IS NULL OR session_id = $1) \
          AND ($2::text IS NULL OR user_id = $2) ORDER BY seq DESC LIMIT $3"
    ),
    insert_api_key: concat!(
        "INSERT INTO api_keys (",
        api_key_columns!(),
        ") VALUES ($1, $2, $3, $4, $5, $6)"
    ),
    api_key_by_hash: concat!(
        "SELECT ",
        api_key_columns!(),
        " FROM api_keys WHERE hash = $1"
    ),
    api_keys: concat!(
        "SELECT ",
        api_key_columns!(),
        " FROM api_keys ORDER BY created_at, id"
    ),
    revoke_api_key: "UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL",
};

sql_store!(PgStore, SQL, sqlx::Postgres, PgOptions, read: pool, write: pool);

/// The steps [`sql_store!`] leaves to the dialect.
impl PgStore {
    /// Begins a transaction holding the advisory lock of `lock` (see [`lock_key`]). Every
    /// change of an active key (bootstrap, rotation) holds `["signing_keys", purpose]`, so they
    /// take turns instead of racing into the unique index `signing_keys_one_active`; creates
    /// under a limit hold `["sessions", user, tenant]`, taken before the insert, so after the
    /// lock every statement's snapshot includes whatever the previous holder committed and the
    /// eviction's count is exact.
    async fn begin_serialized(
        &self,
        lock: &[&str],
    ) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, StoreError> {
        let mut tx = self.pool.begin().await.map_err(map_err)?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(self.lock_key(lock))
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        Ok(tx)
    }

    /// One hot write (see `sqlite_batch` for why SQLite groups them): its own statement on
    /// the pool, committed on its own; the rows it changed.
    async fn write_one<F>(&self, write: F) -> Result<u64, StoreError>
    where
        F: for<'c> FnOnce(&'c mut sqlx::PgConnection) -> super::sql::WriteFuture<'c>
            + Send
            + 'static,
    {
        let mut conn = self.pool.acquire().await.map_err(map_err)?;
        write(&mut conn).await.map_err(map_err)
    }

    /// One audit record, its own statement.
    async fn append_audit_record(
        &self,
        record: &crate::audit::AuditRecord,
    ) -> Result<(), StoreError> {
        self.append_audit_alone(record).await
    }

    /// The session row by id: from the row cache while this store holds a lease (docs/DESIGN.md
    /// §15.5), else from the pool (kept in the cache unless an invalidation raced the read).
    async fn session_row(&self, id: &SessionId) -> Result<Option<SessionRecord>, StoreError> {
        let Some(rows) = self.rows.as_deref() else {
            return self.session_row_pooled(id).await;
        };
        let ticket = rows.ticket(id);
        if let Some(held) = rows.get(&ticket, || self.coherence.leased()) {
            return Ok(Some(SessionRecord::clone(&held)));
        }
        let row = self.session_row_pooled(id).await?;
        if let Some(record) = &row {
            rows.fill(ticket, record);
        }
        Ok(row)
    }

    /// The session row by id past the row cache: the read pool.
    async fn session_row_current(
        &self,
        id: &SessionId,
    ) -> Result<Option<SessionRecord>, StoreError> {
        self.session_row_pooled(id).await
    }

    /// Runs a session write and then its announcement (`pg_lease`) as a task of their own, so
    /// a caller that gives up (a client that hung up) stops neither: a write that commits is
    /// always announced. Returns once every node's cached copy of the rows it changed (`scope`
    /// unless it says which) is forgotten or can no longer answer. A write that failed may have
    /// committed all the same (a lost answer): its scope is announced too, without its caller
    /// waiting (during an outage the error comes as soon as without a cache).
    async fn session_write<T, F>(&self, scope: Scope, write: F) -> Result<T, StoreError>
    where
        F: std::future::Future<Output = Result<(T, Changed), StoreError>> + Send + 'static,
        T: Send + 'static,
    {
        let (coherence, rows) = (Arc::clone(&self.coherence), self.rows.clone());
        let task = tokio::spawn(async move {
            let outcome = write.await;
            let announce = match &outcome {
                Err(_) => {
                    // It failed, and may have committed all the same (a lost answer): announced,
                    // but its caller, told that it failed, does not wait for that.
                    let coherence = Arc::clone(&coherence);
                    tokio::spawn(async move { coherence.announce(scope).await });
                    None
                }
                Ok((_, Changed::Scope)) => Some(scope),
                Ok((_, Changed::Rows(ids))) => Some(Scope::Many(ids.clone())),
                Ok((_, Changed::Stale)) => {
                    if let Some(rows) = &rows {
                        rows.forget_scope(&scope);
                    }
                    None
                }
                Ok((_, Changed::Nothing)) => None,
            };
            let announced = match announce {
                Some(scope) => coherence.announce(scope).await,
                None => Ok(()),
            };
            (outcome, announced)
        });
        match task.await {
            Ok((outcome, announced)) => {
                let (value, _) = outcome?;
                announced?;
                Ok(value)
            }
            Err(e) => Err(StoreError::Backend(Box::new(e))),
        }
    }

    /// One statement, one round trip whatever the outcome: the conditional update returns the
    /// owner, and the same statement says whether the row exists at all (its snapshot predates
    /// the update, so a row revoked here is found too).
    async fn revoke_one(
        &self,
        revoke: sqlx::query::Query<'_, sqlx::Postgres, sqlx::postgres::PgArguments>,
        _id: &SessionId,
    ) -> Result<Revocation, StoreError> {
        let row = revoke.fetch_one(&self.pool).await.map_err(map_err)?;
        let revoked = row.opt_text("sessions.id")?.is_some();
        rows::revocation(revoked.then_some(&row), row.boolean("found")?)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn schema_names_are_parsed_strictly() {
        let long_ok = "a".repeat(63);
        let too_long = "a".repeat(64);
        let table: &[(&str, bool)] = &[
            ("sessiond", true),
            ("_x", true),
            ("t_123_4_abc", true),
            ("user", true),
            (long_ok.as_str(), true),
            ("", false),
            (too_long.as_str(), false),
            ("1abc", false),
            ("Sessiond", false),
            ("a-b", false),
            ("a b", false),
            ("a\"b", false),
            ("a;drop schema public", false),
            ("pg_temp", false),
            ("é", false),
            ("a.b", false),
        ];
        for (name, ok) in table {
            assert_eq!(PgSchema::new(*name).is_ok(), *ok, "{name:?}");
        }
    }

    #[test]
    fn sqlstates_are_classified() {
        let table: &[(&str, bool)] = &[
            ("08006", true),  // connection_failure
            ("08001", true),  // sqlclient_unable_to_establish_sqlconnection
            ("53300", true),  // too_many_connections
            ("53100", true),  // disk_full
            ("57P01", true),  // admin_shutdown
            ("57P02", true),  // crash_shutdown
            ("57P03", true),  // cannot_connect_now
            ("57014", true),  // query_canceled (statement timeout)
            ("40001", true),  // serialization_failure
            ("40P01", true),  // deadlock_detected
            ("25006", true),  // read_only_sql_transaction
            ("23505", false), // unique_violation
            ("42P01", false), // undefined_table
            ("22021", false), // character_not_in_repertoire
            ("28P01", false), // invalid_password
            ("3D000", false), // invalid_catalog_name
        ];
        for (code, unavailable) in table {
            assert_eq!(unavailable_code(code), *unavailable, "{code}");
        }
    }

    #[test]
    fn transport_errors_are_unavailable() {
        let io = sqlx::Error::Io(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert!(matches!(map_err(io), StoreError::Unavailable(_)));
        assert!(matches!(
            map_err(sqlx::Error::PoolTimedOut),
            StoreError::Unavailable(_)
        ));
        assert!(matches!(
            map_err(sqlx::Error::PoolClosed),
            StoreError::Unavailable(_)
        ));
        assert!(matches!(
            map_err(sqlx::Error::RowNotFound),
            StoreError::Backend(_)
        ));
    }

    #[test]
    fn connections_are_set_up_for_the_schema_and_timeout() {
        let mut options = PgOptions::default();
        assert_eq!(session_setup(&options), "");
        options.schema = Some(PgSchema::new("tenant_a").unwrap());
        options.statement_timeout = Some(Duration::from_micros(10));
        assert_eq!(
            session_setup(&options),
            "SET search_path TO \"tenant_a\";SET statement_timeout = 1;"
        );
        options.statement_timeout = Some(Duration::from_secs(5));
        assert!(session_setup(&options).ends_with("SET statement_timeout = 5000;"));
    }

    #[test]
    fn store_futures_are_send() {
        fn assert_send<T: Send>(_: &T) {}
        let url = "postgres://nobody@127.0.0.1:1/none";
        assert_send(&PgStore::open(url, PgOptions::default()));
        assert_send(&PgStore::connect(url, PgOptions::default()));
    }

    #[test]
    fn lock_keys_separate_schemas_and_parts() {
        let a = PgSchema::new("a").unwrap();
        let b = PgSchema::new("b").unwrap();
        assert_ne!(lock_key(Some(&a), &["x"]), lock_key(Some(&b), &["x"]));
        assert_ne!(lock_key(None, &["x"]), lock_key(Some(&a), &["x"]));
        assert_ne!(
            lock_key(Some(&a), &["ab", "c"]),
            lock_key(Some(&a), &["a", "bc"])
        );
        assert_eq!(
            lock_key(Some(&a), &["x", "y"]),
            lock_key(Some(&a), &["x", "y"])
        );
    }
}
