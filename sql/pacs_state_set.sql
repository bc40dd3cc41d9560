-- Record that every window of $source from $from to $through was queried completely.
INSERT OR REPLACE INTO pacs_state (source, complete_through, queried_from, run_id, updated_at)
VALUES ($source, $through, $from, $run_id, now());
