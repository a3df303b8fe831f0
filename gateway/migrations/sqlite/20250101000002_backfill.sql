-- The backfill's lots (*lots de reprise*), embedded mode (SQLite). Mirrors
-- ../postgres/20250101000002_backfill.sql. Same conventions as 20250101000001_ledger.sql.

-- One row per lot: the checkpoint of one `POST /reprises`.
CREATE TABLE lots (
    lot_key     TEXT PRIMARY KEY NOT NULL,
    destination TEXT NOT NULL,
    -- claimed: members chosen, not submitted yet; submitted: AGORA answered 202 with its lot id;
    -- done: the report was read and every member settled.
    state       TEXT NOT NULL CHECK (state IN ('claimed', 'submitted', 'done')),
    -- AGORA's id of the lot, once `POST /reprises` answered 202.
    agora_lot   TEXT,
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL
) STRICT;
CREATE INDEX lots_open ON lots (destination, created_at) WHERE state <> 'done';

-- The members of a lot, in line order, with the desired version each was claimed at. Kept after
-- the lot is done, for the trace.
CREATE TABLE lot_members (
    lot_key         TEXT NOT NULL REFERENCES lots (lot_key) ON DELETE CASCADE,
    position        INTEGER NOT NULL,
    dossier_id      TEXT NOT NULL REFERENCES dossiers (dossier_id) ON DELETE CASCADE,
    desired_version INTEGER NOT NULL,
    PRIMARY KEY (lot_key, dossier_id)
) STRICT;
CREATE INDEX lot_members_by_dossier ON lot_members (dossier_id);

-- The open lot a delivery belongs to (NULL otherwise): the lot, not a per-dossier task, delivers
-- it until the lot settles it.
ALTER TABLE deliveries ADD COLUMN lot TEXT REFERENCES lots (lot_key);
-- The claim walks the pending deliveries of a destination, oldest first, on the existing
-- deliveries_by_status (destination, status, updated_at): no index of its own to maintain.
-- The members of a lot (settling, releasing, counting).
CREATE INDEX deliveries_by_lot ON deliveries (lot) WHERE lot IS NOT NULL;

-- Named progress marks (e.g. how many dossiers of a backfill file were committed).
CREATE TABLE checkpoints (
    key        TEXT PRIMARY KEY NOT NULL,
    value      INTEGER NOT NULL,
    updated_at TEXT NOT NULL
) STRICT;
