//! Integration tests of the sessiond library, one binary.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod claims;
mod common;
mod conformance;
mod cookie_negative;
mod effects;
mod jose_vectors;
mod keys;
mod lifecycle;
#[cfg(feature = "postgres")]
mod pg_bus;
#[cfg(feature = "postgres")]
mod pg_rows;
#[cfg(feature = "postgres")]
mod postgres;
mod races;
#[cfg(feature = "redis")]
mod redis;
#[cfg(feature = "redis")]
mod redis_bus;
mod rotation;
mod sqlite;
mod sqlite_batch;
mod sqlite_cache;
mod tokens;
mod watch;
mod wycheproof;
