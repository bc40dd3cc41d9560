-- One score per woman under model $model_id: her latest eligible scored image,
-- as the worklist counts women. For the demo's figures on tonight's scores.
SELECT i.patient_id, s.score
FROM instances AS i
JOIN scores AS s ON s.sop_instance_uid = i.sop_instance_uid AND s.model_id = $model_id
WHERE i.status = 'scored' AND i.patient_id IS NOT NULL
QUALIFY row_number() OVER (PARTITION BY i.patient_id
                           ORDER BY i.study_date DESC NULLS LAST, s.score DESC, i.sop_instance_uid) = 1
ORDER BY i.patient_id;
