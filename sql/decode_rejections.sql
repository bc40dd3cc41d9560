-- Record files whose pixels failed to decode (rej: Arrow table of path, decode_reason).
UPDATE instances AS i SET decode_reason = r.decode_reason
FROM rej AS r WHERE i.path = r.path;
