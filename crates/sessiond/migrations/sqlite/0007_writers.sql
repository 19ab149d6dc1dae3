-- Who changed session rows (docs/DESIGN.md §15.4), so a store that caches rows notices changes
-- made by anyone else before it answers from its cache.
--
-- `sessiond_writers`: one row per store instance (one process's open store). Each store installs
-- temporary triggers on its own writer connection that set its row's `seq` to the table's highest
-- plus one at each session row it changes. A caching store reads the highest `seq` of the other
-- instances: a change means another sessiond process (the CLI) wrote.
CREATE TABLE sessiond_writers (
    instance BLOB PRIMARY KEY NOT NULL CHECK (length(instance) = 16),
    seq INTEGER NOT NULL
);
CREATE INDEX sessiond_writers_seq ON sessiond_writers (seq);

-- `sessiond_anonymous_writes.n`: changes made by connections that are not a sessiond store's
-- writer (an operator's `sqlite3` shell). These triggers add one per changed row; a store's
-- temporary triggers take that one back for its own changes, so `n` moves only for the others.
CREATE TABLE sessiond_anonymous_writes (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    n INTEGER NOT NULL
);
INSERT INTO sessiond_anonymous_writes (id, n) VALUES (1, 0);
CREATE TRIGGER sessiond_anonymous_insert AFTER INSERT ON sessions
BEGIN UPDATE sessiond_anonymous_writes SET n = n + 1; END;
CREATE TRIGGER sessiond_anonymous_update AFTER UPDATE ON sessions
BEGIN UPDATE sessiond_anonymous_writes SET n = n + 1; END;
CREATE TRIGGER sessiond_anonymous_delete AFTER DELETE ON sessions
BEGIN UPDATE sessiond_anonymous_writes SET n = n + 1; END;
