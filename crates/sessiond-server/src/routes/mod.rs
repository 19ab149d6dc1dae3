//! HTTP handlers, by audience: `api` (server to server, `/v1`), `browser` (`/auth/browser`),
//! `events` (Server-Sent Event streams), `ops` (health, metrics, OpenAPI, JWKS); `dto` holds the wire types.

pub(crate) mod api;
pub(crate) mod browser;
pub mod dto;
pub(crate) mod events;
pub(crate) mod ops;
