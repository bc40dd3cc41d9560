-- What the selection rules look at, for readable files not yet judged by
-- the rules with digest $digest (new or changed files, or all after a rule change).
SELECT path, header, age FROM instances
WHERE read_reason IS NULL AND rules_digest IS DISTINCT FROM $digest;
