-- Studies asked for again by UID (fetched: Arrow study_instance_uid), with the instances the PACS
-- listed for them (new_rows): drop the rows it no longer lists; their listing count is asked again.
DELETE FROM instances
WHERE starts_with(path, $prefix)
  AND study_instance_uid IN (SELECT study_instance_uid FROM fetched)
  AND path NOT IN (SELECT path FROM new_rows);
UPDATE pacs_studies SET n_instances = NULL
WHERE source = $source AND study_instance_uid IN (SELECT study_instance_uid FROM fetched);
