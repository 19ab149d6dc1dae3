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

/// The whole configuration (DESIGN §7). Every key is optional.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct Config {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Directory for the SQLite database and the master-key file.
    pub data_dir: PathBuf,
    /// `sqlite://…` or `postgres://…`; default: SQLite in the data directory.
    pub database_url: Option<String>,
    /// PostgreSQL only: the schema to keep sessiond's tables in (created if missing; default
    /// the connection's search path, normally `public`).
    pub database_schema: Option<String>,
    /// How long a request waits for a database connection (including opening one) before it is
    /// answered 503 `unavailable` (default 5 s). During a database outage this is how long each
    /// request takes to fail.
    pub database_acquire_timeout: Dur,
    /// Redis for one-time claims and cross-node events (optional).
    pub redis_url: Option<String>,
    /// Cookie-session lifetimes.
    pub cookie_sessions: CookieSessions,
    /// Token-session lifetimes and names.
    pub token_sessions: TokenSessions,
    /// Limits and bindings.
    pub sessions: Sessions,
    /// Cookie attributes and browser origins.
    pub cookies: Cookies,
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
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from("./sessiond-data"),
            database_url: None,
            database_schema: None,
            database_acquire_timeout: Dur(Duration::from_secs(5)),
            redis_url: None,
            cookie_sessions: CookieSessions::default(),
            token_sessions: TokenSessions::default(),
            sessions: Sessions::default(),
            cookies: Cookies::default(),
            keys: Keys::default(),
            gc: Gc::default(),
            issuers: Vec::new(),
            events: Events::default(),
            tls: None,
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
    fn default() -> Self {
        CookieSessions {
            idle_ttl: secs(3600),
            absolute_ttl: secs(8 * 3600),
            touch_interval: secs(60),
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
    pub hs256_secret: Option<ConfigSecret>,
    /// `iss` of our tokens.
    pub issuer: String,
    /// `aud` of access tokens.
    pub audience: String,
    /// Clock skew tolerated on `exp`/`nbf`.
    pub leeway: Dur,
}

impl Default for TokenSessions {
    fn default() -> Self {
        TokenSessions {
            access_ttl: secs(600),
            refresh_idle_ttl: secs(14 * 86_400),
            refresh_absolute_ttl: secs(30 * 86_400),
            refresh_grace: secs(10),
            refresh_lost_response_window: secs(3 * 86_400),
            access_alg: AccessAlg::EdDsa,
            hs256_secret: None,
            issuer: String::from("sessiond"),
            audience: String::from("sessiond"),
            leeway: secs(30),
        }
    }
}

/// A secret configuration value: redacted in `Debug`.
#[derive(Clone)]
pub struct ConfigSecret(pub sessiond::Secret<String>);

impl fmt::Debug for ConfigSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl<'de> Deserialize<'de> for ConfigSecret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(ConfigSecret(sessiond::Secret::new(String::deserialize(d)?)))
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

/// `[sessions]`.
#[derive(Debug, Clone, Default, Deserialize)]
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

/// `SameSite` of the session cookie.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub enum SameSite {
    /// Sent on top-level navigations from other sites (default).
    Lax,
    /// Never sent from other sites.
    Strict,
    /// Always sent; requires `Secure`.
    None,
}

/// `[cookies]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct Cookies {
    /// `Secure` and the `__Host-` prefix; `false` only for plain-http development.
    pub secure: bool,
    /// `SameSite` of the session cookie (the refresh cookie is always `Strict`).
    pub same_site: SameSite,
    /// Origins accepted by `/auth/browser/*`.
    pub allowed_origins: Vec<String>,
}

impl Default for Cookies {
    fn default() -> Self {
        Cookies {
            secure: true,
            same_site: SameSite::Lax,
            allowed_origins: Vec::new(),
        }
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
    fn default() -> Self {
        Keys {
            retention: secs(24 * 3600),
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

/// `[[issuers]]`: a trusted foreign issuer.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Issuer {
    /// Its `iss`.
    pub issuer: String,
    /// The `aud` its tokens must carry for us.
    pub audience: String,
    /// Its JWK Set in a file (relative paths: to the config file's directory).
    pub jwks_file: Option<PathBuf>,
    /// Its JWK Set at a URL (fetched with a timeout, cached, refetched on an unknown `kid` at
    /// most once per minute).
    pub jwks_url: Option<String>,
    /// `RS256` or `PS256` for RSA keys published without `alg`.
    pub rsa_alg: Option<String>,
}

/// `[tls]`: serve HTTPS; with `client_ca_file`, verify client certificates (mTLS) and bound
/// each connection by its certificate's `notAfter`. Relative paths: to the config file's
/// directory.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Tls {
    /// The server's certificate chain (PEM, leaf first).
    pub cert_file: PathBuf,
    /// The server's private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// CA certificates (PEM) that client certificates must chain to; absent: no client
    /// certificates are asked for.
    #[serde(default)]
    pub client_ca_file: Option<PathBuf>,
    /// Refuse the handshake without a client certificate (needs `client_ca_file`). When false,
    /// a client may connect without one, but a certificate it presents is still verified.
    #[serde(default)]
    pub require_client_cert: bool,
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
        let mut table = Table::new();
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.to_owned(),
                source,
            })?;
            let parsed: Table = toml::from_str(&text).map_err(|e| ConfigError::Syntax {
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

        let mut config: Config =
            serde_path_to_error::deserialize(Value::Table(table)).map_err(|e| {
                let key = e.path().to_string();
                let key = if key == "." {
                    String::from("(top level)")
                } else {
                    key
                };
                invalid(&key, e.into_inner().to_string())
            })?;
        if let Some(dir) = file.and_then(Path::parent) {
            if let Some(tls) = &mut config.tls {
                for p in [&mut tls.cert_file, &mut tls.key_file] {
                    if p.is_relative() {
                        *p = dir.join(&*p);
                    }
                }
                if let Some(p) = &mut tls.client_ca_file {
                    if p.is_relative() {
                        *p = dir.join(&*p);
                    }
                }
            }
            for issuer in &mut config.issuers {
                if let Some(p) = &issuer.jwks_file {
                    if p.is_relative() {
                        issuer.jwks_file = Some(dir.join(p));
                    }
                }
            }
        }
        config.validate()?;
        Ok(config)
    }

    /// The database URL in force: the configured one or SQLite in the data directory.
    pub fn database_url(&self) -> String {
        match &self.database_url {
            Some(url) => url.clone(),
            None => format!("sqlite://{}", self.data_dir.join("sessiond.db").display()),
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if let Some(tls) = &self.tls {
            if tls.require_client_cert && tls.client_ca_file.is_none() {
                return Err(invalid(
                    "tls.require_client_cert",
                    "needs tls.client_ca_file (the CA that client certificates must chain to)",
                ));
            }
        }
        if self.cookies.same_site == SameSite::None && !self.cookies.secure {
            return Err(invalid(
                "cookies.same_site",
                "\"None\" requires cookies.secure = true (browsers reject SameSite=None without Secure)",
            ));
        }
        if let Some(secret) = &self.token_sessions.hs256_secret {
            let len = secret.0.expose().len();
            if len < 32 {
                return Err(invalid(
                    "token_sessions.hs256_secret",
                    format!("must be at least 32 bytes, got {len}"),
                ));
            }
            if self.token_sessions.access_alg != AccessAlg::Hs256 {
                return Err(invalid(
                    "token_sessions.hs256_secret",
                    "only used with access_alg = \"HS256\"",
                ));
            }
        }
        let positive = [
            ("cookie_sessions.idle_ttl", self.cookie_sessions.idle_ttl),
            (
                "cookie_sessions.absolute_ttl",
                self.cookie_sessions.absolute_ttl,
            ),
            ("token_sessions.access_ttl", self.token_sessions.access_ttl),
            (
                "token_sessions.refresh_idle_ttl",
                self.token_sessions.refresh_idle_ttl,
            ),
            (
                "token_sessions.refresh_absolute_ttl",
                self.token_sessions.refresh_absolute_ttl,
            ),
            ("gc.interval", self.gc.interval),
            ("database_acquire_timeout", self.database_acquire_timeout),
        ];
        for (key, d) in positive {
            if d.0.is_zero() {
                return Err(invalid(key, "must be greater than zero"));
            }
        }
        for (i, origin) in self.cookies.allowed_origins.iter().enumerate() {
            let ok = (origin.starts_with("https://") || origin.starts_with("http://"))
                && !origin.ends_with('/')
                && origin
                    .split("://")
                    .nth(1)
                    .is_some_and(|h| !h.is_empty() && !h.contains('/'));
            if !ok {
                return Err(invalid(
                    &format!("cookies.allowed_origins[{i}]"),
                    "must be an origin like https://app.example (scheme and host, no path)",
                ));
            }
        }
        for (i, issuer) in self.issuers.iter().enumerate() {
            let key = format!("issuers[{i}]");
            if issuer.jwks_file.is_some() == issuer.jwks_url.is_some() {
                return Err(invalid(&key, "give exactly one of jwks_file and jwks_url"));
            }
            if let Some(url) = &issuer.jwks_url {
                if !url.starts_with("https://") && !url.starts_with("http://") {
                    return Err(invalid(
                        &format!("{key}.jwks_url"),
                        "must be an http(s) URL",
                    ));
                }
            }
            if let Some(alg) = &issuer.rsa_alg {
                if alg != "RS256" && alg != "PS256" {
                    return Err(invalid(
                        &format!("{key}.rsa_alg"),
                        "must be \"RS256\" or \"PS256\"",
                    ));
                }
            }
        }
        if let Some(schema) = &self.database_schema {
            if sessiond::store::postgres::PgSchema::new(schema.clone()).is_err() {
                return Err(invalid(
                    "database_schema",
                    "must match [a-z_][a-z0-9_]{0,62} and not start with pg_",
                ));
            }
        }
        if let Some(url) = &self.redis_url {
            if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
                return Err(invalid(
                    "redis_url",
                    "must start with redis:// or rediss://",
                ));
            }
        }
        let url = self.database_url();
        if !(url.starts_with("sqlite:")
            || url.starts_with("postgres://")
            || url.starts_with("postgresql://"))
        {
            return Err(invalid(
                "database_url",
                "must start with sqlite:// or postgres://",
            ));
        }
        Ok(())
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
        assert_eq!(tls.client_ca_file, Some(dir.path().join("ca.pem")));
        assert!(!tls.require_client_cert);
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
        assert_eq!(c.database_url(), "sqlite://./sessiond-data/sessiond.db");
        assert_eq!(c.cookie_sessions.idle_ttl.0, Duration::from_secs(3600));
        assert_eq!(c.token_sessions.refresh_grace.0, Duration::from_secs(10));
        assert!(c.cookies.secure);
        assert_eq!(c.cookies.same_site, SameSite::Lax);
        assert_eq!(c.database_acquire_timeout.0, Duration::from_secs(5));
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
            vec!["https://app.example".to_string()]
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
}
