-- The operators' search (GET /v1/dossiers, the console), production mode (PostgreSQL). Mirrors
-- ../sqlite/20250101000020_search.sql, which says why: an index of the identifiers systems gave
-- each dossier (a source's id, the AGORA number), kept by triggers so that no write path of the
-- ledger has to know it. The NIR is never a key here.
CREATE TABLE search_keys (
    value      TEXT NOT NULL,
    kind       TEXT NOT NULL,
    dossier_id TEXT NOT NULL REFERENCES dossiers (dossier_id) ON DELETE CASCADE,
    PRIMARY KEY (value, kind, dossier_id)
);
CREATE INDEX search_keys_by_dossier ON search_keys (dossier_id);

CREATE FUNCTION search_keys_of_source() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.record -> 'sources' -> 0 ->> 'id' IS NOT NULL THEN
        INSERT INTO search_keys (value, kind, dossier_id)
        VALUES (NEW.record -> 'sources' -> 0 ->> 'id', NEW.system, NEW.dossier_id)
        ON CONFLICT DO NOTHING;
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER search_keys_source AFTER INSERT OR UPDATE OF record ON dossier_sources
FOR EACH ROW EXECUTE FUNCTION search_keys_of_source();

CREATE FUNCTION search_keys_of_operation() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.numero_agora IS NOT NULL THEN
        INSERT INTO search_keys (value, kind, dossier_id)
        VALUES (NEW.numero_agora, 'agora', NEW.dossier_id)
        ON CONFLICT DO NOTHING;
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER search_keys_agora_number AFTER INSERT ON operations
FOR EACH ROW EXECUTE FUNCTION search_keys_of_operation();

INSERT INTO search_keys (value, kind, dossier_id)
SELECT record -> 'sources' -> 0 ->> 'id', system, dossier_id FROM dossier_sources
 WHERE record -> 'sources' -> 0 ->> 'id' IS NOT NULL
ON CONFLICT DO NOTHING;
INSERT INTO search_keys (value, kind, dossier_id)
SELECT numero_agora, 'agora', dossier_id FROM operations WHERE numero_agora IS NOT NULL
ON CONFLICT DO NOTHING;

CREATE INDEX dossiers_by_update ON dossiers (updated_at, dossier_id);
