-- Load score part files into the store; a score already there is kept.
-- Rows with no score are decode rejections (see decode_rejections_load.sql).
INSERT INTO scores BY NAME
SELECT sop_instance_uid, patient_id, model_id, score, run_id, scored_at
FROM read_parquet($files, union_by_name = true)
WHERE score IS NOT NULL
ON CONFLICT DO NOTHING;
