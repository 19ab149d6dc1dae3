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

pub struct Server {
    child: Option<Child>,
    pub base: String,
    pub api_key: String,
    pub dir: tempfile::TempDir,
    log: Arc<Mutex<String>>,
    client: reqwest::Client,
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
    pub text: String,
}

impl Reply {
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
        let resp = req.send().await.unwrap();
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

    pub async fn post(&self, path: &str, body: Value) -> Reply {
        self.request(Method::POST, path, Some(&body), &[], true)
            .await
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.request(Method::GET, path, None, &[], true).await
    }

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
        let resp = req.send().await.unwrap();
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

    /// Runs an admin command of the same binary against this server's database.
    pub async fn cli(&self, args: &[&str]) -> std::process::Output {
        cli_in(self.dir.path(), args, &[]).await
    }

    /// SIGTERM, wait for a clean exit, return the complete log.
    pub async fn stop(mut self) -> String {
        self.shutdown().await;
        self.logs()
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
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("SESSIOND_LOG", "warn");
    for (k, v) in env {
        cmd.env(k, v);
    }
    tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .expect("cli timed out")
        .unwrap()
}
