-- The ledger, embedded mode (SQLite). Mirrors ../postgres/20250101000001_ledger.sql.
-- Timestamps are UTC text of one fixed width (`YYYY-MM-DDTHH:MM:SS.ffffffZ`), so that text order is time order.
-- JSON is stored as text: the serde form of the adapters' types (the canonical dossier holds the NIR:
-- this is the system of record, never logged).

-- One row per dossier: the merged desired state and its version.
CREATE TABLE dossiers (
    dossier_id      TEXT PRIMARY KEY NOT NULL,
    -- Canonical JSON of the merged dossier; NULL only inside the transaction that creates the row.
    desired         TEXT,
    -- 0 only inside the creating transaction; 1 for the first committed state, +1 per change.
    desired_version INTEGER NOT NULL DEFAULT 0,
    flow            TEXT NOT NULL CHECK (flow IN ('sync', 'backfill')),
    in_perimeter    INTEGER NOT NULL,
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL
) STRICT;

-- The latest record of each source of a dossier, as received (single-source canonical JSON).
CREATE TABLE dossier_sources (
    dossier_id     TEXT NOT NULL REFERENCES dossiers (dossier_id) ON DELETE CASCADE,
    system         TEXT NOT NULL,
    -- The source's own version counter (ATEXO SEM `dossier/@version`), when it has one.
    source_version INTEGER,
    -- The perimeter verdict the ingress gave this record; the dossier's is the AND of its sources'.
    in_perimeter   INTEGER NOT NULL,
    record         TEXT NOT NULL,
    received_at    TEXT NOT NULL,
    PRIMARY KEY (dossier_id, system)
) STRICT;

-- The delivery state of a dossier toward one destination.
CREATE TABLE deliveries (
    dossier_id        TEXT NOT NULL REFERENCES dossiers (dossier_id) ON DELETE CASCADE,
    destination       TEXT NOT NULL,
    delivered         TEXT NOT NULL,
    delivered_version INTEGER NOT NULL DEFAULT 0,
    status            TEXT NOT NULL
        CHECK (status IN ('pending', 'delivered', 'incomplete', 'out_of_perimeter', 'dead')),
    attempts          INTEGER NOT NULL DEFAULT 0,
    last_error        TEXT,
    waiting_for       TEXT NOT NULL DEFAULT '[]',
    last_attempt_at   TEXT,
    -- First failure of the current run of failures: copied into a dead letter.
    first_failure_at  TEXT,
    updated_at        TEXT NOT NULL,
    PRIMARY KEY (dossier_id, destination)
) STRICT;
CREATE INDEX deliveries_by_status ON deliveries (destination, status, updated_at);

-- The message journal: one entry per distinct inbound payload of a system.
CREATE TABLE journal (
    message_id     TEXT PRIMARY KEY NOT NULL,
    system         TEXT NOT NULL,
    flow           TEXT NOT NULL CHECK (flow IN ('sync', 'backfill')),
    payload_hash   TEXT NOT NULL,
    received_at    TEXT NOT NULL,
    request_id     TEXT,
    -- The payload with personal fields masked; nulled after the configured retention.
    masked_payload BLOB,
    UNIQUE (system, payload_hash)
) STRICT;
CREATE INDEX journal_payloads_by_age ON journal (received_at) WHERE masked_payload IS NOT NULL;

-- Which dossiers a journal entry shaped, in the order of the message's records.
CREATE TABLE journal_dossiers (
    message_id TEXT NOT NULL REFERENCES journal (message_id) ON DELETE CASCADE,
    dossier_id TEXT NOT NULL REFERENCES dossiers (dossier_id) ON DELETE CASCADE,
    position   INTEGER NOT NULL,
    PRIMARY KEY (message_id, dossier_id)
) STRICT;
CREATE INDEX journal_dossiers_by_dossier ON journal_dossiers (dossier_id);

-- The calls made to a destination for a dossier, in order.
CREATE TABLE operations (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    dossier_id   TEXT NOT NULL REFERENCES dossiers (dossier_id) ON DELETE CASCADE,
    destination  TEXT NOT NULL,
    operation    TEXT NOT NULL,
    http_status  INTEGER,
    outcome      TEXT NOT NULL,
    numero_agora TEXT,
    at           TEXT NOT NULL
) STRICT;
CREATE INDEX operations_by_dossier ON operations (dossier_id, destination, id);

-- One worker at a time per dossier.
CREATE TABLE leases (
    dossier_id TEXT PRIMARY KEY NOT NULL,
    holder     TEXT NOT NULL,
    expires_at TEXT NOT NULL
) STRICT;

-- Dossiers an operator must look at. A replayed one stays, marked, for the lineage.
CREATE TABLE dead_letters (
    id            TEXT PRIMARY KEY NOT NULL,
    dossier_id    TEXT NOT NULL REFERENCES dossiers (dossier_id) ON DELETE CASCADE,
    destination   TEXT NOT NULL,
    -- DeadReason::code(), for filtering without reading the JSON.
    code          TEXT NOT NULL,
    reason        TEXT NOT NULL,
    attempts      INTEGER NOT NULL,
    first_failure TEXT NOT NULL,
    last_failure  TEXT NOT NULL,
    replayed_at   TEXT
) STRICT;
CREATE INDEX dead_letters_by_failure ON dead_letters (last_failure);
CREATE INDEX dead_letters_by_code ON dead_letters (code);
CREATE INDEX dead_letters_by_dossier ON dead_letters (dossier_id);
