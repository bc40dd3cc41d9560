-- Eligible images with no DXA inside the window, by reason, for the training report.
SELECT CASE WHEN NOT EXISTS (SELECT 1 FROM dxa AS d WHERE d.patient_id = i.patient_id)
            THEN 'no_dxa_for_patient' ELSE 'no_dxa_within_window' END AS reason,
       count(*) AS n
FROM instances AS i
WHERE i.status IN ('pending', 'scored')
  AND NOT EXISTS (
      SELECT 1 FROM dxa AS d
      WHERE d.patient_id = i.patient_id
        AND abs(datediff('day', i.study_date, d.exam_date)) <= $window_days)
GROUP BY ALL ORDER BY reason;
