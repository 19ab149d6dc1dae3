//! In-process tests: the [`Server`] of the library runs inside the test process on port 0, with
//! a [`ManualClock`] and a temporary SQLite database, driven over real HTTP. Expiry and deadlines
//! are reached by moving the clock ([`TestApp::advance`]), not by waiting on short lifetimes.
//! What needs a process of its own (exit codes, signals, logs, TLS, outages, several nodes)
//! stays in the process suite next to this module.

mod account;
mod api;
mod auth;
mod browser;
mod cli;
mod connections;
mod events;
mod expiry;
mod handoff;
mod issuers;
mod live_end;
mod metrics;
mod openapi;
mod rotation;
mod verifier;

use std::time::Duration;

use reqwest::Method;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use sessiond::{ManualClock, Secret};
use sessiond_server::dto::{
    CreateSessionRequest, CreateSessionResponse, KindParam, RefreshRequest, RefreshResponse,
    ValidateRequest, ValidateResponse,
};
use sessiond_server::testing::InProcess;
use sessiond_server::{Config, Overrides, Secrets};

use crate::harness::{api_key, cli_in, write_config, Handle, Reply, Target};

/// How to start a [`TestApp`].
#[derive(Default)]
pub struct Options {
    /// The configuration file's text.
    pub config: String,
    /// Configuration keys as `SESSIOND_*` environment variables (read by the loader only; the
    /// process environment is not touched). `SESSIOND_MASTER_KEY` becomes the master key.
    pub env: Vec<(String, String)>,
}

/// A server running in this process.
pub struct TestApp {
    pub base: String,
    pub api_key: String,
    /// The server's clock: it stands still until a test moves it.
    pub clock: ManualClock,
    /// Declared before `dir`: dropping it signals the shutdown before the directory goes.
    server: InProcess,
    pub dir: tempfile::TempDir,
    client: reqwest::Client,
}

/// Starts a server with `options` on 127.0.0.1:0, its data in a fresh temporary directory, its
/// clock at the current time.
pub async fn spawn_app(options: Options) -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    spawn_app_in(dir, options).await
}

/// As [`spawn_app`], in `dir` (`sessiond.toml` and `data/` are written there).
pub async fn spawn_app_in(dir: tempfile::TempDir, options: Options) -> TestApp {
    // reqwest is built without a default TLS provider; the binary installs ring, so do tests.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let path = write_config(dir.path(), &options.config);
    let overrides = Overrides {
        listen: Some("127.0.0.1:0".to_owned()),
        data_dir: Some(dir.path().join("data")),
        ..Overrides::default()
    };
    let config = Config::load_from(Some(&path), options.env.clone().into_iter(), &overrides)
        .unwrap_or_else(|e| panic!("configuration refused: {e}"));
    let key = api_key();
    let mut secrets = Secrets::default().with_api_key(Secret::new(key.clone()));
    if let Some((_, master)) = options.env.iter().find(|(k, _)| k == "SESSIOND_MASTER_KEY") {
        secrets = secrets.with_master_key(Secret::new(master.clone()));
    }
    let server = InProcess::start(config, secrets)
        .await
        .unwrap_or_else(|e| panic!("server did not start: {e:#}"));
    TestApp {
        base: server.base_url().to_owned(),
        api_key: key,
        clock: server.clock().clone(),
        server,
        dir,
        client: reqwest::Client::new(),
    }
}

impl TestApp {
    /// Moves the server's clock forward.
    pub fn advance(&self, by: Duration) {
        self.clock.advance(by);
    }

    pub async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        headers: &[(&str, &str)],
        auth: bool,
    ) -> Reply {
        self.handle()
            .send_with(method, path, body, headers, auth)
            .await
    }

    pub async fn post(&self, path: &str, body: Value) -> Reply {
        self.request(Method::POST, path, Some(&body), &[], true)
            .await
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.request(Method::GET, path, None, &[], true).await
    }

    /// A request with a raw body and the API key.
    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        body: Vec<u8>,
        headers: &[(&str, &str)],
    ) -> Reply {
        let mut req = self
            .client
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.api_key)
            .body(body);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        Reply::read(req.send().await.unwrap()).await
    }

    /// A cheap, cloneable client for concurrent requests.
    pub fn handle(&self) -> Handle {
        Handle::new(&self.base, &self.api_key, self.client.clone())
    }

    /// Runs an admin command of the real binary against this server's database.
    pub async fn cli(&self, args: &[&str]) -> std::process::Output {
        cli_in(self.dir.path(), args, &[]).await
    }

    /// `method path` with a typed body and the API key: the typed response on success, the
    /// whole reply (a problem) otherwise.
    pub async fn call<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: &Req,
    ) -> Result<Resp, Reply> {
        let body = serde_json::to_value(body).unwrap();
        let reply = self.request(method, path, Some(&body), &[], true).await;
        if !reply.status.is_success() {
            return Err(reply);
        }
        Ok(serde_json::from_value(reply.body.clone())
            .unwrap_or_else(|e| panic!("{path}: not the wire type ({e}): {}", reply.text)))
    }

    /// `POST /v1/sessions` for `user` with `kind`, which must succeed.
    pub async fn create_session(&self, user: &str, kind: KindParam) -> CreateSessionResponse {
        let request = CreateSessionRequest::new(user, kind);
        self.call(Method::POST, "/v1/sessions", &request)
            .await
            .unwrap_or_else(|r| panic!("create failed: {}", r.text))
    }

    /// `POST /v1/sessions/validate` of an access token.
    pub async fn validate_access_token(&self, token: &str) -> Result<ValidateResponse, Reply> {
        let request = ValidateRequest::access_token(token);
        self.call(Method::POST, "/v1/sessions/validate", &request)
            .await
    }

    /// `POST /v1/sessions/validate` of a session cookie's value.
    pub async fn validate_cookie(&self, cookie: &str) -> Result<ValidateResponse, Reply> {
        let request = ValidateRequest::cookie(cookie);
        self.call(Method::POST, "/v1/sessions/validate", &request)
            .await
    }

    /// `POST /v1/tokens/refresh`.
    pub async fn refresh(&self, refresh_token: &str) -> Result<RefreshResponse, Reply> {
        let request = RefreshRequest::new(refresh_token);
        self.call(Method::POST, "/v1/tokens/refresh", &request)
            .await
    }

    /// Shuts the server down as SIGTERM does (stop accepting, end the event streams, drain) and
    /// waits for it to finish cleanly.
    pub async fn stop(self) {
        self.server
            .stop(Duration::from_secs(15))
            .await
            .expect("server did not stop cleanly");
    }
}

impl Target for TestApp {
    fn base(&self) -> &str {
        &self.base
    }

    fn api_key(&self) -> &str {
        &self.api_key
    }

    fn handle(&self) -> Handle {
        TestApp::handle(self)
    }
}
