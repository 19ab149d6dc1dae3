-- sessiond schema v1 (SQLite). Times are INTEGER milliseconds since the Unix epoch, UTC.
-- Secrets are never stored: only SHA-256 hashes (csrf_hash, refresh_*_hash) and signing-key
-- material sealed under the master key (signing_keys.sealed).

CREATE TABLE sessions (
    id                  TEXT    NOT NULL PRIMARY KEY,
    user_id             TEXT    NOT NULL,
    tenant              TEXT    NOT NULL,
    kind                TEXT    NOT NULL CHECK (kind IN ('cookie', 'tokens', 'browser')),
    created_at          INTEGER NOT NULL,
    last_seen_at        INTEGER NOT NULL,
    idle_expires_at     INTEGER NOT NULL,
    absolute_expires_at INTEGER NOT NULL,
    revoked_at          INTEGER,
    revoke_reason       TEXT,
    key_id              TEXT    NOT NULL,
    csrf_hash           BLOB,
    refresh_hash        BLOB,
    refresh_prev_hash   BLOB,
    refresh_rotated_at  INTEGER,
    refresh_generation  INTEGER NOT NULL DEFAULT 0,
    ip                  TEXT,
    user_agent          TEXT,
    claims              TEXT    NOT NULL DEFAULT '{}'
);
CREATE INDEX sessions_by_user ON sessions (user_id, tenant, created_at);
CREATE INDEX sessions_by_idle_expiry ON sessions (idle_expires_at);
CREATE INDEX sessions_by_absolute_expiry ON sessions (absolute_expires_at);

CREATE TABLE signing_keys (
    id           TEXT    NOT NULL PRIMARY KEY,
    purpose      TEXT    NOT NULL CHECK (purpose IN ('cookie', 'access', 'refresh')),
    algorithm    TEXT    NOT NULL,
    created_at   INTEGER NOT NULL,
    retired_at   INTEGER,
    verify_until INTEGER,
    public_key   BLOB,
    sealed       BLOB    NOT NULL,
    CHECK ((retired_at IS NULL) = (verify_until IS NULL))
);
-- At most one active key per purpose, enforced by the database so that concurrent bootstraps
-- and rotations on several nodes cannot produce two.
CREATE UNIQUE INDEX signing_keys_one_active ON signing_keys (purpose) WHERE retired_at IS NULL;

CREATE TABLE audit_log (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    at         INTEGER NOT NULL,
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
