//! Group commit on SQLite (docs/DESIGN.md §15.3): the hot single-statement writes of concurrent
//! callers (refresh rotation, first use of a pair, sliding expiry, a session insert without a
//! limit, audit records) share one write transaction on the writer connection. Each caller is
//! answered only after the transaction holding its statement has committed, with its own
//! statement's outcome, so an acknowledged write is exactly as durable as one written alone.
//!
//! Why: with one statement per transaction, the writer connection's thread spent most of its
//! time committing (appending and checksumming WAL frames, the WAL-index update, the file lock)
//! and switching threads. A batch commits once for all its statements.
//!
//! The rules:
//! - A lone statement runs on its own (autocommit), as before: no added round trips when the
//!   store is quiet.
//! - A batch begins `IMMEDIATE`: it takes the write lock before its first statement, so no
//!   statement of it can meet another process's lock halfway (each would wait `busy_timeout`
//!   again).
//! - A statement refused by a constraint fails alone: SQLite undoes that statement only, and
//!   the batch goes on. Any other failure (busy, I/O, a full disk, a closed store) may have
//!   undone the whole transaction: the batch is rolled back and every caller in it gets the
//!   error. A failed commit fails every caller too. Nobody is told "done" for a write that is
//!   not on disk.
//! - Other writes (revocations, key changes, creates under a limit, claims) run through the
//!   writer pool directly and take turns with the batches: the pool has one connection.

use sqlx::sqlite::SqliteConnection;
use sqlx::SqlitePool;
use tokio::sync::{mpsc, oneshot};

use super::sql::WriteFuture;
use super::StoreError;

/// The most statements in one transaction.
const MAX_BATCH: usize = 256;

/// One write: runs its statement on the connection it is given, and says how many rows it
/// changed.
pub(super) type Statement =
    Box<dyn for<'c> FnOnce(&'c mut SqliteConnection) -> WriteFuture<'c> + Send>;

/// Boxes `f` as a [`Statement`] (the bound lets the closure's signature be inferred).
pub(super) fn statement<F>(f: F) -> Statement
where
    F: for<'c> FnOnce(&'c mut SqliteConnection) -> WriteFuture<'c> + Send + 'static,
{
    Box::new(f)
}

type Job = (Statement, oneshot::Sender<Result<u64, StoreError>>);

/// The queue to the store's group-commit writer task.
#[derive(Debug, Clone)]
pub(super) struct WriteBatcher {
    jobs: mpsc::UnboundedSender<Job>,
}

/// A failure shared by every statement of a batch, handed to each caller as its own error of
/// the same kind.
fn shared(e: &StoreError) -> StoreError {
    let message = e.to_string();
    match e {
        StoreError::Unavailable(_) => StoreError::Unavailable(message.into()),
        _ => StoreError::Backend(message.into()),
    }
}

/// Whether SQLite refused the statement for a constraint (`SQLITE_CONSTRAINT` and its extended
/// codes): it undid that statement alone and the transaction goes on.
fn undone_alone(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(db) => db
            .code()
            .and_then(|c| c.parse::<i32>().ok())
            .is_some_and(|c| c & 0xff == 19),
        _ => false,
    }
}

impl WriteBatcher {
    /// Starts the writer task on the current runtime: it takes what is queued (up to
    /// [`MAX_BATCH`]), runs it as the module documentation says on `pool` (the writer pool),
    /// and answers each caller. It ends when every handle to the store is gone.
    pub(super) fn start(pool: SqlitePool, map_err: fn(sqlx::Error) -> StoreError) -> Self {
        let (jobs, mut queue) = mpsc::unbounded_channel::<Job>();
        tokio::spawn(async move {
            let mut batch: Vec<Job> = Vec::with_capacity(MAX_BATCH);
            while let Some(first) = queue.recv().await {
                batch.push(first);
                while batch.len() < MAX_BATCH {
                    match queue.try_recv() {
                        Ok(job) => batch.push(job),
                        Err(_) => break,
                    }
                }
                let (statements, answers): (Vec<_>, Vec<_>) = batch.drain(..).unzip();
                let outcomes = write(&pool, statements, map_err).await;
                for (answer, outcome) in answers.into_iter().zip(outcomes) {
                    // A caller that gave up waiting does not need its answer.
                    let _ = answer.send(outcome);
                }
            }
        });
        WriteBatcher { jobs }
    }

    /// Runs `statement` in the next batch, returning its count of changed rows once the
    /// transaction holding it has committed.
    pub(super) async fn run(&self, statement: Statement) -> Result<u64, StoreError> {
        let (answer, answered) = oneshot::channel();
        let gone = || StoreError::Unavailable("the SQLite writer has stopped".into());
        self.jobs.send((statement, answer)).map_err(|_| gone())?;
        answered.await.map_err(|_| gone())?
    }

    /// Resolves once every statement queued before it has been answered, and every command
    /// sent to the writer connection before it has run (the row cache's barrier, docs/DESIGN.md
    /// §15.4): a `SELECT 1` in the next batch. The batches answer in order; the connection runs
    /// its commands in order, so the `SELECT 1` also waits for a statement of a direct write
    /// whose caller gave up while it was running. The store's own failure does not matter
    /// here: a write that failed changed nothing.
    pub(super) async fn drained(&self) {
        let select = statement(|conn| {
            Box::pin(
                async move { Ok(sqlx::query("SELECT 1").execute(conn).await?.rows_affected()) },
            )
        });
        let _ = self.run(select).await;
    }
}

/// One outcome per statement, in order.
async fn write(
    pool: &SqlitePool,
    statements: Vec<Statement>,
    map_err: fn(sqlx::Error) -> StoreError,
) -> Vec<Result<u64, StoreError>> {
    let count = statements.len();
    let everyone = |e: StoreError| (0..count).map(|_| Err(shared(&e))).collect();
    if count == 1 {
        let mut conn = match pool.acquire().await {
            Ok(conn) => conn,
            Err(e) => return everyone(map_err(e)),
        };
        let mut outcomes = Vec::with_capacity(1);
        for statement in statements {
            outcomes.push(statement(&mut conn).await.map_err(map_err));
        }
        return outcomes;
    }
    let mut tx = match pool.begin_with("BEGIN IMMEDIATE").await {
        Ok(tx) => tx,
        Err(e) => return everyone(map_err(e)),
    };
    let mut outcomes = Vec::with_capacity(count);
    for statement in statements {
        match statement(&mut tx).await {
            Ok(changed) => outcomes.push(Ok(changed)),
            Err(e) if undone_alone(&e) => outcomes.push(Err(map_err(e))),
            Err(e) => {
                let e = map_err(e);
                // Whatever the rollback says, nothing of the batch is acknowledged.
                let _ = tx.rollback().await;
                return everyone(e);
            }
        }
    }
    match tx.commit().await {
        Ok(()) => outcomes,
        Err(e) => everyone(map_err(e)),
    }
}
