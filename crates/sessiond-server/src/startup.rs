//! Turning a [`Config`] into a running service: storage, master key, signing keys, issuers.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sessiond::events::postgres::{PgBusOptions, PgEventBus};
use sessiond::events::redis::{RedisBusOptions, RedisEventBus};
use sessiond::events::EventError;
use sessiond::jose::foreign::JwksError;
use sessiond::jose::foreign::{JwksOptions, TrustedIssuer};
use sessiond::keys::{KeyAlgorithm, KeyPurpose};
use sessiond::keys::{KeyError, MasterKeyError};
use sessiond::store::postgres::{PgOptions, PgStore};
use sessiond::store::redis::{RedisClaimStore, RedisOptions};
use sessiond::store::sqlite::{SqliteOptions, SqliteStore};
use sessiond::store::StoreError;
use sessiond::store::{ApiKeyStore, Backend};
use sessiond::{Clock, MasterKey, OsRandom, Secret, ServiceConfig, SessionService};
use sessiond::{EventBus, InProcessBus};

use crate::api_keys::ApiKeys;
use crate::config::{Config, Database, JwksSource, Secrets};

/// How often `serve` on SQLite checks whether another process wrote to the file.
const EXTERNAL_WRITE_POLL: std::time::Duration = std::time::Duration::from_secs(1);

/// Opens (and migrates) the configured database: what `sessiond migrate` does.
///
/// # Errors
/// [`StartError`] when the database cannot be opened or migrated.
pub async fn migrate(config: &Config) -> Result<(), StartError> {
    open_storage(config, Role::OneShot).await.map(drop)
}

/// Who opens the database: the server, or a one-shot admin command. A one-shot command keeps
/// no SQLite row cache: it reads a row once or twice and exits, and its writes, then made
/// without its own temporary triggers, count as anonymous, which a running server notices
/// exactly as it notices another store's (docs/DESIGN.md §15.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// `serve`.
    Server,
    /// An admin command (`sessions`, `keys`, `api-keys`, `migrate`).
    OneShot,
}

/// The session service over the configured database, for one-shot admin work (no background
/// task, the system clock, the master key from `secrets` or the key file, never created).
///
/// # Errors
/// [`StartError`] when the database, the master key or the signing keys cannot be opened.
pub async fn open_service(
    config: &Config,
    secrets: &Secrets,
) -> Result<SessionService, StartError> {
    let backend = open_storage(config, Role::OneShot).await?.backend;
    let (master, _) = master_key(config, secrets, false)?;
    let (service, _) = build_service(
        config,
        backend,
        master,
        Arc::new(sessiond::SystemClock),
        None,
    )
    .await?;
    Ok(service)
}

/// The server's API keys over the configured database, for one-shot admin work (the system
/// clock; no master key needed).
///
/// # Errors
/// [`StartError`] when the database cannot be opened.
pub async fn open_api_keys(config: &Config) -> Result<ApiKeys, StartError> {
    let storage = open_storage(config, Role::OneShot).await?;
    Ok(ApiKeys::new(
        storage.api_keys,
        Arc::new(sessiond::SystemClock),
        Arc::new(OsRandom),
        crate::api_keys::DEFAULT_CACHE_TTL,
    ))
}

/// Why the server or an admin command could not start. Messages name the file, key or
/// database at fault (URLs without credentials), never a secret.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// A directory could not be created.
    #[error("cannot create data directory {path}")]
    DataDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The database could not be opened or migrated.
    #[error("cannot open {kind} database {url}")]
    Database {
        /// `SQLite` or `PostgreSQL`.
        kind: &'static str,
        /// The URL without credentials.
        url: String,
        /// Why.
        #[source]
        source: StoreError,
    },
    /// The Redis claim store refused its URL.
    #[error("redis_url {url}")]
    RedisClaims {
        /// The URL without credentials.
        url: String,
        /// Why.
        #[source]
        source: StoreError,
    },
    /// An event bus refused its URL (`redis_url`, or `database_url` for PostgreSQL).
    #[error("{key} {url}")]
    EventBus {
        /// The configuration key.
        key: &'static str,
        /// The URL without credentials.
        url: String,
        /// Why.
        #[source]
        source: EventError,
    },
    /// `SESSIOND_MASTER_KEY` or the master-key file does not hold base64 of 32 bytes.
    #[error("{origin}")]
    MasterKey {
        /// `SESSIOND_MASTER_KEY` or `master key file <path>`.
        origin: String,
        /// Why.
        #[source]
        source: MasterKeyError,
    },
    /// There is no master key and none may be created (admin commands).
    #[error("no master key: set SESSIOND_MASTER_KEY or run `sessiond serve` once to create {}", path.display())]
    NoMasterKey {
        /// Where the key file would be.
        path: PathBuf,
    },
    /// The master-key file could not be read, created or written.
    #[error("cannot {action} master key file {}", path.display())]
    MasterKeyFile {
        /// `read`, `create` or `write`.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// An active key per purpose could not be ensured: the server must not start.
    #[error("cannot ensure signing keys; refusing to start")]
    SigningKeys(#[source] KeyError),
    /// The signing keys could not be read.
    #[error("cannot list signing keys")]
    ListKeys(#[source] KeyError),
    /// `token_sessions.hs256_secret` could not be adopted, or (without it) an operator secret
    /// could not be withdrawn.
    #[error("token_sessions.hs256_secret")]
    Hs256Secret(#[source] KeyError),
    /// `token_sessions.hs256_secret` is a secret that was replaced, withdrawn or retired before:
    /// it is never used again, so a node with an old configuration cannot flip the deployment
    /// back (docs/DESIGN.md §4.5). The message never contains the secret.
    #[error("token_sessions.hs256_secret is a secret that was replaced, withdrawn or retired{}; it is never used again: configure a new secret (refusing to start)", key_id.as_ref().map(|k| format!(" (it was key {k})")).unwrap_or_default())]
    Hs256SecretRetired {
        /// The retired key that held it, while its row is kept.
        key_id: Option<sessiond::KeyId>,
    },
    /// A trusted issuer's JWK Set file was refused.
    #[error("issuers[{index}].jwks_file {}", path.display())]
    IssuerJwksFile {
        /// The issuer's position in the configuration.
        index: usize,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: JwksError,
    },
    /// The HTTP client for JWK Sets at URLs could not be built.
    #[error("cannot build the JWK Set HTTP client")]
    JwksClient(#[source] reqwest::Error),
    /// `SESSIOND_API_KEY` is shorter than 32 characters.
    #[error("SESSIOND_API_KEY must be at least 32 characters")]
    BootstrapApiKey,
    /// `[tls]` could not be loaded.
    #[error(transparent)]
    Tls(Box<dyn std::error::Error + Send + Sync>),
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}")]
    Listen {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// The configured database, opened and migrated.
pub(crate) struct Storage {
    /// Sessions, signing keys, the audit trail and (without Redis) claims.
    pub(crate) backend: Arc<dyn Backend>,
    /// The table of the server's API keys.
    pub(crate) api_keys: Arc<dyn ApiKeyStore>,
    /// The SQLite store itself when that is the database (for `serve`, which watches it for
    /// writes by other processes).
    pub(crate) sqlite: Option<SqliteStore>,
}

/// Opens (and migrates) the configured database for `role`.
///
/// # Errors
/// When the database cannot be opened or migrated.
pub(crate) async fn open_storage(config: &Config, role: Role) -> Result<Storage, StartError> {
    match &config.database {
        Database::Sqlite { url, in_data_dir } => {
            if *in_data_dir {
                std::fs::create_dir_all(&config.data_dir).map_err(|source| {
                    StartError::DataDir {
                        path: config.data_dir.clone(),
                        source,
                    }
                })?;
            }
            let store = SqliteStore::open(url, sqlite_options(config, role))
                .await
                .map_err(|source| StartError::Database {
                    kind: "SQLite",
                    url: config.database.redacted(),
                    source,
                })?;
            Ok(Storage {
                backend: Arc::new(store.clone()),
                api_keys: Arc::new(store.clone()),
                sqlite: Some(store),
            })
        }
        Database::Postgres { url, schema } => {
            let options = pg_options(config, schema.clone(), role);
            let store =
                PgStore::open(url, options)
                    .await
                    .map_err(|source| StartError::Database {
                        kind: "PostgreSQL",
                        url: config.database.redacted(),
                        source,
                    })?;
            Ok(Storage {
                backend: Arc::new(store.clone()),
                api_keys: Arc::new(store),
                sqlite: None,
            })
        }
    }
}

/// The Redis claim store, when `redis_url` is set. Connected lazily: a node starts (and serves
/// validations) while Redis is down; claims answer 503 until it is back.
///
/// # Errors
/// When the URL is malformed.
pub(crate) fn open_claims(config: &Config) -> Result<Option<Arc<RedisClaimStore>>, StartError> {
    let Some(url) = &config.redis_url else {
        return Ok(None);
    };
    let store =
        RedisClaimStore::connect_lazy(url.as_str(), RedisOptions::default()).map_err(|source| {
            StartError::RedisClaims {
                url: url.redacted(),
                source,
            }
        })?;
    Ok(Some(Arc::new(store)))
}

/// The cross-node event bus, so SSE streams and watches on every node see every node's
/// revocations and refreshes: Redis pub/sub when `redis_url` is set, else PostgreSQL
/// `LISTEN/NOTIFY` when the database is PostgreSQL (channel `sessiond_events`, or
/// `sessiond_events_<schema>` with `database_schema`, cut to PostgreSQL's 63 bytes), else none
/// (one node: the in-process bus). Connected lazily: a node starts while Redis or the database
/// is down; its watchers learn of the gap as a lag and re-read their sessions, and publishes fail
/// (logged and counted) until it is back.
///
/// # Errors
/// When the URL is malformed.
pub(crate) fn open_event_bus(config: &Config) -> Result<Option<Arc<dyn EventBus>>, StartError> {
    if let Some(url) = &config.redis_url {
        let bus = RedisEventBus::connect_lazy(url.as_str(), RedisBusOptions::default()).map_err(
            |source| StartError::EventBus {
                key: "redis_url",
                url: url.redacted(),
                source,
            },
        )?;
        tracing::debug!(channel = bus.channel(), "event bus: redis pub/sub");
        return Ok(Some(Arc::new(bus)));
    }
    let Database::Postgres { url, schema } = &config.database else {
        tracing::debug!("event bus: in-process (one node)");
        return Ok(None);
    };
    let mut options = PgBusOptions::default();
    if let Some(schema) = schema {
        // `PgSchema` admits ASCII names only, so any byte is a char boundary for the cut.
        options.channel = format!("{}_{}", options.channel, schema.as_str());
        options.channel.truncate(63);
    }
    let bus = PgEventBus::connect_lazy(url, options).map_err(|source| StartError::EventBus {
        key: "database_url",
        url: config.database.redacted(),
        source,
    })?;
    tracing::debug!(channel = bus.channel(), "event bus: postgres LISTEN/NOTIFY");
    Ok(Some(Arc::new(bus)))
}

/// On SQLite, another process (the CLI) may revoke sessions behind the server's back, and the
/// in-process bus cannot hear it: when the file's `data_version` (as the server's writer sees
/// it) moves, tell every subscription it may have missed events, so watches and SSE streams
/// re-read their sessions (a per-user stream sends `resync`).
#[derive(Debug)]
pub(crate) struct ExternalWrites {
    store: SqliteStore,
    bus: InProcessBus,
}

impl ExternalWrites {
    /// Polls every [`EXTERNAL_WRITE_POLL`] until dropped (a background task of the server).
    pub(crate) async fn watch(self) {
        let ExternalWrites { store, bus } = self;
        let mut last = store.external_commits().await.ok();
        let mut tick = tokio::time::interval(EXTERNAL_WRITE_POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match store.external_commits().await {
                Ok(now) => {
                    if last.is_some_and(|seen| seen != now) {
                        tracing::debug!("another process wrote to the database; watchers re-read");
                        bus.report_gap();
                    }
                    last = Some(now);
                }
                Err(e) => tracing::debug!(error = %e, "cannot read the database's data_version"),
            }
        }
    }
}

/// Where the master key came from, for the start-up log.
#[derive(Debug)]
pub(crate) enum MasterKeySource {
    /// `SESSIOND_MASTER_KEY`.
    Environment,
    /// An existing key file.
    File(PathBuf),
    /// A key file created now.
    Created(PathBuf),
}

/// The master-key file inside the data directory.
pub(crate) fn master_key_path(config: &Config) -> PathBuf {
    config.data_dir.join("master.key")
}

/// The master key: `SESSIOND_MASTER_KEY`, else the key file in the data directory, created
/// (mode 0600) when `create` is set and it does not exist yet.
///
/// # Errors
/// When the variable or the file does not hold base64 of 32 bytes, or the file cannot be
/// read or written. Messages never contain key material.
pub(crate) fn master_key(
    config: &Config,
    secrets: &Secrets,
    create: bool,
) -> Result<(MasterKey, MasterKeySource), StartError> {
    if let Some(text) = &secrets.master_key {
        let key =
            MasterKey::from_base64(text.expose()).map_err(|source| StartError::MasterKey {
                origin: String::from("SESSIOND_MASTER_KEY"),
                source,
            })?;
        return Ok((key, MasterKeySource::Environment));
    }
    let path = master_key_path(config);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            warn_if_readable_by_others(&path);
            let key = MasterKey::from_base64(&text).map_err(|source| StartError::MasterKey {
                origin: format!("master key file {}", path.display()),
                source,
            })?;
            Ok((key, MasterKeySource::File(path)))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => {
            let key = MasterKey::generate(&OsRandom);
            write_private_file(&path, key.to_base64().expose().as_bytes())?;
            Ok((key, MasterKeySource::Created(path)))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(StartError::NoMasterKey { path }),
        Err(source) => Err(StartError::MasterKeyFile {
            action: "read",
            path,
            source,
        }),
    }
}

fn write_private_file(path: &Path, contents: &[u8]) -> Result<(), StartError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|source| StartError::DataDir {
            path: dir.to_owned(),
            source,
        })?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options
        .open(path)
        .map_err(|source| StartError::MasterKeyFile {
            action: "create",
            path: path.to_owned(),
            source,
        })?;
    file.write_all(contents)
        .and_then(|()| file.write_all(b"\n"))
        .and_then(|()| file.sync_all())
        .map_err(|source| StartError::MasterKeyFile {
            action: "write",
            path: path.to_owned(),
            source,
        })
}

fn warn_if_readable_by_others(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        if let Ok(meta) = std::fs::metadata(path) {
            if meta.permissions().mode() & 0o077 != 0 {
                tracing::warn!(path = %path.display(), "master key file is readable by group or others; chmod 600 it");
            }
        }
    }
}

/// Brings the active access key in line with `token_sessions.hs256_secret` (docs/DESIGN.md
/// §4.5), at every start of `serve`: adopts a new secret, withdraws one that is no longer
/// configured, records one adopted before key origins were recorded, and refuses a secret that
/// was retired before.
///
/// # Errors
/// [`StartError::Hs256SecretRetired`]: the server must not start. [`StartError::Hs256Secret`]
/// when the keys could not be changed.
pub(crate) async fn apply_operator_keys(
    config: &Config,
    service: &SessionService,
) -> Result<(), StartError> {
    let material = config
        .token_sessions
        .hs256_secret
        .as_ref()
        .map(|secret| Secret::new(secret.expose().as_bytes().to_vec()));
    let configured = material.as_ref().map(|m| (KeyAlgorithm::Hs256, m));
    match service
        .reconcile_operator_key(KeyPurpose::Access, configured)
        .await
    {
        Ok(_) => Ok(()),
        Err(KeyError::OperatorKeyRetired { key_id, .. }) => {
            Err(StartError::Hs256SecretRetired { key_id })
        }
        Err(e) => Err(StartError::Hs256Secret(e)),
    }
}

/// The library's policies from the configuration.
pub(crate) fn service_config(config: &Config) -> ServiceConfig {
    let mut s = ServiceConfig::default();
    s.cookie.idle_ttl = config.cookie_sessions.idle_ttl.0;
    s.cookie.absolute_ttl = config.cookie_sessions.absolute_ttl.0;
    s.cookie.touch_interval = config.cookie_sessions.touch_interval.0;
    s.tokens.access_ttl = config.token_sessions.access_ttl.0;
    s.tokens.refresh_idle_ttl = config.token_sessions.refresh_idle_ttl.0;
    s.tokens.refresh_absolute_ttl = config.token_sessions.refresh_absolute_ttl.0;
    s.tokens.refresh_grace = config.token_sessions.refresh_grace.0;
    s.tokens.lost_response_window = config.token_sessions.refresh_lost_response_window.0;
    s.tokens.issuer = config.token_sessions.issuer.clone();
    s.tokens.access_audience = config.token_sessions.audience.clone();
    s.tokens.leeway = config.token_sessions.leeway.0;
    s.sessions.max_per_user = config.sessions.max_per_user;
    s.sessions.bind_ip = config.sessions.bind_ip;
    s.sessions.bind_user_agent = config.sessions.bind_user_agent;
    s.keys.retention = config.keys.retention.0;
    s.keys.access_algorithm = config.token_sessions.access_alg.key_algorithm();
    s.login_code_ttl = config.browser.login_code_ttl.0;
    s.verified_tokens = config
        .caches
        .verified_tokens
        .limits(ServiceConfig::default().verified_tokens);
    s
}

/// The SQLite store's options from the configuration, for `role`.
pub(crate) fn sqlite_options(config: &Config, role: Role) -> SqliteOptions {
    let mut options = SqliteOptions::default();
    options.acquire_timeout = config.database_acquire_timeout.0;
    options.row_cache = match role {
        Role::Server => config
            .caches
            .session_rows
            .limits(SqliteOptions::DEFAULT_ROW_CACHE),
        Role::OneShot => sessiond::cache::CacheLimits::off(),
    };
    options
}

/// The PostgreSQL store's options from the configuration, for `role`: a one-shot admin command
/// caches no rows (it reads a row once and exits) but, like every store on the database,
/// announces its writes to the nodes that cache and waits for them (docs/DESIGN.md §15.5).
pub(crate) fn pg_options(
    config: &Config,
    schema: Option<sessiond::store::postgres::PgSchema>,
    role: Role,
) -> PgOptions {
    let mut options = PgOptions::default();
    options.acquire_timeout = config.database_acquire_timeout.0;
    options.max_connections = config.database_max_connections;
    options.schema = schema;
    options.lease = config.caches.session_rows.lease();
    options.row_cache = match role {
        Role::Server => config
            .caches
            .session_rows
            .limits(PgOptions::DEFAULT_ROW_CACHE),
        Role::OneShot => sessiond::cache::CacheLimits::off(),
    };
    options
}

/// Builds the service: ensures an active key per purpose (or fails: the server must not start),
/// loads trusted issuers from files. Operator-supplied keys are left as they are: only `serve`
/// applies `hs256_secret` ([`apply_operator_keys`]), so an admin command run with another
/// configuration never adopts or withdraws the deployment's shared secret. On SQLite with
/// `watch_external_writes`, also returns the poller that notices writes by other processes
/// (for the server to run).
///
/// # Errors
/// When keys cannot be ensured or an issuer's JWK Set cannot be loaded.
pub(crate) async fn build_service(
    config: &Config,
    backend: Arc<dyn Backend>,
    master: MasterKey,
    clock: Arc<dyn Clock>,
    watch_external_writes: Option<SqliteStore>,
) -> Result<(SessionService, Option<ExternalWrites>), StartError> {
    let mut builder = SessionService::builder(backend, master)
        .config(service_config(config))
        .clock(clock);
    let mut external_writes = None;
    if let Some(claims) = open_claims(config)? {
        builder = builder.claim_store(claims);
    }
    match (open_event_bus(config)?, watch_external_writes) {
        (Some(bus), _) => builder = builder.event_bus(bus),
        (None, Some(store)) => {
            let bus = InProcessBus::default();
            builder = builder.event_bus(Arc::new(bus.clone()));
            external_writes = Some(ExternalWrites { store, bus });
        }
        (None, None) => {}
    }
    let service = builder.start().await.map_err(StartError::SigningKeys)?;
    for (i, issuer) in config.issuers.iter().enumerate() {
        let JwksSource::File(path) = &issuer.jwks else {
            continue;
        };
        let mut options = JwksOptions::new();
        if let Some(alg) = issuer.rsa_alg {
            options = options.rsa_algorithm(alg.algorithm());
        }
        let trusted =
            TrustedIssuer::from_jwks_file_with(&issuer.issuer, &issuer.audience, path, options)
                .map_err(|source| StartError::IssuerJwksFile {
                    index: i,
                    path: path.clone(),
                    source,
                })?
                .with_leeway(config.token_sessions.leeway.0);
        crate::issuers::log_skipped_keys(&trusted);
        service.set_trusted_issuer(trusted);
    }
    Ok((service, external_writes))
}
