//! End-to-end tests: the real `sessiond` binary on port 0 with a temporary SQLite database,
//! driven over HTTP.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod harness;

mod api;
mod browser;
mod cli;
mod events;
mod issuers;
mod logs;
mod nodes;
mod outage;
mod relay;
mod rotation;
mod tls;
