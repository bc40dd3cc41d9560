-- Load known osteoporosis / treatment rows (kc: Arrow table); a later file updates since/source.
INSERT OR REPLACE INTO known_conditions
SELECT patient_id, condition, since, source, now() FROM kc;
