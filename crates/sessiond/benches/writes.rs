//! Write throughput with concurrent callers: how many refresh rotations or session creates per
//! second a service completes when `callers` tasks each run one operation after another, on a
//! multi-threaded runtime (2 workers). Every answer is durable as the store makes it (SQLite:
//! WAL, `synchronous = NORMAL`; PostgreSQL: a commit per operation as configured).
//!
//! ```text
//! cargo bench -p sessiond --bench writes -- <sqlite|postgres> <refresh|create> [callers=32] [seconds=5] [rows=on|off]
//! ```
//!
//! `rows=off` turns the row cache off: on SQLite with it the temporary triggers that tell this
//! store's writes from others' (docs/DESIGN.md §15.4); on PostgreSQL the store still announces
//! its writes to other nodes (§15.5).
//!
//! `refresh`: each caller holds its own token session and rotates it again and again (real
//! clock; `refresh_grace` 1 ms so each chain keeps one step, the steady state of a client that
//! refreshes on its own). `create`: each caller creates token sessions for its own user.
//! PostgreSQL: `DATABASE_URL` (default `postgres://postgres@127.0.0.1:5432/test`), in a fresh
//! schema dropped at the end.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    missing_docs
)]

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sessiond::store::postgres::{PgOptions, PgSchema, PgStore};
use sessiond::store::sqlite::{SqliteOptions, SqliteStore};
use sessiond::store::Backend;
use sessiond::{
    MasterKey, NewSession, RequestContext, ServiceConfig, SessionKind, SessionService, UserId,
};

mod support;
use support::{args, drop_schema, postgres_url, schema_name};

fn main() {
    let args = args();
    let backend = args.first().map_or("sqlite", String::as_str).to_owned();
    let op = args.get(1).map_or("refresh", String::as_str).to_owned();
    let callers: usize = args.get(2).map_or(32, |v| v.parse().unwrap());
    let seconds: u64 = args.get(3).map_or(5, |v| v.parse().unwrap());
    let rows = args.get(4).map_or("on", String::as_str) != "off";
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run(
        &backend,
        &op,
        callers,
        Duration::from_secs(seconds),
        rows,
    ));
}

async fn run(backend: &str, op: &str, callers: usize, length: Duration, rows: bool) {
    let dir = tempfile::tempdir().unwrap();
    let mut schema = None;
    let store: Arc<dyn Backend> = match backend {
        "sqlite" => {
            let path = dir.path().join("writes.db");
            let mut options = SqliteOptions::default();
            if !rows {
                options.row_cache = sessiond::cache::CacheLimits::off();
            }
            Arc::new(
                SqliteStore::open(path.to_str().unwrap(), options)
                    .await
                    .unwrap(),
            )
        }
        "postgres" => {
            let name = schema_name("writes");
            let mut options = PgOptions::default();
            options.schema = Some(PgSchema::new(name.clone()).unwrap());
            if !rows {
                options.row_cache = sessiond::cache::CacheLimits::off();
            }
            schema = Some(name);
            let lease = options.lease;
            let store = PgStore::open(&postgres_url(), options)
                .await
                .expect("no PostgreSQL at DATABASE_URL");
            // A store that has just begun listening makes its writes wait out the lease of any
            // node it could not have heard yet (docs/DESIGN.md §15.5); measure the steady state.
            tokio::time::sleep(lease.lease + lease.drift).await;
            Arc::new(store)
        }
        other => panic!("unknown backend {other}: sqlite or postgres"),
    };
    let mut config = ServiceConfig::default();
    config.tokens.refresh_grace = Duration::from_millis(1);
    let service = SessionService::builder(store, MasterKey::from_bytes([4; 32]))
        .config(config)
        .start()
        .await
        .unwrap();

    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for caller in 0..callers {
        let service = service.clone();
        let done = done.clone();
        let stop = stop.clone();
        let op = op.to_owned();
        tasks.push(tokio::spawn(async move {
            let user = UserId::new(format!("caller{caller}")).unwrap();
            let ctx = RequestContext::default();
            let mut refresh = service
                .create_token_session(NewSession::new(user.clone()), SessionKind::Tokens)
                .await
                .unwrap()
                .tokens
                .refresh_token
                .expose()
                .clone();
            while !stop.load(Ordering::Relaxed) {
                match op.as_str() {
                    "refresh" => {
                        let next = service.refresh(&refresh, &ctx).await.unwrap();
                        refresh = next.tokens.refresh_token.expose().clone();
                    }
                    "create" => {
                        service
                            .create_token_session(
                                NewSession::new(user.clone()),
                                SessionKind::Tokens,
                            )
                            .await
                            .unwrap();
                    }
                    other => panic!("unknown operation {other}: refresh or create"),
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    // A second of warm-up, then the measured window.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let start_count = done.load(Ordering::Relaxed);
    let started = Instant::now();
    tokio::time::sleep(length).await;
    let count = done.load(Ordering::Relaxed) - start_count;
    let elapsed = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await.unwrap();
    }
    println!(
        "{backend} {op}: {callers} callers, {count} in {elapsed:.2} s = {:.0}/s",
        count as f64 / elapsed
    );
    if let Some(schema) = schema {
        drop_schema(&schema).await;
    }
}
