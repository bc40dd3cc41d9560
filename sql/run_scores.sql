-- Every image scored by $model_id in run $run_id (the kept copy of each SOP Instance UID), for the
-- run's FHIR Bundle: whose, which study, when, and the score.
SELECT i.patient_id, i.study_instance_uid, i.sop_instance_uid, i.study_date, s.score, s.scored_at
FROM scores AS s
JOIN instances AS i ON i.sop_instance_uid = s.sop_instance_uid AND i.status = 'scored'
WHERE s.model_id = $model_id AND s.run_id = $run_id
ORDER BY i.sop_instance_uid;
