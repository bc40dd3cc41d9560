-- Of the studies a window listed (hits: Arrow study_instance_uid, n_instances), those that need no
-- metadata tonight: listed before with the same instance count, every instance indexed, none to retry.
SELECT h.study_instance_uid
FROM hits AS h
JOIN pacs_studies AS s ON s.source = $source AND s.study_instance_uid = h.study_instance_uid
WHERE h.n_instances IS NOT NULL AND s.n_instances = h.n_instances
  AND (SELECT count(*) FROM instances AS i
       WHERE starts_with(i.path, $prefix) AND i.study_instance_uid = h.study_instance_uid) = h.n_instances
  AND NOT EXISTS (SELECT 1 FROM instances AS i
                  WHERE starts_with(i.path, $prefix) AND i.study_instance_uid = h.study_instance_uid
                    AND (i.read_reason IN ('read_timeout', 'unreadable')
                         OR i.decode_reason IN ('retrieve_failed', 'retrieve_timeout', 'retrieve_gone')));
