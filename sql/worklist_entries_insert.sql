-- Remember whom a run listed (e: Arrow table); re-rendering a run's list replaces its rows.
DELETE FROM worklist_entries WHERE run_id = $run_id;
INSERT INTO worklist_entries SELECT $run_id, patient_id, site, sop_instance_uid, study_date, score, band, CAST($flagged_on AS DATE) FROM e;
