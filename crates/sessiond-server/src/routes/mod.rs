//! HTTP handlers, by audience: `api` (server to server, `/v1`), `browser` (`/auth/browser`),
//! `events` (Server-Sent Event streams), `ops` (health, metrics, OpenAPI, JWKS); `dto` holds the wire types.

pub mod api;
pub mod browser;
pub mod dto;
pub mod events;
pub mod ops;
