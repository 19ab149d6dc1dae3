//! Validation's size-dependent part at 10 k and at 1 M sessions: the session-row read by id
//! (`SessionStore::session`, what every validation does after its constant-cost checks), keys
//! drawn uniformly over all sessions, p50 and p99 of single reads one after another.
//!
//! ```text
//! cargo bench -p sessiond --bench scale -- <sqlite|postgres> [reads=100000] [row_cache=100000]
//! ```
//!
//! SQLite's row cache (docs/DESIGN.md §15.4) holds `row_cache` rows (0: off; 512 bytes each
//! allowed), smaller than the working set at 1 M so misses are measured too; its hit rate in
//! the measured pass is printed.
//!
//! The rows are copies of one real session row (made by the store) under ids `ses-<21
//! digits>A` (valid session ids), inserted in bulk by SQL. PostgreSQL: `DATABASE_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`), in a fresh schema dropped at the end.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    clippy::cast_precision_loss,
    missing_docs
)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use sessiond::store::postgres::{PgOptions, PgSchema, PgStore};
use sessiond::store::sqlite::{SqliteOptions, SqliteStore};
use sessiond::store::Backend;
use sessiond::{
    MasterKey, NewSession, SeededRandom, SessionId, SessionKind, SessionService, UserId,
};
use sqlx::{Connection, PgConnection, SqliteConnection};

mod support;
use support::{args, drop_schema, postgres_url, schema_name};

const COLUMNS: &str = "user_id, tenant, kind, created_at, last_seen_at, idle_expires_at, \
    absolute_expires_at, revoked_at, revoke_reason, key_id, csrf_hash, refresh_hash, \
    refresh_generation, refresh_used, refresh_chain, ip, user_agent, claims";

fn id(n: u64) -> SessionId {
    SessionId::parse(&format!("ses-{n:021}A")).unwrap()
}

/// Raw SQL on the bench's database (bulk inserts), whichever it is.
enum Raw {
    Sqlite(SqliteConnection),
    Postgres(PgConnection, String),
}

impl Raw {
    /// Copies the template row `template` as rows `from..to`.
    async fn fill(&mut self, template: &str, from: u64, to: u64) {
        let sql = match self {
            Raw::Sqlite(_) => format!(
                "WITH RECURSIVE n(i) AS (SELECT {from} UNION ALL SELECT i + 1 FROM n WHERE i + 1 < {to}) \
                 INSERT INTO sessions (id, {COLUMNS}) \
                 SELECT 'ses-' || printf('%021d', i) || 'A', {COLUMNS} FROM sessions, n WHERE id = '{template}'"
            ),
            Raw::Postgres(_, schema) => format!(
                "INSERT INTO \"{schema}\".sessions (id, {COLUMNS}) \
                 SELECT 'ses-' || lpad(i::text, 21, '0') || 'A', {COLUMNS} \
                 FROM \"{schema}\".sessions, generate_series({from}, {to} - 1) AS i WHERE id = '{template}'"
            ),
        };
        match self {
            Raw::Sqlite(c) => {
                sqlx::raw_sql(&sql).execute(&mut *c).await.unwrap();
            }
            Raw::Postgres(c, schema) => {
                sqlx::raw_sql(&sql).execute(&mut *c).await.unwrap();
                sqlx::raw_sql(&format!("ANALYZE \"{schema}\".sessions"))
                    .execute(&mut *c)
                    .await
                    .unwrap();
            }
        }
    }
}

/// p50 and p99 of `reads` reads of uniformly drawn ids among `0..size`.
async fn measure(store: &Arc<dyn Backend>, size: u64, reads: usize) -> (Duration, Duration) {
    let rng = SeededRandom::new(size);
    let mut latencies = Vec::with_capacity(reads);
    for _ in 0..reads {
        let draw = u64::from_be_bytes(sessiond::random::bytes::<8>(&rng)) % size;
        let id = id(draw);
        let started = Instant::now();
        let row = store.session(&id).await.unwrap();
        latencies.push(started.elapsed());
        assert!(row.is_some(), "no row {draw}");
    }
    latencies.sort_unstable();
    (latencies[reads / 2], latencies[reads * 99 / 100])
}

fn main() {
    let args = args();
    let backend = args.first().map_or("sqlite", String::as_str).to_owned();
    let reads: usize = args.get(1).map_or(100_000, |v| v.parse().unwrap());
    let row_cache: usize = args.get(2).map_or(100_000, |v| v.parse().unwrap());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run(&backend, reads, row_cache));
}

/// The row cache's hits and misses so far (zeros without one).
fn hits_misses(store: &dyn Backend) -> (u64, u64) {
    store
        .cache_stats()
        .iter()
        .find(|(name, _)| *name == "session_rows")
        .map_or((0, 0), |(_, s)| (s.hits, s.misses))
}

async fn run(backend: &str, reads: usize, row_cache: usize) {
    let dir = tempfile::tempdir().unwrap();
    let (store, mut raw): (Arc<dyn Backend>, Raw) = match backend {
        "sqlite" => {
            let path = dir.path().join("scale.db");
            let path = path.to_str().unwrap();
            let mut options = SqliteOptions::default();
            options.row_cache = sessiond::cache::CacheLimits::new(row_cache, row_cache * 512);
            let store = SqliteStore::open(path, options).await.unwrap();
            let raw = SqliteConnection::connect(&format!("sqlite://{path}"))
                .await
                .unwrap();
            (Arc::new(store), Raw::Sqlite(raw))
        }
        "postgres" => {
            let schema = schema_name("scale");
            let mut options = PgOptions::default();
            options.schema = Some(PgSchema::new(schema.clone()).unwrap());
            let store = PgStore::open(&postgres_url(), options)
                .await
                .expect("no PostgreSQL at DATABASE_URL");
            let raw = PgConnection::connect(&postgres_url()).await.unwrap();
            (Arc::new(store), Raw::Postgres(raw, schema))
        }
        other => panic!("unknown backend {other}: sqlite or postgres"),
    };
    // One real row, made by the service, as the template.
    let service = SessionService::builder(store.clone(), MasterKey::from_bytes([5; 32]))
        .start()
        .await
        .unwrap();
    let template = service
        .create_token_session(
            NewSession::new(UserId::new("scale").unwrap()),
            SessionKind::Tokens,
        )
        .await
        .unwrap()
        .session
        .id;

    let mut filled = 0;
    for size in [10_000u64, 1_000_000] {
        let started = Instant::now();
        raw.fill(template.as_str(), filled, size).await;
        filled = size;
        let fill = started.elapsed();
        // A warm-up pass as long as the measured one, then the measured pass.
        measure(&store, size, reads).await;
        let before = hits_misses(store.as_ref());
        let (p50, p99) = measure(&store, size, reads).await;
        let after = hits_misses(store.as_ref());
        let (hits, misses) = (after.0 - before.0, after.1 - before.1);
        println!(
            "{backend} {size} sessions (filled in {:.1} s): p50 {:.1} us, p99 {:.1} us ({reads} reads; row cache {row_cache}: {hits} hits, {misses} misses)",
            fill.as_secs_f64(),
            p50.as_secs_f64() * 1e6,
            p99.as_secs_f64() * 1e6
        );
    }
    if let Raw::Postgres(c, schema) = raw {
        let _ = c.close().await;
        drop_schema(&schema).await;
    }
}
