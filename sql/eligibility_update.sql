-- Write re-evaluated eligibility (elig: Arrow table of path, eligibility_reason).
UPDATE instances AS i SET eligibility_reason = e.eligibility_reason, rules_digest = $digest
FROM elig AS e
WHERE i.path = e.path;
