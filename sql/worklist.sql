-- Candidate worklist rows: one per patient, from her latest eligible scored
-- study under model $model_id, with the exclusion that applies to her (if any)
-- and her most recent DXA. The caller keeps rows with no exclusion and a
-- score at or above the threshold, and counts the rest.
WITH scored AS (
    SELECT i.patient_id, i.patient_name, i.age, i.study_date, i.accession_number,
           i.sop_instance_uid, i.modality, i.view, i.institution_name,
           s.score, e.heatmap
    FROM instances AS i
    JOIN scores AS s ON s.sop_instance_uid = i.sop_instance_uid AND s.model_id = $model_id
    LEFT JOIN explanations AS e ON e.sop_instance_uid = i.sop_instance_uid AND e.model_id = $model_id
    WHERE i.status = 'scored'
),
latest AS (
    SELECT * FROM scored
    QUALIFY row_number() OVER (
        -- an image without a Patient ID is its own patient: never merged with another
        PARTITION BY coalesce(patient_id, 'uid:' || sop_instance_uid)
        ORDER BY study_date DESC NULLS LAST, score DESC, sop_instance_uid) = 1
),
prior_dxa AS (
    SELECT l.patient_id, d.exam_date,
           least(d.t_lumbar_spine, d.t_femoral_neck, d.t_total_hip) AS t_min
    FROM latest AS l
    JOIN dxa AS d ON d.patient_id = l.patient_id AND d.exam_date <= l.study_date
    QUALIFY row_number() OVER (PARTITION BY l.patient_id ORDER BY d.exam_date DESC) = 1
)
SELECT l.*,
       p.exam_date AS last_dxa_date,
       p.t_min AS last_dxa_t_min,
       CASE WHEN p.exam_date > l.study_date - to_days(CAST($dxa_lookback_days AS INTEGER))
            THEN 'recent_dxa' END AS exclusion
FROM latest AS l
LEFT JOIN prior_dxa AS p USING (patient_id)
ORDER BY l.score DESC, l.patient_id;
