-- Runs still 'running' when a new run starts under the work folder's run lock
-- were killed (SIGKILL, power loss, OOM): no live process can hold them. Mark
-- them as ended abnormally, naming the run that noticed; returns how many.
UPDATE runs
SET status = 'ended_abnormally',
    summary = CAST(json_object('ended_abnormally', true, 'noticed_by_run', $run_id) AS JSON)
WHERE status = 'running' AND run_id <> $run_id
RETURNING run_id;
