-- Instances of $prefix whose retrieval failed on an earlier night: clear the failure, so they are
-- pending again and retrieved tonight (if the PACS still lists them).
UPDATE instances SET decode_reason = NULL
WHERE starts_with(path, $prefix) AND decode_reason IN ('retrieve_failed', 'retrieve_timeout', 'retrieve_gone');
