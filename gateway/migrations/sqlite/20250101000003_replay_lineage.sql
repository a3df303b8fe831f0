-- Replay lineage, embedded mode (SQLite). Mirrors ../postgres/20250101000003_replay_lineage.sql.
-- A replay opens a new attempt named by a replay id: kept on the replayed dead letter, on the
-- delivery while the attempt runs, on each call the attempt makes, and on the dead letter that
-- may end it. The trace follows a dossier from one dead letter to the next through these ids.

-- The attempt this dead letter's replay opened (set together with replayed_at).
ALTER TABLE dead_letters ADD COLUMN replay_id TEXT;
-- The replay whose attempt ended in this dead letter (NULL: the attempt was not a replay's).
ALTER TABLE dead_letters ADD COLUMN after_replay TEXT;
-- The replay whose attempt is under way; cleared when the attempt ends.
ALTER TABLE deliveries ADD COLUMN replay_id TEXT;
-- The replay whose attempt made the call.
ALTER TABLE operations ADD COLUMN replay_id TEXT;

-- A bulk replay walks the dead letters not replayed yet.
CREATE INDEX dead_letters_open ON dead_letters (last_failure) WHERE replayed_at IS NULL;
