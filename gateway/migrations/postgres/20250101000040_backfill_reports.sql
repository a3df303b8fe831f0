-- The backfill's reports (contract §5), production mode (PostgreSQL). Mirrors
-- ../sqlite/20250101000040_backfill_reports.sql. Each run of `passerelle backfill` keeps its JSON
-- report here, gzipped, for the console's Reprises page to offer for download: the run may have
-- been made on another host, by another person, and its --report file is not at hand. The report
-- holds no personal value (ATEXO's dossier ids, outcomes, rule and anomaly codes).
CREATE TABLE backfill_reports (
    report_id   TEXT PRIMARY KEY,
    finished_at TIMESTAMPTZ NOT NULL,
    counts      JSONB NOT NULL,
    gzip_json   BYTEA NOT NULL
);
CREATE INDEX backfill_reports_by_time ON backfill_reports (finished_at);
