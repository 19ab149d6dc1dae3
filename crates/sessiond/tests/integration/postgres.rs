//! The conformance suite on PostgreSQL (each test in a schema of its own), plus what only a
//! networked backend has: schema isolation, and outages that must read as "unavailable" and
//! heal without a restart.

crate::conformance_suite!(crate::common::postgres_backend);
crate::rotation_suite!(crate::common::postgres_backend);
crate::keys_suite!(crate::common::postgres_backend);

/// The same suite with the row cache off (the store still announces its writes, §15.5).
mod uncached_rows {
    crate::conformance_suite!(crate::common::postgres_uncached_backend);
}

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sessiond::store::postgres::{PgOptions, PgStore};
use sessiond::store::{Backend, SessionStore, StoreError};
use sessiond::{
    ManualClock, MasterKey, RequestContext, SeededRandom, SessionId, SessionService, UserId,
};
use sqlx::{Connection, PgConnection};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::common::{fresh_schema, postgres_url, user, SchemaGuard, T0};

fn options_in(schema: &sessiond::store::postgres::PgSchema) -> PgOptions {
    let mut options = PgOptions::default();
    options.schema = Some(schema.clone());
    options
}

/// `url` with its host and port replaced by `127.0.0.1:port`, and `application_name` set.
fn via_port(url: &str, port: u16, application_name: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap();
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let userinfo = authority
        .rsplit_once('@')
        .map_or(String::new(), |(u, _)| format!("{u}@"));
    let sep = if path.contains('?') { '&' } else { '?' };
    format!("{scheme}://{userinfo}127.0.0.1:{port}/{path}{sep}application_name={application_name}")
}

fn upstream_addr(url: &str) -> String {
    let rest = url.split_once("://").unwrap().1;
    let authority = rest.split_once('/').map_or(rest, |(a, _)| a);
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if host_port.contains(':') {
        host_port.to_owned()
    } else {
        format!("{host_port}:5432")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemas_isolate_and_migrations_rerun_cleanly() {
    let url = postgres_url().await;
    let (a, b) = (fresh_schema(), fresh_schema());
    let _guards = (SchemaGuard::new(&url, &a), SchemaGuard::new(&url, &b));
    let first = PgStore::open(&url, options_in(&a)).await.unwrap();
    let other = PgStore::open(&url, options_in(&b)).await.unwrap();
    let rec = crate::conformance::record("uma", "default", 0, 100, 200);
    first.create_session(&rec, None, T0).await.unwrap();

    // A second node on the same schema: migrating again is a no-op, and it sees the row.
    let second = PgStore::open(&url, options_in(&a)).await.unwrap();
    assert!(second.session(&rec.session.id).await.unwrap().is_some());
    assert!(other.session(&rec.session.id).await.unwrap().is_none());
    for store in [first, second, other] {
        store.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_opens_of_a_new_schema_all_succeed() {
    let url = postgres_url().await;
    let schema = fresh_schema();
    let _guard = SchemaGuard::new(&url, &schema);
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let (url, options) = (url.clone(), options_in(&schema));
        tasks.push(tokio::spawn(
            async move { PgStore::open(&url, options).await },
        ));
    }
    for task in tasks {
        task.await.unwrap().unwrap().close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_port_is_unavailable_not_an_error_of_the_data() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let url = via_port(&postgres_url().await, port, "closed_port");
    let mut options = PgOptions::default();
    options.acquire_timeout = Duration::from_millis(200);
    options.connect_timeout = Duration::from_millis(600);
    let started = Instant::now();
    let err = PgStore::open(&url, options).await.unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "bounded by connect_timeout"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_url_or_refused_login_is_a_backend_error() {
    let mut options = PgOptions::default();
    options.connect_timeout = Duration::from_secs(2);
    let err = PgStore::connect("postgres://[::1", options.clone())
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Backend(_)), "{err:?}");
    // A database that does not exist: the server answered, so it is not an outage.
    let url = postgres_url().await;
    let (base, _db) = url.rsplit_once('/').unwrap();
    let missing = format!("{base}/sessiond_no_such_database");
    let err = PgStore::connect(&missing, options).await.unwrap_err();
    assert!(matches!(err, StoreError::Backend(_)), "{err:?}");
}

/// A TCP forwarder in front of PostgreSQL that the test can cut and restore, on a fixed port:
/// an outage as every node sees it.
struct Proxy {
    port: u16,
    upstream: String,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Proxy {
    async fn start(upstream: String) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let proxy = Proxy {
            port,
            upstream,
            tasks: Arc::default(),
        };
        proxy.serve(listener);
        proxy
    }

    fn serve(&self, listener: TcpListener) {
        let tasks = self.tasks.clone();
        let upstream = self.upstream.clone();
        let accept = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let upstream = upstream.clone();
                let conn = tokio::spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(&upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
                tasks.lock().unwrap().push(conn);
            }
        });
        self.tasks.lock().unwrap().push(accept);
    }

    /// Stops listening and cuts every forwarded connection.
    async fn cut(&self) {
        let tasks: Vec<_> = self.tasks.lock().unwrap().drain(..).collect();
        for task in &tasks {
            task.abort();
        }
        for task in tasks {
            let _ = task.await;
        }
    }

    /// Listens again on the same port.
    async fn restore(&self) {
        let listener = TcpListener::bind(("127.0.0.1", self.port)).await.unwrap();
        self.serve(listener);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_is_unavailable_and_heals_without_a_restart() {
    let url = postgres_url().await;
    let schema = fresh_schema();
    let _guard = SchemaGuard::new(&url, &schema);
    let proxy = Proxy::start(upstream_addr(&url)).await;
    let mut options = options_in(&schema);
    options.acquire_timeout = Duration::from_millis(300);
    // Every read goes to the database: a row cache may answer for up to a lease after the cut
    // (its row is still proven current; tests/integration/pg_rows.rs and the e2e outage test).
    options.row_cache = sessiond::cache::CacheLimits::off();
    let store = Arc::new(
        PgStore::open(&via_port(&url, proxy.port, "outage"), options)
            .await
            .unwrap(),
    );
    let clock = ManualClock::new(T0);
    let service = SessionService::builder(
        store.clone() as Arc<dyn Backend>,
        MasterKey::from_bytes([7u8; 32]),
    )
    .clock(Arc::new(clock.clone()))
    .random(Arc::new(SeededRandom::new(7)))
    .start()
    .await
    .unwrap();
    let created = service.create_cookie_session(user("olga")).await.unwrap();
    let ctx = RequestContext::default();
    service
        .validate_cookie(created.cookie.expose(), &ctx)
        .await
        .unwrap();

    proxy.cut().await;
    for _ in 0..3 {
        let err = service
            .validate_cookie(created.cookie.expose(), &ctx)
            .await
            .unwrap_err();
        assert_eq!(err.code(), "unavailable", "{err:?}");
        let err = store.session(&created.session.id).await.unwrap_err();
        assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
    }
    let err = store
        .create_session(
            &crate::conformance::record("olga", "default", 0, 9, 9),
            Some(2),
            T0,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");

    proxy.restore().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match service.validate_cookie(created.cookie.expose(), &ctx).await {
            Ok(v) => {
                assert_eq!(v.session.id, created.session.id);
                break;
            }
            Err(e) => {
                assert_eq!(e.code(), "unavailable", "{e:?}");
                assert!(Instant::now() < deadline, "did not recover: {e:?}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    store.close().await;
    proxy.cut().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_the_server_terminates_are_replaced() {
    let url = postgres_url().await;
    let schema = fresh_schema();
    let _guard = SchemaGuard::new(&url, &schema);
    let app = schema.to_string();
    let port = upstream_addr(&url)
        .rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .unwrap();
    let store = PgStore::open(&via_port(&url, port, &app), options_in(&schema))
        .await
        .unwrap();
    let id = SessionId::generate(&SeededRandom::new(1));
    let user = UserId::new("pat").unwrap();
    // Warm the pool with a few connections.
    let warm: Vec<_> = (0..4)
        .map(|_| {
            let (store, user) = (store.clone(), user.clone());
            tokio::spawn(async move { store.user_sessions(&user, None, T0).await })
        })
        .collect();
    for task in warm {
        task.await.unwrap().unwrap();
    }

    // An administrator (or a fail-over) kills every connection of this store.
    let mut admin = PgConnection::connect(&url).await.unwrap();
    // Two steps: in one statement PostgreSQL may call the function before it filters.
    let pids: Vec<i32> =
        sqlx::query_scalar("SELECT pid FROM pg_stat_activity WHERE application_name = $1")
            .bind(&app)
            .fetch_all(&mut admin)
            .await
            .unwrap();
    let mut killed = 0;
    for pid in pids {
        let done: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1, 5000)")
            .bind(pid)
            .fetch_one(&mut admin)
            .await
            .unwrap();
        killed += usize::from(done);
    }
    assert!(killed >= 1);
    admin.close().await.unwrap();

    // Idle connections are pinged before use and replaced: no call sees the dead ones, and
    // none is ever reported as anything but unavailable.
    for _ in 0..8 {
        match store.session(&id).await {
            Ok(found) => assert!(found.is_none()),
            Err(e) => panic!("a dead pooled connection reached a caller: {e:?}"),
        }
    }
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_keys_are_stored_by_hash_and_revoked_once() {
    let url = postgres_url().await;
    let schema = fresh_schema();
    let _guard = SchemaGuard::new(&url, &schema);
    let store = PgStore::open(&url, options_in(&schema)).await.unwrap();
    crate::conformance::api_keys_are_stored_by_hash_and_revoked_once(Arc::new(store)).await;
}

/// Every stored defect both schemas admit is `Corrupt` naming its column, as on SQLite.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_rows_are_reported_by_column_as_on_sqlite() {
    let url = postgres_url().await;
    let schema = fresh_schema();
    let _guard = SchemaGuard::new(&url, &schema);
    let store = PgStore::open(&url, options_in(&schema)).await.unwrap();
    let mut raw = PgConnection::connect(&url).await.unwrap();
    sqlx::raw_sql(&format!("SET search_path TO \"{schema}\""))
        .execute(&mut raw)
        .await
        .unwrap();
    let raw = Arc::new(tokio::sync::Mutex::new(raw));
    crate::conformance::corrupt_rows_are_reported_by_column(
        Arc::new(store),
        crate::conformance::CORRUPT_ROWS,
        |sql| {
            let raw = Arc::clone(&raw);
            async move {
                let mut conn = raw.lock().await;
                sqlx::raw_sql(&sql).execute(&mut *conn).await.unwrap();
            }
        },
    )
    .await;
}
