-- Files in tonight's listing that are new or changed since the last sweep
-- (by path, size and modification time). $listing is an Arrow table.
SELECT l.path
FROM listing AS l
LEFT JOIN instances AS i USING (path)
WHERE i.path IS NULL OR i.size <> l.size OR i.mtime_ns <> l.mtime_ns
ORDER BY l.path;
