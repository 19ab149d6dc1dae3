-- What an API key may do (docs/DESIGN.md §9.1): `admin`, every route; `verify`, validation, reads
-- and the event streams only (a resource server's key). Keys created before scopes are `admin`, as
-- they could do everything.
ALTER TABLE api_keys ADD COLUMN scope TEXT NOT NULL DEFAULT 'admin'
    CHECK (scope IN ('admin', 'verify'));
