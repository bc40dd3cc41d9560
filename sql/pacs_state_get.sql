-- Where the last complete query of $source ended (NULL: never queried).
SELECT complete_through FROM pacs_state WHERE source = $source;
