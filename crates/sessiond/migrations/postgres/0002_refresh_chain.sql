-- Refresh rotation rules v2 (docs/DESIGN.md §3.3): the row keeps the path of
-- recent rotation steps that leads to the current secret, and whether the current pair has been
-- used, instead of one previous hash. Rows from before keep their current hash and generation;
-- their pair counts as used (no lost-response re-issue for a pair issued under the old rules).
ALTER TABLE sessions ADD COLUMN refresh_used BOOLEAN NOT NULL DEFAULT TRUE;
ALTER TABLE sessions ADD COLUMN refresh_chain TEXT NOT NULL DEFAULT '[]';
ALTER TABLE sessions DROP COLUMN refresh_prev_hash;
ALTER TABLE sessions DROP COLUMN refresh_rotated_at;
