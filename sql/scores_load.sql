-- Load shard Parquet files into the store; a score already there is kept.
INSERT INTO scores BY NAME
SELECT sop_instance_uid, patient_id, model_id, score, run_id, scored_at
FROM read_parquet($files)
ON CONFLICT DO NOTHING;
