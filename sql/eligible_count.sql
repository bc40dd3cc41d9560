-- Files that are images of eligible patients: read, eligible, not a duplicate copy
-- (scored, waiting, or refused only by the pixel decoder).
SELECT count(*) FROM instances
WHERE read_reason IS NULL AND eligibility_reason IS NULL AND status <> 'duplicate';
