//! The client against the real server, in this process (`sessiond_server::testing`), on a
//! manual clock and a temporary SQLite database.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod errors;
mod events;
mod harness;
mod routes;
mod verify;
