-- Record that every window of $source from $from to $through was queried completely, with $filters.
INSERT OR REPLACE INTO pacs_state (source, complete_through, queried_from, filters, run_id, updated_at)
VALUES ($source, $through, $from, $filters, $run_id, now());
