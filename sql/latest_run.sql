-- The most recent nightly run that finished (a failed run has no complete worklist).
SELECT run_id, kind, started_at, finished_at, run_date, archive, model_id, threshold, status, summary
FROM runs
WHERE kind = 'nightly' AND model_id IS NOT NULL AND status = 'finished'
ORDER BY started_at DESC
LIMIT 1;
