-- Entries in tonight's listing that are new or changed since the last sweep
-- (by path, size and modification time), files that could not be read last
-- time (a passing I/O error or a hung mount is retried every night), and entries whose
-- walk verdict changed (a link retargeted out of or back into the archive).
-- walk_reason is set for entries the walk refused (never opened: the caller
-- writes their rows from the listing); NULL for files whose header is read.
-- listing: Arrow (path, size, mtime_ns, walk_reason, walk_detail).
SELECT l.path, l.walk_reason, l.walk_detail
FROM listing AS l
LEFT JOIN instances AS i USING (path)
WHERE i.path IS NULL OR i.size <> l.size OR i.mtime_ns <> l.mtime_ns
   OR (l.walk_reason IS NULL AND i.read_reason IN ('unreadable', 'read_timeout', 'outside_archive', 'not_regular_file'))
   -- pixels that could not be read, or a file that is no longer the image its header row says
   -- (rewritten with its size and time kept): read the header again, and decode again
   OR (l.walk_reason IS NULL AND i.decode_reason = 'unreadable')
   OR (l.walk_reason IS NOT NULL AND (i.read_reason IS DISTINCT FROM l.walk_reason
                                      OR i.read_detail IS DISTINCT FROM l.walk_detail))
ORDER BY l.path;
