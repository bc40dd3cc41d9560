-- Drop index rows of files that are no longer in the archive, except under
-- folders that could not be listed tonight ($unlisted: their prefixes), whose
-- files are kept as last seen. Scores stay. (Files whose pixels could not be
-- read, decode_reason 'unreadable', are re-read whole by sweep_changed.sql.)
-- Rows of a PACS source (a URI, not a path) are the PACS sweep's (sql/pacs_window_apply.sql).
DELETE FROM instances
WHERE path NOT IN (SELECT path FROM listing)
  AND NOT regexp_matches(path, '^(https?|dimse)://')
  AND NOT EXISTS (SELECT 1 FROM unnest(CAST($unlisted AS VARCHAR[])) AS u(prefix) WHERE starts_with(path, u.prefix));
