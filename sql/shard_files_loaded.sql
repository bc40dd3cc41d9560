-- Shard files already loaded.
SELECT file FROM shard_files;
