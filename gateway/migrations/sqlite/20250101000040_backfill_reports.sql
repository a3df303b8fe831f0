-- The backfill's reports (contract §5), embedded mode (SQLite). Mirrors
-- ../postgres/20250101000040_backfill_reports.sql. Each run of `passerelle backfill` keeps its JSON
-- report here, gzipped, for the console's Reprises page to offer for download. The report holds no
-- personal value (ATEXO's dossier ids, outcomes, rule and anomaly codes).
CREATE TABLE backfill_reports (
    report_id   TEXT PRIMARY KEY,
    finished_at TEXT NOT NULL,
    counts      TEXT NOT NULL,
    gzip_json   BLOB NOT NULL
);
CREATE INDEX backfill_reports_by_time ON backfill_reports (finished_at);
