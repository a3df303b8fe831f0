-- The operators' search (GET /v1/dossiers, the console), embedded mode (SQLite). Mirrors
-- ../postgres/20250101000020_search.sql.
--
-- `q` names a dossier by an identifier some system gave it: the ATEXO SEM reference, the OUIFORM
-- orientation id, the Pôle emploi idInscription (each the `sources[0].id` of that system's record)
-- or the AGORA number. Those live inside JSON and the operations: without an index, a search would
-- read every dossier. Triggers keep the index, so that no write path of the ledger has to know it.
-- The NIR is never a key here: a search by NIR is matched on the dossier id, which is already a
-- salted hash of it (see the search in gateway/src/ledger/search.rs).
-- The triggers test for the row rather than say OR IGNORE: the ledger writes sources with an
-- upsert, whose conflict clause would override the trigger's.
CREATE TABLE search_keys (
    value      TEXT NOT NULL,
    -- atexo-sem, ouiform, pole-emploi (a source's id) or agora (an AGORA number).
    kind       TEXT NOT NULL,
    dossier_id TEXT NOT NULL REFERENCES dossiers (dossier_id) ON DELETE CASCADE,
    PRIMARY KEY (value, kind, dossier_id)
) STRICT, WITHOUT ROWID;
CREATE INDEX search_keys_by_dossier ON search_keys (dossier_id);

CREATE TRIGGER search_keys_source_insert AFTER INSERT ON dossier_sources
WHEN json_extract(NEW.record, '$.sources[0].id') IS NOT NULL
BEGIN
    INSERT INTO search_keys (value, kind, dossier_id)
    SELECT json_extract(NEW.record, '$.sources[0].id'), NEW.system, NEW.dossier_id
     WHERE NOT EXISTS (SELECT 1 FROM search_keys
                        WHERE value = json_extract(NEW.record, '$.sources[0].id') AND kind = NEW.system AND dossier_id = NEW.dossier_id);
END;

CREATE TRIGGER search_keys_source_update AFTER UPDATE OF record ON dossier_sources
WHEN json_extract(NEW.record, '$.sources[0].id') IS NOT NULL
BEGIN
    INSERT INTO search_keys (value, kind, dossier_id)
    SELECT json_extract(NEW.record, '$.sources[0].id'), NEW.system, NEW.dossier_id
     WHERE NOT EXISTS (SELECT 1 FROM search_keys
                        WHERE value = json_extract(NEW.record, '$.sources[0].id') AND kind = NEW.system AND dossier_id = NEW.dossier_id);
END;

CREATE TRIGGER search_keys_agora_number AFTER INSERT ON operations
WHEN NEW.numero_agora IS NOT NULL
BEGIN
    INSERT INTO search_keys (value, kind, dossier_id)
    SELECT NEW.numero_agora, 'agora', NEW.dossier_id
     WHERE NOT EXISTS (SELECT 1 FROM search_keys
                        WHERE value = NEW.numero_agora AND kind = 'agora' AND dossier_id = NEW.dossier_id);
END;

-- What the ledger already holds.
INSERT OR IGNORE INTO search_keys (value, kind, dossier_id)
SELECT json_extract(record, '$.sources[0].id'), system, dossier_id FROM dossier_sources
 WHERE json_extract(record, '$.sources[0].id') IS NOT NULL;
INSERT OR IGNORE INTO search_keys (value, kind, dossier_id)
SELECT numero_agora, 'agora', dossier_id FROM operations WHERE numero_agora IS NOT NULL;

-- The search's pages: most recently changed first.
CREATE INDEX dossiers_by_update ON dossiers (updated_at, dossier_id);
