-- Dossier sequence numbers, embedded mode (SQLite) only.
--
-- The dossier id is a salted hash: every index keyed by it takes its new entries at random
-- places. In a backfill that dirties one random leaf page per dossier and per such index in each
-- commit, and SQLite writes each dirty page whole, to the WAL and again at the checkpoint (the
-- 1M-dossier backfill wrote 58 GB for a 3.4 GB ledger). The tables that only ever grow and are
-- read by dossier for the trace (journal_dossiers, lot_members, operations) are indexed by the
-- dossier's sequence number instead, given in creation order: their new entries land at the end.
-- PostgreSQL keeps its indexes by dossier id (its backfill meets its goal; its own pages are
-- written back by the background writer, not per commit).

-- `seq`: given once, when the dossier is created, never changed. Not the rowid: VACUUM may
-- renumber the rowids of a table without an INTEGER PRIMARY KEY.
ALTER TABLE dossiers ADD COLUMN seq INTEGER;
UPDATE dossiers SET seq = rowid;
CREATE UNIQUE INDEX dossiers_by_seq ON dossiers (seq);

ALTER TABLE journal_dossiers ADD COLUMN dossier_seq INTEGER;
UPDATE journal_dossiers
   SET dossier_seq = (SELECT d.seq FROM dossiers d WHERE d.dossier_id = journal_dossiers.dossier_id);
DROP INDEX journal_dossiers_by_dossier;
CREATE INDEX journal_dossiers_by_seq ON journal_dossiers (dossier_seq);

ALTER TABLE lot_members ADD COLUMN dossier_seq INTEGER;
UPDATE lot_members
   SET dossier_seq = (SELECT d.seq FROM dossiers d WHERE d.dossier_id = lot_members.dossier_id);
DROP INDEX lot_members_by_dossier;
CREATE INDEX lot_members_by_seq ON lot_members (dossier_seq);

ALTER TABLE operations ADD COLUMN dossier_seq INTEGER;
UPDATE operations
   SET dossier_seq = (SELECT d.seq FROM dossiers d WHERE d.dossier_id = operations.dossier_id);
DROP INDEX operations_by_dossier;
CREATE INDEX operations_by_seq ON operations (dossier_seq, destination, id);
