-- Replace the rows of re-read files with their new header rows (new_rows: Arrow).
-- Columns go BY NAME: new_rows holds path, size, mtime_ns, every sweep.INSTANCE_COLUMNS
-- column (header_issues included), header, read_reason, read_detail, status, reason, swept_run_id.
DELETE FROM instances WHERE path IN (SELECT path FROM new_rows);
INSERT INTO instances BY NAME SELECT * FROM new_rows;
