-- Open a run record.
INSERT INTO runs (run_id, kind, started_at, run_date, archive, model_id, threshold, status)
VALUES ($run_id, $kind, now(), current_date, $archive, $model_id, $threshold, 'running');
