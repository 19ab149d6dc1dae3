//! Scale-out backends against SQLite, all measured in the same run.
//!
//! Every group has a `sqlite` member (the embedded default, the baseline) and the scale-out
//! members:
//! - `cookie/validate_{sqlite,postgres}`: `SessionService::validate_cookie`, clock pinned so no
//!   touch write happens (parse, key lookup, MAC check, one row read).
//! - `access/validate_eddsa_{sqlite,postgres}`: `validate_access_token` (Ed25519 signature,
//!   claims, one row read).
//! - `refresh/rotate_{sqlite,postgres}`: one refresh rotation (verify, compare-and-swap, new
//!   pair, audit insert), chained.
//! - `claims/{sqlite,postgres,redis}`: `SessionService::claim` of a fresh id (one
//!   insert-if-absent; for Redis, the claim script), throughput in claims per second.
//!
//! PostgreSQL: `DATABASE_URL`, default `postgres://postgres@127.0.0.1:5432/test`, in a fresh
//! schema dropped at the end. Redis: `REDIS_URL`, default `redis://127.0.0.1:6379`, under a
//! fresh key prefix. Each store holds 2,002 sessions so a row read is an index probe.
//!
//! Run: `cargo bench -p sessiond --bench scale_out -- --warm-up-time 2 --measurement-time 6`
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs
)]

use std::cell::{Cell, RefCell};
use std::sync::Arc;
use std::time::Duration;

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use sessiond::store::postgres::{PgOptions, PgSchema, PgStore};
use sessiond::store::redis::{RedisClaimStore, RedisOptions};
use sessiond::store::sqlite::{SqliteOptions, SqliteStore};
use sessiond::store::{Backend, ClaimOutcome, ClaimStore};
use sessiond::{
    ManualClock, MasterKey, NewSession, RequestContext, SessionKind, SessionService, Timestamp,
    UserId,
};
use tokio::runtime::Runtime;

const T0: Timestamp = Timestamp::from_unix_millis(1_795_305_600_000);

mod support;
use support::{drop_schema, postgres_url, schema_name};

fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// The backends of one run, and what keeps them alive or cleans up after them.
struct Stores {
    sqlite: Arc<dyn Backend>,
    postgres: Arc<dyn Backend>,
    postgres_uncached: Arc<dyn Backend>,
    redis: Arc<dyn ClaimStore>,
    schema: String,
    _dir: tempfile::TempDir,
}

async fn stores() -> Stores {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bench.db");
    let sqlite = SqliteStore::open(path.to_str().unwrap(), SqliteOptions::default())
        .await
        .unwrap();
    let schema = schema_name("bench");
    let mut options = PgOptions::default();
    options.schema = Some(PgSchema::new(schema.clone()).unwrap());
    let postgres = PgStore::open(&postgres_url(), options.clone())
        .await
        .expect("no PostgreSQL at DATABASE_URL");
    // A second node on the same tables without a row cache: every validation reads the row.
    options.row_cache = sessiond::cache::CacheLimits::off();
    let postgres_uncached = PgStore::open(&postgres_url(), options)
        .await
        .expect("no PostgreSQL at DATABASE_URL");
    let mut redis_options = RedisOptions::default();
    redis_options.key_prefix = format!("sessiond-bench:{schema}:");
    let redis = RedisClaimStore::connect(&redis_url(), redis_options)
        .await
        .expect("no Redis at REDIS_URL");
    Stores {
        sqlite: Arc::new(sqlite),
        postgres: Arc::new(postgres),
        postgres_uncached: Arc::new(postgres_uncached),
        redis: Arc::new(redis),
        schema,
        _dir: dir,
    }
}

/// A service over `backend` on a pinned clock (optionally with its claims elsewhere), with
/// 1,000 neighbour sessions of each kind.
async fn service(backend: Arc<dyn Backend>, claims: Option<Arc<dyn ClaimStore>>) -> SessionService {
    let mut builder = SessionService::builder(backend, MasterKey::from_bytes([3; 32]))
        .clock(Arc::new(ManualClock::new(T0)));
    if let Some(claims) = claims {
        builder = builder.claim_store(claims);
    }
    let service = builder.start().await.unwrap();
    for i in 0..1000 {
        let user = UserId::new(format!("user{i}")).unwrap();
        service
            .create_cookie_session(NewSession::new(user.clone()))
            .await
            .unwrap();
        service
            .create_token_session(NewSession::new(user), SessionKind::Tokens)
            .await
            .unwrap();
    }
    service
}

/// The credentials the benchmarks present, minted on `service`.
struct Creds {
    cookie: String,
    access: String,
    refresh: String,
}

async fn creds(service: &SessionService) -> Creds {
    let cookie = service
        .create_cookie_session(NewSession::new(UserId::new("bench").unwrap()))
        .await
        .unwrap();
    let tokens = service
        .create_token_session(
            NewSession::new(UserId::new("bench").unwrap()),
            SessionKind::Tokens,
        )
        .await
        .unwrap();
    Creds {
        cookie: cookie.cookie.expose().clone(),
        access: tokens.tokens.access_token.expose().clone(),
        refresh: tokens.tokens.refresh_token.expose().clone(),
    }
}

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn scale_out(c: &mut Criterion) {
    let rt = runtime();
    let stores = rt.block_on(stores());
    let ctx = RequestContext::default();
    let (sqlite, postgres, postgres_uncached, redis_claims) = rt.block_on(async {
        (
            service(stores.sqlite.clone(), None).await,
            service(stores.postgres.clone(), None).await,
            service(stores.postgres_uncached.clone(), None).await,
            // Sessions in SQLite, claims in Redis: only `claim` is measured on it.
            SessionService::builder(stores.sqlite.clone(), MasterKey::from_bytes([3; 32]))
                .clock(Arc::new(ManualClock::new(T0)))
                .claim_store(stores.redis.clone())
                .start()
                .await
                .unwrap(),
        )
    });
    let nodes = [
        ("sqlite", &sqlite),
        ("postgres", &postgres),
        ("postgres_uncached", &postgres_uncached),
    ];
    let creds: Vec<Creds> = nodes.iter().map(|(_, s)| rt.block_on(creds(s))).collect();
    // Sanity: every benchmarked call succeeds.
    for ((_, s), c) in nodes.iter().zip(&creds) {
        rt.block_on(s.validate_cookie(&c.cookie, &ctx)).unwrap();
        rt.block_on(s.validate_access_token(&c.access, &ctx))
            .unwrap();
    }

    let mut group = c.benchmark_group("cookie");
    for ((name, s), c) in nodes.iter().zip(&creds) {
        group.bench_function(format!("validate_{name}"), |b| {
            b.iter(|| {
                rt.block_on(s.validate_cookie(black_box(&c.cookie), &ctx))
                    .unwrap()
            })
        });
    }
    group.finish();

    let mut group = c.benchmark_group("access");
    for ((name, s), c) in nodes.iter().zip(&creds) {
        group.bench_function(format!("validate_eddsa_{name}"), |b| {
            b.iter(|| {
                rt.block_on(s.validate_access_token(black_box(&c.access), &ctx))
                    .unwrap()
            })
        });
    }
    group.finish();

    let mut group = c.benchmark_group("refresh");
    for ((name, s), c) in nodes.iter().zip(&creds) {
        let current = RefCell::new(c.refresh.clone());
        group.bench_function(format!("rotate_{name}"), |b| {
            b.iter(|| {
                let token = current.borrow().clone();
                let next = rt.block_on(s.refresh(&token, &ctx)).unwrap();
                *current.borrow_mut() = next.tokens.refresh_token.expose().clone();
            })
        });
    }
    group.finish();

    let mut group = c.benchmark_group("claims");
    group.throughput(Throughput::Elements(1));
    let until = T0.saturating_add(Duration::from_secs(600));
    let next = Cell::new(0u64);
    for (name, s) in [
        ("sqlite", &sqlite),
        ("postgres", &postgres),
        ("redis", &redis_claims),
    ] {
        group.bench_function(name, |b| {
            b.iter(|| {
                let n = next.get();
                next.set(n + 1);
                let outcome = rt.block_on(s.claim(&format!("bench-{n}"), until)).unwrap();
                assert_eq!(outcome, ClaimOutcome::Claimed);
            })
        });
    }
    group.finish();

    drop((sqlite, postgres, redis_claims));
    let schema = stores.schema.clone();
    drop(stores);
    rt.block_on(drop_schema(&schema));
}

criterion_group!(benches, scale_out);
criterion_main!(benches);
