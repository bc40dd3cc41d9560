-- Derive status and reason for every file, in this order of precedence:
-- unreadable -> rejected; second copy of a SOP Instance UID -> duplicate;
-- fails the rules -> ineligible; pixels failed to decode -> rejected;
-- has a score from $model_id (any model when NULL) -> scored; else pending.
UPDATE instances AS i SET status = d.status, reason = d.reason
FROM (
    SELECT path,
        CASE
            WHEN read_reason IS NOT NULL THEN 'rejected'
            WHEN copy_no > 1 THEN 'duplicate'
            WHEN eligibility_reason IS NOT NULL THEN 'ineligible'
            WHEN decode_reason IS NOT NULL THEN 'rejected'
            WHEN has_score THEN 'scored'
            ELSE 'pending'
        END AS status,
        CASE
            WHEN read_reason IS NOT NULL THEN read_reason
            WHEN copy_no > 1 THEN 'duplicate_sop_instance_uid'
            WHEN eligibility_reason IS NOT NULL THEN eligibility_reason
            WHEN decode_reason IS NOT NULL THEN decode_reason
            WHEN has_score THEN NULL
            ELSE 'awaiting_score'
        END AS reason
    FROM (
        SELECT x.path, x.read_reason, x.eligibility_reason, x.decode_reason,
            CASE WHEN x.read_reason IS NULL
                 THEN row_number() OVER (
                     PARTITION BY x.sop_instance_uid, x.read_reason IS NULL
                     -- keep a copy that can be scored: eligible and decodable first, then the one
                     -- whose header is intact (fewest invalid values; not yet counted last), then by path.
                     -- A kept copy that fails to decode gets decode_reason and drops behind the next one.
                     ORDER BY (x.eligibility_reason IS NULL AND x.decode_reason IS NULL) DESC,
                              x.header_issues ASC NULLS LAST, x.path)
            END AS copy_no,
            EXISTS (
                SELECT 1 FROM scores AS s
                WHERE s.sop_instance_uid = x.sop_instance_uid
                  AND (CAST($model_id AS VARCHAR) IS NULL OR s.model_id = $model_id)
            ) AS has_score
        FROM instances AS x
    )
) AS d
WHERE i.path = d.path AND (i.status IS DISTINCT FROM d.status OR i.reason IS DISTINCT FROM d.reason);
