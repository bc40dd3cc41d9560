-- Scored images of $model_id from the PACS $prefix whose result is not yet stored on $destination,
-- with what their SR needs about the image (identity, patient, study) and the SR of an earlier
-- model's result for the same image, which the new one supersedes.
SELECT i.sop_instance_uid, i.sop_class_uid, i.study_instance_uid, i.series_instance_uid, i.patient_id,
       i.patient_name, i.sex, i.birth_date, i.study_date, i.accession_number, i.modality, i.header, s.score,
       p.sr_instance_uid AS supersedes, p.model_id AS supersedes_model
FROM instances AS i
JOIN scores AS s ON s.sop_instance_uid = i.sop_instance_uid AND s.model_id = $model_id
LEFT JOIN (SELECT sop_instance_uid, sr_instance_uid, model_id FROM results_sent
           WHERE destination = $destination AND model_id <> $model_id
           QUALIFY row_number() OVER (PARTITION BY sop_instance_uid ORDER BY sent_at DESC) = 1) AS p
       ON p.sop_instance_uid = i.sop_instance_uid
WHERE i.status = 'scored' AND starts_with(i.path, $prefix)
  AND NOT EXISTS (SELECT 1 FROM results_sent AS r
                  WHERE r.sop_instance_uid = i.sop_instance_uid AND r.model_id = $model_id
                    AND r.destination = $destination)
ORDER BY i.sop_instance_uid;
