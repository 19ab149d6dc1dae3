//! The sessiond server as a library: [`Server`] (HTTP API, browser endpoints, JWKS, SSE, TLS)
//! with one owned lifecycle, the configuration it is built from, and what the admin commands
//! need ([`migrate`], [`open_service`], [`open_api_keys`]). The `sessiond` binary (`main.rs`, `cli.rs`, `admin.rs`)
//! is the command line around it.
//!
//! # Layout
//! Modules depend one way, from the leaves up:
//! - [`config`]: layered configuration (file, environment, flags) parsed into types, and the
//!   environment's [`Secrets`]; `problem`: errors as `application/problem+json`.
//! - [`parse`]: parsers of untrusted header input (`X-Forwarded-For`, `Last-Event-ID`), public
//!   for the fuzz targets.
//! - `tls` (HTTPS, client certificates), `issuers` (JWK Sets fetched from URLs); the browser
//!   cookies' names and attributes are the library's `sessiond::cookie::CookieSettings`, `hub` (the event fan-out behind the SSE streams).
//! - `conn`: connections: one accept loop and one HTTP/1.1 connection builder for plain HTTP and
//!   TLS, with their timeouts and caps; `metrics` (Prometheus, counting streams and
//!   connections).
//! - [`api_keys`]: the server's own API keys (the `/v1` credentials), over the SQL stores'
//!   API-key table.
//! - `state`: what handlers reach (`AppState`); `extract`: the JSON extractor;
//!   `auth`: the API-key layer on `/v1`.
//! - `routes`: handlers by audience (`api`, `browser`, `events`, `ops`); the wire types are the
//!   `sessiond-api` crate ([`dto`]); `openapi`: the generated API description.
//! - `app`: the router; `startup`: storage, master key, signing keys ([`StartError`]);
//!   `server`: [`Server`], which owns the listener and every background task.
//! - `testing` (feature `testing`): a [`Server`] inside a test's process, on a manual clock.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod api_keys;
pub mod config;
pub mod parse;

mod app;
mod auth;
mod conn;
mod extract;
mod hub;
mod issuers;
mod metrics;
mod openapi;
mod problem;
mod routes;
mod server;
mod startup;
mod state;
mod tls;

#[cfg(feature = "testing")]
pub mod testing;

pub use config::{Config, ConfigError, Overrides, Secrets};
pub use server::Server;
/// The wire types of the HTTP API (what `/openapi.json` describes): the `sessiond-api` crate.
pub use sessiond_api as dto;
pub use startup::{migrate, open_api_keys, open_service, StartError};
