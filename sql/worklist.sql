-- Candidate worklist rows: one per patient, from her latest eligible scored
-- study under model $model_id, with what the exclusion rules need: her most
-- recent DXA up to $as_of, any known condition, and her latest referral
-- status. The caller (worklist.build_rows) applies the rules and the threshold.
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
last_dxa AS (
    SELECT d.patient_id, d.exam_date,
           least(d.t_lumbar_spine, d.t_femoral_neck, d.t_total_hip) AS t_min
    FROM dxa AS d
    WHERE d.exam_date <= CAST($as_of AS DATE)
    QUALIFY row_number() OVER (PARTITION BY d.patient_id ORDER BY d.exam_date DESC) = 1
),
known AS (
    SELECT patient_id, string_agg(DISTINCT condition, ', ' ORDER BY condition) AS known_condition
    FROM known_conditions GROUP BY patient_id
),
referral AS (
    SELECT patient_id, status AS referral_status, acted_at AS referral_at, by_user AS referral_by, note AS referral_note
    FROM referrals
    WHERE CAST(acted_at AS DATE) <= CAST($as_of AS DATE)
    QUALIFY row_number() OVER (PARTITION BY patient_id ORDER BY acted_at DESC, recorded_at DESC, event_id DESC) = 1
)
SELECT l.*,
       d.exam_date AS last_dxa_date,
       d.t_min AS last_dxa_t_min,
       k.known_condition,
       r.referral_status, r.referral_at, r.referral_by, r.referral_note
FROM latest AS l
LEFT JOIN last_dxa AS d USING (patient_id)
LEFT JOIN known AS k USING (patient_id)
LEFT JOIN referral AS r USING (patient_id)
ORDER BY l.score DESC, l.patient_id;
