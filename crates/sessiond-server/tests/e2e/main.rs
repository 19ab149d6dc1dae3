//! End-to-end tests over HTTP: [`inproc`] runs the library's `Server` in this process (manual
//! clock, temporary SQLite); the other modules start the real `sessiond` binary on port 0 for
//! what needs a process (exit codes, signals, logs, TLS, outages, several nodes).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod harness;
mod inproc;
mod sse;

mod browser;
mod cli;
mod crash;
mod events;
mod issuers;
mod layer;
mod logs;
mod nodes;
mod outage;
mod relay;
mod rotation;
mod tls;
