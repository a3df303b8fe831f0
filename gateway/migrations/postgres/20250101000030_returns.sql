-- The outbox of returns to ATEXO SEM (contract §4), production mode (PostgreSQL). Mirrors
-- ../sqlite/20250101000030_returns.sql. A return is written in the same transaction as the AGORA
-- answer it reports, then posted by a sender that retries: a crash between the two loses nothing.
-- `return_id` goes out as the `Idempotency-Key` header, so ATEXO SEM can recognise a return posted
-- again after a crash between its post and its record.
CREATE TABLE returns_outbox (
    return_id       TEXT PRIMARY KEY,
    dossier_id      TEXT NOT NULL,
    -- What the timeline shows (no personal value): ATEXO's dossier id, AGORA's number and state,
    -- the anomaly codes.
    atexo_dossier   TEXT NOT NULL,
    numero_agora    TEXT,
    etat            TEXT,
    anomaly_codes   JSONB NOT NULL,
    -- The retourAgora XML, as posted.
    body            TEXT NOT NULL,
    created_at      TIMESTAMPTZ NOT NULL,
    -- pending, sent, or refused (ATEXO SEM answered a 4xx: posting it again will not help).
    status          TEXT NOT NULL DEFAULT 'pending',
    attempts        INTEGER NOT NULL DEFAULT 0,
    -- When a sender may take it next: a sender's claim pushes it past the post's timeout.
    next_attempt_at TIMESTAMPTZ NOT NULL,
    last_error      TEXT,
    sent_at         TIMESTAMPTZ
);
CREATE INDEX returns_outbox_due ON returns_outbox (next_attempt_at) WHERE status = 'pending';
CREATE INDEX returns_outbox_by_dossier ON returns_outbox (dossier_id, created_at);
