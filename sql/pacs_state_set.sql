-- Record that every window of $source up to $through was queried completely.
INSERT OR REPLACE INTO pacs_state (source, complete_through, run_id, updated_at)
VALUES ($source, $through, $run_id, now());
