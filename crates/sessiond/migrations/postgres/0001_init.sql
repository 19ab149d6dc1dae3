-- sessiond schema v1 (PostgreSQL): sessions, signing keys, audit log, one-time claims, API keys.
-- The same tables and meaning as migrations/sqlite, in one step.
-- Times are BIGINT milliseconds since the Unix epoch, UTC (the clock is injected, so the
-- database's own clock is never consulted). Secrets are never stored: only SHA-256 hashes
-- (csrf_hash, refresh_*_hash, api_keys.hash) and signing-key material sealed under the master
-- key (signing_keys.sealed). The tables are created unqualified, in the first schema of the
-- connection's search_path (PgOptions::schema sets it).

CREATE TABLE sessions (
    id                  TEXT    NOT NULL PRIMARY KEY,
    user_id             TEXT    NOT NULL,
    tenant              TEXT    NOT NULL,
    kind                TEXT    NOT NULL CHECK (kind IN ('cookie', 'tokens', 'browser')),
    created_at          BIGINT  NOT NULL,
    last_seen_at        BIGINT  NOT NULL,
    idle_expires_at     BIGINT  NOT NULL,
    absolute_expires_at BIGINT  NOT NULL,
    revoked_at          BIGINT,
    revoke_reason       TEXT,
    key_id              TEXT    NOT NULL,
    csrf_hash           BYTEA   CHECK (octet_length(csrf_hash) = 32),
    refresh_hash        BYTEA   CHECK (octet_length(refresh_hash) = 32),
    refresh_prev_hash   BYTEA   CHECK (octet_length(refresh_prev_hash) = 32),
    refresh_rotated_at  BIGINT,
    refresh_generation  BIGINT  NOT NULL DEFAULT 0,
    ip                  TEXT,
    user_agent          TEXT,
    -- JSON text, not JSONB: the store treats claims as opaque, and JSONB would refuse a
    -- "\u0000" escape that serde_json writes and SQLite keeps.
    claims              TEXT    NOT NULL DEFAULT '{}'
);
CREATE INDEX sessions_by_user ON sessions (user_id, tenant, created_at);
CREATE INDEX sessions_by_idle_expiry ON sessions (idle_expires_at);
CREATE INDEX sessions_by_absolute_expiry ON sessions (absolute_expires_at);

CREATE TABLE signing_keys (
    id           TEXT    NOT NULL PRIMARY KEY,
    purpose      TEXT    NOT NULL CHECK (purpose IN ('cookie', 'access', 'refresh')),
    algorithm    TEXT    NOT NULL,
    created_at   BIGINT  NOT NULL,
    retired_at   BIGINT,
    verify_until BIGINT,
    public_key   BYTEA,
    sealed       BYTEA   NOT NULL,
    CHECK ((retired_at IS NULL) = (verify_until IS NULL))
);
-- At most one active key per purpose, enforced by the database so that concurrent bootstraps
-- and rotations on several nodes cannot produce two.
CREATE UNIQUE INDEX signing_keys_one_active ON signing_keys (purpose) WHERE retired_at IS NULL;
CREATE INDEX signing_keys_by_verify_until ON signing_keys (verify_until)
    WHERE retired_at IS NOT NULL;

CREATE TABLE audit_log (
    seq        BIGINT  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at         BIGINT  NOT NULL,
    event      TEXT    NOT NULL,
    reason     TEXT    NOT NULL,
    session_id TEXT,
    user_id    TEXT,
    tenant     TEXT,
    key_id     TEXT,
    ip         TEXT
);
CREATE INDEX audit_by_session ON audit_log (session_id, seq);
CREATE INDEX audit_by_user ON audit_log (user_id, seq);

-- One-time claims: an id (derived from iss+jti, or a hash of a token's decoded payload) that
-- can be claimed once until it expires. Garbage-collected after expires_at.
CREATE TABLE claims (
    id         TEXT    NOT NULL PRIMARY KEY,
    expires_at BIGINT  NOT NULL,
    claimed_at BIGINT  NOT NULL
);
CREATE INDEX claims_by_expiry ON claims (expires_at);

-- API keys for the server's /v1 routes. Only SHA-256 of the key is stored.
CREATE TABLE api_keys (
    id         TEXT    NOT NULL PRIMARY KEY,
    name       TEXT    NOT NULL,
    hash       BYTEA   NOT NULL UNIQUE CHECK (octet_length(hash) = 32),
    created_at BIGINT  NOT NULL,
    revoked_at BIGINT
);
