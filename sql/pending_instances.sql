-- Eligible files that wait for a score, in a stable order (tests read it; the run plans with score_plan.sql).
SELECT path, sop_instance_uid, patient_id
FROM instances
WHERE status = 'pending'
ORDER BY sop_instance_uid;
