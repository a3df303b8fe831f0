-- The ledger, production mode (PostgreSQL). Mirrors ../sqlite/20250101000001_ledger.sql.
-- JSON columns hold the serde form of the adapters' types (the canonical dossier holds the NIR:
-- this is the system of record, never logged).

-- One row per dossier: the merged desired state and its version. `accept` locks this row
-- (SELECT … FOR UPDATE) while it merges, so concurrent messages of one dossier serialise.
CREATE TABLE dossiers (
    dossier_id      TEXT PRIMARY KEY,
    -- Canonical JSON of the merged dossier; NULL only inside the transaction that creates the row.
    desired         JSONB,
    -- 0 only inside the creating transaction; 1 for the first committed state, +1 per change.
    desired_version BIGINT NOT NULL DEFAULT 0,
    flow            TEXT NOT NULL CHECK (flow IN ('sync', 'backfill')),
    in_perimeter    BOOLEAN NOT NULL,
    created_at      TIMESTAMPTZ NOT NULL,
    updated_at      TIMESTAMPTZ NOT NULL
);

-- The latest record of each source of a dossier, as received (single-source canonical JSON).
CREATE TABLE dossier_sources (
    dossier_id     TEXT NOT NULL REFERENCES dossiers (dossier_id) ON DELETE CASCADE,
    system         TEXT NOT NULL,
    -- The source's own version counter (ATEXO SEM `dossier/@version`), when it has one.
    source_version BIGINT,
    -- The perimeter verdict the ingress gave this record; the dossier's is the AND of its sources'.
    in_perimeter   BOOLEAN NOT NULL,
    record         JSONB NOT NULL,
    received_at    TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (dossier_id, system)
);

-- The delivery state of a dossier toward one destination.
CREATE TABLE deliveries (
    dossier_id        TEXT NOT NULL REFERENCES dossiers (dossier_id) ON DELETE CASCADE,
    destination       TEXT NOT NULL,
    delivered         JSONB NOT NULL,
    delivered_version BIGINT NOT NULL DEFAULT 0,
    status            TEXT NOT NULL
        CHECK (status IN ('pending', 'delivered', 'incomplete', 'out_of_perimeter', 'dead')),
    attempts          INTEGER NOT NULL DEFAULT 0,
    last_error        TEXT,
    waiting_for       JSONB NOT NULL DEFAULT '[]'::jsonb,
    last_attempt_at   TIMESTAMPTZ,
    -- First failure of the current run of failures: copied into a dead letter.
    first_failure_at  TIMESTAMPTZ,
    updated_at        TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (dossier_id, destination)
);
CREATE INDEX deliveries_by_status ON deliveries (destination, status, updated_at);

-- The message journal: one entry per distinct inbound payload of a system.
CREATE TABLE journal (
    message_id     TEXT PRIMARY KEY,
    system         TEXT NOT NULL,
    flow           TEXT NOT NULL CHECK (flow IN ('sync', 'backfill')),
    payload_hash   TEXT NOT NULL,
    received_at    TIMESTAMPTZ NOT NULL,
    request_id     TEXT,
    -- The payload with personal fields masked; nulled after the configured retention.
    masked_payload BYTEA,
    UNIQUE (system, payload_hash)
);
CREATE INDEX journal_payloads_by_age ON journal (received_at) WHERE masked_payload IS NOT NULL;

-- Which dossiers a journal entry shaped, in the order of the message's records.
CREATE TABLE journal_dossiers (
    message_id TEXT NOT NULL REFERENCES journal (message_id) ON DELETE CASCADE,
    dossier_id TEXT NOT NULL REFERENCES dossiers (dossier_id) ON DELETE CASCADE,
    position   INTEGER NOT NULL,
    PRIMARY KEY (message_id, dossier_id)
);
CREATE INDEX journal_dossiers_by_dossier ON journal_dossiers (dossier_id);

-- The calls made to a destination for a dossier, in order.
CREATE TABLE operations (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    dossier_id   TEXT NOT NULL REFERENCES dossiers (dossier_id) ON DELETE CASCADE,
    destination  TEXT NOT NULL,
    operation    TEXT NOT NULL,
    http_status  INTEGER,
    outcome      TEXT NOT NULL,
    numero_agora TEXT,
    at           TIMESTAMPTZ NOT NULL
);
CREATE INDEX operations_by_dossier ON operations (dossier_id, destination, id);

-- One worker at a time per dossier.
CREATE TABLE leases (
    dossier_id TEXT PRIMARY KEY,
    holder     TEXT NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL
);

-- Dossiers an operator must look at. A replayed one stays, marked, for the lineage.
CREATE TABLE dead_letters (
    id            TEXT PRIMARY KEY,
    dossier_id    TEXT NOT NULL REFERENCES dossiers (dossier_id) ON DELETE CASCADE,
    destination   TEXT NOT NULL,
    -- DeadReason::code(), for filtering without reading the JSON.
    code          TEXT NOT NULL,
    reason        JSONB NOT NULL,
    attempts      INTEGER NOT NULL,
    first_failure TIMESTAMPTZ NOT NULL,
    last_failure  TIMESTAMPTZ NOT NULL,
    replayed_at   TIMESTAMPTZ
);
CREATE INDEX dead_letters_by_failure ON dead_letters (last_failure);
CREATE INDEX dead_letters_by_code ON dead_letters (code);
CREATE INDEX dead_letters_by_dossier ON dead_letters (dossier_id);
