//! Group commit on SQLite (docs/DESIGN.md §15.3): concurrent hot writes share a transaction,
//! and a batch never turns one caller's failure into another's loss or another's "done" into a
//! write that is not there.

use std::sync::Arc;
use std::time::Duration;

use sessiond::store::sqlite::{SqliteOptions, SqliteStore};
use sessiond::store::{SessionStore, StoreError};

use crate::conformance::{record, t};

struct Fixture {
    _dir: tempfile::TempDir,
    path: String,
    store: Arc<SqliteStore>,
    /// A connection that is no sessiond store: it holds the write lock when a test says so.
    raw: sqlx::SqlitePool,
}

async fn fixture(busy_timeout: Duration) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sessiond.db").to_str().unwrap().to_owned();
    let mut options = SqliteOptions::default();
    options.busy_timeout = busy_timeout;
    let store = Arc::new(SqliteStore::open(&path, options).await.unwrap());
    let raw = sqlx::SqlitePool::connect(&format!("sqlite://{path}"))
        .await
        .unwrap();
    Fixture {
        _dir: dir,
        path,
        store,
        raw,
    }
}

/// Whether the session `id` is in the file, asked of a store opened afresh on it.
async fn on_disk(path: &str, ids: &[sessiond::SessionId]) -> Vec<bool> {
    let fresh = SqliteStore::open(path, SqliteOptions::default())
        .await
        .unwrap();
    let mut found = Vec::new();
    for id in ids {
        found.push(fresh.session(id).await.unwrap().is_some());
    }
    fresh.close().await;
    found
}

/// Starts creating each of `records` on `store`, each on a task of its own.
fn creating(
    store: &Arc<SqliteStore>,
    records: &[sessiond::session::SessionRecord],
) -> Vec<tokio::task::JoinHandle<Result<Vec<sessiond::store::SessionOwner>, StoreError>>> {
    records
        .iter()
        .cloned()
        .map(|r| {
            let store = store.clone();
            tokio::spawn(async move { store.create_session(&r, None, t(0)).await })
        })
        .collect()
}

/// One insert is refused by the primary key (a session id that exists) in a batch of twenty:
/// it alone fails, with a store error that is not "unavailable", and the other nineteen are
/// acknowledged and in the file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_refused_in_a_batch_fails_alone() {
    let f = fixture(Duration::from_secs(5)).await;
    let taken = record("dup", "default", 0, 3_600, 7_200);
    f.store.create_session(&taken, None, t(0)).await.unwrap();
    // Hold the write lock, so the next write waits inside SQLite, alone in its batch, while the
    // twenty queue behind it and then go as one batch.
    let mut locker = f.raw.acquire().await.unwrap();
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut *locker)
        .await
        .unwrap();
    let first = record("first", "default", 0, 3_600, 7_200);
    let lead = creating(&f.store, std::slice::from_ref(&first)).remove(0);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut records: Vec<_> = (0..19)
        .map(|i| record(&format!("u{i}"), "default", 0, 3_600, 7_200))
        .collect();
    records.insert(7, taken.clone());
    let tasks = creating(&f.store, &records);
    tokio::time::sleep(Duration::from_millis(100)).await;
    sqlx::query("COMMIT").execute(&mut *locker).await.unwrap();
    drop(locker);
    lead.await.unwrap().unwrap();
    for (i, task) in tasks.into_iter().enumerate() {
        let outcome = task.await.unwrap();
        if i == 7 {
            assert!(
                matches!(outcome, Err(StoreError::Backend(_))),
                "the duplicate: {outcome:?}"
            );
        } else {
            assert!(outcome.is_ok(), "write {i}: {outcome:?}");
        }
    }
    f.store.close().await;
    let mut ids: Vec<_> = records.iter().map(|r| r.session.id.clone()).collect();
    ids.push(first.session.id.clone());
    assert!(on_disk(&f.path, &ids).await.iter().all(|found| *found));
}

/// While another connection holds the write lock past `busy_timeout`, every queued write fails
/// as unavailable and none of them is in the file afterwards; once the lock is free, writes
/// land again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_that_cannot_take_the_lock_fails_every_write_and_writes_nothing() {
    let f = fixture(Duration::from_millis(200)).await;
    let mut locker = f.raw.acquire().await.unwrap();
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut *locker)
        .await
        .unwrap();
    let records: Vec<_> = (0..12)
        .map(|i| record(&format!("busy{i}"), "default", 0, 3_600, 7_200))
        .collect();
    let tasks = creating(&f.store, &records);
    for task in tasks {
        let outcome = task.await.unwrap();
        assert!(
            matches!(outcome, Err(StoreError::Unavailable(_))),
            "{outcome:?}"
        );
    }
    sqlx::query("ROLLBACK").execute(&mut *locker).await.unwrap();
    drop(locker);
    let after = record("after", "default", 0, 3_600, 7_200);
    f.store.create_session(&after, None, t(0)).await.unwrap();
    f.store.close().await;
    let ids: Vec<_> = records.iter().map(|r| r.session.id.clone()).collect();
    assert_eq!(on_disk(&f.path, &ids).await, vec![false; ids.len()]);
    assert_eq!(on_disk(&f.path, &[after.session.id]).await, vec![true]);
}
