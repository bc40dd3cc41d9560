-- Record files whose pixels failed to decode, from the rejected rows of score part files.
UPDATE instances AS i SET decode_reason = r.decode_reason
FROM (SELECT DISTINCT path, decode_reason
      FROM read_parquet($files, union_by_name = true)
      WHERE decode_reason IS NOT NULL) AS r
WHERE i.path = r.path;
