-- Close a run record with its summary (counts only, no patient data).
UPDATE runs SET finished_at = now(), status = $status, summary = $summary WHERE run_id = $run_id;
