//! A typed async client of sessiond's HTTP API (docs/DESIGN.md §9): one method per route, the
//! wire types of `sessiond-api` (re-exported as [`api`]), problem+json answers as a typed
//! [`ClientError`] carrying the wire [`ErrorCode`](sessiond::ErrorCode), and the event streams
//! as [`Stream`](futures_util::Stream)s of [`Event`]s that resume with `Last-Event-ID`.
//!
//! An outage is never a verdict: [`ClientError::is_outage`] says "could not be checked"
//! (503, connection refused, timeout, broken transport), and a refusal is
//! [`ClientError::Api`] with its code.
//!
//! TLS is rustls, with the `CryptoProvider` the application installs once at start (this
//! library installs none, so it adds no second crypto stack):
//! `rustls::crypto::ring::default_provider().install_default()`. Building a client without one is
//! [`ClientError::Build`]. Plain `http://` needs it too (reqwest builds its TLS connector
//! up front).
//!
//! # Layout
//! - `client`: [`Client`] (cheap to clone, one connection pool) and its [`ClientBuilder`]
//!   (API key, timeouts, extra root certificates, reconnection [`Backoff`]).
//! - `error`: [`ClientError`], and the mapping of answers to it.
//! - `events`: [`Event`] and the streams' parsing, idle bound and reconnection.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use sessiond::Secret;
//! use sessiond_client::api::ValidateRequest;
//! use sessiond_client::Client;
//!
//! let _ = rustls::crypto::ring::default_provider().install_default();
//! let client = Client::builder("http://127.0.0.1:8080")
//!     .api_key(Secret::new(std::env::var("SESSIOND_API_KEY")?))
//!     .build()?;
//! let valid = client.validate(&ValidateRequest::cookie_header("__Host-sessiond=…")).await?;
//! println!("{} until {}", valid.session.user_id, valid.deadline);
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod client;
mod error;
mod events;
mod verify;

pub use client::{Client, ClientBuilder};
pub use error::ClientError;
pub use events::{Backoff, Event};
/// The wire types (the `sessiond-api` crate).
pub use sessiond_api as api;
pub use verify::{LocalVerifier, Verified, VerifierBuilder, VerifyError, Via, WhenStale};
