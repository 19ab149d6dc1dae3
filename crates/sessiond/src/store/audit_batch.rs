//! Group commit of audit records (docs/DESIGN.md §15.3): callers that append concurrently share
//! one write transaction. Each caller is answered only after the transaction holding its record
//! has committed, with that transaction's outcome, so an acknowledged record is as durable as
//! one written alone.

use sqlx::{Database, Executor, IntoArguments, Pool};
use tokio::sync::{mpsc, oneshot};

use super::rows::Bind;
use super::StoreError;
use crate::audit::AuditRecord;

/// The most records in one transaction.
const MAX_BATCH: usize = 256;

type Job = (AuditRecord, oneshot::Sender<Result<(), StoreError>>);

/// The queue to the store's audit writer task.
#[derive(Debug, Clone)]
pub(super) struct AuditBatcher {
    jobs: mpsc::UnboundedSender<Job>,
}

/// A failure shared by every record of a batch, handed to each caller as its own error of the
/// same kind.
fn shared(e: &StoreError) -> StoreError {
    let message = e.to_string();
    match e {
        StoreError::Unavailable(_) => StoreError::Unavailable(message.into()),
        _ => StoreError::Backend(message.into()),
    }
}

impl AuditBatcher {
    /// Starts the writer task on the current runtime: it takes what is queued (up to
    /// [`MAX_BATCH`]), writes it in one transaction on `pool` with `sql`, and answers each
    /// caller. It ends when every handle to the store is gone.
    pub(super) fn start<DB>(
        pool: Pool<DB>,
        sql: &'static str,
        map_err: fn(sqlx::Error) -> StoreError,
    ) -> Self
    where
        DB: Database,
        for<'q> <DB as Database>::Arguments<'q>: IntoArguments<'q, DB>,
        for<'q> sqlx::query::Query<'q, DB, <DB as Database>::Arguments<'q>>: Bind<'q>,
        for<'c> &'c mut <DB as Database>::Connection: Executor<'c, Database = DB>,
    {
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
                let outcome = write(&pool, sql, &batch).await.map_err(map_err);
                for (_, answer) in batch.drain(..) {
                    // A caller that gave up waiting does not need its answer.
                    let _ = answer.send(match &outcome {
                        Ok(()) => Ok(()),
                        Err(e) => Err(shared(e)),
                    });
                }
            }
        });
        AuditBatcher { jobs }
    }

    /// Appends `record`, returning once the transaction holding it has committed.
    pub(super) async fn append(&self, record: AuditRecord) -> Result<(), StoreError> {
        let (answer, answered) = oneshot::channel();
        let gone = || StoreError::Unavailable("the audit writer has stopped".into());
        self.jobs.send((record, answer)).map_err(|_| gone())?;
        answered.await.map_err(|_| gone())?
    }
}

async fn write<DB>(pool: &Pool<DB>, sql: &'static str, batch: &[Job]) -> Result<(), sqlx::Error>
where
    DB: Database,
    for<'q> <DB as Database>::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> sqlx::query::Query<'q, DB, <DB as Database>::Arguments<'q>>: Bind<'q>,
    for<'c> &'c mut <DB as Database>::Connection: Executor<'c, Database = DB>,
{
    let mut tx = pool.begin().await?;
    for (record, _) in batch {
        sqlx::query::<DB>(sql)
            .audit(record)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await
}
