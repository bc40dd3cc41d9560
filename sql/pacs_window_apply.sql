-- One completely queried window [$date_from, $date_to] of $source: drop the rows the PACS no longer
-- lists there, and remember the studies it listed. Rows outside tonight's windows are never touched.
-- listed: Arrow (study_instance_uid, study_date, n_instances), every study the window listed;
-- fetched: Arrow (study_instance_uid), the studies whose metadata came tonight; new_rows: their instances.
DELETE FROM instances
WHERE starts_with(path, $prefix)
  AND study_instance_uid IN (SELECT study_instance_uid FROM fetched)
  AND path NOT IN (SELECT path FROM new_rows);
DELETE FROM instances
WHERE starts_with(path, $prefix)
  AND study_instance_uid IN (
      SELECT study_instance_uid FROM pacs_studies
      WHERE source = $source AND study_date BETWEEN $date_from AND $date_to
        AND study_instance_uid NOT IN (SELECT study_instance_uid FROM listed));
DELETE FROM pacs_studies
WHERE source = $source AND study_date BETWEEN $date_from AND $date_to
  AND study_instance_uid NOT IN (SELECT study_instance_uid FROM listed);
INSERT OR REPLACE INTO pacs_studies (source, study_instance_uid, study_date, n_instances, listed_run_id)
SELECT $source, study_instance_uid, study_date, n_instances, $run_id FROM listed;
