//! Trusted issuers whose JWK Set is published at a URL (`[[issuers]] jwks_url`).
//!
//! The set is fetched with a timeout and a size limit at start (a failure is logged, not fatal:
//! the issuer's tokens are refused until a fetch succeeds), refreshed in the background every
//! [`REFRESH_EVERY`], and refetched when a token names a `kid` the cached set lacks — at most
//! once per [`REFETCH_MIN_INTERVAL`] per issuer, so a flood of forged `kid`s cannot turn into a
//! flood of requests to the identity provider.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sessiond::jose::foreign::{JwksOptions, TrustedIssuer};
use sessiond::SessionService;

use crate::config::{Config, Issuer, JwksSource};

/// Timeout of one JWK Set request.
pub(crate) const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Background refresh period.
pub(crate) const REFRESH_EVERY: Duration = Duration::from_secs(600);
/// The least time between two fetches of one issuer's set triggered by unknown `kid`s.
pub(crate) const REFETCH_MIN_INTERVAL: Duration = Duration::from_secs(60);
/// The largest JWK Set accepted.
pub(crate) const MAX_JWKS_BYTES: usize = 1024 * 1024;

struct Entry {
    config: Issuer,
    url: String,
    /// The URL as logged (`config::redact_url`).
    shown: String,
    /// The last fetch triggered by an unknown `kid` (the rate-limited kind).
    last_kid_refetch: Mutex<Option<Instant>>,
    loaded: Mutex<bool>,
}

struct Inner {
    client: reqwest::Client,
    service: SessionService,
    leeway: Duration,
    entries: HashMap<String, Entry>,
}

/// The URL-backed issuers of one server.
#[derive(Clone)]
pub(crate) struct RemoteIssuers {
    inner: Arc<Inner>,
}

impl fmt::Debug for RemoteIssuers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RemoteIssuers")
            .field("issuers", &self.inner.entries.keys())
            .finish()
    }
}

/// Why a fetch failed (logged; never contains the body).
#[derive(Debug, thiserror::Error)]
enum FetchError {
    /// Without its URL (`reqwest::Error::without_url`): the URL may carry credentials; the log
    /// line names the redacted one.
    #[error("request failed: {0}")]
    Http(reqwest::Error),
    #[error("HTTP status {0}")]
    Status(u16),
    #[error("JWK Set larger than 1 MiB")]
    TooLarge,
    #[error("JWK Set refused: {0}")]
    Jwks(#[from] sessiond::jose::foreign::JwksError),
}

impl From<reqwest::Error> for FetchError {
    fn from(e: reqwest::Error) -> Self {
        FetchError::Http(e.without_url())
    }
}

/// Follows at most three redirects, only to `https://` (a plain-HTTP hop would let anyone on the
/// path supply the keys); a loopback `http://` URL, allowed for development, may also redirect
/// to loopback `http://`.
fn redirect_policy() -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(|attempt| {
        let started_plain = attempt.previous().first().map(|u| u.scheme()) == Some("http");
        let safe = attempt.url().scheme() == "https"
            || (started_plain
                && attempt.url().scheme() == "http"
                && crate::config::is_loopback(attempt.url()));
        if attempt.previous().len() > 3 {
            attempt.error("more than 3 redirects")
        } else if safe {
            attempt.follow()
        } else {
            attempt.error("redirect to a URL that is not https:// refused")
        }
    })
}

impl RemoteIssuers {
    /// The URL-backed issuers of `config`, or `None` when there are none.
    ///
    /// # Errors
    /// When the HTTP client cannot be built (no TLS provider).
    pub(crate) fn new(
        service: SessionService,
        config: &Config,
    ) -> Result<Option<Self>, reqwest::Error> {
        let entries: HashMap<String, Entry> = config
            .issuers
            .iter()
            .filter_map(|i| {
                let JwksSource::Url(url) = &i.jwks else {
                    return None;
                };
                let shown = crate::config::redact_url(url);
                if !url.starts_with("https://") {
                    tracing::warn!(issuer = %i.issuer, url = %shown, "jwks_url is plain http:// to a loopback address: for development only");
                }
                let url = url.clone();
                Some((
                    i.issuer.clone(),
                    Entry {
                        config: i.clone(),
                        url,
                        shown,
                        last_kid_refetch: Mutex::new(None),
                        loaded: Mutex::new(false),
                    },
                ))
            })
            .collect();
        if entries.is_empty() {
            return Ok(None);
        }
        let client = reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            .connect_timeout(FETCH_TIMEOUT)
            .redirect(redirect_policy())
            .build()?;
        Ok(Some(RemoteIssuers {
            inner: Arc::new(Inner {
                client,
                service,
                leeway: config.token_sessions.leeway.0,
                entries,
            }),
        }))
    }

    /// Fetches every issuer's set once; a failure is logged (the issuer's tokens are refused
    /// until a fetch succeeds), never fatal.
    pub(crate) async fn fetch_all(&self) {
        for iss in self.inner.entries.keys() {
            self.fetch(iss).await;
        }
    }

    /// Keeps the sets fresh: every minute, fetches the sets not loaded yet, and every
    /// [`REFRESH_EVERY`] all of them. Runs until dropped (a background task of the server).
    pub(crate) async fn refresh_loop(self) {
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        tick.tick().await;
        let mut since_refresh = Duration::ZERO;
        loop {
            tick.tick().await;
            since_refresh += Duration::from_secs(60);
            let refresh_all = since_refresh >= REFRESH_EVERY;
            if refresh_all {
                since_refresh = Duration::ZERO;
            }
            for (iss, entry) in &self.inner.entries {
                let loaded = entry.loaded.lock().map(|g| *g).unwrap_or(false);
                if refresh_all || !loaded {
                    self.fetch(iss).await;
                }
            }
        }
    }

    /// Refetches `iss`'s set if it is URL-backed and was not fetched within the last minute.
    /// Returns whether a fetch succeeded (so the caller may retry once).
    pub(crate) async fn refetch_for_unknown_kid(&self, iss: &str) -> bool {
        let Some(entry) = self.inner.entries.get(iss) else {
            return false;
        };
        {
            let Ok(mut last) = entry.last_kid_refetch.lock() else {
                return false;
            };
            if last.is_some_and(|t| t.elapsed() < REFETCH_MIN_INTERVAL) {
                return false;
            }
            *last = Some(Instant::now());
        }
        self.fetch(iss).await
    }

    async fn fetch(&self, iss: &str) -> bool {
        let Some(entry) = self.inner.entries.get(iss) else {
            return false;
        };
        match self.load(entry).await {
            Ok(issuer) => {
                let keys = issuer.keys().len();
                log_skipped_keys(&issuer);
                self.inner.service.set_trusted_issuer(issuer);
                if let Ok(mut loaded) = entry.loaded.lock() {
                    *loaded = true;
                }
                tracing::info!(issuer = iss, url = %entry.shown, keys, "fetched JWK Set");
                true
            }
            Err(e) => {
                tracing::warn!(issuer = iss, url = %entry.shown, error = %e, "cannot fetch JWK Set; keeping the previous one");
                false
            }
        }
    }

    async fn load(&self, entry: &Entry) -> Result<TrustedIssuer, FetchError> {
        let mut response = self.inner.client.get(&entry.url).send().await?;
        if !response.status().is_success() {
            return Err(FetchError::Status(response.status().as_u16()));
        }
        if response
            .content_length()
            .is_some_and(|n| n > MAX_JWKS_BYTES as u64)
        {
            return Err(FetchError::TooLarge);
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await? {
            body.extend_from_slice(&chunk);
            if body.len() > MAX_JWKS_BYTES {
                return Err(FetchError::TooLarge);
            }
        }
        let text = String::from_utf8_lossy(&body);
        let mut options = JwksOptions::new();
        if let Some(alg) = entry.config.rsa_alg {
            options = options.rsa_algorithm(alg.algorithm());
        }
        Ok(TrustedIssuer::from_jwks_json_with(
            &entry.config.issuer,
            &entry.config.audience,
            &text,
            options,
        )?
        .with_leeway(self.inner.leeway))
    }
}

/// Logs every key of `issuer`'s set that was left out, and why (at start and on every fetch),
/// so a key the issuer signs with but sessiond cannot use is seen before its tokens are refused.
pub(crate) fn log_skipped_keys(issuer: &TrustedIssuer) {
    for key in issuer.skipped() {
        tracing::warn!(
            issuer = issuer.issuer(),
            index = key.index,
            kid = ?key.kid,
            reason = %key.reason,
            "issuer key skipped"
        );
    }
}

/// The `iss` of a token, read without verification (only to choose whose keys to refetch).
pub(crate) fn unverified_issuer(token: &str) -> Option<String> {
    let compact = sessiond::jose::parse_compact(token).ok()?;
    let claims: serde_json::Value = serde_json::from_slice(compact.payload()).ok()?;
    claims.get("iss")?.as_str().map(str::to_owned)
}
