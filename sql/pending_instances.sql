-- Eligible files that wait for a score, in a stable order (shards split this list).
SELECT path, sop_instance_uid, patient_id
FROM instances
WHERE status = 'pending'
ORDER BY sop_instance_uid;
