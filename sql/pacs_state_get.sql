-- Where the last complete query of $source ended, and the earliest study date it asked for (no row: never).
SELECT complete_through, queried_from FROM pacs_state WHERE source = $source;
