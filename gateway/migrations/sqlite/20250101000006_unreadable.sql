-- Unreadable messages of polled sources, embedded mode (SQLite). Mirrors
-- ../postgres/20250101000004_unreadable.sql. A Pôle emploi registration the gateway cannot read is
-- kept here, masked, with its violations, for an operator (GET /v1/unreadable), instead of
-- vanishing into a log line. The same item read the same way at every poll is one row (digest).
CREATE TABLE unreadable (
    id          TEXT PRIMARY KEY,
    system      TEXT NOT NULL,
    digest      TEXT NOT NULL,
    context     TEXT NOT NULL,
    -- The item with its personal fields masked; NULL when the whole answer was unreadable.
    masked_item TEXT,
    violations  TEXT NOT NULL,
    first_seen  TEXT NOT NULL,
    last_seen   TEXT NOT NULL,
    seen        INTEGER NOT NULL DEFAULT 1,
    UNIQUE (system, digest)
);
CREATE INDEX unreadable_by_last_seen ON unreadable (last_seen);
