-- One row per flagged patient, from her first flag (the first run that listed
-- her): her first DXA within $follow_up_days after it, and the first action a
-- coordinator recorded after it, all as known on $as_of. outcomes.py turns these into uptake, yield
-- and time to DXA per run, month and site.
WITH first_flag AS (
    SELECT patient_id, run_id, site, flagged_on, score, band
    FROM worklist_entries
    WHERE flagged_on <= CAST($as_of AS DATE)
    QUALIFY row_number() OVER (PARTITION BY patient_id ORDER BY flagged_on, run_id) = 1
),
dxa_after AS (
    SELECT f.patient_id, d.exam_date,
           least(d.t_lumbar_spine, d.t_femoral_neck, d.t_total_hip) AS t_min
    FROM first_flag AS f
    JOIN dxa AS d ON d.patient_id = f.patient_id
     AND d.exam_date >= f.flagged_on
     AND d.exam_date <= f.flagged_on + to_days(CAST($follow_up_days AS INTEGER))
     AND d.exam_date <= CAST($as_of AS DATE)
    QUALIFY row_number() OVER (PARTITION BY f.patient_id ORDER BY d.exam_date) = 1
),
contact AS (
    SELECT f.patient_id, min(r.acted_at) AS first_action
    FROM first_flag AS f
    JOIN referrals AS r ON r.patient_id = f.patient_id AND CAST(r.acted_at AS DATE) >= f.flagged_on
     AND CAST(r.acted_at AS DATE) <= CAST($as_of AS DATE)
    GROUP BY f.patient_id
)
SELECT f.patient_id, f.run_id, f.site, f.flagged_on, f.score, f.band,
       d.exam_date AS dxa_date, d.t_min, c.first_action,
       date_diff('day', f.flagged_on, d.exam_date) AS days_to_dxa
FROM first_flag AS f
LEFT JOIN dxa_after AS d USING (patient_id)
LEFT JOIN contact AS c USING (patient_id)
ORDER BY f.flagged_on, f.patient_id;
