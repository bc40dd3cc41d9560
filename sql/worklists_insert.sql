-- Record a written worklist (file name only; it lives in <workdir>/worklists).
INSERT INTO worklists VALUES ($run_id, $file, $model_id, $threshold, $n, now());
