-- Append coordinators' actions (ev: Arrow table); an event already recorded is not added twice.
INSERT OR IGNORE INTO referrals
SELECT event_id, patient_id, status, note, by_user, CAST(acted_at AS TIMESTAMP), now() FROM ev;
