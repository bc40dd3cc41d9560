-- Scored images whose displayed score reaches the threshold ($min_score is
-- models.bands.raw_floor(threshold)) and that have no heat map from this model yet.
-- One image per SOP Instance UID (the copy that was scored).
SELECT i.path, i.sop_instance_uid, s.score
FROM instances AS i
JOIN scores AS s ON s.sop_instance_uid = i.sop_instance_uid AND s.model_id = $model_id
LEFT JOIN explanations AS e ON e.sop_instance_uid = i.sop_instance_uid AND e.model_id = $model_id
WHERE i.status = 'scored' AND s.score >= $min_score AND e.heatmap IS NULL
  -- this run's source only ($prefix: a PACS's URI prefix; NULL: a folder): rows another source left in
  -- the work folder wait, pending, for a run from their own source
  AND (CASE WHEN CAST($prefix AS VARCHAR) IS NULL THEN NOT regexp_matches(i.path, '^(https?|dimse)://')
            ELSE starts_with(i.path, $prefix) END)
ORDER BY s.score DESC, i.sop_instance_uid;
