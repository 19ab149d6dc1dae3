//! HTTP handlers, by audience: `api` (server to server, `/v1`), `browser` (`/auth/browser`),
//! `events` (Server-Sent Event streams), `ops` (health, metrics, OpenAPI, JWKS); `dto` is the
//! wire types (the `sessiond-api` crate, shared with the client).

pub(crate) mod api;
pub(crate) mod browser;
pub(crate) use sessiond_api as dto;
pub(crate) mod events;
pub(crate) mod ops;
