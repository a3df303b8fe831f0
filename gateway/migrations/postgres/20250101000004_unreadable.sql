-- Unreadable messages of polled sources, production mode (PostgreSQL). Mirrors
-- ../sqlite/20250101000006_unreadable.sql. A Pôle emploi registration the gateway cannot read is
-- kept here, masked, with its violations, for an operator (GET /v1/unreadable), instead of
-- vanishing into a log line. The same item read the same way at every poll is one row (digest).
CREATE TABLE unreadable (
    id          TEXT PRIMARY KEY,
    system      TEXT NOT NULL,
    digest      TEXT NOT NULL,
    context     JSONB NOT NULL,
    -- The item with its personal fields masked; NULL when the whole answer was unreadable.
    masked_item JSONB,
    violations  JSONB NOT NULL,
    first_seen  TIMESTAMPTZ NOT NULL,
    last_seen   TIMESTAMPTZ NOT NULL,
    seen        BIGINT NOT NULL DEFAULT 1,
    UNIQUE (system, digest)
);
CREATE INDEX unreadable_by_last_seen ON unreadable (last_seen);
