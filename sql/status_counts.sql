-- Files by status and reason, for the run summary. No patient data.
SELECT status, coalesce(reason, '') AS reason, count(*) AS n
FROM instances
GROUP BY ALL
ORDER BY status, n DESC, reason;
