//! The synchronous read path of the SQLite store: the session row of every validation, read on
//! the calling task through rusqlite (the same SQLite library sqlx links), without sqlx's hop
//! to a connection's worker thread (docs/DESIGN.md §15.2).
//!
//! Why: sqlx runs each SQLite connection on its own thread and hands every statement and every
//! row across channels; under load about half of the server's CPU went into waking and parking
//! those threads, for a primary-key read that takes SQLite a few microseconds from the page
//! cache. Here the read runs where it is asked for, like taking a mutex.
//!
//! What keeps it honest:
//! - Each read is its own read transaction in autocommit mode (WAL): it sees every write
//!   committed before it began, by this process or another (the CLI), exactly as a read through
//!   the pool does. (The row cache in front of it, `row_cache`, keeps that promise its own way.)
//! - The connections are `query_only` and never write; the statement is prepared once per
//!   connection (on its first read) and reused.
//! - It never waits long on the caller's thread: a reader's `busy_timeout` is short, and a busy
//!   or locked database (in WAL, only during recovery or a checkpoint restart) sends the read
//!   to the async pool instead, which waits as long as the store is configured to. Every other
//!   failure is the store's failure: an outage is 503, never a verdict.
//! - A database path it cannot open (an in-memory database, a URL sqlx resolves itself) leaves
//!   the path off, and every read goes through the pool as before.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension};

use super::rows::{self, Columns};
use super::StoreError;
use crate::id::SessionId;
use crate::session::SessionRecord;

/// How long a synchronous reader waits for a lock before giving the read to the async pool.
const READER_BUSY_TIMEOUT: Duration = Duration::from_millis(20);

/// The most of the file a reader maps (address space, not memory: pages are the OS page
/// cache's).
const READER_MMAP_BYTES: i64 = 1 << 30;

/// Synchronous read connections on one database file.
pub(super) struct SyncReaders {
    connections: Box<[Mutex<Connection>]>,
    next: AtomicUsize,
    /// Set by the store's `close`: every read goes to the (closed) pool from then on.
    closed: AtomicBool,
    session_sql: &'static str,
    others_sql: &'static str,
    /// The file's WAL index (`<file>-shm`), read for its header only; `None` when it cannot be
    /// read as SQLite documents it.
    wal_index: Option<std::fs::File>,
}

/// The WAL-index header's version SQLite writes (walformat.html, "The WAL-Index Header").
const WAL_INDEX_VERSION: u32 = 3_007_000;

/// One copy of the WAL-index header: the first 48 bytes of `<file>-shm`, written again (with
/// its `iChange` counter one higher) by every commit, by any connection of any process.
pub(super) type WalHeader = [u8; 48];

impl std::fmt::Debug for SyncReaders {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyncReaders")
            .field("connections", &self.connections.len())
            .finish_non_exhaustive()
    }
}

impl SyncReaders {
    /// `count` connections on the file at `path` (created by the store's writer before this is
    /// called). An error when the file cannot be read this way (the caller then reads through
    /// the pool).
    pub(super) fn open(
        path: &Path,
        count: usize,
        session_sql: &'static str,
        others_sql: &'static str,
    ) -> Result<Self, rusqlite::Error> {
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
            | OpenFlags::SQLITE_OPEN_URI;
        let mut connections = Vec::with_capacity(count.max(1));
        for _ in 0..count.max(1) {
            let conn = Connection::open_with_flags(path, flags)?;
            conn.busy_timeout(READER_BUSY_TIMEOUT)?;
            conn.pragma_update(None, "query_only", true)?;
            // Pages through a memory map instead of a `pread` each: a large table's read stays
            // as cheap as a small one's once its pages are in the OS page cache.
            conn.pragma_update(None, "mmap_size", READER_MMAP_BYTES)?;
            // The journal mode is the file's (WAL, set by the writer); check it is.
            let mode: String = conn.pragma_query_value(None, "journal_mode", |row| row.get(0))?;
            if !mode.eq_ignore_ascii_case("wal") {
                return Err(rusqlite::Error::InvalidParameterName(format!(
                    "journal_mode is {mode}, not wal"
                )));
            }
            // The statement is prepared on first use: `connect` runs before the migrations.
            connections.push(Mutex::new(conn));
        }
        // The readers have opened the WAL index by now; it stays while any connection is open.
        let mut shm = path.as_os_str().to_owned();
        shm.push("-shm");
        let wal_index = std::fs::File::open(&shm).ok().filter(|file| {
            read_header(file)
                .is_some_and(|h| h.get(..4) == Some(&WAL_INDEX_VERSION.to_ne_bytes()[..]))
        });
        Ok(SyncReaders {
            wal_index,
            connections: connections.into_boxed_slice(),
            next: AtomicUsize::new(0),
            closed: AtomicBool::new(false),
            session_sql,
            others_sql,
        })
    }

    /// A free connection, else the next one in turn (held for one read: microseconds).
    fn connection(&self) -> MutexGuard<'_, Connection> {
        let count = self.connections.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        for i in 0..count {
            if let Some(conn) = self.connections.get((start + i) % count) {
                if let Ok(guard) = conn.try_lock() {
                    return guard;
                }
            }
        }
        // `connections` is never empty (`open` makes at least one), so the modulo is in range;
        // a poisoned connection is still a valid connection (nothing is left half-done on it:
        // a read holds no transaction open).
        #[allow(clippy::indexing_slicing)]
        let conn = &self.connections[start % count];
        conn.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Stops answering: the store was closed, so reads go to its closed pool and fail there
    /// as every other query does.
    pub(super) fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
    }

    /// Runs the statement `sql` on a free connection through `read`; `None` when the database
    /// was busy or the store closed (the caller reads through the pool instead), any other
    /// failure an error (an outage, never a verdict).
    fn read<T>(
        &self,
        sql: &str,
        read: impl FnOnce(&mut rusqlite::CachedStatement<'_>) -> rusqlite::Result<T>,
    ) -> Option<Result<T, StoreError>> {
        if self.closed.load(Ordering::SeqCst) {
            return None;
        }
        let conn = self.connection();
        let result = conn
            .prepare_cached(sql)
            .and_then(|mut statement| read(&mut statement));
        match result {
            Ok(value) => Some(Ok(value)),
            Err(e) if is_busy(&e) => None,
            Err(e) => Some(Err(StoreError::Backend(Box::new(e)))),
        }
    }

    /// The session row by id (or none); `None` when the database was busy or the store closed:
    /// read through the pool instead.
    pub(super) fn session(
        &self,
        id: &SessionId,
    ) -> Option<Result<Option<SessionRecord>, StoreError>> {
        let read = self.read(self.session_sql, |statement| {
            statement
                .query_row([id.as_str()], |row| {
                    Ok(rows::session_from_row(&SyncRow(row)))
                })
                .optional()
        })?;
        Some(read.and_then(Option::transpose))
    }

    /// What writers other than `instance` recorded: the highest `seq` in `sessiond_writers` and
    /// the anonymous count (the row cache's full proof that nobody else wrote, docs/DESIGN.md
    /// §15.4); `None` when the database was busy or the store closed. An error (the tables are
    /// missing: not migrated) means the cache cannot answer.
    pub(super) fn others(&self, instance: &[u8; 16]) -> Option<Result<[i64; 2], StoreError>> {
        self.read(self.others_sql, |statement| {
            statement.query_row([&instance[..]], |row| Ok([row.get(0)?, row.get(1)?]))
        })
    }
}

impl SyncReaders {
    /// The WAL-index header now: one `pread`, no lock, no transaction. `None` when there is no
    /// index to read, the store is closed, or a commit was writing it (its two copies differ).
    /// Byte-equal headers at two moments mean no connection committed in between (docs/DESIGN.md
    /// §15.4, the fast proof).
    pub(super) fn wal_header(&self) -> Option<WalHeader> {
        if self.closed.load(Ordering::SeqCst) {
            return None;
        }
        read_header(self.wal_index.as_ref()?)
    }
}

/// Both copies of the WAL-index header of `file`, when they agree (a writer updates one, then
/// the other: a read between the two sees them differ).
#[cfg(not(unix))]
fn read_header(_file: &std::fs::File) -> Option<WalHeader> {
    None
}

/// Both copies of the WAL-index header of `file`, when they agree (a writer updates one, then
/// the other: a read between the two sees them differ).
#[cfg(unix)]
fn read_header(file: &std::fs::File) -> Option<WalHeader> {
    use std::os::unix::fs::FileExt as _;
    let mut both = [0u8; 96];
    file.read_exact_at(&mut both, 0).ok()?;
    let (first, second) = both.split_at(48);
    (first == second).then(|| first.try_into().ok()).flatten()
}

/// `SQLITE_BUSY` or `SQLITE_LOCKED` (any extended code).
fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    )
}

/// A rusqlite row as the row layer reads rows: the same decoding as through sqlx, so a defect
/// in a stored row is reported the same way (`StoreError::Corrupt` naming `table.column`).
struct SyncRow<'a, 'stmt>(&'a rusqlite::Row<'stmt>);

/// The session statement's columns in order (`session_columns!`), to find a column by exact
/// name instead of rusqlite's case-insensitive scan of the statement's names on every get.
static SESSION_COLUMNS: std::sync::LazyLock<Vec<&'static str>> =
    std::sync::LazyLock::new(|| rows::session_columns!().split(',').map(str::trim).collect());

impl SyncRow<'_, '_> {
    fn get<T: rusqlite::types::FromSql>(&self, col: &'static str) -> Result<T, StoreError> {
        let name = col.split_once('.').map_or(col, |(_, name)| name);
        let got = match SESSION_COLUMNS.iter().position(|c| *c == name) {
            Some(index) => self.0.get(index),
            None => self.0.get(name),
        };
        got.map_err(|e| match e {
            rusqlite::Error::InvalidColumnType(..)
            | rusqlite::Error::FromSqlConversionFailure(..)
            | rusqlite::Error::IntegralValueOutOfRange(..)
            | rusqlite::Error::Utf8Error(..) => StoreError::Corrupt { what: col },
            other => StoreError::Backend(Box::new(other)),
        })
    }
}

impl Columns for SyncRow<'_, '_> {
    fn int(&self, col: &'static str) -> Result<i64, StoreError> {
        self.get(col)
    }

    fn opt_int(&self, col: &'static str) -> Result<Option<i64>, StoreError> {
        self.get(col)
    }

    fn text(&self, col: &'static str) -> Result<String, StoreError> {
        self.get(col)
    }

    fn opt_text(&self, col: &'static str) -> Result<Option<String>, StoreError> {
        self.get(col)
    }

    fn bytes(&self, col: &'static str) -> Result<Vec<u8>, StoreError> {
        self.get(col)
    }

    fn opt_bytes(&self, col: &'static str) -> Result<Option<Vec<u8>>, StoreError> {
        self.get(col)
    }

    fn boolean(&self, col: &'static str) -> Result<bool, StoreError> {
        self.get(col)
    }
}
