-- Remember shard files (names under scores/run_date=*/) as loaded.
INSERT OR IGNORE INTO shard_files SELECT unnest(CAST($files AS VARCHAR[])), now();
