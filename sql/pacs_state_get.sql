-- Where the last complete query of $source ended, the earliest study date it asked for, and with which
-- filters (no row: never queried).
SELECT complete_through, queried_from, filters FROM pacs_state WHERE source = $source;
