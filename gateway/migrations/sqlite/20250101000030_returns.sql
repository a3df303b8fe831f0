-- The outbox of returns to ATEXO SEM (contract §4), embedded mode (SQLite). Mirrors
-- ../postgres/20250101000030_returns.sql. A return is written in the same transaction as the AGORA
-- answer it reports, then posted by a sender that retries: a crash between the two loses nothing.
-- `return_id` goes out as the `Idempotency-Key` header, so ATEXO SEM can recognise a return posted
-- again after a crash between its post and its record.
CREATE TABLE returns_outbox (
    return_id       TEXT PRIMARY KEY,
    dossier_id      TEXT NOT NULL,
    atexo_dossier   TEXT NOT NULL,
    numero_agora    TEXT,
    etat            TEXT,
    anomaly_codes   TEXT NOT NULL,
    body            TEXT NOT NULL,
    created_at      TEXT NOT NULL,
    status          TEXT NOT NULL DEFAULT 'pending',
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TEXT NOT NULL,
    last_error      TEXT,
    sent_at         TEXT
);
CREATE INDEX returns_outbox_due ON returns_outbox (status, next_attempt_at);
CREATE INDEX returns_outbox_by_dossier ON returns_outbox (dossier_id, created_at);
