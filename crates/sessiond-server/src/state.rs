//! What every handler can reach: [`AppState`].

use std::sync::Arc;

use sessiond::{Secret, SessionService};

use crate::api_keys::ApiKeys;
use crate::config::Config;
use crate::conn::Connections;
use crate::hub::EventHub;
use crate::issuers::RemoteIssuers;
use crate::metrics::Metrics;
use sessiond::cookie::CookieSettings;

/// The state shared by every handler and middleware: one `Arc`, so the clone each layer and
/// extractor makes per request is one atomic increment (its fields through `Deref`).
#[derive(Clone, Debug)]
pub(crate) struct AppState(Arc<Shared>);

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// What [`AppState`] shares.
#[derive(Debug)]
pub(crate) struct Shared {
    /// The session engine.
    pub(crate) service: SessionService,
    /// The configuration in force.
    pub(crate) config: Arc<Config>,
    /// Cookie names and attributes.
    pub(crate) cookies: Arc<CookieSettings>,
    /// Prometheus registry.
    pub(crate) metrics: Arc<Metrics>,
    /// The stored API keys of the `/v1` routes.
    pub(crate) api_keys: ApiKeys,
    /// `SESSIOND_API_KEY`, accepted as an API key.
    pub(crate) bootstrap_api_key: Option<Arc<Secret<String>>>,
    /// Issuers whose JWK Set is fetched from a URL.
    pub(crate) remote_issuers: Option<RemoteIssuers>,
    /// The event fan-out behind the SSE streams.
    pub(crate) events: EventHub,
    /// The open connections and their limits (served by `conn`, counted in `/metrics`).
    pub(crate) connections: Connections,
}

impl AppState {
    /// Assembles the state; the connections' limits come from `config.server`.
    pub(crate) fn new(
        service: SessionService,
        config: Arc<Config>,
        api_keys: ApiKeys,
        bootstrap_api_key: Option<Secret<String>>,
        remote_issuers: Option<RemoteIssuers>,
    ) -> Self {
        let events = EventHub::new(&config.events);
        let connections = Connections::new(&config.server, &config.sessions.trusted_proxies);
        AppState(Arc::new(Shared {
            metrics: Arc::new(Metrics::new(
                service.clone(),
                api_keys.clone(),
                events.clone(),
                connections.clone(),
            )),
            connections,
            cookies: Arc::new(CookieSettings::named(
                &config.cookies.name,
                config.cookies.secure,
                config.cookies.same_site,
            )),
            events,
            config,
            api_keys,
            bootstrap_api_key: bootstrap_api_key.map(Arc::new),
            remote_issuers,
            service,
        }))
    }
}
