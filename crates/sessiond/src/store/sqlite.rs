//! The embedded SQLite backend (sqlx): one file, WAL, zero set-up.
//!
//! Writes go through a pool of one connection, so writers queue in process instead of
//! contending for SQLite's lock; reads use a separate pool and run concurrently under WAL.
//! Every state change is one statement or one transaction whose first statement writes, so it
//! takes the write lock up front and cannot fail on a lock upgrade. Other processes on the same
//! file (the CLI while the server runs) wait on `busy_timeout`.

use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use super::row_cache::{Barrier, Changed, RowCache, Scope, Written};
use super::rows::{
    self, api_key_columns, audit_columns, key_columns, owner_columns, session_columns,
};
use super::sql::{sql_store, Statements, WriteFuture};
use super::sqlite_batch::{statement, WriteBatcher};
use super::sqlite_read::{SyncReaders, WalHeader};
use super::{Revocation, StoreError};
use crate::cache::CacheLimits;
use crate::id::SessionId;
use crate::session::SessionRecord;

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
    /// Read the session row of a validation synchronously on the calling task (default on;
    /// docs/DESIGN.md §15.2) instead of through the read pool's worker threads.
    pub sync_reads: bool,
    /// The coherent session-row cache (docs/DESIGN.md §15.4; default 65,536 rows, 32 MiB).
    /// It needs the synchronous read path: with `sync_reads` off it is off too.
    pub row_cache: CacheLimits,
}

impl SqliteOptions {
    /// The default row cache's limits.
    pub const DEFAULT_ROW_CACHE: CacheLimits = CacheLimits::new(65_536, 32 << 20);
}

impl Default for SqliteOptions {
    fn default() -> Self {
        SqliteOptions {
            read_connections: 8,
            busy_timeout: Duration::from_secs(5),
            acquire_timeout: Duration::from_secs(5),
            sync_reads: true,
            row_cache: Self::DEFAULT_ROW_CACHE,
        }
    }
}

/// Sessions, keys and the audit trail in one SQLite file.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    read: SqlitePool,
    write: SqlitePool,
    /// The synchronous read path, when on and the file allows it.
    sync: Option<Arc<SyncReaders>>,
    /// The hot writes (and audit records) of concurrent callers in one write transaction.
    batch: WriteBatcher,
    /// Session rows, coherent with every writer of the file (docs/DESIGN.md §15.4).
    rows: Option<Arc<RowCache>>,
    /// This store's name in `sessiond_writers`: random, per open store.
    instance: [u8; 16],
    /// The WAL-index header read before the last proof that nobody else wrote: while the
    /// header is unchanged, nobody committed since, and the proof still holds.
    proven_at: Arc<Mutex<Option<WalHeader>>>,
}

/// The temporary triggers that record this store's session changes in `sessiond_writers` (and
/// take back what the permanent triggers count in `sessiond_anonymous_writes`), so other stores
/// on the file (the CLI, the server) notice them as this store's (docs/DESIGN.md §15.4).
/// Temporary triggers belong to the connection that creates them: only this store's writer
/// fires them.
fn writer_triggers(instance: &[u8; 16]) -> Vec<String> {
    use std::fmt::Write as _;
    let hex = instance.iter().fold(String::new(), |mut hex, b| {
        let _ = write!(hex, "{b:02x}");
        hex
    });
    [
        ("insert", "INSERT"),
        ("update", "UPDATE"),
        ("delete", "DELETE"),
    ]
    .iter()
    .map(|(name, op)| {
        format!(
            "CREATE TEMP TRIGGER IF NOT EXISTS sessiond_written_{name} AFTER {op} \
                 ON main.sessions BEGIN \
                   UPDATE sessiond_anonymous_writes SET n = n - 1; \
                   INSERT INTO sessiond_writers (instance, seq) \
                   VALUES (x'{hex}', (SELECT coalesce(max(seq), 0) + 1 FROM sessiond_writers)) \
                   ON CONFLICT (instance) DO UPDATE SET seq = excluded.seq; END"
        )
    })
    .collect()
}

/// Installs [`writer_triggers`] on the writer connection `conn`, once the tables exist (a
/// fresh file gets them from the migrations, which install them again after).
async fn install_triggers(
    conn: &mut sqlx::SqliteConnection,
    instance: &[u8; 16],
) -> Result<(), sqlx::Error> {
    let tables: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM sqlite_master WHERE type = 'table' \
         AND name IN ('sessions', 'sessiond_writers', 'sessiond_anonymous_writes')",
    )
    .fetch_one(&mut *conn)
    .await?;
    if tables == 3 {
        for trigger in writer_triggers(instance) {
            sqlx::query(&trigger).execute(&mut *conn).await?;
        }
    }
    Ok(())
}

/// SQLite's table of error codes that mean "cannot serve now": the primary result codes
/// `SQLITE_BUSY` (5) and `SQLITE_LOCKED` (6), with every extended code of theirs
/// (`SQLITE_BUSY_SNAPSHOT` 517, `SQLITE_BUSY_TIMEOUT` 773, …; the primary code is the low byte):
/// another writer held the lock past `busy_timeout`. Every other code refused the statement.
fn unavailable_code(code: &str) -> bool {
    code.parse::<i32>().is_ok_and(|c| matches!(c & 0xff, 5 | 6))
}

fn map_err(e: sqlx::Error) -> StoreError {
    rows::classify(e, unavailable_code)
}

impl SqliteStore {
    /// Opens (creating if missing) the database at `url` (`sqlite://path` or a plain path),
    /// without migrating ([`SqliteStore::open`] also migrates).
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
        let instance: [u8; 16] = crate::random::bytes(&crate::random::OsRandom);
        // Only a store that caches rows needs to tell its own writes from the others' (the
        // temporary triggers); without them its writes count as anonymous, which every other
        // store notices all the same, for one statement per changed row instead of three. Set
        // once the row cache exists; a writer connection opened after that gets the triggers.
        let caching = Arc::new(AtomicBool::new(false));
        let tracked = Arc::clone(&caching);
        let write = SqlitePoolOptions::new()
            .max_connections(1)
            .test_before_acquire(false)
            .acquire_timeout(options.acquire_timeout)
            // A replaced writer connection gets the triggers again.
            .after_connect(move |conn, _| {
                let caching = tracked.load(Ordering::SeqCst);
                Box::pin(async move {
                    match caching {
                        true => install_triggers(conn, &instance).await,
                        false => Ok(()),
                    }
                })
            })
            .connect_with(connect.clone())
            .await
            .map_err(map_err)?;
        let read = SqlitePoolOptions::new()
            .max_connections(options.read_connections.max(1))
            .test_before_acquire(false)
            .acquire_timeout(options.acquire_timeout)
            .connect_with(connect.clone().read_only(false))
            .await
            .map_err(map_err)?;
        // The writer has created the file and put it in WAL mode by now.
        let filename = connect.get_filename();
        let sync = if options.sync_reads && filename.to_str() != Some(":memory:") {
            let count = usize::try_from(options.read_connections.clamp(1, 4)).unwrap_or(1);
            match SyncReaders::open(filename, count, SQL.session, OTHER_WRITERS) {
                Ok(readers) => Some(Arc::new(readers)),
                Err(e) => {
                    tracing::warn!(error = %e, "SQLite: synchronous reads off, reading through the pool");
                    None
                }
            }
        } else {
            None
        };
        let batch = WriteBatcher::start(write.clone(), map_err);
        let rows = match &sync {
            Some(_) => {
                // The batches answer in order, on the writer connection, which runs its
                // commands in order: a `SELECT 1` through the batcher resolves after every
                // statement queued before it, batched or not (an unfinished write's,
                // docs/DESIGN.md §15.4).
                let batcher = batch.clone();
                let barrier: Barrier = Box::new(move || {
                    let batcher = batcher.clone();
                    Box::pin(async move { batcher.drained().await })
                });
                RowCache::new(options.row_cache, barrier).map(Arc::new)
            }
            None => None,
        };
        if rows.is_some() {
            caching.store(true, Ordering::SeqCst);
            let mut conn = write.acquire().await.map_err(map_err)?;
            install_triggers(&mut conn, &instance)
                .await
                .map_err(map_err)?;
        }
        Ok(SqliteStore {
            read,
            write,
            sync,
            batch,
            rows,
            instance,
            proven_at: Arc::new(Mutex::new(None)),
        })
    }

    /// Applies pending migrations.
    ///
    /// # Errors
    /// [`StoreError::Backend`] when a migration fails or the database is newer than this build.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        MIGRATOR
            .run(&self.write)
            .await
            .map_err(|e| StoreError::Backend(Box::new(e)))?;
        let mut conn = self.write.acquire().await.map_err(map_err)?;
        if self.rows.is_some() {
            install_triggers(&mut conn, &self.instance)
                .await
                .map_err(map_err)?;
        }
        // Keep the newest 64 writers: an instance long gone is never the one that moved last,
        // and one that writes again gets its row back (the triggers upsert).
        sqlx::query(
            "DELETE FROM sessiond_writers WHERE seq < \
             (SELECT seq FROM sessiond_writers ORDER BY seq DESC LIMIT 1 OFFSET 63)",
        )
        .execute(&mut *conn)
        .await
        .map_err(map_err)?;
        // The row cache's first look at the other writers, so its first held row can answer.
        let _ = self.others_wrote();
        Ok(())
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

    /// Whether anyone else (another store, another process, a `sqlite3` shell) changed session
    /// rows since the row cache last looked, which forgets every cached row when so: the proof
    /// a cached answer rests on (docs/DESIGN.md §15.4), the full one (the writers' tables, not
    /// the WAL-index shortcut), on its own, for measuring it. `None`
    /// when the row cache is off or the database was busy.
    ///
    /// # Errors
    /// [`StoreError`] when the writers' tables cannot be read (not migrated).
    pub fn others_wrote(&self) -> Option<Result<bool, StoreError>> {
        let (sync, rows) = (self.sync.as_deref()?, self.rows.as_deref()?);
        Some(
            self.full_proof(sync, rows, sync.wal_header())?
                .map(|unchanged| !unchanged),
        )
    }

    /// The full proof (docs/DESIGN.md §15.4): what the other writers recorded, observed by the
    /// cache (which forgets every row when it moved). Whether nothing moved; `None` when the
    /// database was busy or the store closed. On success `header`, read before, becomes the
    /// header the fast proof compares with: whatever committed before it, this proof saw.
    fn full_proof(
        &self,
        sync: &SyncReaders,
        rows: &RowCache,
        header: Option<WalHeader>,
    ) -> Option<Result<bool, StoreError>> {
        let unchanged = sync
            .others(&self.instance)?
            .map(|seen| rows.observe_others(seen));
        if unchanged.is_ok() {
            *self.proven_at() = header;
        }
        Some(unchanged)
    }

    fn proven_at(&self) -> std::sync::MutexGuard<'_, Option<WalHeader>> {
        self.proven_at
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Closes both pools, waiting for connections to finish; the synchronous readers
    /// (docs/DESIGN.md §15.2) stop answering at once (their connections close when the store is
    /// dropped), so every read after `close` fails as the pool's do.
    pub async fn close(&self) {
        if let Some(sync) = &self.sync {
            sync.close();
        }
        self.write.close().await;
        self.read.close().await;
    }
}

/// What the others wrote: the highest `seq` of the other stores (0 when there are none) and the
/// count of anonymous changes: `instance`.
const OTHER_WRITERS: &str = "SELECT coalesce((SELECT seq FROM sessiond_writers \
                             WHERE instance <> ?1 ORDER BY seq DESC LIMIT 1), 0), \
                             (SELECT n FROM sessiond_anonymous_writes)";

/// SQLite's statements: `?N` parameters, `MIN` for the idle cap, 0/1 booleans.
const SQL: Statements = Statements {
    insert_session: concat!(
        "INSERT INTO sessions (",
        session_columns!(),
        ") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    ),
    evict: concat!(
        "UPDATE sessions SET revoked_at = ?1, revoke_reason = 'evicted' \
         WHERE id IN (SELECT id FROM sessions \
           WHERE user_id = ?2 AND tenant = ?3 AND revoked_at IS NULL \
             AND idle_expires_at > ?1 AND absolute_expires_at > ?1 \
           ORDER BY (id = ?4) DESC, created_at DESC, id DESC LIMIT -1 OFFSET ?5) \
         RETURNING ",
        owner_columns!()
    ),
    revoke_one: concat!(
        "UPDATE sessions SET revoked_at = ?1, revoke_reason = ?2 \
         WHERE id = ?3 AND revoked_at IS NULL RETURNING ",
        owner_columns!()
    ),
    session: concat!(
        "SELECT ",
        session_columns!(),
        " FROM sessions WHERE id = ?1"
    ),
    touch: "UPDATE sessions SET last_seen_at = ?1, idle_expires_at = MIN(?2, absolute_expires_at) \
            WHERE id = ?3 AND revoked_at IS NULL AND last_seen_at <= ?4",
    revoke_user: concat!(
        "UPDATE sessions SET revoked_at = ?1, revoke_reason = ?2 \
         WHERE user_id = ?3 AND (?4 IS NULL OR tenant = ?4) AND (?5 IS NULL OR id <> ?5) \
           AND revoked_at IS NULL AND idle_expires_at > ?1 AND absolute_expires_at > ?1 \
         RETURNING ",
        owner_columns!()
    ),
    user_sessions: concat!(
        "SELECT ",
        session_columns!(),
        " FROM sessions WHERE user_id = ?1 AND (?2 IS NULL OR tenant = ?2) \
          AND revoked_at IS NULL AND idle_expires_at > ?3 AND absolute_expires_at > ?3 \
          ORDER BY created_at, id"
    ),
    set_csrf: concat!(
        "UPDATE sessions SET csrf_hash = ?1 WHERE id = ?2 AND revoked_at IS NULL \
         AND idle_expires_at > ?3 AND absolute_expires_at > ?3 RETURNING ",
        owner_columns!()
    ),
    delete_expired_sessions: "DELETE FROM sessions WHERE id IN (SELECT id FROM sessions \
                              WHERE idle_expires_at <= ?1 OR absolute_expires_at <= ?1 LIMIT ?2)",
    rotate_refresh: "UPDATE sessions SET refresh_hash = ?1, refresh_generation = ?2, \
                       refresh_used = 0, refresh_chain = ?3, last_seen_at = ?4, \
                       idle_expires_at = MIN(?5, absolute_expires_at) \
                     WHERE id = ?6 AND refresh_hash = ?7 AND (?8 = 0 OR refresh_used = 0) \
                       AND revoked_at IS NULL AND idle_expires_at > ?4 \
                       AND absolute_expires_at > ?4",
    mark_refresh_used: "UPDATE sessions SET refresh_used = 1 \
                        WHERE id = ?1 AND refresh_generation = ?2 AND refresh_used = 0",
    claim: "INSERT INTO claims (id, expires_at, claimed_at) VALUES (?1, ?2, ?3) \
            ON CONFLICT (id) DO UPDATE SET expires_at = excluded.expires_at, \
              claimed_at = excluded.claimed_at WHERE claims.expires_at <= ?3",
    delete_expired_claims: "DELETE FROM claims WHERE id IN \
                            (SELECT id FROM claims WHERE expires_at <= ?1 LIMIT ?2)",
    // Conflicts only on the one-active-key index: the id is fresh.
    insert_first_key: concat!(
        "INSERT INTO signing_keys (",
        key_columns!(),
        ") VALUES (?1, ?2, ?3, ?4, NULL, NULL, ?5, ?6, ?7, ?8) ON CONFLICT DO NOTHING"
    ),
    retire_key: "UPDATE signing_keys SET retired_at = ?1, verify_until = ?2 \
                 WHERE purpose = ?3 AND retired_at IS NULL AND (?4 IS NULL OR id = ?4) \
                 RETURNING id, fingerprint",
    end_active_key: "UPDATE signing_keys SET retired_at = ?1, verify_until = ?1 \
                     WHERE id = ?2 AND purpose = ?3 AND retired_at IS NULL RETURNING fingerprint",
    end_retired_key: "UPDATE signing_keys SET verify_until = ?1 \
                      WHERE id = ?2 AND purpose = ?3 AND retired_at IS NOT NULL \
                        AND verify_until > ?1 RETURNING fingerprint",
    key_exists: "SELECT 1 FROM signing_keys WHERE id = ?1 AND purpose = ?2",
    record_operator_key: "UPDATE signing_keys SET origin = 'operator', fingerprint = ?1 \
                          WHERE id = ?2 AND retired_at IS NULL AND origin = 'generated'",
    record_retired_fingerprint: "INSERT INTO retired_operator_keys \
                                   (fingerprint, purpose, key_id, retired_at) \
                                 VALUES (?1, ?2, ?3, ?4) ON CONFLICT DO NOTHING",
    retired_operator_key: "SELECT key_id FROM retired_operator_keys WHERE fingerprint = ?1",
    insert_key: concat!(
        "INSERT INTO signing_keys (",
        key_columns!(),
        ") VALUES (?1, ?2, ?3, ?4, NULL, NULL, ?5, ?6, ?7, ?8)"
    ),
    delete_expired_keys: "DELETE FROM signing_keys WHERE id IN (SELECT id FROM signing_keys \
                          WHERE retired_at IS NOT NULL AND verify_until <= ?1 LIMIT ?2)",
    append_audit: concat!(
        "INSERT INTO audit_log (",
        audit_columns!(),
        ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"
    ),
    audit_records: concat!(
        "SELECT ",
        audit_columns!(),
        " FROM audit_log WHERE (?1 IS NULL OR session_id = ?1) \
          AND (?2 IS NULL OR user_id = ?2) ORDER BY seq DESC LIMIT ?3"
    ),
    insert_api_key: concat!(
        "INSERT INTO api_keys (",
        api_key_columns!(),
        ") VALUES (?1, ?2, ?3, ?4, ?5, ?6)"
    ),
    api_key_by_hash: concat!(
        "SELECT ",
        api_key_columns!(),
        " FROM api_keys WHERE hash = ?1"
    ),
    api_keys: concat!(
        "SELECT ",
        api_key_columns!(),
        " FROM api_keys ORDER BY created_at, id"
    ),
    revoke_api_key: "UPDATE api_keys SET revoked_at = ?1 WHERE id = ?2 AND revoked_at IS NULL",
};

sql_store!(SqliteStore, SQL, sqlx::Sqlite, SqliteOptions, read: read, write: write);

/// The steps [`sql_store!`] leaves to the dialect.
impl SqliteStore {
    /// A write transaction: the single writer connection already serializes them all, whatever
    /// the lock.
    async fn begin_serialized(
        &self,
        _lock: &[&str],
    ) -> Result<sqlx::Transaction<'static, sqlx::Sqlite>, StoreError> {
        self.write.begin().await.map_err(map_err)
    }

    /// One audit record, in the transaction of whatever other writes are queued with it.
    async fn append_audit_record(
        &self,
        record: &crate::audit::AuditRecord,
    ) -> Result<(), StoreError> {
        use super::rows::Bind as _;
        let record = record.clone();
        super::sql::hot_write!(self, |conn| sqlx::query(SQL.append_audit).audit(&record))
            .await
            .map(drop)
    }

    /// One hot write, in the transaction of whatever other writes are queued with it
    /// (`sqlite_batch`): the rows it changed, once that transaction committed.
    async fn write_one<F>(&self, write: F) -> Result<u64, StoreError>
    where
        F: for<'c> FnOnce(&'c mut sqlx::SqliteConnection) -> WriteFuture<'c> + Send + 'static,
    {
        self.batch.run(statement(write)).await
    }

    /// The session row by id: from the row cache when it holds the row and no other writer
    /// changed the table since the cache last looked (docs/DESIGN.md §15.4); else synchronously
    /// when the path is on (kept in the cache unless a write raced the read), through the pool
    /// when it is off or the database is busy.
    async fn session_row(&self, id: &SessionId) -> Result<Option<SessionRecord>, StoreError> {
        let Some(sync) = &self.sync else {
            return self.session_row_pooled(id).await;
        };
        // A held row answers only with the proof that no other process wrote since the cache
        // last looked; without it (busy, closed, failed) the row is read like a miss. A miss
        // needs no proof: the read itself is current.
        let ticket = self.rows.as_deref().map(|rows| (rows, rows.ticket(id)));
        if let Some((rows, ticket)) = &ticket {
            if let Some(held) = rows.get(ticket, || self.nobody_else_wrote(sync, rows)) {
                return Ok(Some(SessionRecord::clone(&held)));
            }
        }
        let row = match sync.session(id) {
            Some(row) => row?,
            None => return self.session_row_pooled(id).await,
        };
        if let (Some((rows, ticket)), Some(record)) = (ticket, &row) {
            rows.fill(ticket, record);
        }
        Ok(row)
    }

    /// The session row by id past the row cache: synchronously when the path is on, else (or
    /// busy) through the pool.
    async fn session_row_current(
        &self,
        id: &SessionId,
    ) -> Result<Option<SessionRecord>, StoreError> {
        match self.sync.as_ref().and_then(|sync| sync.session(id)) {
            Some(row) => row,
            None => self.session_row_pooled(id).await,
        }
    }

    /// The proof a held row answers on (docs/DESIGN.md §15.4): no connection committed since the
    /// last full proof (the WAL-index header is byte for byte the one read before it), or a
    /// full proof now (the writers' tables), which forgets every row when another writer moved.
    fn nobody_else_wrote(&self, sync: &SyncReaders, rows: &RowCache) -> bool {
        let header = sync.wal_header();
        if header.is_some() && *self.proven_at() == header {
            return true;
        }
        matches!(self.full_proof(sync, rows, header), Some(Ok(true)))
    }

    /// Runs a session write under a guard that forgets, after it, the cached rows it changed
    /// (`scope` unless it says which), and again after the writer drains when it did not
    /// finish (an error, or a caller that gave up mid-write).
    async fn session_write<T, F>(&self, scope: Scope, write: F) -> Result<T, StoreError>
    where
        F: std::future::Future<Output = Result<(T, Changed), StoreError>> + Send,
    {
        let mut written = Written::new(self.rows.as_ref(), scope);
        let (value, changed) = write.await?;
        match changed {
            // One process's cache: a stale copy is forgotten like a changed one.
            Changed::Scope | Changed::Stale => written.finished(),
            Changed::Rows(ids) => written.finished_with(&ids),
            Changed::Nothing => written.finished_with([]),
        }
        Ok(value)
    }

    /// SQLite has no RETURNING inside a WITH clause: when nothing was revoked, a second read
    /// tells an already revoked session from a missing one.
    async fn revoke_one<'q>(
        &self,
        revoke: sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments<'q>>,
        id: &SessionId,
    ) -> Result<Revocation, StoreError> {
        let revoked = revoke.fetch_optional(&self.write).await.map_err(map_err)?;
        let found = match &revoked {
            Some(_) => true,
            None => sqlx::query("SELECT 1 FROM sessions WHERE id = ?")
                .bind(id.as_str())
                .fetch_optional(&self.write)
                .await
                .map_err(map_err)?
                .is_some(),
        };
        rows::revocation(revoked.as_ref(), found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn result_codes_are_classified() {
        let table: &[(&str, bool)] = &[
            ("5", true),     // SQLITE_BUSY
            ("261", true),   // SQLITE_BUSY_RECOVERY
            ("517", true),   // SQLITE_BUSY_SNAPSHOT
            ("773", true),   // SQLITE_BUSY_TIMEOUT
            ("6", true),     // SQLITE_LOCKED
            ("262", true),   // SQLITE_LOCKED_SHAREDCACHE
            ("1", false),    // SQLITE_ERROR
            ("19", false),   // SQLITE_CONSTRAINT
            ("2067", false), // SQLITE_CONSTRAINT_UNIQUE
            ("11", false),   // SQLITE_CORRUPT
            ("", false),
            ("busy", false),
        ];
        for (code, unavailable) in table {
            assert_eq!(unavailable_code(code), *unavailable, "{code}");
        }
    }
}

#[cfg(test)]
mod sync_path_tests {
    use super::*;

    #[tokio::test]
    async fn a_file_database_reads_synchronously_unless_turned_off() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let store = SqliteStore::open(path.to_str().unwrap(), SqliteOptions::default())
            .await
            .unwrap();
        assert!(store.sync.is_some());
        let url = format!("sqlite://{}", path.display());
        let store = SqliteStore::open(&url, SqliteOptions::default())
            .await
            .unwrap();
        assert!(store.sync.is_some());
        let off = SqliteOptions {
            sync_reads: false,
            ..SqliteOptions::default()
        };
        let store = SqliteStore::open(&url, off).await.unwrap();
        assert!(store.sync.is_none());
    }

    /// The fast proof's premise: the WAL-index header is readable, stays byte for byte the same
    /// while nobody commits, and changes with every commit, by this store or another connection.
    #[tokio::test]
    async fn the_wal_index_header_moves_with_every_commit_and_only_then() {
        use crate::store::SessionStore as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let path = path.to_str().unwrap();
        let store = SqliteStore::open(path, SqliteOptions::default())
            .await
            .unwrap();
        let sync = store.sync.clone().unwrap();
        let before = sync.wal_header().expect("the WAL index is readable");
        let id = SessionId::generate(&crate::OsRandom);
        assert!(store.session(&id).await.unwrap().is_none());
        assert_eq!(sync.wal_header(), Some(before), "a read moved the header");
        let raw = sqlx::SqlitePool::connect(&format!("sqlite://{path}"))
            .await
            .unwrap();
        let mut seen = vec![before];
        for _ in 0..3 {
            sqlx::query("UPDATE sessiond_anonymous_writes SET n = n + 1")
                .execute(&raw)
                .await
                .unwrap();
            let now = sync.wal_header().unwrap();
            assert!(!seen.contains(&now), "a commit left the header as it was");
            seen.push(now);
        }
        // A change by this store's own writer (here: a revocation of nothing changes nothing,
        // so the GC's bookkeeping table is touched instead) moves it too.
        sqlx::query("UPDATE sessiond_anonymous_writes SET n = n - 1")
            .execute(&store.write)
            .await
            .unwrap();
        assert!(!seen.contains(&sync.wal_header().unwrap()));
    }

    /// After `close`, a session read fails as every other query does (a closed store serves
    /// nothing, whichever path the read would take).
    #[tokio::test]
    async fn a_closed_store_answers_no_read() {
        use crate::store::SessionStore as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let store = SqliteStore::open(path.to_str().unwrap(), SqliteOptions::default())
            .await
            .unwrap();
        let id = SessionId::generate(&crate::OsRandom);
        assert!(store.session(&id).await.unwrap().is_none());
        store.close().await;
        assert!(matches!(
            store.session(&id).await,
            Err(StoreError::Unavailable(_))
        ));
    }
}
