//! Starting and stopping the real binary, and a small HTTP client around it.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

pub const BIN: &str = env!("CARGO_BIN_EXE_sessiond");

/// A bootstrap API key for tests (>= 32 characters).
pub fn api_key() -> String {
    format!("test-api-key-{}-0123456789abcdefghij", std::process::id())
}

/// A running server the test helpers can reach, in process or not.
pub trait Target {
    /// `http://host:port`.
    fn base(&self) -> &str;
    /// The bootstrap API key.
    fn api_key(&self) -> &str;
    /// A client with the API key.
    fn handle(&self) -> Handle;
}

impl Target for Server {
    fn base(&self) -> &str {
        &self.base
    }

    fn api_key(&self) -> &str {
        &self.api_key
    }

    fn handle(&self) -> Handle {
        Server::handle(self)
    }
}

pub struct Server {
    child: Option<Child>,
    pub base: String,
    pub api_key: String,
    pub dir: tempfile::TempDir,
    log: Arc<Mutex<String>>,
    client: reqwest::Client,
}

#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
    pub text: String,
}

impl Reply {
    /// The whole response; a body that is not JSON is `Value::Null` in `body` (`text` has it).
    pub async fn read(resp: reqwest::Response) -> Reply {
        let status = resp.status();
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Reply {
            status,
            headers,
            body,
            text,
        }
    }

    pub fn code(&self) -> &str {
        self.body["code"].as_str().unwrap_or("")
    }

    pub fn set_cookies(&self) -> Vec<String> {
        self.headers
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect()
    }

    /// Asserts a problem+json error with this status and code.
    pub fn assert_problem(&self, status: u16, code: &str) {
        assert_eq!(self.status.as_u16(), status, "{}", self.text);
        assert_eq!(
            self.headers
                .get("content-type")
                .and_then(|v| v.to_str().ok()),
            Some("application/problem+json"),
            "{}",
            self.text
        );
        assert_eq!(self.code(), code, "{}", self.text);
        assert_eq!(self.body["status"].as_u64(), Some(u64::from(status)));
        assert!(self.body["type"].as_str().unwrap().ends_with(code));
        assert!(self.body["title"].is_string());
    }
}

pub struct Options {
    pub config: String,
    pub env: Vec<(String, String)>,
    pub log_level: &'static str,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            config: String::new(),
            env: Vec::new(),
            log_level: "info,sqlx=warn",
        }
    }
}

pub fn write_config(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("sessiond.toml");
    std::fs::write(&path, text).unwrap();
    path
}

pub async fn spawn(options: Options) -> Server {
    let dir = tempfile::tempdir().unwrap();
    spawn_in(dir, options).await
}

/// The PostgreSQL row-cache lease of every server and admin command the tests start
/// (docs/DESIGN.md §15.5; a test's own environment may override it): shorter than the default,
/// so a fresh node's first writes, which wait out the lease of any node it could not have heard
/// yet, cost a test little.
pub const TEST_LEASE: (&str, &str) = ("SESSIOND_CACHES__SESSION_ROWS__LEASE", "500ms");

pub async fn spawn_in(dir: tempfile::TempDir, options: Options) -> Server {
    // reqwest is built without a default TLS provider (the server installs ring); so do tests.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let config = write_config(dir.path(), &options.config);
    let key = api_key();
    let mut cmd = Command::new(BIN);
    cmd.arg("--config")
        .arg(&config)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .arg("serve")
        .arg("--listen")
        .arg("127.0.0.1:0")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("SESSIOND_API_KEY", &key)
        .env("SESSIOND_LOG", options.log_level)
        .env(TEST_LEASE.0, TEST_LEASE.1)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for (k, v) in &options.env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let log = Arc::new(Mutex::new(String::new()));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    for stream in [
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
    ]
    .into_iter()
    .flatten()
    {
        let log = log.clone();
        let tx = tx.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stream).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                log.lock().unwrap().push_str(&line);
                log.lock().unwrap().push('\n');
                let _ = tx.send(line);
            }
        });
    }
    drop(tx);
    let addr = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = rx.recv().await {
            if let Some(rest) = line.split("listening on ").nth(1) {
                return rest.split_whitespace().next().map(str::to_owned);
            }
        }
        None
    })
    .await
    .ok()
    .flatten()
    .unwrap_or_else(|| panic!("server did not start; log:\n{}", log.lock().unwrap()));
    Server {
        child: Some(child),
        base: format!("http://{addr}"),
        api_key: key,
        dir,
        log,
        client: reqwest::Client::new(),
    }
}

impl Server {
    pub fn logs(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    pub async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        headers: &[(&str, &str)],
        auth: bool,
    ) -> Reply {
        let mut req = self.client.request(method, format!("{}{path}", self.base));
        if auth {
            req = req.bearer_auth(&self.api_key);
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(body) = body {
            req = req.json(body);
        }
        Reply::read(req.send().await.unwrap()).await
    }

    pub async fn post(&self, path: &str, body: Value) -> Reply {
        self.request(Method::POST, path, Some(&body), &[], true)
            .await
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.request(Method::GET, path, None, &[], true).await
    }

    /// Runs an admin command of the same binary against this server's database.
    pub async fn cli(&self, args: &[&str]) -> std::process::Output {
        cli_in(self.dir.path(), args, &[]).await
    }

    /// SIGTERM, wait for a clean exit, return the complete log.
    pub async fn stop(mut self) -> String {
        self.shutdown().await;
        self.logs()
    }

    /// SIGKILL (no drain, no shutdown hooks: a crash), keeping the data directory.
    pub async fn kill_keeping_dir(mut self) -> (String, tempfile::TempDir) {
        if let Some(mut child) = self.child.take() {
            child.start_kill().unwrap();
            let status = tokio::time::timeout(Duration::from_secs(15), child.wait())
                .await
                .expect("server did not die on SIGKILL")
                .unwrap();
            assert!(!status.success(), "a killed server exited with {status}");
        }
        (self.logs(), self.dir)
    }

    /// As [`Server::stop`], keeping the data directory for another start.
    pub async fn stop_keeping_dir(mut self) -> (String, tempfile::TempDir) {
        self.shutdown().await;
        (self.logs(), self.dir)
    }

    async fn shutdown(&mut self) {
        if let Some(mut child) = self.child.take() {
            if let Some(pid) = child.id() {
                let _ = std::process::Command::new("kill")
                    .arg("-TERM")
                    .arg(pid.to_string())
                    .status();
            }
            let status = tokio::time::timeout(Duration::from_secs(15), child.wait())
                .await
                .expect("server did not stop on SIGTERM")
                .unwrap();
            assert!(status.success(), "server exited with {status}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs the binary with `--config <dir>/sessiond.toml --data-dir <dir>/data` and `args`.
pub async fn cli_in(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let config = dir.join("sessiond.toml");
    if !config.exists() {
        write_config(dir, "");
    }
    let mut cmd = Command::new(BIN);
    cmd.arg("--config")
        .arg(&config)
        .arg("--data-dir")
        .arg(dir.join("data"))
        .args(args);
    // A `serve` that does not exit (a test expecting a refusal) is killed at the timeout.
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("SESSIOND_LOG", "warn")
        .env(TEST_LEASE.0, TEST_LEASE.1)
        .kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .expect("cli timed out")
        .unwrap()
}

// ---------------------------------------------------------------------------------------------
// Several nodes on shared PostgreSQL + Redis, and a TCP proxy the test controls.

/// base64 of 32 bytes: the one master key every node of a test cluster shares.
pub const CLUSTER_MASTER_KEY: &str = "AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA=";

/// `DATABASE_URL` when it names a PostgreSQL database, else the local test database.
pub fn postgres_url() -> String {
    std::env::var("DATABASE_URL")
        .ok()
        .filter(|u| u.starts_with("postgres://") || u.starts_with("postgresql://"))
        .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// `REDIS_URL` when set, else the local Redis.
pub fn redis_url() -> String {
    std::env::var("REDIS_URL")
        .ok()
        .filter(|u| u.starts_with("redis://"))
        .unwrap_or_else(|| "redis://127.0.0.1:6379".to_owned())
}

/// A string no other test, in this or any other process, uses.
pub fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "{prefix}{nanos}_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// A PostgreSQL schema of this test's own (`sessiond_e2e_…`), dropped when the guard drops.
pub struct Schema {
    pub name: String,
    url: String,
}

impl Schema {
    pub fn new() -> Schema {
        Schema {
            name: unique("sessiond_e2e_"),
            url: postgres_url(),
        }
    }
}

impl Drop for Schema {
    fn drop(&mut self) {
        // Drop runs inside the test's runtime, which cannot be blocked on: clean up on a thread
        // with a runtime of its own. A failure only leaves a schema behind.
        let (url, schema) = (self.url.clone(), self.name.clone());
        let cleanup = std::thread::spawn(move || {
            use sqlx::Connection as _;
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                if let Ok(mut conn) = sqlx::PgConnection::connect(&url).await {
                    let _ = sqlx::raw_sql("SET lock_timeout = '5s'")
                        .execute(&mut conn)
                        .await;
                    let _ = sqlx::raw_sql(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
                        .execute(&mut conn)
                        .await;
                    let _ = conn.close().await;
                }
            });
        });
        let _ = cleanup.join();
    }
}

/// Several `sessiond serve` processes on one PostgreSQL schema (and Redis), with one master key
/// and one bootstrap API key. Nodes are killed before the schema is dropped (field order).
pub struct Cluster {
    pub nodes: Vec<Server>,
    /// The configuration every node was started with (`sessiond.toml`).
    pub config: String,
    /// Held for its `Drop`: the schema goes when the cluster does.
    #[allow(dead_code)]
    pub schema: Schema,
}

impl Cluster {
    /// `n` nodes; `database_url`/`redis_url` may point at proxies.
    pub async fn start(n: usize, database_url: &str, redis_url: Option<&str>) -> Cluster {
        Cluster::start_with(n, database_url, redis_url, "").await
    }

    /// As [`Cluster::start`], with `extra` configuration for every node (appended after the
    /// top-level keys, so it may add top-level keys or open tables).
    pub async fn start_with(
        n: usize,
        database_url: &str,
        redis_url: Option<&str>,
        extra: &str,
    ) -> Cluster {
        let schema = Schema::new();
        // Six connections a node: three clusters of three nodes run at once (the test group
        // `pg-clusters`), beside the rest of the suite, on a server that allows 100.
        let mut config = format!(
            "database_url = \"{database_url}\"\ndatabase_schema = \"{}\"\n\
             database_max_connections = 6\n",
            schema.name
        );
        if let Some(redis) = redis_url {
            config.push_str(&format!("redis_url = \"{redis}\"\n"));
        }
        // Last, so that `extra` may open tables of its own.
        config.push_str(extra);
        // The first node migrates the schema and creates the keys; the rest join it.
        let mut nodes = Vec::new();
        for _ in 0..n {
            nodes.push(
                spawn(Options {
                    config: config.clone(),
                    env: vec![(
                        "SESSIOND_MASTER_KEY".to_owned(),
                        CLUSTER_MASTER_KEY.to_owned(),
                    )],
                    ..Options::default()
                })
                .await,
            );
        }
        Cluster {
            nodes,
            config,
            schema,
        }
    }

    /// Runs an admin command against the cluster's database (same config, same master key).
    pub async fn cli(&self, args: &[&str]) -> std::process::Output {
        let dir = tempfile::tempdir().unwrap();
        write_config(dir.path(), &self.config);
        cli_in(
            dir.path(),
            args,
            &[("SESSIOND_MASTER_KEY", CLUSTER_MASTER_KEY)],
        )
        .await
    }
}

/// A TCP forwarder on a fixed loopback port that the test can cut (stop listening and close
/// every forwarded connection) and restore (listen again on the same port).
pub struct Proxy {
    pub port: u16,
    upstream: String,
    tasks: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl Proxy {
    /// `upstream` is `host:port`.
    pub async fn start(upstream: &str) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let proxy = Proxy {
            port,
            upstream: upstream.to_owned(),
            tasks: Arc::default(),
        };
        proxy.serve(listener);
        proxy
    }

    fn serve(&self, listener: tokio::net::TcpListener) {
        let tasks = self.tasks.clone();
        let upstream = self.upstream.clone();
        let accept = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let upstream = upstream.clone();
                let conn = tokio::spawn(async move {
                    if let Ok(mut server) = tokio::net::TcpStream::connect(&upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
                tasks.lock().unwrap().push(conn);
            }
        });
        self.tasks.lock().unwrap().push(accept);
    }

    /// Stops listening and cuts every forwarded connection; returns once all are closed.
    pub async fn cut(&self) {
        let tasks: Vec<_> = self.tasks.lock().unwrap().drain(..).collect();
        for task in &tasks {
            task.abort();
        }
        for task in tasks {
            let _ = task.await;
        }
    }

    /// Listens again on the same port.
    pub async fn restore(&self) {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", self.port))
            .await
            .unwrap();
        self.serve(listener);
    }

    /// `url` (`scheme://[user@]host:port/rest`) with its host and port replaced by this proxy.
    pub fn url_for(&self, url: &str) -> String {
        let (scheme, rest) = url.split_once("://").unwrap();
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let userinfo = authority
            .rsplit_once('@')
            .map_or(String::new(), |(u, _)| format!("{u}@"));
        format!("{scheme}://{userinfo}127.0.0.1:{}/{path}", self.port)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        for task in self.tasks.lock().unwrap().drain(..) {
            task.abort();
        }
    }
}

/// The `host:port` a URL names (default port by scheme).
pub fn host_port(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap();
    let authority = rest.split_once('/').map_or(rest, |(a, _)| a);
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if host_port.contains(':') {
        host_port.to_owned()
    } else if scheme.starts_with("redis") {
        format!("{host_port}:6379")
    } else {
        format!("{host_port}:5432")
    }
}

/// A cheap, cloneable client for one server, for spawning concurrent requests.
#[derive(Clone)]
pub struct Handle {
    pub base: String,
    api_key: String,
    client: reqwest::Client,
}

impl Server {
    pub fn handle(&self) -> Handle {
        Handle {
            base: self.base.clone(),
            api_key: self.api_key.clone(),
            client: self.client.clone(),
        }
    }
}

impl Handle {
    /// A client of the server at `base` (`http://host:port`) with `api_key`.
    pub fn new(base: &str, api_key: &str, client: reqwest::Client) -> Handle {
        Handle {
            base: base.to_owned(),
            api_key: api_key.to_owned(),
            client,
        }
    }

    /// A request with the API key; a transport failure or a 20 s stall is a panic.
    pub async fn send(&self, method: Method, path: &str, body: Option<&Value>) -> Reply {
        self.send_with(method, path, body, &[], true).await
    }

    /// A request with extra headers, with or without the API key.
    pub async fn send_with(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        headers: &[(&str, &str)],
        auth: bool,
    ) -> Reply {
        let mut req = self
            .client
            .request(method, format!("{}{path}", self.base))
            .timeout(Duration::from_secs(20));
        if auth {
            req = req.bearer_auth(&self.api_key);
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(body) = body {
            req = req.json(body);
        }
        Reply::read(req.send().await.unwrap()).await
    }

    pub async fn post(&self, path: &str, body: Value) -> Reply {
        self.send(Method::POST, path, Some(&body)).await
    }

    /// `POST path` with the API key, or `None` when no complete response arrived (the server
    /// died mid-request): an answer the client never got acknowledged nothing.
    pub async fn try_post(&self, path: &str, body: Value) -> Option<Reply> {
        let resp = self
            .client
            .post(format!("{}{path}", self.base))
            .timeout(Duration::from_secs(20))
            .bearer_auth(&self.api_key)
            .json(&body)
            .send()
            .await
            .ok()?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let text = resp.text().await.ok()?;
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Some(Reply {
            status,
            headers,
            body,
            text,
        })
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.send(Method::GET, path, None).await
    }
}

/// The JSON of a JWT's header (`0`) or payload (`1`) segment, unverified.
pub fn jwt_part(token: &str, part: usize) -> Value {
    use base64::Engine as _;
    let segment = token.split('.').nth(part).unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(segment)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}
