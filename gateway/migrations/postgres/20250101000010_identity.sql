-- The installation's identity, shared by every replica on this ledger. `dossier_salt` salts the
-- dossier ids derived from a trainee and a session: two replicas with different salts would make
-- two AGORA dossiers of one. Written once (the first start wins, INSERT … ON CONFLICT DO NOTHING),
-- never changed by passerelle.
CREATE TABLE identity (
    name       TEXT PRIMARY KEY,
    value      TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
