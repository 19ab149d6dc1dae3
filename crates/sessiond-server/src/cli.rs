//! The command line (docs/DESIGN.md §10.1).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use sessiond::store::ApiKeyScope;

/// sessiond: sessions and credentials after login — issue, validate, refresh, revoke.
///
/// Run `sessiond serve` for the HTTP API on the embedded default (SQLite in ./sessiond-data).
/// The admin commands work on the same database, also while the server runs.
#[derive(Debug, Parser)]
#[command(name = "sessiond", version, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command understands.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// TOML configuration file (every key optional; see the README).
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Directory for the SQLite database and the master-key file [default: ./sessiond-data].
    #[arg(long, global = true, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Database: sqlite://PATH or postgres://… [default: SQLite in the data directory].
    #[arg(long, global = true, value_name = "URL")]
    pub database_url: Option<String>,
    /// Redis for one-time claims and cross-node events.
    #[arg(long, global = true, value_name = "URL")]
    pub redis_url: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP server (migrates the database and ensures signing keys first).
    Serve {
        /// Address to listen on [default: 127.0.0.1:8080]; port 0 picks a free port.
        #[arg(long, value_name = "ADDR")]
        listen: Option<String>,
    },
    /// Apply pending database migrations and exit.
    Migrate,
    /// Signing keys: list, rotate (the old key keeps verifying for a while), or retire one at
    /// once (emergency).
    Keys {
        #[command(subcommand)]
        action: KeysAction,
    },
    /// Sessions: list a user's active sessions, revoke one, or revoke all of a user's.
    Sessions {
        #[command(subcommand)]
        action: SessionsAction,
    },
    /// API keys for the /v1 routes: create (shown once), list, revoke.
    ApiKeys {
        #[command(subcommand)]
        action: ApiKeysAction,
    },
    /// Delete expired sessions, claims and retired keys past retention, then exit.
    Gc,
}

#[derive(Debug, Subcommand)]
pub enum KeysAction {
    /// Every stored key: id, purpose, algorithm, state.
    List,
    /// Make a new active key; without --purpose, rotate all three. The old key keeps
    /// verifying for keys.retention (access keys: access_ttl + leeway + 30 s snapshot age +
    /// 30 s clock skew). An operator-supplied access key (token_sessions.hs256_secret) is not
    /// rotated: configure a new secret instead.
    Rotate {
        /// Which key to rotate.
        #[arg(long, value_enum)]
        purpose: Option<Purpose>,
    },
    /// End a key at once (emergency, e.g. a leaked secret): it verifies nothing from now on,
    /// here at once and on every running node within 30 s (their key snapshot age). If it is
    /// the active key, a new generated key of its purpose becomes active in the same step.
    /// A retired operator secret is never used again: a node still configured with it refuses
    /// to start.
    Retire {
        /// The key id (sk-…), as `keys list` shows it.
        id: String,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Purpose {
    /// Session-cookie MACs.
    Cookie,
    /// Access-token signatures.
    Access,
    /// Refresh-token signatures.
    Refresh,
}

#[derive(Debug, Subcommand)]
pub enum SessionsAction {
    /// A user's active sessions.
    List {
        /// The user id.
        #[arg(long)]
        user: String,
        /// Only this tenant.
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Revoke one session (idempotent).
    Revoke {
        /// The session id (ses-…).
        id: String,
        /// Reason code recorded on the session and in the audit trail.
        #[arg(long, default_value = "admin_revoked")]
        reason: String,
    },
    /// Revoke every active session of a user, optionally keeping one.
    RevokeAll {
        /// The user id.
        #[arg(long)]
        user: String,
        /// Keep this session (ses-…).
        #[arg(long)]
        except: Option<String>,
        /// Only this tenant.
        #[arg(long)]
        tenant: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum ApiKeysAction {
    /// Create a key; it is printed once and stored only as a hash.
    Create {
        /// A label, e.g. the calling service's name.
        #[arg(long)]
        name: String,
        /// What the key may do: `admin` (every route) or `verify` (validate, read sessions,
        /// event streams: a resource server's key).
        #[arg(long, default_value = "admin", value_parser = parse_scope)]
        scope: ApiKeyScope,
    },
    /// Every key (ids, labels and scopes, never the keys).
    List,
    /// Revoke a key by id (ak-…).
    Revoke {
        /// The key id.
        id: String,
    },
}

/// `--scope`: `admin` or `verify`.
fn parse_scope(text: &str) -> Result<ApiKeyScope, String> {
    ApiKeyScope::parse(text).ok_or_else(|| String::from("expected admin or verify"))
}
