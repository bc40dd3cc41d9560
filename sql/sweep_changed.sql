-- Files in tonight's listing that are new or changed since the last sweep
-- (by path, size and modification time), and files that could not be read
-- last time (a passing I/O error is retried every night). listing: Arrow.
SELECT l.path
FROM listing AS l
LEFT JOIN instances AS i USING (path)
WHERE i.path IS NULL OR i.size <> l.size OR i.mtime_ns <> l.mtime_ns
   OR i.read_reason = 'unreadable'
ORDER BY l.path;
