-- Finished nightly runs, oldest first.
SELECT run_id, run_date, model_id, threshold FROM runs
WHERE kind = 'nightly' AND status = 'finished' ORDER BY started_at;
