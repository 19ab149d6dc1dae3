-- One-time claims: an id (derived from iss+jti, or a hash of a token's decoded payload) that
-- can be claimed once until it expires. Garbage-collected after expires_at.
CREATE TABLE claims (
    id         TEXT    NOT NULL PRIMARY KEY,
    expires_at INTEGER NOT NULL,
    claimed_at INTEGER NOT NULL
);
CREATE INDEX claims_by_expiry ON claims (expires_at);
