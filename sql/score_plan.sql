-- This run's pending images, each with its shard: the first 8 bytes of the
-- SHA-256 of its SOP Instance UID, modulo the shard count (the same number
-- osteo_batch.scoring.sharding.shard_of computes), newest study first: recent
-- images matter most to a program, so a backlog cut short (a run stopped at the end of its
-- window, a PACS outside its hours) has scored them first. Undated studies come last; the
-- SOP Instance UID keeps the order stable.
SELECT path, sop_instance_uid, patient_id,
       CAST(CAST(('0x' || left(sha256(sop_instance_uid), 16)) AS UBIGINT) % CAST($n_shards AS UBIGINT) AS INTEGER) AS shard
FROM instances
WHERE status = 'pending'
  -- this run's source only ($prefix: a PACS's URI prefix; NULL: a folder): rows another source left in
  -- the work folder wait, pending, for a run from their own source
  AND (CASE WHEN CAST($prefix AS VARCHAR) IS NULL THEN NOT regexp_matches(path, '^(https?|dimse)://')
            ELSE starts_with(path, $prefix) END)
ORDER BY study_date DESC NULLS LAST, sop_instance_uid;
