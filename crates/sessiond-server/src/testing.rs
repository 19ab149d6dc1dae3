//! A [`Server`] running inside a test's process (feature `testing`): built from a
//! [`Config`] whose `listen` is port 0, on a [`ManualClock`] that stands still until the test
//! moves it, served by a background task until it is stopped as SIGTERM stops the binary. The
//! e2e suite of this crate and the client's tests start their servers with it.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use sessiond::{Clock as _, ManualClock, Secret, SystemClock};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::{Config, Overrides, Secrets, Server, StartError};

/// A server running in this process. Dropping it signals the shutdown without waiting.
#[derive(Debug)]
pub struct InProcess {
    base: String,
    clock: ManualClock,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl InProcess {
    /// Builds the server of `config` with `secrets` on a manual clock set to the current time,
    /// and serves it on a task of the current runtime.
    ///
    /// # Errors
    /// [`StartError`] when the server cannot be built (storage, keys, listener).
    pub async fn start(config: Config, secrets: Secrets) -> Result<InProcess, StartError> {
        let clock = ManualClock::new(SystemClock.now());
        let server = Server::build(config, secrets, Arc::new(clock.clone())).await?;
        let base = format!("http://{}", server.local_addr());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server.run(async move {
            let _ = stopped.await;
        }));
        Ok(InProcess {
            base,
            clock,
            shutdown: Some(stop),
            task: Some(task),
        })
    }

    /// The usual test server: the configuration `toml` with `listen` on 127.0.0.1:0 and the
    /// data (SQLite, master key) in `dir/data`, accepting `api_key` as the bootstrap API key.
    ///
    /// # Errors
    /// The configuration's error, or [`StartError`].
    pub async fn start_in(
        dir: &Path,
        toml: &str,
        api_key: &str,
    ) -> Result<InProcess, Box<dyn std::error::Error + Send + Sync>> {
        let overrides = Overrides {
            listen: Some(String::from("127.0.0.1:0")),
            data_dir: Some(dir.join("data")),
            ..Overrides::default()
        };
        let config = Config::load_str(toml, std::iter::empty(), &overrides)?;
        let secrets = Secrets::default().with_api_key(Secret::new(api_key.to_owned()));
        Ok(InProcess::start(config, secrets).await?)
    }

    /// `http://127.0.0.1:<port>`.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// The server's clock.
    pub fn clock(&self) -> &ManualClock {
        &self.clock
    }

    /// Shuts the server down as SIGTERM does (stop accepting, end the event streams, drain) and
    /// waits at most `within` for it to finish.
    ///
    /// # Errors
    /// The server's own error; `TimedOut` when it did not stop within `within`; `Other` when its
    /// task panicked.
    pub async fn stop(mut self, within: Duration) -> std::io::Result<()> {
        if let Some(stop) = self.shutdown.take() {
            let _ = stop.send(());
        }
        let Some(task) = self.task.take() else {
            return Ok(());
        };
        match tokio::time::timeout(within, task).await {
            Ok(Ok(result)) => result,
            Ok(Err(join)) => Err(std::io::Error::other(join)),
            Err(_) => Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the server did not stop in time",
            )),
        }
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        if let Some(stop) = self.shutdown.take() {
            let _ = stop.send(());
        }
    }
}
