//! Shared test fixtures: fresh backends and a service on a manual clock.

use std::sync::Arc;
use std::time::Duration;

#[cfg(feature = "redis")]
use sessiond::store::redis::{RedisClaimStore, RedisOptions};
use sessiond::store::sqlite::{SqliteOptions, SqliteStore};
use sessiond::store::Backend;
use sessiond::{
    ManualClock, MasterKey, NewSession, SeededRandom, ServiceConfig, SessionService, Timestamp,
    UserId,
};

/// 2026-11-22T00:00:00Z: tests start here and move the clock by hand.
pub const T0: Timestamp = Timestamp::from_unix_millis(1_795_305_600_000);

/// A backend plus whatever keeps it alive or cleans up after it (a temporary directory, a
/// PostgreSQL schema that is dropped with it).
pub struct TestBackend {
    pub store: Arc<dyn Backend>,
    pub _guard: Option<Box<dyn std::any::Any + Send>>,
}

/// A fresh SQLite database in its own temporary directory.
pub async fn sqlite_backend() -> TestBackend {
    sqlite_backend_with(SqliteOptions::default()).await
}

/// [`sqlite_backend`] with every read through the async pool (the synchronous read path off).
pub async fn sqlite_pooled_backend() -> TestBackend {
    let mut options = SqliteOptions::default();
    options.sync_reads = false;
    sqlite_backend_with(options).await
}

/// [`sqlite_backend`] without the session-row cache.
pub async fn sqlite_uncached_backend() -> TestBackend {
    let mut options = SqliteOptions::default();
    options.row_cache = sessiond::cache::CacheLimits::off();
    sqlite_backend_with(options).await
}

async fn sqlite_backend_with(options: SqliteOptions) -> TestBackend {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sessiond.db");
    let store = SqliteStore::open(path.to_str().unwrap(), options)
        .await
        .unwrap();
    TestBackend {
        store: Arc::new(store),
        _guard: Some(Box::new(dir)),
    }
}

#[cfg(feature = "postgres")]
pub use self::pg::{
    fresh_schema, postgres_backend, postgres_uncached_backend, postgres_url, short_lease,
    SchemaGuard,
};

/// PostgreSQL fixtures: every test gets its own schema in the shared test database, so parallel
/// test processes never see each other's rows; the schema is dropped when the test ends.
#[cfg(feature = "postgres")]
mod pg {
    use std::str::FromStr;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    use rand_core::{OsRng, RngCore};
    use sessiond::store::postgres::{LeaseOptions, PgOptions, PgSchema, PgStore};
    use sqlx::postgres::PgConnectOptions;
    use sqlx::{Connection, PgConnection};

    use super::TestBackend;

    /// Schemas this fixture makes start with this; any older than [`STALE_AFTER`] were left by
    /// a test process that was killed before its guard ran, and are swept.
    const PREFIX: &str = "sessiond_t_";
    const STALE_AFTER: Duration = Duration::from_secs(3600);

    /// `DATABASE_URL` when it names a PostgreSQL database, else the local test database; the
    /// first call in a process also prepares it (see [`prepare_database`]).
    pub async fn postgres_url() -> String {
        static PREPARED: AtomicU32 = AtomicU32::new(0);
        let url = std::env::var("DATABASE_URL")
            .ok()
            .filter(|u| u.starts_with("postgres://") || u.starts_with("postgresql://"))
            .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/test".to_owned());
        if PREPARED.fetch_add(1, Ordering::Relaxed) == 0 {
            prepare_database(&url).await;
        }
        url
    }

    /// A schema name no other test (in this or any other process) uses:
    /// `sessiond_t_<unix seconds>_<pid>_<counter>_<random>`.
    pub fn fresh_schema() -> PgSchema {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let name = format!(
            "{PREFIX}{secs}_{}_{}_{:08x}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed),
            OsRng.next_u32()
        );
        PgSchema::new(name).unwrap()
    }

    /// Drops its schema (and everything in it) when dropped.
    pub struct SchemaGuard {
        url: String,
        schema: PgSchema,
    }

    impl SchemaGuard {
        pub fn new(url: &str, schema: &PgSchema) -> Self {
            SchemaGuard {
                url: url.to_owned(),
                schema: schema.clone(),
            }
        }
    }

    impl Drop for SchemaGuard {
        fn drop(&mut self) {
            // Drop runs inside the test's runtime, which cannot be blocked on: do the cleanup on
            // a thread of its own, with its own runtime, and wait for it. A failure only leaves
            // the schema for the next sweep.
            let url = self.url.clone();
            let schema = self.schema.to_string();
            let cleanup = std::thread::spawn(move || {
                let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                else {
                    return;
                };
                runtime.block_on(async move {
                    if let Ok(mut conn) = PgConnection::connect(&url).await {
                        let _ = drop_schema(&mut conn, &schema).await;
                        let _ = conn.close().await;
                    }
                });
            });
            let _ = cleanup.join();
        }
    }

    async fn drop_schema(conn: &mut PgConnection, schema: &str) -> Result<(), sqlx::Error> {
        // Bounded: a straggling connection of the test's pool must not hang the test.
        sqlx::raw_sql("SET lock_timeout = '5s'")
            .execute(&mut *conn)
            .await?;
        sqlx::raw_sql(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
            .execute(&mut *conn)
            .await?;
        Ok(())
    }

    /// Creates the test database if the server does not have it yet (a fresh machine), then
    /// drops schemas of earlier runs that were killed before their guard ran.
    async fn prepare_database(url: &str) {
        let Ok(options) = PgConnectOptions::from_str(url) else {
            return;
        };
        let mut conn = match PgConnection::connect_with(&options).await {
            Ok(conn) => conn,
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("3D000") => {
                let Some(db) = options.get_database().map(str::to_owned) else {
                    return;
                };
                if let Ok(mut admin) =
                    PgConnection::connect_with(&options.clone().database("postgres")).await
                {
                    // A concurrent test process may win the race; its database is as good.
                    let quoted = db.replace('"', "\"\"");
                    let _ = sqlx::raw_sql(&format!("CREATE DATABASE \"{quoted}\""))
                        .execute(&mut admin)
                        .await;
                    let _ = admin.close().await;
                }
                // Whoever created it, wait until it accepts connections.
                for _ in 0..50 {
                    if let Ok(conn) = PgConnection::connect_with(&options).await {
                        let _ = conn.close().await;
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                return;
            }
            Err(_) => return,
        };
        let names: Vec<String> = sqlx::query_scalar(
            "SELECT nspname::text FROM pg_namespace WHERE starts_with(nspname, $1)",
        )
        .bind(PREFIX)
        .fetch_all(&mut conn)
        .await
        .unwrap_or_default();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        for name in names {
            let created = name
                .strip_prefix(PREFIX)
                .and_then(|rest| rest.split('_').next())
                .and_then(|secs| secs.parse::<u64>().ok());
            if created.is_some_and(|c| c + STALE_AFTER.as_secs() < now) {
                let _ = drop_schema(&mut conn, &name).await;
            }
        }
        let _ = conn.close().await;
    }

    /// A lease short enough that a fresh store's first write (which waits out the lease of any
    /// node it could not have heard yet, docs/DESIGN.md §15.5) costs a test little.
    pub fn short_lease() -> LeaseOptions {
        let mut lease = LeaseOptions::default();
        lease.lease = Duration::from_millis(300);
        lease.drift = Duration::from_millis(50);
        lease
    }

    /// A fresh, migrated PostgreSQL store in a schema of its own (dropped with the backend).
    pub async fn postgres_backend() -> TestBackend {
        postgres_backend_with(PgOptions::default()).await
    }

    /// [`postgres_backend`] without the session-row cache.
    pub async fn postgres_uncached_backend() -> TestBackend {
        let mut options = PgOptions::default();
        options.row_cache = sessiond::cache::CacheLimits::off();
        postgres_backend_with(options).await
    }

    async fn postgres_backend_with(mut options: PgOptions) -> TestBackend {
        let url = postgres_url().await;
        let schema = fresh_schema();
        let guard = SchemaGuard::new(&url, &schema);
        options.schema = Some(schema);
        options.statement_timeout = Some(Duration::from_secs(30));
        // Half the default pool: the suite runs several of these at once against one server
        // (the local one allows 100 connections), and no test needs more than 8 to race.
        options.max_connections = 8;
        options.lease = short_lease();
        let store = PgStore::open(&url, options).await.unwrap();
        TestBackend {
            store: Arc::new(store),
            _guard: Some(Box::new(guard)),
        }
    }
}

/// Where the Redis tests find their server: `REDIS_URL`, or the local default.
#[cfg(feature = "redis")]
pub fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// A key prefix no other test (in this process or another) uses.
#[cfg(feature = "redis")]
pub fn unique_redis_prefix() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "sessiond-test:{}:{nanos}:{}:",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// A claim store of its own in the Redis at [`redis_url`] (a fresh key prefix per call).
#[cfg(feature = "redis")]
pub async fn redis_claim_store() -> Arc<RedisClaimStore> {
    let mut options = RedisOptions::default();
    options.key_prefix = unique_redis_prefix();
    let url = redis_url();
    let store = RedisClaimStore::connect(&url, options)
        .await
        .unwrap_or_else(|e| {
            panic!("no Redis at REDIS_URL (default redis://127.0.0.1:6379): {e:?}")
        });
    Arc::new(store)
}

/// A claims-only store for `claims_conformance_suite!`.
#[cfg(feature = "redis")]
pub struct TestClaims {
    pub store: Arc<dyn sessiond::store::ClaimStore>,
}

/// A fresh Redis claim store, for `claims_conformance_suite!`.
#[cfg(feature = "redis")]
pub async fn redis_claims() -> TestClaims {
    TestClaims {
        store: redis_claim_store().await,
    }
}

/// A service over a fresh SQLite database, on a manual clock at [`T0`].
pub struct TestEnv {
    pub service: SessionService,
    pub clock: ManualClock,
    pub master: MasterKey,
    pub backend: TestBackend,
}

pub async fn env_with(config: ServiceConfig) -> TestEnv {
    let backend = sqlite_backend().await;
    let clock = ManualClock::new(T0);
    let master = MasterKey::from_bytes([7u8; 32]);
    let service = SessionService::builder(backend.store.clone(), master.clone())
        .clock(Arc::new(clock.clone()))
        .random(Arc::new(SeededRandom::new(42)))
        .config(config)
        .start()
        .await
        .unwrap();
    TestEnv {
        service,
        clock,
        master,
        backend,
    }
}

pub async fn env() -> TestEnv {
    env_with(ServiceConfig::default()).await
}

pub fn user(name: &str) -> NewSession {
    NewSession::new(UserId::new(name).unwrap())
}

pub fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// `host:port` of a `scheme://[user@]host:port/rest` URL: where a proxy forwards to.
pub fn host_port(url: &str) -> String {
    let (_, rest) = url.split_once("://").unwrap();
    let authority = rest.split('/').next().unwrap();
    authority
        .rsplit_once('@')
        .map_or(authority, |(_, hp)| hp)
        .to_owned()
}

/// A TCP forwarder to `target` that the test can freeze: while frozen, the bytes of every
/// forwarded connection are read and dropped, so the connections stay open and go silent, as
/// behind a dead NAT entry (no FIN, no reset). Aborted when dropped.
pub struct FreezingProxy {
    /// The forwarder's loopback address.
    pub addr: std::net::SocketAddr,
    frozen: Arc<std::sync::atomic::AtomicBool>,
    accept: tokio::task::JoinHandle<()>,
}

impl FreezingProxy {
    pub async fn start(target: &str) -> FreezingProxy {
        let frozen = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (flag, target) = (frozen.clone(), target.to_owned());
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = tokio::net::TcpStream::connect(&target).await else {
                    continue;
                };
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                tokio::spawn(Self::pipe(cr, sw, flag.clone()));
                tokio::spawn(Self::pipe(sr, cw, flag.clone()));
            }
        });
        FreezingProxy {
            addr,
            frozen,
            accept,
        }
    }

    pub fn freeze(&self, frozen: bool) {
        self.frozen
            .store(frozen, std::sync::atomic::Ordering::SeqCst);
    }

    async fn pipe(
        mut from: tokio::net::tcp::OwnedReadHalf,
        mut to: tokio::net::tcp::OwnedWriteHalf,
        frozen: Arc<std::sync::atomic::AtomicBool>,
    ) {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let mut buf = vec![0u8; 16 * 1024];
        while let Ok(n) = from.read(&mut buf).await {
            if n == 0 {
                break;
            }
            if !frozen.load(std::sync::atomic::Ordering::SeqCst)
                && to.write_all(&buf[..n]).await.is_err()
            {
                break;
            }
        }
    }
}

impl Drop for FreezingProxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}
