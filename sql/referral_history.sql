-- Every recorded action for one patient, oldest first.
SELECT status, note, by_user, acted_at, recorded_at FROM referrals WHERE patient_id = $patient_id ORDER BY acted_at, recorded_at;
