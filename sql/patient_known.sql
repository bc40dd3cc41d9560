-- Whether any image of this patient is in the store.
SELECT count(*) > 0 FROM instances WHERE patient_id = $patient_id;
