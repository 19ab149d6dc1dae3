//! The client against the real server, in this process (`sessiond_server::testing`), on a
//! manual clock and a temporary SQLite database.

mod errors;
mod events;
mod harness;
mod routes;
