-- Files left out tonight for a study date no program should trust, for the PACS
-- administrator: accession, the study date (the header's text when it did not
-- parse), SOP Instance UID and what is wrong. No patient names. The test is the
-- one in sql/eligibility_inputs.sql, with the same $run_date and $earliest.
SELECT accession_number, study_date_text AS study_date, sop_instance_uid, problem FROM (
    SELECT path, accession_number, sop_instance_uid,
        coalesce(strftime(study_date, '%Y-%m-%d'), header ->> 'StudyDate') AS study_date_text,
        CASE
            WHEN study_date > $run_date THEN 'after_run_date'
            WHEN study_date < $earliest THEN 'before_1900'
            WHEN study_date IS NULL AND (header ->> 'StudyDate') IS NOT NULL THEN 'unparseable'
        END AS problem
    FROM instances
    WHERE status = 'ineligible' AND reason = 'ineligible:study_date'
)
WHERE problem IS NOT NULL
ORDER BY accession_number NULLS LAST, sop_instance_uid, path;
