-- The backlog an estimate times, and a seeded random sample of it.
-- The backlog: images the run's model ($model_id) has not scored that the nightly run would
-- plan (pending, or scored only by another model), from this run's source ($prefix: a PACS's
-- URI prefix; NULL: a folder). Each sampled row carries the whole backlog's count and bytes
-- (window totals, taken before the LIMIT). The sample: $n images, the same ones for the same
-- $seed and index, in the order the nightly run scores them (sql/score_plan.sql).
SELECT path, sop_instance_uid, patient_id, backlog, backlog_bytes
FROM (
    SELECT i.path, i.sop_instance_uid, i.patient_id, i.study_date,
           count(*) OVER () AS backlog, sum(i.size) OVER () AS backlog_bytes
    FROM instances AS i
    WHERE (i.status = 'pending'
           OR (i.status = 'scored' AND NOT EXISTS (SELECT 1 FROM scores AS s
                                                   WHERE s.sop_instance_uid = i.sop_instance_uid
                                                     AND s.model_id = $model_id)))
      AND (CASE WHEN CAST($prefix AS VARCHAR) IS NULL THEN NOT regexp_matches(i.path, '^(https?|dimse)://')
                ELSE starts_with(i.path, $prefix) END)
    ORDER BY md5(CAST($seed AS VARCHAR) || '|' || i.sop_instance_uid), i.path
    LIMIT $n
)
ORDER BY study_date DESC NULLS LAST, sop_instance_uid;
