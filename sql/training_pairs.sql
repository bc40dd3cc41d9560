-- Eligible images paired with the same patient's nearest DXA within
-- $window_days, with the DXA's T-scores (the caller takes the minimum over
-- its label sites) and what the subgroup analysis needs.
SELECT i.path, i.sop_instance_uid, i.patient_id, i.study_date, d.exam_date,
       i.age, i.view, i.modality, i.manufacturer,
       d.t_lumbar_spine, d.t_femoral_neck, d.t_total_hip
FROM instances AS i
JOIN dxa AS d
  ON d.patient_id = i.patient_id
 AND abs(datediff('day', i.study_date, d.exam_date)) <= $window_days
WHERE i.status IN ('pending', 'scored')
QUALIFY row_number() OVER (
    PARTITION BY i.sop_instance_uid
    ORDER BY abs(datediff('day', i.study_date, d.exam_date)), d.exam_date) = 1
ORDER BY i.patient_id, i.sop_instance_uid;
