//! `spawn()`: a server in this process and a client of it; `Proxy`: a TCP forwarder whose
//! connections a test can cut, to break event streams; `next_event`: the next event of a stream
//! within a bound.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{Stream, StreamExt};
use sessiond::{ErrorCode, Secret, SessionId};
use sessiond_client::api::{CreateSessionRequest, KindParam};
use sessiond_client::{Backoff, Client, ClientBuilder, ClientError, Event};
use sessiond_server::testing::InProcess;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// How long a test waits for something that should happen at once.
pub const WAIT: Duration = Duration::from_secs(10);

/// A server in this process and a client with its API key.
pub struct App {
    pub server: InProcess,
    pub client: Client,
    pub api_key: String,
    _dir: tempfile::TempDir,
}

/// Starts a server with the configuration `toml` on 127.0.0.1:0.
pub async fn spawn(toml: &str) -> App {
    // reqwest uses rustls with the provider the application installs.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let api_key = format!(
        "client-test-key-{}-0123456789abcdefghij",
        std::process::id()
    );
    let server = InProcess::start_in(dir.path(), toml, &api_key)
        .await
        .unwrap();
    let client = builder(server.base_url(), &api_key).build().unwrap();
    App {
        server,
        client,
        api_key,
        _dir: dir,
    }
}

/// A builder for `base` with `key`, reconnecting fast.
pub fn builder(base: &str, key: &str) -> ClientBuilder {
    Client::builder(base)
        .api_key(Secret::new(key.to_owned()))
        .reconnect(Backoff::new(
            Duration::from_millis(20),
            Duration::from_millis(200),
        ))
}

impl App {
    /// Moves the server's clock.
    pub fn advance(&self, by: Duration) {
        self.server.clock().advance(by);
    }

    /// A new session of `kind` for `user`; its id and the whole answer.
    pub async fn create(
        &self,
        user: &str,
        kind: KindParam,
    ) -> (SessionId, sessiond_client::api::CreateSessionResponse) {
        let created = self
            .client
            .create_session(&CreateSessionRequest::new(user, kind))
            .await
            .unwrap();
        (SessionId::parse(&created.session.id).unwrap(), created)
    }
}

/// The next event of `stream` within [`WAIT`], skipping outage errors (a stream reports them
/// while it reconnects); `None` when the stream ended.
pub async fn next_event<S>(stream: &mut S) -> Option<Event>
where
    S: Stream<Item = Result<Event, ClientError>> + Unpin,
{
    tokio::time::timeout(WAIT, async {
        loop {
            match stream.next().await? {
                Ok(event) => return Some(event),
                Err(e) if e.is_outage() => {}
                Err(e) => panic!("stream error: {e:?}"),
            }
        }
    })
    .await
    .expect("no event in time")
}

/// A TCP forwarder to `upstream`. [`Proxy::cut`] closes every connection through it and refuses
/// new ones until [`Proxy::open`].
pub struct Proxy {
    pub addr: SocketAddr,
    open: Arc<AtomicBool>,
    cuts: watch::Sender<u64>,
}

impl Proxy {
    pub async fn start(upstream: &str) -> Proxy {
        let upstream: SocketAddr = upstream.trim_start_matches("http://").parse().unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let open = Arc::new(AtomicBool::new(true));
        let (cuts, _) = watch::channel(0u64);
        let (is_open, cut) = (open.clone(), cuts.clone());
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if !is_open.load(Ordering::SeqCst) {
                    continue; // dropped: closed at once
                }
                let mut cut = cut.subscribe();
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = cut.changed() => {}
                    }
                });
            }
        });
        Proxy { addr, open, cuts }
    }

    /// `http://` of the proxy.
    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Closes every connection and refuses new ones.
    pub fn cut(&self) {
        self.open.store(false, Ordering::SeqCst);
        self.cuts.send_modify(|n| *n += 1);
    }

    /// Lets connections through again.
    pub fn open(&self) {
        self.open.store(true, Ordering::SeqCst);
    }
}

/// `result` failed with the problem `status` `code`.
pub fn assert_problem<T: std::fmt::Debug>(
    result: Result<T, ClientError>,
    status: u16,
    code: ErrorCode,
) {
    match result {
        Err(ClientError::Api {
            status: s, code: c, ..
        }) if (s, c) == (status, code) => {}
        other => panic!("expected {status} {code}: {other:?}"),
    }
}
