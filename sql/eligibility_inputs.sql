-- What the selection rules look at, for readable files whose verdict may change
-- tonight: files not yet judged by the rules with digest $digest (new or changed
-- files, or all after a rule change), and files whose study date check answers
-- otherwise on $run_date than when they were judged (a future date has arrived).
-- study_date_problem is the built-in check (osteo_batch.archive.eligibility): a study
-- date after $run_date or before $earliest, or a StudyDate in the header that did
-- not parse. sql/study_dates.sql lists the same files with the same test.
WITH judged AS (
    SELECT path, header, age, rules_digest, eligibility_reason,
        CASE
            WHEN study_date > $run_date THEN 'after_run_date'
            WHEN study_date < $earliest THEN 'before_1900'
            WHEN study_date IS NULL AND (header ->> 'StudyDate') IS NOT NULL THEN 'unparseable'
        END AS study_date_problem
    FROM instances
    WHERE read_reason IS NULL
)
SELECT path, header, age, study_date_problem FROM judged
WHERE rules_digest IS DISTINCT FROM $digest
   OR (study_date_problem IS NOT NULL) <> (eligibility_reason IS NOT DISTINCT FROM 'ineligible:study_date');
