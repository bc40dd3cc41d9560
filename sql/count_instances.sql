-- Number of files in the index.
SELECT count(*) FROM instances;
