//! Configuration: defaults < TOML file < `SESSIOND_*` environment < command-line flags.
//!
//! Every layer is merged as a TOML table and deserialized once, strictly: an unknown key or a bad
//! value is an error that names the key (`cookies.same_site: unknown variant ...`). Environment
//! variables map `SESSIOND_A__B=v` to key `a.b`; the value is read as a TOML literal when it is one
//! (`true`, `5`, `["https://app.example"]`) and as a string otherwise (`10s`, `127.0.0.1:9000`).
//! `SESSIOND_MASTER_KEY`, `SESSIOND_API_KEY` and `SESSIOND_LOG` are not configuration keys.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};
use sessiond::jose::foreign::RsaAlgorithm;
use sessiond::keys::{KeyAlgorithm, KeyPolicy};
use sessiond::session::{CookiePolicy, SessionPolicy};
use sessiond::store::postgres::{PgOptions, PgSchema};
use sessiond::store::sqlite::SqliteOptions;
use sessiond::token::TokenPolicy;
use toml::{Table, Value};

/// Environment variables with the `SESSIOND_` prefix that are not configuration keys.
pub const RESERVED_ENV: &[&str] = &["SESSIOND_MASTER_KEY", "SESSIOND_API_KEY", "SESSIOND_LOG"];

/// A configuration that could not be loaded. The message names the offending key; it never
/// contains a secret value.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The config file is not TOML.
    #[error("config file {path} is not valid TOML: {message}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// The parser's message (position and expectation, no values).
        message: String,
    },
    /// A key is unknown or its value is invalid.
    #[error("invalid configuration: {key}: {message}")]
    Invalid {
        /// The dotted key, e.g. `cookies.same_site`.
        key: String,
        /// What is wrong.
        message: String,
    },
}

/// The secrets of the environment, read once at start (`SESSIOND_MASTER_KEY`,
/// `SESSIOND_API_KEY`); nothing else reads them. `Debug` redacts them.
#[derive(Clone, Default)]
#[non_exhaustive]
pub struct Secrets {
    /// `SESSIOND_MASTER_KEY`: base64 of the 32-byte master key (else the key file).
    pub master_key: Option<sessiond::Secret<String>>,
    /// `SESSIOND_API_KEY`: a bootstrap API key for `/v1` (at least 32 characters).
    pub api_key: Option<sessiond::Secret<String>>,
}

impl fmt::Debug for Secrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redact = |s: &Option<sessiond::Secret<String>>| s.as_ref().map(|_| "[redacted]");
        f.debug_struct("Secrets")
            .field("master_key", &redact(&self.master_key))
            .field("api_key", &redact(&self.api_key))
            .finish()
    }
}

impl Secrets {
    /// These secrets with `key` as the master key (base64 of 32 bytes).
    pub fn with_master_key(mut self, key: sessiond::Secret<String>) -> Self {
        self.master_key = Some(key);
        self
    }

    /// These secrets with `key` as the bootstrap API key.
    pub fn with_api_key(mut self, key: sessiond::Secret<String>) -> Self {
        self.api_key = Some(key);
        self
    }

    /// Reads the secrets from the process environment.
    pub fn from_env() -> Self {
        let read = |name| std::env::var(name).ok().map(sessiond::Secret::new);
        Secrets {
            master_key: read("SESSIOND_MASTER_KEY"),
            api_key: read("SESSIOND_API_KEY"),
        }
    }
}

/// Query parameters whose values are shown in a redacted URL: connection settings known to hold
/// no secret (paths, modes, names, timeouts). Every other parameter's value is replaced, so a
/// secret is hidden however its key is spelled (`password`, `sslpassword`, `PassWord`,
/// `pass%77ord`, a driver option this list has never heard of).
const SHOWN_QUERY_KEYS: &[&str] = &[
    "application_name",
    "connect_timeout",
    "dbname",
    "host",
    "hostaddr",
    "mode",
    "port",
    "sslcert",
    "sslmode",
    "sslrootcert",
    "statement-cache-capacity",
    "target_session_attrs",
];

/// A URL without anything that may be a credential, for logs, errors and CLI output: the user
/// information (name and password) becomes `***`, every query value but those of
/// [`SHOWN_QUERY_KEYS`] becomes `***`, the fragment is dropped. A string that does not parse as
/// a URL keeps only its scheme.
pub(crate) fn redact_url(url: &str) -> String {
    let Ok(mut parsed) = reqwest::Url::parse(url) else {
        let scheme = url.split_once("://").map_or("", |(s, _)| s);
        let scheme: String = scheme
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
            .collect();
        return format!("{scheme}://(unparseable URL, not shown)");
    };
    if !parsed.username().is_empty() || parsed.password().is_some() {
        // Both fail only for URLs that cannot have credentials, which then have none to hide.
        let _ = parsed.set_password(None);
        let _ = parsed.set_username("***");
    }
    if parsed.query().is_some() {
        let pairs: Vec<(String, String)> = parsed
            .query_pairs()
            .map(|(k, v)| {
                let shown = SHOWN_QUERY_KEYS.contains(&k.to_ascii_lowercase().as_str());
                let value = if shown {
                    v.into_owned()
                } else {
                    "***".to_owned()
                };
                (k.into_owned(), value)
            })
            .collect();
        parsed.query_pairs_mut().clear().extend_pairs(pairs);
    }
    parsed.set_fragment(None);
    parsed.into()
}

fn invalid(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_owned(),
        message: message.into(),
    }
}

/// A duration written human-readably: `90s`, `10m`, `8h`, `30d`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Dur(pub Duration);

impl fmt::Debug for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(text.trim())
            .map(Dur)
            .map_err(|e| {
                serde::de::Error::custom(format!("not a duration like 90s, 10m, 8h or 30d ({e})"))
            })
    }
}

fn secs(n: u64) -> Dur {
    Dur(Duration::from_secs(n))
}

/// The whole configuration (docs/DESIGN.md §10.2, defaults §10.3), parsed: every value is valid and every choice made
/// (which database, which client-certificate mode, which origins), so nothing downstream
/// re-checks or re-decides. Built by [`Config::load`]; every key is optional there.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Config {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Directory for the SQLite database and the master-key file.
    pub data_dir: PathBuf,
    /// The database (`database_url`, `database_schema`; default: SQLite in the data directory).
    pub database: Database,
    /// How long a request waits for a database connection (including opening one) before it is
    /// answered 503 `unavailable` (default: the store's, 5 s). During a database outage this is
    /// how long each request takes to fail.
    pub database_acquire_timeout: Dur,
    /// PostgreSQL: the most connections a node's pool opens (default 16). A node also opens
    /// one connection that listens for row-cache invalidations and, without Redis, one for
    /// events and up to two to publish them; size the server's `max_connections` for every
    /// node and admin command.
    pub database_max_connections: u32,
    /// Redis for one-time claims and cross-node events (optional).
    pub redis_url: Option<RedisUrl>,
    /// Cookie-session lifetimes.
    pub cookie_sessions: CookieSessions,
    /// Token-session lifetimes and names.
    pub token_sessions: TokenSessions,
    /// Limits and bindings.
    pub sessions: Sessions,
    /// Cookie attributes and browser origins.
    pub cookies: Cookies,
    /// The browser routes' own settings (the login handoff).
    pub browser: Browser,
    /// The in-process caches' limits.
    pub caches: Caches,
    /// Signing keys.
    pub keys: Keys,
    /// Garbage collection.
    pub gc: Gc,
    /// Trusted foreign issuers for one-time claims.
    pub issuers: Vec<Issuer>,
    /// Server-Sent Event streams.
    pub events: Events,
    /// HTTPS, optionally with client certificates (absent: plain HTTP).
    pub tls: Option<Tls>,
    /// Connection timeouts and caps.
    pub server: ServerLimits,
}

/// The configuration as written: what the layers deserialize into, before [`Config::parse`]
/// makes the cross-key choices.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawConfig {
    listen: SocketAddr,
    data_dir: PathBuf,
    database_url: Option<String>,
    database_schema: Option<String>,
    database_acquire_timeout: Dur,
    database_max_connections: u32,
    redis_url: Option<RedisUrl>,
    cookie_sessions: CookieSessions,
    token_sessions: TokenSessions,
    sessions: Sessions,
    cookies: Cookies,
    browser: Browser,
    caches: Caches,
    keys: Keys,
    gc: Gc,
    issuers: Vec<RawIssuer>,
    events: Events,
    tls: Option<RawTls>,
    server: ServerLimits,
}

impl Default for RawConfig {
    fn default() -> Self {
        RawConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from("./sessiond-data"),
            database_url: None,
            database_schema: None,
            database_acquire_timeout: Dur(SqliteOptions::default().acquire_timeout),
            database_max_connections: PgOptions::default().max_connections,
            redis_url: None,
            cookie_sessions: CookieSessions::default(),
            token_sessions: TokenSessions::default(),
            sessions: Sessions::default(),
            cookies: Cookies::default(),
            browser: Browser::default(),
            caches: Caches::default(),
            keys: Keys::default(),
            gc: Gc::default(),
            issuers: Vec::new(),
            events: Events::default(),
            tls: None,
            server: ServerLimits::default(),
        }
    }
}

/// The database, chosen once at load. `Debug` shows the URL redacted.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Database {
    /// SQLite (`sqlite:…`).
    Sqlite {
        /// The URL.
        url: String,
        /// The default database in the data directory: the directory is created first.
        in_data_dir: bool,
    },
    /// PostgreSQL (`postgres://…` or `postgresql://…`).
    Postgres {
        /// The URL (may carry a password: log [`Database::redacted`]).
        url: String,
        /// The schema for sessiond's tables (default: the connection's search path).
        schema: Option<PgSchema>,
    },
}

impl Database {
    fn parse(
        url: Option<&str>,
        schema: Option<&str>,
        data_dir: &Path,
    ) -> Result<Self, ConfigError> {
        let schema = schema
            .map(|s| {
                PgSchema::new(s).map_err(|_| {
                    invalid(
                        "database_schema",
                        "must match [a-z_][a-z0-9_]{0,62} and not start with pg_",
                    )
                })
            })
            .transpose()?;
        match url {
            None => Ok(Database::Sqlite {
                url: format!("sqlite://{}", data_dir.join("sessiond.db").display()),
                in_data_dir: true,
            }),
            Some(url) if url.starts_with("sqlite:") => Ok(Database::Sqlite {
                url: url.to_owned(),
                in_data_dir: false,
            }),
            Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                check_postgres_parameters(url)?;
                Ok(Database::Postgres {
                    url: url.to_owned(),
                    schema,
                })
            }
            Some(_) => Err(invalid(
                "database_url",
                "must start with sqlite:// or postgres://",
            )),
        }
    }

    /// The URL.
    pub fn url(&self) -> &str {
        match self {
            Database::Sqlite { url, .. } | Database::Postgres { url, .. } => url,
        }
    }

    /// The URL without credentials, for logs and messages.
    pub fn redacted(&self) -> String {
        redact_url(self.url())
    }
}

/// The connection parameters the PostgreSQL driver (sqlx 0.8) applies. It ignores any other with
/// a warning that prints the value, and a misspelt `password` is a secret; so another parameter
/// is refused here, before anything is logged, without naming it or its value.
const POSTGRES_PARAMETERS: &[&str] = &[
    "sslmode",
    "ssl-mode",
    "sslrootcert",
    "ssl-root-cert",
    "ssl-ca",
    "sslcert",
    "ssl-cert",
    "sslkey",
    "ssl-key",
    "statement-cache-capacity",
    "host",
    "hostaddr",
    "port",
    "dbname",
    "user",
    "password",
    "application_name",
    "options",
];

fn check_postgres_parameters(url: &str) -> Result<(), ConfigError> {
    let parsed = reqwest::Url::parse(url)
        .map_err(|_| invalid("database_url", "is not a valid URL (not shown)"))?;
    let known = |k: &str| POSTGRES_PARAMETERS.contains(&k) || k.starts_with("options[");
    if parsed.query_pairs().all(|(k, _)| known(&k)) {
        Ok(())
    } else {
        Err(invalid(
            "database_url",
            format!(
                "has a connection parameter the PostgreSQL driver does not know (not shown); \
                 known: {}",
                POSTGRES_PARAMETERS.join(", ")
            ),
        ))
    }
}

impl fmt::Debug for Database {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Database::Sqlite { in_data_dir, .. } => f
                .debug_struct("Sqlite")
                .field("url", &self.redacted())
                .field("in_data_dir", in_data_dir)
                .finish(),
            Database::Postgres { schema, .. } => f
                .debug_struct("Postgres")
                .field("url", &self.redacted())
                .field("schema", schema)
                .finish(),
        }
    }
}

/// A `redis://` or `rediss://` URL.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisUrl(String);

impl RedisUrl {
    /// The URL (may carry a password: log [`RedisUrl::redacted`]).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The URL without credentials.
    pub fn redacted(&self) -> String {
        redact_url(&self.0)
    }
}

impl fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl<'de> Deserialize<'de> for RedisUrl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let url = String::deserialize(d)?;
        if url.starts_with("redis://") || url.starts_with("rediss://") {
            Ok(RedisUrl(url))
        } else {
            Err(serde::de::Error::custom(
                "must start with redis:// or rediss://",
            ))
        }
    }
}

/// `[cookie_sessions]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct CookieSessions {
    /// Inactivity that ends a cookie session.
    pub idle_ttl: Dur,
    /// Lifetime however active.
    pub absolute_ttl: Dur,
    /// Least time between two activity writes.
    pub touch_interval: Dur,
}

impl Default for CookieSessions {
    /// The library's [`CookiePolicy`] defaults.
    fn default() -> Self {
        let p = CookiePolicy::default();
        CookieSessions {
            idle_ttl: Dur(p.idle_ttl),
            absolute_ttl: Dur(p.absolute_ttl),
            touch_interval: Dur(p.touch_interval),
        }
    }
}

/// `[token_sessions]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct TokenSessions {
    /// Access-token lifetime.
    pub access_ttl: Dur,
    /// Inactivity (no refresh) that ends a token session.
    pub refresh_idle_ttl: Dur,
    /// Lifetime of a token session however often it refreshes.
    pub refresh_absolute_ttl: Dur,
    /// How long a just-rotated refresh token still yields the current pair.
    pub refresh_grace: Dur,
    /// How long after a rotation the predecessor of a pair that was never used (a lost
    /// response) gets a fresh successor instead of revoking the session; `0s` is strict.
    pub refresh_lost_response_window: Dur,
    /// `EdDSA` (default) or `HS256`.
    pub access_alg: AccessAlg,
    /// With `access_alg = "HS256"`: a shared secret (at least 32 bytes) for resource servers
    /// that verify tokens themselves. Without it, sessiond generates the key.
    pub hs256_secret: Option<Hs256Secret>,
    /// `iss` of our tokens.
    pub issuer: String,
    /// `aud` of access tokens.
    pub audience: String,
    /// Clock skew tolerated on `exp`/`nbf`.
    pub leeway: Dur,
}

impl Default for TokenSessions {
    /// The library's [`TokenPolicy`] and [`KeyPolicy`] defaults.
    fn default() -> Self {
        let p = TokenPolicy::default();
        TokenSessions {
            access_ttl: Dur(p.access_ttl),
            refresh_idle_ttl: Dur(p.refresh_idle_ttl),
            refresh_absolute_ttl: Dur(p.refresh_absolute_ttl),
            refresh_grace: Dur(p.refresh_grace),
            refresh_lost_response_window: Dur(p.lost_response_window),
            access_alg: AccessAlg::from_key_algorithm(KeyPolicy::default().access_algorithm),
            hs256_secret: None,
            issuer: p.issuer,
            audience: p.access_audience,
            leeway: Dur(p.leeway),
        }
    }
}

/// A shared HS256 secret of at least 32 bytes: redacted in `Debug`, never echoed in an error.
#[derive(Clone)]
pub struct Hs256Secret(sessiond::Secret<String>);

impl Hs256Secret {
    /// The secret's bytes (key material: never log them).
    pub fn expose(&self) -> &str {
        self.0.expose()
    }
}

impl fmt::Debug for Hs256Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl<'de> Deserialize<'de> for Hs256Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let secret = sessiond::Secret::new(String::deserialize(d)?);
        let len = secret.expose().len();
        if len < 32 {
            return Err(serde::de::Error::custom(format!(
                "must be at least 32 bytes, got {len}"
            )));
        }
        Ok(Hs256Secret(secret))
    }
}

/// Access-token algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub enum AccessAlg {
    /// Ed25519 (default; published in the JWKS).
    #[serde(rename = "EdDSA")]
    EdDsa,
    /// HMAC-SHA256 (never published).
    #[serde(rename = "HS256")]
    Hs256,
}

impl AccessAlg {
    /// The library's algorithm.
    pub fn key_algorithm(self) -> KeyAlgorithm {
        match self {
            AccessAlg::EdDsa => KeyAlgorithm::EdDsa,
            AccessAlg::Hs256 => KeyAlgorithm::Hs256,
        }
    }

    fn from_key_algorithm(alg: KeyAlgorithm) -> Self {
        match alg {
            KeyAlgorithm::Hs256 => AccessAlg::Hs256,
            _ => AccessAlg::EdDsa,
        }
    }
}

/// `[sessions]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct Sessions {
    /// Most active sessions per user and tenant (0: no limit).
    pub max_per_user: u32,
    /// Require the creating IP on validation.
    pub bind_ip: bool,
    /// Require the creating User-Agent on validation.
    pub bind_user_agent: bool,
    /// Reverse proxies in front of the browser routes: addresses or CIDR ranges. On
    /// `/auth/browser/*` the client IP (checked by `bind_ip`) is the connection's peer address,
    /// unless the peer is one of these: then it is the right-most address of `X-Forwarded-For`
    /// that is not.
    pub trusted_proxies: Vec<TrustedProxy>,
}

impl Default for Sessions {
    /// The library's [`SessionPolicy`] defaults; no trusted proxies.
    fn default() -> Self {
        let p = SessionPolicy::default();
        Sessions {
            max_per_user: p.max_per_user,
            bind_ip: p.bind_ip,
            bind_user_agent: p.bind_user_agent,
            trusted_proxies: Vec::new(),
        }
    }
}

/// One entry of `sessions.trusted_proxies`: an address (`10.0.0.1`) or a CIDR range
/// (`10.0.0.0/8`, `fd00::/8`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrustedProxy(ipnet::IpNet);

impl TrustedProxy {
    /// Whether `ip` (in canonical form: an IPv4-mapped IPv6 address as IPv4) is in this entry.
    pub fn contains(&self, ip: std::net::IpAddr) -> bool {
        self.0.contains(&ip)
    }
}

impl std::str::FromStr for TrustedProxy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Ok(ip) = s.parse::<std::net::IpAddr>() {
            return Ok(TrustedProxy(ipnet::IpNet::from(ip.to_canonical())));
        }
        match s.parse::<ipnet::IpNet>() {
            Ok(net) => Ok(TrustedProxy(net.trunc())),
            Err(_) => Err(format!(
                "expected an IP address or a CIDR range like 10.0.0.0/8, got {s:?}"
            )),
        }
    }
}

impl<'de> Deserialize<'de> for TrustedProxy {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

pub use sessiond::cookie::{CookieName, SameSite};

/// `[cookies]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct Cookies {
    /// `Secure` and the `__Host-` prefix; `false` only for plain-http development.
    pub secure: bool,
    /// `SameSite` of the session cookie (the refresh cookie is always `Strict`).
    pub same_site: SameSite,
    /// Origins accepted by `/auth/browser/*` (and given CORS headers there).
    pub allowed_origins: Vec<Origin>,
    /// The cookies' base name (default `sessiond`): `__Host-<name>`, `-refresh`, `-csrf`.
    #[serde(deserialize_with = "cookie_name")]
    pub name: CookieName,
    /// What `POST /auth/browser/logout` asks the browser to clear besides sessiond's cookies
    /// (`Clear-Site-Data`): none by default, since it acts on the whole origin (every cookie of
    /// the host, or the application's own storage).
    pub clear_site_data: Vec<ClearSiteData>,
}

impl Default for Cookies {
    fn default() -> Self {
        Cookies {
            secure: true,
            same_site: SameSite::Lax,
            allowed_origins: Vec::new(),
            name: CookieName::default(),
            clear_site_data: Vec::new(),
        }
    }
}

/// A `Clear-Site-Data` directive (`cookies.clear_site_data`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum ClearSiteData {
    /// `"cookies"`: every cookie of the registrable domain, the application's too.
    Cookies,
    /// `"storage"`: the origin's localStorage, IndexedDB, service workers.
    Storage,
    /// `"cache"`: the origin's HTTP cache.
    Cache,
}

impl ClearSiteData {
    /// The quoted directive as the header carries it.
    pub fn directive(self) -> &'static str {
        match self {
            ClearSiteData::Cookies => "\"cookies\"",
            ClearSiteData::Storage => "\"storage\"",
            ClearSiteData::Cache => "\"cache\"",
        }
    }
}

fn cookie_name<'de, D: Deserializer<'de>>(d: D) -> Result<CookieName, D::Error> {
    let text = String::deserialize(d)?;
    CookieName::parse(&text).map_err(serde::de::Error::custom)
}

/// A web origin, `scheme://host[:port]` with an `http` or `https` scheme: no path, query,
/// fragment or user info. Scheme and host are kept in lowercase; two origins are equal when
/// scheme, host and port are (an `Origin` header is parsed the same way and compared exactly).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    scheme: &'static str,
    host: String,
    port: Option<u16>,
}

impl Origin {
    /// The origin as a browser writes it.
    pub fn serialize(&self) -> String {
        match self.port {
            Some(port) => format!("{}://{}:{port}", self.scheme, self.host),
            None => format!("{}://{}", self.scheme, self.host),
        }
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.serialize())
    }
}

impl std::str::FromStr for Origin {
    type Err = &'static str;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        const WANTED: &str =
            "must be an origin like https://app.example (scheme and host, no path)";
        let (scheme, rest) = s.split_once("://").ok_or(WANTED)?;
        let scheme = match scheme.to_ascii_lowercase().as_str() {
            "https" => "https",
            "http" => "http",
            _ => return Err(WANTED),
        };
        if rest.is_empty() || rest.contains(['/', '?', '#', '@', '\\']) {
            return Err(WANTED);
        }
        let (host, port) = match rest.rsplit_once(':') {
            // An IPv6 literal without a port: `[::1]`.
            Some((_, tail)) if rest.starts_with('[') && tail.ends_with(']') => (rest, None),
            Some((host, port)) => {
                let port = port
                    .parse::<u16>()
                    .ok()
                    .filter(|p| *p != 0 && port.bytes().all(|b| b.is_ascii_digit()))
                    .ok_or(WANTED)?;
                (host, Some(port))
            }
            None => (rest, None),
        };
        let host_ok = !host.is_empty()
            && host.bytes().all(|b| {
                b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'[' | b']' | b':')
            });
        if !host_ok {
            return Err(WANTED);
        }
        Ok(Origin {
            scheme,
            host: host.to_ascii_lowercase(),
            port,
        })
    }
}

impl<'de> Deserialize<'de> for Origin {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// `[keys]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct Keys {
    /// How long a retired key still verifies.
    pub retention: Dur,
}

impl Default for Keys {
    /// The library's [`KeyPolicy`] defaults.
    fn default() -> Self {
        Keys {
            retention: Dur(KeyPolicy::default().retention),
        }
    }
}

/// `[gc]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct Gc {
    /// Sweep interval.
    pub interval: Dur,
}

impl Default for Gc {
    fn default() -> Self {
        Gc {
            interval: secs(3600),
        }
    }
}

/// `[browser]`: the browser routes' own settings (docs/DESIGN.md §9.4).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct Browser {
    /// How long a login code of the handoff (`POST /v1/browser/login-codes`) may be exchanged
    /// at `POST /auth/browser/login`; greater than zero.
    pub login_code_ttl: Dur,
}

impl Default for Browser {
    fn default() -> Self {
        Browser {
            login_code_ttl: secs(30),
        }
    }
}

/// `[caches]`: the in-process caches (docs/DESIGN.md §15.1, §15.4).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct Caches {
    /// `[caches.verified_tokens]`: access tokens whose signature and claims were verified.
    pub verified_tokens: CacheSize,
    /// `[caches.session_rows]`: session rows, coherent with every writer (SQLite: §15.4;
    /// PostgreSQL, across nodes, under a lease: §15.5).
    pub session_rows: SessionRows,
}

/// `[caches.session_rows]`: the limits of the session-row cache and, on PostgreSQL, the lease
/// a node holds on the invalidation channel while it answers from it.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct SessionRows {
    /// The most rows kept.
    pub entries: Option<usize>,
    /// The most bytes kept (an estimate of the rows' size).
    pub bytes: Option<usize>,
    /// PostgreSQL: how long a heartbeat that came back lets a node answer from its cache, and
    /// the longest a write waits for a node that stopped answering (default 2 s).
    pub lease: Dur,
    /// PostgreSQL: what a writer adds to another node's lease for clock rates and scheduling
    /// (default 250 ms).
    pub lease_drift: Dur,
}

impl Default for SessionRows {
    fn default() -> Self {
        let lease = sessiond::store::postgres::LeaseOptions::default();
        SessionRows {
            entries: None,
            bytes: None,
            lease: Dur(lease.lease),
            lease_drift: Dur(lease.drift),
        }
    }
}

impl SessionRows {
    /// As the library's limits, `default`'s where left out.
    pub fn limits(self, default: sessiond::cache::CacheLimits) -> sessiond::cache::CacheLimits {
        CacheSize {
            entries: self.entries,
            bytes: self.bytes,
        }
        .limits(default)
    }

    /// As the PostgreSQL store's lease options.
    pub fn lease(self) -> sessiond::store::postgres::LeaseOptions {
        let mut lease = sessiond::store::postgres::LeaseOptions::default();
        lease.lease = self.lease.0;
        lease.drift = self.lease_drift.0;
        lease
    }
}

/// The limits of one cache; `entries = 0` (or `bytes = 0`) turns it off. A limit left out
/// keeps that cache's default.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct CacheSize {
    /// The most entries kept.
    pub entries: Option<usize>,
    /// The most bytes kept (an estimate of the values' size).
    pub bytes: Option<usize>,
}

impl CacheSize {
    /// As the library's limits, `default`'s where left out.
    pub fn limits(self, default: sessiond::cache::CacheLimits) -> sessiond::cache::CacheLimits {
        sessiond::cache::CacheLimits::new(
            self.entries.unwrap_or(default.entries),
            self.bytes.unwrap_or(default.bytes),
        )
    }
}

/// `[events]`: the Server-Sent Event streams.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct Events {
    /// Interval of the `: keep-alive` comment on idle streams.
    pub keep_alive: Dur,
    /// Most streams open at once per API key (0: no limit); more is 429 `too_many_streams`.
    pub max_streams_per_key: u32,
    /// Recent events kept in memory for `Last-Event-ID` resume of `GET /v1/events`.
    pub replay_buffer: usize,
}

impl Default for Events {
    fn default() -> Self {
        Events {
            keep_alive: secs(15),
            max_streams_per_key: 100,
            replay_buffer: 1024,
        }
    }
}

/// `[server]`: what a connection may hold (docs/DESIGN.md §9.8). Every timeout is positive and
/// `max_connections` at least 1.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct ServerLimits {
    /// How long a request head may take to arrive: from its first byte, or for a connection's
    /// first request from the accept (the TLS handshake included). Later, the connection is
    /// closed.
    pub header_read_timeout: Dur,
    /// How long a request body may take to arrive after its head. Later, the request is
    /// answered 408 `request_timeout` and the connection closed.
    pub body_read_timeout: Dur,
    /// How long a kept-alive connection may wait idle for its next request.
    pub keep_alive_timeout: Dur,
    /// Most connections open at once (lowered at start to fit the open-files limit). At the
    /// cap, the connection waiting longest for a request is closed to admit a new one.
    pub max_connections: u32,
    /// Most connections open at once from one address (IPv6: one /64); 0: no limit. Peers in
    /// `sessions.trusted_proxies` are exempt.
    pub max_connections_per_peer: u32,
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            header_read_timeout: secs(10),
            body_read_timeout: secs(30),
            // Longer than the 60 s idle timeout of common proxies and load balancers, so they
            // close an idle connection first and never reuse one being closed here.
            keep_alive_timeout: secs(75),
            max_connections: 10_000,
            max_connections_per_peer: 256,
        }
    }
}

/// `[[issuers]]`: a trusted foreign issuer.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Issuer {
    /// Its `iss`.
    pub issuer: String,
    /// The `aud` its tokens must carry for us.
    pub audience: String,
    /// Where its JWK Set comes from.
    pub jwks: JwksSource,
    /// The algorithm of RSA keys published without `alg`.
    pub rsa_alg: Option<RsaAlg>,
}

/// Where a trusted issuer's JWK Set comes from: exactly one of `jwks_file` and `jwks_url`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum JwksSource {
    /// A file (relative paths: to the config file's directory).
    File(PathBuf),
    /// An `https://` URL (`http://` only to a loopback address), fetched with a timeout,
    /// cached, refetched on an unknown `kid` at most once per minute; never followed to a
    /// plain-HTTP redirect.
    Url(String),
}

/// Whether `url` may serve an issuer's keys: `https://`, or `http://` to a loopback address
/// (`localhost`, 127.0.0.0/8, `::1`) for development. Anyone on the path of a plain-HTTP fetch
/// could supply the keys, and so forge every token of the issuer.
fn jwks_url_allowed(url: &str) -> bool {
    match reqwest::Url::parse(url) {
        Ok(u) if u.scheme() == "https" => u.host().is_some(),
        Ok(u) if u.scheme() == "http" => is_loopback(&u),
        _ => false,
    }
}

/// Whether `url`'s host is a loopback address or `localhost`.
pub(crate) fn is_loopback(url: &reqwest::Url) -> bool {
    url.host_str().is_some_and(|h| {
        h.eq_ignore_ascii_case("localhost")
            || h.trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<std::net::IpAddr>()
                .is_ok_and(|a| a.is_loopback())
    })
}

/// `rsa_alg` of an issuer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub enum RsaAlg {
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    #[serde(rename = "RS256")]
    Rs256,
    /// RSASSA-PSS with SHA-256.
    #[serde(rename = "PS256")]
    Ps256,
}

impl RsaAlg {
    /// The library's algorithm.
    pub fn algorithm(self) -> RsaAlgorithm {
        match self {
            RsaAlg::Rs256 => RsaAlgorithm::Rs256,
            RsaAlg::Ps256 => RsaAlgorithm::Ps256,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIssuer {
    issuer: String,
    audience: String,
    jwks_file: Option<PathBuf>,
    jwks_url: Option<String>,
    rsa_alg: Option<RsaAlg>,
}

/// `[tls]`: serve HTTPS; with `client_ca_file`, verify client certificates (mTLS) and bound
/// each connection by its certificate's `notAfter`. Relative paths: to the config file's
/// directory.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Tls {
    /// The server's certificate chain (PEM, leaf first).
    pub cert_file: PathBuf,
    /// The server's private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// Whether and how client certificates are asked for.
    pub client_certs: ClientCerts,
}

/// The client-certificate mode (`client_ca_file`, `require_client_cert`).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClientCerts {
    /// None asked for (no `client_ca_file`).
    None,
    /// A client may connect without one; one it presents must chain to `ca_file`.
    Optional {
        /// CA certificates (PEM) that client certificates must chain to.
        ca_file: PathBuf,
    },
    /// Every client must present one chaining to `ca_file` (`require_client_cert = true`).
    Required {
        /// CA certificates (PEM) that client certificates must chain to.
        ca_file: PathBuf,
    },
}

impl ClientCerts {
    /// The CA file, when client certificates are verified.
    pub fn ca_file(&self) -> Option<&Path> {
        match self {
            ClientCerts::None => None,
            ClientCerts::Optional { ca_file } | ClientCerts::Required { ca_file } => Some(ca_file),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    cert_file: PathBuf,
    key_file: PathBuf,
    #[serde(default)]
    client_ca_file: Option<PathBuf>,
    #[serde(default)]
    require_client_cert: bool,
}

/// Command-line overrides (the highest layer).
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--listen`.
    pub listen: Option<String>,
    /// `--data-dir`.
    pub data_dir: Option<PathBuf>,
    /// `--database-url`.
    pub database_url: Option<String>,
    /// `--redis-url`.
    pub redis_url: Option<String>,
}

fn merge(into: &mut Table, from: Table) {
    for (k, v) in from {
        match (into.get_mut(&k), v) {
            (Some(Value::Table(a)), Value::Table(b)) => merge(a, b),
            (_, v) => {
                into.insert(k, v);
            }
        }
    }
}

fn env_value(raw: &str) -> Value {
    match toml::from_str::<Table>(&format!("v = {raw}")) {
        Ok(mut t) => t
            .remove("v")
            .unwrap_or_else(|| Value::String(raw.to_owned())),
        Err(_) => Value::String(raw.to_owned()),
    }
}

fn env_layer(vars: impl Iterator<Item = (String, String)>) -> Result<Table, ConfigError> {
    let mut root = Table::new();
    for (name, raw) in vars {
        let Some(rest) = name.strip_prefix("SESSIOND_") else {
            continue;
        };
        if RESERVED_ENV.contains(&name.as_str()) {
            continue;
        }
        let path: Vec<String> = rest.split("__").map(str::to_ascii_lowercase).collect();
        if path.iter().any(String::is_empty) {
            return Err(invalid(&name, "malformed variable name"));
        }
        let Some((leaf, parents)) = path.split_last() else {
            continue;
        };
        let mut table = &mut root;
        for p in parents {
            let entry = table
                .entry(p.clone())
                .or_insert_with(|| Value::Table(Table::new()));
            table = match entry {
                Value::Table(t) => t,
                _ => return Err(invalid(&name, "conflicts with another variable")),
            };
        }
        table.insert(leaf.clone(), env_value(&raw));
    }
    Ok(root)
}

impl Config {
    /// Loads the configuration from `file` (optional), the process environment and `overrides`.
    ///
    /// # Errors
    /// [`ConfigError`] naming the file or key at fault.
    pub fn load(file: Option<&Path>, overrides: &Overrides) -> Result<Config, ConfigError> {
        Self::load_from(file, std::env::vars(), overrides)
    }

    /// As [`Config::load`] with an explicit environment (for tests).
    ///
    /// # Errors
    /// [`ConfigError`].
    pub fn load_from(
        file: Option<&Path>,
        env: impl Iterator<Item = (String, String)>,
        overrides: &Overrides,
    ) -> Result<Config, ConfigError> {
        let text = file
            .map(|path| {
                std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_owned(),
                    source,
                })
            })
            .transpose()?;
        Self::load_layers(file.zip(text.as_deref()), env, overrides)
    }

    /// As [`Config::load_from`] with the file's text given instead of its path (relative paths
    /// in it are relative to the working directory). The fuzz target of the loader uses this.
    ///
    /// # Errors
    /// [`ConfigError`].
    pub fn load_str(
        text: &str,
        env: impl Iterator<Item = (String, String)>,
        overrides: &Overrides,
    ) -> Result<Config, ConfigError> {
        Self::load_layers(Some((Path::new("(text)"), text)), env, overrides)
    }

    /// The layers merged and parsed: the file (its path, for messages and relative paths, and
    /// its text), then the environment, then `overrides`.
    fn load_layers(
        file: Option<(&Path, &str)>,
        env: impl Iterator<Item = (String, String)>,
        overrides: &Overrides,
    ) -> Result<Config, ConfigError> {
        let mut table = Table::new();
        if let Some((path, text)) = file {
            let parsed: Table = toml::from_str(text).map_err(|e| ConfigError::Syntax {
                path: path.to_owned(),
                message: e.message().to_owned(),
            })?;
            merge(&mut table, parsed);
        }
        merge(&mut table, env_layer(env)?);
        let mut flags = Table::new();
        if let Some(v) = &overrides.listen {
            flags.insert("listen".into(), Value::String(v.clone()));
        }
        if let Some(v) = &overrides.data_dir {
            flags.insert(
                "data_dir".into(),
                Value::String(v.to_string_lossy().into_owned()),
            );
        }
        if let Some(v) = &overrides.database_url {
            flags.insert("database_url".into(), Value::String(v.clone()));
        }
        if let Some(v) = &overrides.redis_url {
            flags.insert("redis_url".into(), Value::String(v.clone()));
        }
        merge(&mut table, flags);

        let raw: RawConfig =
            serde_path_to_error::deserialize(Value::Table(table)).map_err(|e| {
                let key = e.path().to_string();
                let key = if key == "." {
                    String::from("(top level)")
                } else {
                    key
                };
                invalid(&key, e.into_inner().to_string())
            })?;
        Config::parse(raw, file.and_then(|(path, _)| path.parent()))
    }

    /// Makes the choices that span keys, refusing the combinations that make no sense;
    /// relative paths become relative to `dir` (the config file's directory).
    fn parse(raw: RawConfig, dir: Option<&Path>) -> Result<Config, ConfigError> {
        let resolve = |p: PathBuf| match dir {
            Some(dir) if p.is_relative() => dir.join(p),
            _ => p,
        };
        let tls = raw
            .tls
            .map(|tls| {
                let client_certs = match (tls.client_ca_file, tls.require_client_cert) {
                    (None, false) => ClientCerts::None,
                    (None, true) => return Err(invalid(
                        "tls.require_client_cert",
                        "needs tls.client_ca_file (the CA that client certificates must chain to)",
                    )),
                    (Some(ca), false) => ClientCerts::Optional {
                        ca_file: resolve(ca),
                    },
                    (Some(ca), true) => ClientCerts::Required {
                        ca_file: resolve(ca),
                    },
                };
                Ok(Tls {
                    cert_file: resolve(tls.cert_file),
                    key_file: resolve(tls.key_file),
                    client_certs,
                })
            })
            .transpose()?;
        if raw.cookies.same_site == SameSite::None && !raw.cookies.secure {
            return Err(invalid(
                "cookies.same_site",
                "\"None\" requires cookies.secure = true (browsers reject SameSite=None without Secure)",
            ));
        }
        if raw.token_sessions.hs256_secret.is_some()
            && raw.token_sessions.access_alg != AccessAlg::Hs256
        {
            return Err(invalid(
                "token_sessions.hs256_secret",
                "only used with access_alg = \"HS256\"",
            ));
        }
        let positive = [
            ("cookie_sessions.idle_ttl", raw.cookie_sessions.idle_ttl),
            (
                "cookie_sessions.absolute_ttl",
                raw.cookie_sessions.absolute_ttl,
            ),
            ("token_sessions.access_ttl", raw.token_sessions.access_ttl),
            (
                "token_sessions.refresh_idle_ttl",
                raw.token_sessions.refresh_idle_ttl,
            ),
            (
                "token_sessions.refresh_absolute_ttl",
                raw.token_sessions.refresh_absolute_ttl,
            ),
            ("gc.interval", raw.gc.interval),
            ("browser.login_code_ttl", raw.browser.login_code_ttl),
            ("database_acquire_timeout", raw.database_acquire_timeout),
            ("server.header_read_timeout", raw.server.header_read_timeout),
            ("server.body_read_timeout", raw.server.body_read_timeout),
            ("server.keep_alive_timeout", raw.server.keep_alive_timeout),
            ("caches.session_rows.lease", raw.caches.session_rows.lease),
        ];
        for (key, d) in positive {
            if d.0.is_zero() {
                return Err(invalid(key, "must be greater than zero"));
            }
        }
        if raw.database_max_connections == 0 {
            return Err(invalid("database_max_connections", "must be at least 1"));
        }
        if raw.server.max_connections == 0 {
            return Err(invalid("server.max_connections", "must be at least 1"));
        }
        let issuers = raw
            .issuers
            .into_iter()
            .enumerate()
            .map(|(i, issuer)| {
                let key = format!("issuers[{i}]");
                let jwks = match (issuer.jwks_file, issuer.jwks_url) {
                    (Some(path), None) => JwksSource::File(resolve(path)),
                    (None, Some(url)) if jwks_url_allowed(&url) => JwksSource::Url(url),
                    (None, Some(_)) => {
                        return Err(invalid(
                            &format!("{key}.jwks_url"),
                            "must be an https:// URL (http:// only to a loopback address, for \
                             development)",
                        ))
                    }
                    _ => return Err(invalid(&key, "give exactly one of jwks_file and jwks_url")),
                };
                Ok(Issuer {
                    issuer: issuer.issuer,
                    audience: issuer.audience,
                    jwks,
                    rsa_alg: issuer.rsa_alg,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let database = Database::parse(
            raw.database_url.as_deref(),
            raw.database_schema.as_deref(),
            &raw.data_dir,
        )?;
        Ok(Config {
            listen: raw.listen,
            data_dir: raw.data_dir,
            database,
            database_acquire_timeout: raw.database_acquire_timeout,
            database_max_connections: raw.database_max_connections,
            redis_url: raw.redis_url,
            cookie_sessions: raw.cookie_sessions,
            token_sessions: raw.token_sessions,
            sessions: raw.sessions,
            cookies: raw.cookies,
            browser: raw.browser,
            caches: raw.caches,
            keys: raw.keys,
            gc: raw.gc,
            issuers,
            events: raw.events,
            tls,
            server: raw.server,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(toml_text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sessiond.toml");
        std::fs::write(&path, toml_text).unwrap();
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        Config::load_from(Some(&path), env, &Overrides::default())
    }

    #[test]
    fn tls_paths_are_relative_to_the_config_file_and_require_needs_a_ca() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sessiond.toml");
        let text = "[tls]\ncert_file = \"s.pem\"\nkey_file = \"/etc/k.pem\"\nclient_ca_file = \"ca.pem\"\n";
        std::fs::write(&path, text).unwrap();
        let c = Config::load_from(Some(&path), std::iter::empty(), &Overrides::default()).unwrap();
        let tls = c.tls.unwrap();
        assert_eq!(tls.cert_file, dir.path().join("s.pem"));
        assert_eq!(tls.key_file, PathBuf::from("/etc/k.pem"));
        assert_eq!(
            tls.client_certs,
            ClientCerts::Optional {
                ca_file: dir.path().join("ca.pem")
            }
        );
        assert!(load("", &[]).unwrap().tls.is_none());

        let cases = [
            (
                "[tls]\ncert_file = \"a\"\nkey_file = \"b\"\nrequire_client_cert = true\n",
                "tls.require_client_cert",
            ),
            ("[tls]\ncert_file = \"a\"\n", "tls"),
            (
                "[tls]\ncert_file = \"a\"\nkey_file = \"b\"\nclient_ca = \"c\"\n",
                "tls",
            ),
        ];
        for (text, key) in cases {
            match load(text, &[]) {
                Err(ConfigError::Invalid { key: k, .. }) => {
                    assert!(k.starts_with(key), "{text}: {k}")
                }
                other => panic!("{text}: {other:?}"),
            }
        }
    }

    #[test]
    fn defaults_match_the_design() {
        let c = Config::load_from(None, std::iter::empty(), &Overrides::default()).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(
            c.database,
            Database::Sqlite {
                url: "sqlite://./sessiond-data/sessiond.db".into(),
                in_data_dir: true
            }
        );
        assert_eq!(c.cookie_sessions.idle_ttl.0, Duration::from_secs(3600));
        assert_eq!(c.token_sessions.refresh_grace.0, Duration::from_secs(10));
        assert!(c.cookies.secure);
        assert_eq!(c.cookies.same_site, SameSite::Lax);
        assert_eq!(c.database_acquire_timeout.0, Duration::from_secs(5));
        assert_eq!(c.server.header_read_timeout.0, Duration::from_secs(10));
        assert_eq!(c.server.body_read_timeout.0, Duration::from_secs(30));
        assert_eq!(c.server.keep_alive_timeout.0, Duration::from_secs(75));
        assert_eq!(c.server.max_connections, 10_000);
        assert_eq!(c.server.max_connections_per_peer, 256);
        let set = load(
            "[server]\nheader_read_timeout = \"300ms\"\nmax_connections_per_peer = 0\n",
            &[("SESSIOND_SERVER__MAX_CONNECTIONS", "64")],
        )
        .unwrap();
        assert_eq!(set.server.header_read_timeout.0, Duration::from_millis(300));
        assert_eq!(set.server.max_connections, 64);
        assert_eq!(set.server.max_connections_per_peer, 0);
    }

    #[test]
    fn the_verified_token_cache_has_the_library_defaults_and_can_be_turned_off() {
        let c = load("", &[]).unwrap();
        assert_eq!(
            crate::startup::service_config(&c).verified_tokens,
            sessiond::ServiceConfig::default().verified_tokens
        );
        let c = load(
            "[caches.verified_tokens]\nentries = 10\nbytes = 4096\n",
            &[],
        )
        .unwrap();
        assert_eq!(
            crate::startup::service_config(&c).verified_tokens,
            sessiond::cache::CacheLimits::new(10, 4096)
        );
        let c = load("", &[("SESSIOND_CACHES__VERIFIED_TOKENS__ENTRIES", "0")]).unwrap();
        assert_eq!(
            crate::startup::service_config(&c).verified_tokens,
            sessiond::cache::CacheLimits::new(0, 16 << 20)
        );
        let err = load("[caches.verified_tokens]\nentries = -1\n", &[]).unwrap_err();
        assert!(err.to_string().contains("caches"), "{err}");
    }

    #[test]
    fn the_session_row_cache_has_its_own_defaults_and_can_be_turned_off() {
        use crate::startup::{sqlite_options, Role};
        let rows = |c: &Config| sqlite_options(c, Role::Server).row_cache;
        let default = sessiond::store::sqlite::SqliteOptions::DEFAULT_ROW_CACHE;
        assert_eq!(rows(&load("", &[]).unwrap()), default);
        let c = load("[caches.session_rows]\nentries = 100\n", &[]).unwrap();
        assert_eq!(
            rows(&c),
            sessiond::cache::CacheLimits::new(100, default.bytes)
        );
        // A one-shot admin command keeps none, whatever the configuration says.
        assert_eq!(
            sqlite_options(&c, Role::OneShot).row_cache,
            sessiond::cache::CacheLimits::off()
        );
        let c = load("", &[("SESSIOND_CACHES__SESSION_ROWS__BYTES", "0")]).unwrap();
        assert_eq!(
            rows(&c),
            sessiond::cache::CacheLimits::new(default.entries, 0)
        );
    }

    #[test]
    fn postgres_nodes_cache_rows_under_a_configured_lease_and_admin_commands_do_not() {
        use crate::startup::{pg_options, Role};
        let defaults = sessiond::store::postgres::PgOptions::default();
        let c = load("", &[]).unwrap();
        let server = pg_options(&c, None, Role::Server);
        assert_eq!(server.row_cache, defaults.row_cache);
        assert_eq!(server.lease, defaults.lease);
        assert_eq!(server.max_connections, defaults.max_connections);
        let c = load("database_max_connections = 6\n", &[]).unwrap();
        assert_eq!(pg_options(&c, None, Role::Server).max_connections, 6);
        let err = load("database_max_connections = 0\n", &[]).unwrap_err();
        assert!(
            err.to_string().contains("database_max_connections"),
            "{err}"
        );
        let c = load(
            "[caches.session_rows]\nentries = 10\nlease = \"500ms\"\nlease_drift = \"50ms\"\n",
            &[],
        )
        .unwrap();
        let server = pg_options(&c, None, Role::Server);
        assert_eq!(server.row_cache.entries, 10);
        assert_eq!(server.lease.lease, std::time::Duration::from_millis(500));
        assert_eq!(server.lease.drift, std::time::Duration::from_millis(50));
        let admin = pg_options(&c, None, Role::OneShot);
        assert_eq!(admin.row_cache, sessiond::cache::CacheLimits::off());
        assert_eq!(
            admin.lease, server.lease,
            "admin commands wait as the nodes do"
        );
        let err = load("[caches.session_rows]\nlease = \"0s\"\n", &[]).unwrap_err();
        match err {
            ConfigError::Invalid { key, .. } => assert_eq!(key, "caches.session_rows.lease"),
            other => panic!("{other}"),
        }
    }

    #[test]
    fn login_code_ttl_defaults_to_30s_and_is_a_setting() {
        assert_eq!(
            load("", &[]).unwrap().browser.login_code_ttl.0,
            Duration::from_secs(30)
        );
        let c = load("[browser]\nlogin_code_ttl = \"2m\"\n", &[]).unwrap();
        assert_eq!(c.browser.login_code_ttl.0, Duration::from_secs(120));
        assert_eq!(
            crate::startup::service_config(&c).login_code_ttl,
            Duration::from_secs(120)
        );
        let env = load("", &[("SESSIOND_BROWSER__LOGIN_CODE_TTL", "45s")]).unwrap();
        assert_eq!(env.browser.login_code_ttl.0, Duration::from_secs(45));
    }

    #[test]
    fn precedence_is_flags_then_env_then_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "listen = \"127.0.0.1:1111\"\n[token_sessions]\nrefresh_grace = \"3s\"\naccess_ttl = \"5m\"\n").unwrap();
        let env = vec![
            ("SESSIOND_LISTEN".to_string(), "127.0.0.1:2222".to_string()),
            (
                "SESSIOND_TOKEN_SESSIONS__REFRESH_GRACE".to_string(),
                "5s".to_string(),
            ),
            (
                "SESSIOND_SESSIONS__MAX_PER_USER".to_string(),
                "3".to_string(),
            ),
            (
                "SESSIOND_COOKIES__ALLOWED_ORIGINS".to_string(),
                "[\"https://app.example\"]".to_string(),
            ),
            ("SESSIOND_MASTER_KEY".to_string(), "not-config".to_string()),
        ];
        let flags = Overrides {
            listen: Some("127.0.0.1:3333".into()),
            ..Overrides::default()
        };
        let c = Config::load_from(Some(&path), env.into_iter(), &flags).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:3333");
        assert_eq!(c.token_sessions.refresh_grace.0, Duration::from_secs(5));
        assert_eq!(c.token_sessions.access_ttl.0, Duration::from_secs(300));
        assert_eq!(c.sessions.max_per_user, 3);
        assert_eq!(
            c.cookies.allowed_origins,
            vec!["https://app.example".parse::<Origin>().unwrap()]
        );
    }

    /// (config file, environment, the key the error must name).
    type RefusalCase<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str);

    #[test]
    fn refusals_name_the_key() {
        let cases: &[RefusalCase<'_>] = &[
            ("bogus = 1", &[], "bogus"),
            ("[cookie_sessions]\nidel_ttl = \"1h\"", &[], "idel_ttl"),
            (
                "[cookie_sessions]\nidle_ttl = \"soon\"",
                &[],
                "cookie_sessions.idle_ttl",
            ),
            (
                "[cookies]\nsecure = false\nsame_site = \"None\"",
                &[],
                "cookies.same_site",
            ),
            (
                "[cookies]\nsame_site = \"Sometimes\"",
                &[],
                "cookies.same_site",
            ),
            (
                "[token_sessions]\naccess_alg = \"HS256\"\nhs256_secret = \"too-short\"",
                &[],
                "token_sessions.hs256_secret",
            ),
            (
                "[token_sessions]\naccess_alg = \"RS256\"",
                &[],
                "token_sessions.access_alg",
            ),
            ("listen = \"not an address\"", &[], "listen"),
            ("", &[("SESSIOND_NOPE", "1")], "nope"),
            (
                "",
                &[("SESSIOND_SESSIONS__MAX_PER_USER", "many")],
                "sessions.max_per_user",
            ),
            (
                "[cookies]\nallowed_origins = [\"https://app.example/path\"]",
                &[],
                "cookies.allowed_origins[0]",
            ),
            ("[cookies]\nname = \"a;b\"", &[], "cookies.name"),
            ("[cookies]\nname = \"__Host-x\"", &[], "cookies.name"),
            ("[cookies]\nname = \"\"", &[], "cookies.name"),
            (
                "[cookies]\nclear_site_data = [\"everything\"]",
                &[],
                "cookies.clear_site_data[0]",
            ),
            (
                "[[issuers]]\nissuer = \"x\"\naudience = \"y\"",
                &[],
                "issuers[0]",
            ),
            ("database_url = \"mysql://x\"", &[], "database_url"),
            (
                "database_acquire_timeout = \"0s\"",
                &[],
                "database_acquire_timeout",
            ),
            (
                "[sessions]\ntrusted_proxies = [\"10.0.0.1\", \"10.0.0.0/33\"]",
                &[],
                "sessions.trusted_proxies[1]",
            ),
            (
                "[server]\nheader_read_timeout = \"0s\"",
                &[],
                "server.header_read_timeout",
            ),
            (
                "[server]\nbody_read_timeout = \"0s\"",
                &[],
                "server.body_read_timeout",
            ),
            (
                "[server]\nkeep_alive_timeout = \"0s\"",
                &[],
                "server.keep_alive_timeout",
            ),
            (
                "[server]\nmax_connections = 0",
                &[],
                "server.max_connections",
            ),
            (
                "[server]\nmax_connections = -1",
                &[],
                "server.max_connections",
            ),
            ("[server]\nidle_timeout = \"1s\"", &[], "idle_timeout"),
            (
                "[browser]\nlogin_code_ttl = \"0s\"",
                &[],
                "browser.login_code_ttl",
            ),
            (
                "",
                &[("SESSIOND_BROWSER__LOGIN_CODE_TTL", "0s")],
                "browser.login_code_ttl",
            ),
        ];
        for (text, env, key) in cases {
            let err = load(text, env).unwrap_err().to_string();
            assert!(err.contains(key), "{text:?} / {env:?}: {err}");
        }
    }

    #[test]
    fn a_long_hs256_secret_is_accepted_and_never_echoed() {
        let secret = "s3cr3t-s3cr3t-s3cr3t-s3cr3t-s3cr3t";
        let c = load(
            &format!("[token_sessions]\naccess_alg = \"HS256\"\nhs256_secret = \"{secret}\""),
            &[],
        )
        .unwrap();
        assert_eq!(c.token_sessions.access_alg, AccessAlg::Hs256);
        let short = load("[token_sessions]\naccess_alg = \"HS256\"\nhs256_secret = \"abcdefghijklmnopqrstuvwxyz\"", &[]).unwrap_err();
        assert!(!short.to_string().contains("abcdefghijklmnop"));
    }

    #[test]
    fn defaults_are_the_library_defaults() {
        let c = load("", &[]).unwrap();
        let service = crate::startup::service_config(&c);
        let library = sessiond::ServiceConfig::default();
        assert_eq!(service.cookie.idle_ttl, library.cookie.idle_ttl);
        assert_eq!(service.cookie.absolute_ttl, library.cookie.absolute_ttl);
        assert_eq!(service.cookie.touch_interval, library.cookie.touch_interval);
        assert_eq!(service.tokens.access_ttl, library.tokens.access_ttl);
        assert_eq!(
            service.tokens.refresh_idle_ttl,
            library.tokens.refresh_idle_ttl
        );
        assert_eq!(
            service.tokens.refresh_absolute_ttl,
            library.tokens.refresh_absolute_ttl
        );
        assert_eq!(service.tokens.refresh_grace, library.tokens.refresh_grace);
        assert_eq!(
            service.tokens.lost_response_window,
            library.tokens.lost_response_window
        );
        assert_eq!(service.tokens.issuer, library.tokens.issuer);
        assert_eq!(
            service.tokens.access_audience,
            library.tokens.access_audience
        );
        assert_eq!(service.tokens.leeway, library.tokens.leeway);
        assert_eq!(service.keys.retention, library.keys.retention);
        assert_eq!(service.keys.access_algorithm, library.keys.access_algorithm);
        assert_eq!(service.sessions.max_per_user, library.sessions.max_per_user);
        assert_eq!(service.login_code_ttl, library.login_code_ttl);
        assert_eq!(service.sessions.bind_ip, library.sessions.bind_ip);
        assert_eq!(
            service.sessions.bind_user_agent,
            library.sessions.bind_user_agent
        );
    }

    #[test]
    fn choices_are_made_once_at_load() {
        let pg = load(
            "database_url = \"postgresql://u:pw@db/x\"\ndatabase_schema = \"app\"",
            &[],
        )
        .unwrap();
        match &pg.database {
            Database::Postgres { url, schema } => {
                assert_eq!(url, "postgresql://u:pw@db/x");
                assert_eq!(schema.as_ref().map(PgSchema::as_str), Some("app"));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(pg.database.redacted(), "postgresql://***@db/x");
        let file = load("database_url = \"sqlite:///tmp/x.db\"", &[]).unwrap();
        assert_eq!(
            file.database,
            Database::Sqlite {
                url: "sqlite:///tmp/x.db".into(),
                in_data_dir: false
            }
        );
        let tls = load(
            "[tls]\ncert_file = \"/c\"\nkey_file = \"/k\"\nclient_ca_file = \"/ca\"\nrequire_client_cert = true",
            &[],
        )
        .unwrap()
        .tls
        .unwrap();
        assert_eq!(
            tls.client_certs,
            ClientCerts::Required {
                ca_file: PathBuf::from("/ca")
            }
        );
        let plain = load("[tls]\ncert_file = \"/c\"\nkey_file = \"/k\"", &[]).unwrap();
        assert_eq!(plain.tls.unwrap().client_certs, ClientCerts::None);
        let issuers = load(
            "[[issuers]]\nissuer = \"a\"\naudience = \"b\"\njwks_url = \"https://idp.example/jwks\"\nrsa_alg = \"PS256\"\n\
             [[issuers]]\nissuer = \"c\"\naudience = \"d\"\njwks_file = \"/j.json\"",
            &[],
        )
        .unwrap()
        .issuers;
        assert_eq!(
            issuers[0].jwks,
            JwksSource::Url("https://idp.example/jwks".into())
        );
        assert_eq!(issuers[0].rsa_alg, Some(RsaAlg::Ps256));
        assert_eq!(issuers[1].jwks, JwksSource::File(PathBuf::from("/j.json")));
        assert_eq!(issuers[1].rsa_alg, None);
        let redis = load("redis_url = \"rediss://:pw@cache:6380\"", &[]).unwrap();
        let redis = redis.redis_url.unwrap();
        assert_eq!(redis.as_str(), "rediss://:pw@cache:6380");
        assert!(!format!("{redis:?}").contains("pw"));
    }

    #[test]
    fn origins_parse_and_compare_exactly() {
        let origin = |s: &str| s.parse::<Origin>();
        for (text, canonical) in [
            ("https://app.example", "https://app.example"),
            ("http://localhost:3000", "http://localhost:3000"),
            ("HTTPS://App.Example", "https://app.example"),
            ("http://127.0.0.1:8080", "http://127.0.0.1:8080"),
            ("http://[::1]", "http://[::1]"),
            ("http://[::1]:8080", "http://[::1]:8080"),
        ] {
            assert_eq!(
                origin(text).map(|o| o.to_string()),
                Ok(canonical.to_owned()),
                "{text}"
            );
        }
        for bad in [
            "app.example",
            "https://",
            "https://app.example/",
            "https://app.example/path",
            "https://app.example?q",
            "https://app.example#f",
            "https://user@app.example",
            "https://app.example:",
            "https://app.example:0",
            "https://app.example:65536",
            "https://app.example:+80",
            "ftp://app.example",
            "null",
            "https://app example",
        ] {
            assert!(origin(bad).is_err(), "{bad:?}");
        }
        // Exact: another scheme or port is another origin.
        assert_ne!(origin("https://app.example"), origin("http://app.example"));
        assert_ne!(
            origin("https://app.example"),
            origin("https://app.example:443")
        );
    }

    #[test]
    fn new_parse_errors_name_the_key() {
        let cases: &[RefusalCase<'_>] = &[
            (
                "[cookies]\nallowed_origins = [\"https://a.example\", \"app.example\"]",
                &[],
                "cookies.allowed_origins[1]",
            ),
            (
                "[cookies]\nallowed_origins = [\"https://a.example:99999\"]",
                &[],
                "cookies.allowed_origins[0]",
            ),
            (
                "[[issuers]]\nissuer = \"x\"\naudience = \"y\"\njwks_url = \"https://i/j\"\nrsa_alg = \"RS384\"",
                &[],
                "issuers[0].rsa_alg",
            ),
            (
                "[[issuers]]\nissuer = \"x\"\naudience = \"y\"\njwks_url = \"ftp://i/j\"",
                &[],
                "issuers[0].jwks_url",
            ),
            (
                "[[issuers]]\nissuer = \"x\"\naudience = \"y\"\njwks_url = \"http://idp.example/j\"",
                &[],
                "issuers[0].jwks_url",
            ),
            (
                "[[issuers]]\nissuer = \"x\"\naudience = \"y\"\njwks_url = \"http://127.0.0.1.example/j\"",
                &[],
                "issuers[0].jwks_url",
            ),
            (
                "[[issuers]]\nissuer = \"x\"\naudience = \"y\"\njwks_url = \"https://\"",
                &[],
                "issuers[0].jwks_url",
            ),
            (
                "[[issuers]]\nissuer = \"x\"\naudience = \"y\"\njwks_url = \"https://i/j\"\njwks_file = \"j\"",
                &[],
                "issuers[0]",
            ),
            ("redis_url = \"http://cache\"", &[], "redis_url"),
            ("", &[("SESSIOND_REDIS_URL", "cache:6379")], "redis_url"),
            (
                "database_url = \"postgres://db/x?sslmode=require&PassWord=0123456789abcdef\"",
                &[],
                "database_url",
            ),
            (
                "database_url = \"postgres://db/x\"\ndatabase_schema = \"pg_x\"",
                &[],
                "database_schema",
            ),
            (
                "[token_sessions]\nhs256_secret = \"0123456789abcdef0123456789abcdef\"",
                &[],
                "token_sessions.hs256_secret",
            ),
        ];
        for (text, env, key) in cases {
            let err = load(text, env).unwrap_err();
            match &err {
                ConfigError::Invalid { key: k, .. } => assert_eq!(k, key, "{text:?}: {err}"),
                other => panic!("{text:?}: {other:?}"),
            }
            assert!(!err.to_string().contains("0123456789abcdef"), "{err}");
        }
    }

    /// Plain HTTP serves an issuer's keys only from a loopback address (development).
    #[test]
    fn jwks_urls_are_https_or_loopback() {
        for ok in [
            "https://idp.example/jwks",
            "HTTPS://IDP.EXAMPLE/jwks",
            "http://127.0.0.1:8080/jwks",
            "http://127.9.9.9/jwks",
            "http://localhost/jwks",
            "http://LocalHost:1/jwks",
            "http://[::1]:9/jwks",
        ] {
            assert!(jwks_url_allowed(ok), "{ok}");
        }
        for bad in [
            "http://idp.example/jwks",
            "http://10.0.0.1/jwks",
            "http://localhost.attacker.example/jwks",
            "http://127.0.0.1@attacker.example/jwks",
            "http://[::ffff:10.0.0.1]/jwks",
            "ftp://idp.example/jwks",
            "file:///etc/jwks",
            "idp.example/jwks",
            "",
        ] {
            assert!(!jwks_url_allowed(bad), "{bad}");
        }
    }

    /// No credential survives redaction, however it is spelled, and the rest of the URL stays
    /// readable for the operator.
    #[test]
    fn redaction_hides_every_credential_spelling() {
        let secret = "hunter2-SECRET";
        for url in [
            "postgres://app:hunter2-SECRET@db.example:5432/sessiond",
            "postgres://hunter2-SECRET@db.example/sessiond",
            "postgres://db.example/sessiond?password=hunter2-SECRET",
            "postgres://db.example/sessiond?sslmode=require&PassWord=hunter2-SECRET",
            "postgres://db.example/sessiond?pass%77ord=hunter2-SECRET",
            "postgres://db.example/sessiond?sslpassword=hunter2-SECRET",
            "postgresql://db.example/sessiond?options=-c%20x%3Dhunter2-SECRET",
            "postgres://db.example/sessiond?user=app&password=hunter2-SECRET&password=again",
            "postgres://u:p@db.example/sessiond?x=a@b&token=hunter2-SECRET",
            "redis://:hunter2-SECRET@cache.example:6379/0",
            "rediss://default:hunter2-SECRET@cache.example",
            "https://idp.example/jwks?access_token=hunter2-SECRET",
            "https://user:hunter2-SECRET@idp.example/jwks",
            "https://idp.example/jwks#hunter2-SECRET",
            "postgres://app:hunter2-SECRET@[not a host/sessiond",
            "hunter2-SECRET",
        ] {
            let shown = redact_url(url);
            assert!(!shown.contains(secret), "{url} -> {shown}");
            assert!(!shown.contains("hunter2"), "{url} -> {shown}");
        }
        assert_eq!(
            redact_url("postgres://app:pw@db.example:5432/sessiond?sslmode=require&password=pw"),
            "postgres://***@db.example:5432/sessiond?sslmode=require&password=***"
        );
        assert_eq!(
            redact_url("sqlite:///var/lib/sessiond/sessiond.db?mode=rwc"),
            "sqlite:///var/lib/sessiond/sessiond.db?mode=rwc"
        );
        assert_eq!(
            redact_url("https://idp.example/.well-known/jwks.json"),
            "https://idp.example/.well-known/jwks.json"
        );
        let db = Database::Postgres {
            url: "postgres://app:hunter2-SECRET@db/x?password=hunter2-SECRET".into(),
            schema: None,
        };
        assert!(!format!("{db:?}").contains("hunter2"));
    }
}
