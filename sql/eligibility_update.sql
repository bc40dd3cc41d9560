-- Write re-evaluated eligibility (elig: Arrow table of path, eligibility_reason).
UPDATE instances AS i SET eligibility_reason = e.eligibility_reason
FROM elig AS e
WHERE i.path = e.path AND i.eligibility_reason IS DISTINCT FROM e.eligibility_reason;
