//! The SQLite session-row cache (docs/DESIGN.md §15.4) is a mirror, never a guess: every change
//! that returned, by this store, by another store on the file (another process: the CLI), or by
//! a connection that is no sessiond store at all (an operator's `sqlite3` shell), is what the
//! very next read answers, while a row nobody changed is answered from memory.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use sessiond::cache::CacheStats;
use sessiond::store::sqlite::{SqliteOptions, SqliteStore};
use sessiond::store::{RefreshRotation, SessionStore};
use sessiond::{RevokeReason, SessionId};

use crate::conformance::t;

fn rows(store: &SqliteStore) -> CacheStats {
    store
        .cache_stats()
        .into_iter()
        .find_map(|(name, stats)| (name == "session_rows").then_some(stats))
        .expect("the SQLite store reports its row cache")
}

struct Fixture {
    _dir: tempfile::TempDir,
    path: String,
    server: Arc<SqliteStore>,
    cli: Arc<SqliteStore>,
    raw: sqlx::SqlitePool,
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sessiond.db").to_str().unwrap().to_owned();
    let server = Arc::new(
        SqliteStore::open(&path, SqliteOptions::default())
            .await
            .unwrap(),
    );
    let cli = Arc::new(
        SqliteStore::open(&path, SqliteOptions::default())
            .await
            .unwrap(),
    );
    let raw = sqlx::SqlitePool::connect(&format!("sqlite://{path}"))
        .await
        .unwrap();
    Fixture {
        _dir: dir,
        path,
        server,
        cli,
        raw,
    }
}

/// The row of `id` read on `store`, which must exist.
async fn read(store: &SqliteStore, id: &SessionId) -> sessiond::session::SessionRecord {
    store.session(id).await.unwrap().unwrap()
}

/// Revokes `id` through `store` at `t(at)` (logout).
async fn revoke(store: &SqliteStore, id: &SessionId, at: i64) {
    store
        .revoke_session(id, t(at), &RevokeReason::logout())
        .await
        .unwrap();
}

/// Reads `id` on `store` until the cache answers (a read after another writer's change is a
/// miss, and so is the one after it that fills; the first proof after opening is a change too),
/// at most four times: the row is held and served from memory.
async fn held(store: &SqliteStore, id: &SessionId) -> sessiond::session::SessionRecord {
    for _ in 0..4 {
        let hits = rows(store).hits;
        let row = store.session(id).await.unwrap().unwrap();
        if rows(store).hits == hits + 1 {
            return row;
        }
    }
    panic!("the row was never served from the cache");
}

/// A token session's record (refresh state), for the rotation cases.
fn token_record() -> sessiond::session::SessionRecord {
    let mut record = crate::conformance::record("tok", "default", 0, 3_600, 7_200);
    record.session.kind = sessiond::session::SessionKind::Tokens;
    record.csrf_hash = None;
    record.refresh = Some(sessiond::session::RefreshState {
        hash: [1; 32],
        generation: 0,
        used: false,
        chain: Vec::new(),
    });
    record
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_change_by_another_store_is_read_at_once_over_a_held_row() {
    let f = fixture().await;
    let record = token_record();
    let id = &record.session.id;
    f.server.create_session(&record, None, t(10)).await.unwrap();

    // Activity recorded elsewhere.
    held(&f.server, id).await;
    assert!(f
        .cli
        .touch_session(id, t(20), t(3_620), t(19))
        .await
        .unwrap());
    let row = read(&f.server, id).await;
    assert_eq!(row.session.last_seen_at, t(20));

    // First use of the pair.
    held(&f.server, id).await;
    assert!(f.cli.mark_refresh_used(id, 0).await.unwrap());
    assert!(read(&f.server, id).await.refresh.unwrap().used);

    // A rotation.
    held(&f.server, id).await;
    let chain = [sessiond::session::RefreshStep {
        generation: 1,
        parent: 0,
        at: t(30),
        key_id: sessiond::KeyId::generate(&sessiond::OsRandom),
    }];
    let rotated = f
        .cli
        .rotate_refresh(RefreshRotation {
            id,
            expected_hash: &[1; 32],
            only_if_unused: false,
            new_hash: &[2; 32],
            generation: 1,
            chain: &chain,
            now: t(30),
            idle_expires_at: t(3_630),
        })
        .await
        .unwrap();
    assert!(rotated);
    let row = read(&f.server, id).await;
    assert_eq!(row.refresh.unwrap().hash, [2; 32]);

    // A revocation.
    held(&f.server, id).await;
    revoke(&f.cli, id, 40).await;
    assert_eq!(read(&f.server, id).await.session.revoked_at, Some(t(40)));

    // A cookie session's CSRF token, replaced elsewhere.
    let cookie = crate::conformance::record("csrf", "default", 0, 3_600, 7_200);
    f.server.create_session(&cookie, None, t(10)).await.unwrap();
    held(&f.server, &cookie.session.id).await;
    f.cli
        .set_csrf_hash(&cookie.session.id, &[9; 32], t(50))
        .await
        .unwrap()
        .unwrap();
    let row = read(&f.server, &cookie.session.id).await;
    assert_eq!(row.csrf_hash, Some([9; 32]));

    // Every session of a user, revoked elsewhere; and collected elsewhere.
    held(&f.server, &cookie.session.id).await;
    f.cli
        .revoke_user_sessions(
            &cookie.session.user_id,
            None,
            None,
            t(60),
            &RevokeReason::revoked_all(),
        )
        .await
        .unwrap();
    let row = read(&f.server, &cookie.session.id).await;
    assert_eq!(row.session.revoked_at, Some(t(60)));
    held(&f.server, &cookie.session.id).await;
    assert!(f.cli.delete_expired_sessions(t(10_000), 100).await.unwrap() >= 1);
    assert!(f
        .server
        .session(&cookie.session.id)
        .await
        .unwrap()
        .is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_by_a_connection_that_is_no_store_is_read_at_once() {
    let f = fixture().await;
    let record = crate::conformance::record("shell", "default", 0, 3_600, 7_200);
    let id = &record.session.id;
    f.server.create_session(&record, None, t(10)).await.unwrap();
    held(&f.server, id).await;
    // An operator's sqlite3 shell: no sessiond triggers of its own.
    sqlx::query("UPDATE sessions SET revoked_at = ?, revoke_reason = 'logout' WHERE id = ?")
        .bind(t(77).unix_millis())
        .bind(id.as_str())
        .execute(&f.raw)
        .await
        .unwrap();
    let row = read(&f.server, id).await;
    assert_eq!(row.session.revoked_at, Some(t(77)));
    // Deleted by hand: gone at once.
    held(&f.server, id).await;
    sqlx::query("DELETE FROM sessions WHERE id = ?")
        .bind(id.as_str())
        .execute(&f.raw)
        .await
        .unwrap();
    assert!(f.server.session(id).await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn this_stores_own_writes_are_read_at_once_and_others_rows_stay_held() {
    let f = fixture().await;
    let (a, b) = (
        crate::conformance::record("own", "default", 0, 3_600, 7_200),
        crate::conformance::record("own", "default", 1, 3_600, 7_200),
    );
    for r in [&a, &b] {
        f.server.create_session(r, None, t(10)).await.unwrap();
        held(&f.server, &r.session.id).await;
    }
    revoke(&f.server, &a.session.id, 20).await;
    let row = read(&f.server, &a.session.id).await;
    assert_eq!(row.session.revoked_at, Some(t(20)));
    // Our own write forgot only its row: b is still served from memory.
    let hits = rows(&f.server).hits;
    read(&f.server, &b.session.id).await;
    assert_eq!(rows(&f.server).hits, hits + 1);

    // The other store's write is noticed by the server; the server's by the other store.
    held(&f.cli, &b.session.id).await;
    revoke(&f.server, &b.session.id, 30).await;
    let row = read(&f.cli, &b.session.id).await;
    assert_eq!(row.session.revoked_at, Some(t(30)));
    let stats = rows(&f.server);
    assert!(stats.entries >= 1 && stats.bytes > 0, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_at_zero_turn_the_cache_off_and_its_writes_are_still_noticed() {
    let f = fixture().await;
    let mut off = SqliteOptions::default();
    off.row_cache = sessiond::cache::CacheLimits::off();
    let uncached = SqliteStore::open(&f.path, off).await.unwrap();
    assert!(uncached.cache_stats().is_empty());
    let record = crate::conformance::record("off", "default", 0, 3_600, 7_200);
    uncached.create_session(&record, None, t(10)).await.unwrap();
    // The server (cached) sees the uncached store's writes: without temporary triggers, that
    // store counts as an anonymous writer.
    held(&f.server, &record.session.id).await;
    revoke(&uncached, &record.session.id, 20).await;
    let row = read(&f.server, &record.session.id).await;
    assert!(row.session.revoked_at.is_some());
    // With the synchronous path off, there is no cache either.
    let mut pooled = SqliteOptions::default();
    pooled.sync_reads = false;
    assert!(SqliteStore::open(&f.path, pooled)
        .await
        .unwrap()
        .cache_stats()
        .is_empty());
}

/// Readers hammer a held row while another store revokes it; every read that began after the
/// revoke returned sees it revoked (a read racing the revoke may see either). Then the same with
/// the revoke through the readers' own store.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_revoke_that_returned_is_seen_by_every_read_that_began_after_it() {
    for own in [false, true] {
        for round in 0..20 {
            let f = fixture().await;
            let record = crate::conformance::record("race", "default", 0, 3_600, 7_200);
            let id = record.session.id.clone();
            f.server.create_session(&record, None, t(10)).await.unwrap();
            held(&f.server, &id).await;
            let returned = Arc::new(AtomicBool::new(false));
            let stale = Arc::new(AtomicU64::new(0));
            let stop = Arc::new(AtomicBool::new(false));
            let readers: Vec<_> = (0..8)
                .map(|_| {
                    let (server, id) = (f.server.clone(), id.clone());
                    let (returned, stale, stop) = (returned.clone(), stale.clone(), stop.clone());
                    tokio::spawn(async move {
                        let mut after = 0u32;
                        while after < 50 && !stop.load(Ordering::SeqCst) {
                            let began_after = returned.load(Ordering::SeqCst);
                            let row = read(&server, &id).await;
                            if began_after {
                                after += 1;
                                if row.session.revoked_at.is_none() {
                                    stale.fetch_add(1, Ordering::SeqCst);
                                }
                            }
                            tokio::task::yield_now().await;
                        }
                    })
                })
                .collect();
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
            let writer = if own { &f.server } else { &f.cli };
            revoke(writer, &id, 20).await;
            returned.store(true, Ordering::SeqCst);
            for r in readers {
                tokio::time::timeout(std::time::Duration::from_secs(20), r)
                    .await
                    .expect("a reader hung")
                    .unwrap();
            }
            stop.store(true, Ordering::SeqCst);
            assert_eq!(
                stale.load(Ordering::SeqCst),
                0,
                "round {round} (own store: {own}): a read after the revoke saw the live row"
            );
        }
    }
}

/// A revoke whose caller hung up mid-write (its future dropped while the statement waited for
/// the write lock) still commits later; the row read in between (the live row) must not stay
/// cached after that commit: the store forgets the row again once its writer has drained.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_whose_caller_gave_up_is_not_hidden_by_the_cache() {
    given_up(
        |store, id| {
            Box::pin(async move {
                let _ = store
                    .revoke_session(&id, t(20), &RevokeReason::logout())
                    .await;
            })
        },
        "revoked_at IS NOT NULL",
        |row| row.session.revoked_at.is_some(),
    )
    .await;
}

/// The same for a hot write that goes through group commit (`touch_session`): given up while
/// queued for a batch, it still lands, and the cache does not keep the row it replaced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batched_write_whose_caller_gave_up_is_not_hidden_by_the_cache() {
    given_up(
        |store, id| {
            Box::pin(async move {
                let _ = store.touch_session(&id, t(30), t(3_000), t(30)).await;
            })
        },
        "last_seen_at > created_at",
        |row| row.session.last_seen_at == t(30),
    )
    .await;
}

type Write = fn(
    Arc<SqliteStore>,
    SessionId,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// Holds the write lock on another connection, starts `write` on the server's store and gives
/// up on it after 200 ms, reads the row (the old one, now cached), releases the lock, waits for
/// `landed` (an SQL condition on the row) in the file, then for the store to answer a row that
/// `changed` accepts.
async fn given_up(
    write: Write,
    landed: &str,
    changed: fn(&sessiond::session::SessionRecord) -> bool,
) {
    let f = fixture().await;
    let record = crate::conformance::record("gaveup", "default", 0, 3_600, 7_200);
    let id = record.session.id.clone();
    f.server.create_session(&record, None, t(10)).await.unwrap();
    held(&f.server, &id).await;
    // Another connection holds the write lock, so the write waits inside SQLite.
    let mut locker = f.raw.acquire().await.unwrap();
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut *locker)
        .await
        .unwrap();
    let gave_up = tokio::time::timeout(
        std::time::Duration::from_millis(200),
        write(f.server.clone(), id.clone()),
    )
    .await;
    assert!(
        gave_up.is_err(),
        "the write should have been waiting for the lock"
    );
    // Read while the write is still queued: the old row, held by the cache.
    assert!(!changed(&held(&f.server, &id).await));
    sqlx::query("COMMIT").execute(&mut *locker).await.unwrap();
    drop(locker);
    // The abandoned write lands; wait for it in the file.
    let committed = || async {
        sqlx::query_scalar::<_, bool>(&format!("SELECT {landed} FROM sessions WHERE id = ?"))
            .bind(id.as_str())
            .fetch_one(&f.raw)
            .await
            .unwrap()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !committed().await {
        assert!(
            std::time::Instant::now() < deadline,
            "the write never landed"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    // Once the writer has drained, the store answers the changed row.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        if changed(&read(&f.server, &id).await) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the cache kept the old row of a session changed by an abandoned write"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

/// A closed store answers no read, a held row included: the cache never outlives the store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_store_answers_no_held_row() {
    let f = fixture().await;
    let record = crate::conformance::record("closed", "default", 0, 3_600, 7_200);
    f.server.create_session(&record, None, t(10)).await.unwrap();
    held(&f.server, &record.session.id).await;
    f.server.close().await;
    let read = f.server.session(&record.session.id).await;
    assert!(
        matches!(read, Err(sessiond::store::StoreError::Unavailable(_))),
        "{read:?}"
    );
}
