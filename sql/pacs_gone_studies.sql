-- Studies of $prefix with an instance the PACS no longer had when it was retrieved: asked for again
-- tonight, whatever their study date, so a deleted instance's row goes (a windowed query may not reach it).
SELECT DISTINCT study_instance_uid FROM instances
WHERE starts_with(path, $prefix) AND decode_reason = 'retrieve_gone' AND study_instance_uid IS NOT NULL;
