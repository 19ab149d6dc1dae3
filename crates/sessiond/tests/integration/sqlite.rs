//! The conformance suite on the embedded SQLite backend.

crate::conformance_suite!(crate::common::sqlite_backend);
crate::rotation_suite!(crate::common::sqlite_backend);
crate::keys_suite!(crate::common::sqlite_backend);

/// The same suite with the synchronous read path off: every read through sqlx's pool (and no
/// row cache, which needs that path).
mod pooled_reads {
    crate::conformance_suite!(crate::common::sqlite_pooled_backend);
}

/// The same suite with the synchronous read path on and the row cache off.
mod uncached_rows {
    crate::conformance_suite!(crate::common::sqlite_uncached_backend);
}

use std::sync::Arc;

use sessiond::store::sqlite::{SqliteOptions, SqliteStore};

use crate::conformance::{corrupt_rows_are_reported_by_column, CORRUPT_ROWS};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_keys_are_stored_by_hash_and_revoked_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sessiond.db");
    let store = SqliteStore::open(path.to_str().unwrap(), SqliteOptions::default())
        .await
        .unwrap();
    crate::conformance::api_keys_are_stored_by_hash_and_revoked_once(Arc::new(store)).await;
}

/// Every stored defect is `Corrupt` naming its column, as on PostgreSQL, plus the defects only
/// SQLite's dynamic typing admits (a text in an integer column, a short hash).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_rows_are_reported_by_column_as_on_postgres() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sessiond.db");
    let path = path.to_str().unwrap();
    let store = SqliteStore::open(path, SqliteOptions::default())
        .await
        .unwrap();
    let raw = sqlx::SqlitePool::connect(&format!("sqlite://{path}"))
        .await
        .unwrap();
    let only_sqlite = [
        (
            "UPDATE sessions SET created_at = 'yesterday' WHERE id = '{id}'",
            "sessions.created_at",
        ),
        (
            "UPDATE sessions SET csrf_hash = substr(csrf_hash, 1, 3) WHERE id = '{id}'",
            "sessions.csrf_hash",
        ),
        (
            "UPDATE api_keys SET hash = substr(hash, 1, 3) WHERE id = '{id}'",
            "api_keys.hash",
        ),
        // PostgreSQL's schema refuses an operator key without a fingerprint outright.
        (
            "UPDATE signing_keys SET origin = 'operator' WHERE id = '{id}'",
            "signing_keys.fingerprint",
        ),
    ];
    let defects: Vec<_> = CORRUPT_ROWS.iter().copied().chain(only_sqlite).collect();
    corrupt_rows_are_reported_by_column(Arc::new(store), &defects, |sql| {
        let raw = raw.clone();
        async move {
            sqlx::raw_sql(&sql).execute(&raw).await.unwrap();
        }
    })
    .await;
}

/// A reload reuses a key's unsealed material only while the key's row holds the very blob it
/// was opened from: a blob changed under a running ring is opened again (here, another key's
/// blob, which its associated data refuses), never answered from memory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sealed_blob_changed_under_a_running_ring_is_opened_again() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sessiond.db");
    let path = path.to_str().unwrap();
    let store = SqliteStore::open(path, SqliteOptions::default())
        .await
        .unwrap();
    let service = sessiond::SessionService::builder(
        Arc::new(store),
        sessiond::MasterKey::from_bytes([7; 32]),
    )
    .start()
    .await
    .unwrap();
    service.keys().reload().await.unwrap();
    let raw = sqlx::SqlitePool::connect(&format!("sqlite://{path}"))
        .await
        .unwrap();
    sqlx::raw_sql(
        "UPDATE signing_keys SET sealed = (SELECT sealed FROM signing_keys WHERE purpose = 'refresh') \
         WHERE purpose = 'cookie'",
    )
    .execute(&raw)
    .await
    .unwrap();
    let err = service.keys().reload().await.unwrap_err();
    assert!(matches!(err, sessiond::keys::KeyError::Unseal), "{err:?}");
}

/// The synchronous read path sees what another store on the same file (another process: the
/// CLI while the server runs) committed, at once: a revocation there is seen by the very next
/// read here, with no cache to notice it through; and the rows it reads are the pool's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_by_another_store_is_read_at_once() {
    use sessiond::store::SessionStore as _;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sessiond.db");
    let path = path.to_str().unwrap();
    let server = SqliteStore::open(path, SqliteOptions::default())
        .await
        .unwrap();
    let mut pooled = SqliteOptions::default();
    pooled.sync_reads = false;
    let cli = SqliteStore::open(path, pooled).await.unwrap();
    let record = crate::conformance::record("ext", "default", 0, 3_600, 7_200);
    let id = &record.session.id;
    let now = sessiond::Timestamp::from_unix_seconds(10);
    server.create_session(&record, None, now).await.unwrap();
    let here = server.session(id).await.unwrap().unwrap();
    let there = cli.session(id).await.unwrap().unwrap();
    assert_eq!(format!("{here:?}"), format!("{there:?}"));
    assert!(here.session.revoked_at.is_none());
    cli.revoke_session(id, now, &sessiond::RevokeReason::logout())
        .await
        .unwrap();
    let here = server.session(id).await.unwrap().unwrap();
    assert_eq!(here.session.revoked_at, Some(now));
    assert!(server
        .session(&sessiond::SessionId::generate(&sessiond::OsRandom))
        .await
        .unwrap()
        .is_none());
}

/// Audit records appended concurrently share write transactions (group commit), and every
/// caller is answered with its own outcome: 64 concurrent appends all land, in full; on a closed
/// store every append is refused as unavailable, and none of them hangs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_audit_records_are_grouped_and_each_caller_answered() {
    use sessiond::audit::{AuditEvent, AuditQuery, AuditRecord};
    use sessiond::store::{AuditStore as _, StoreError};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sessiond.db");
    let store = Arc::new(
        SqliteStore::open(path.to_str().unwrap(), SqliteOptions::default())
            .await
            .unwrap(),
    );
    let record = |i: i64| {
        AuditRecord::new(
            sessiond::Timestamp::from_unix_seconds(i),
            AuditEvent::SessionRevoked,
            format!("r{i}"),
        )
    };
    let appends: Vec<_> = (0..64)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move { store.append_audit(&record(i)).await })
        })
        .collect();
    for append in appends {
        append.await.unwrap().unwrap();
    }
    let stored = store.audit_records(&AuditQuery::latest(100)).await.unwrap();
    let mut reasons: Vec<_> = stored.iter().map(|r| r.reason.clone()).collect();
    reasons.sort();
    let mut expected: Vec<_> = (0..64).map(|i| format!("r{i}")).collect();
    expected.sort();
    assert_eq!(reasons, expected);

    store.close().await;
    let appends: Vec<_> = (0..8)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move { store.append_audit(&record(100 + i)).await })
        })
        .collect();
    for append in appends {
        let refused = tokio::time::timeout(std::time::Duration::from_secs(10), append)
            .await
            .expect("an append on a closed store hung")
            .unwrap();
        assert!(
            matches!(refused, Err(StoreError::Unavailable(_))),
            "{refused:?}"
        );
    }
}

/// The synchronous read path fails closed: when the row cannot be read (here its table is gone
/// behind the store's back), the read is an error, never "no such session", so a validation is
/// answered as an outage and never as a verdict; a corrupt row is `Corrupt`, as on the pool.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_synchronous_read_is_an_error_never_a_missing_row() {
    use sessiond::store::{SessionStore as _, StoreError};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sessiond.db");
    let path = path.to_str().unwrap();
    let store = SqliteStore::open(path, SqliteOptions::default())
        .await
        .unwrap();
    let record = crate::conformance::record("gone", "default", 0, 3_600, 7_200);
    let id = &record.session.id;
    store
        .create_session(&record, None, sessiond::Timestamp::from_unix_seconds(10))
        .await
        .unwrap();
    assert!(store.session(id).await.unwrap().is_some());
    let raw = sqlx::SqlitePool::connect(&format!("sqlite://{path}"))
        .await
        .unwrap();
    sqlx::query(&format!(
        "UPDATE sessions SET refresh_chain = 'not json', refresh_hash = zeroblob(32) WHERE id = '{}'",
        id.as_str()
    ))
    .execute(&raw)
    .await
    .unwrap();
    assert!(matches!(
        store.session(id).await,
        Err(StoreError::Corrupt {
            what: "sessions.refresh_chain"
        })
    ));
    sqlx::query("ALTER TABLE sessions RENAME TO sessions_gone")
        .execute(&raw)
        .await
        .unwrap();
    let read = store.session(id).await;
    assert!(
        matches!(
            read,
            Err(StoreError::Backend(_) | StoreError::Unavailable(_))
        ),
        "{read:?}"
    );
}
