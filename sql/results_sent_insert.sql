-- Record SRs stored on a PACS (sent: Arrow sop_instance_uid, model_id, destination, sr_instance_uid, run_id).
INSERT OR REPLACE INTO results_sent (sop_instance_uid, model_id, destination, sr_instance_uid, run_id, sent_at)
SELECT sop_instance_uid, model_id, destination, sr_instance_uid, run_id, now() FROM sent;
